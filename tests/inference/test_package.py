"""Model packages are verified at load: a missing, corrupt or mismatched model is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.inference.package import ModelPackageError, load_package
from appliance.inference.runtime import ModelRunner


@pytest.fixture
def package(tmp_path: Path, models_dir: Path) -> Path:
    folder = tmp_path / "pkg"
    shutil.copytree(models_dir / "bright1", folder)
    return folder


def test_good_package_loads(package: Path) -> None:
    loaded = load_package(package)
    assert loaded.manifest.kind == "classification"
    assert loaded.manifest.synthetic is True


def test_wrong_sha256_is_refused_naming_the_file(package: Path) -> None:
    with (package / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelPackageError, match=r"model\.onnx: sha256 mismatch"):
        load_package(package)


def test_missing_manifest(package: Path) -> None:
    (package / "manifest.json").unlink()
    with pytest.raises(ModelPackageError, match="manifest.json is missing"):
        load_package(package)


def test_missing_model_file(package: Path) -> None:
    (package / "model.onnx").unlink()
    with pytest.raises(ModelPackageError, match="model file named in the manifest is missing"):
        load_package(package)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="no such directory"):
        load_package(tmp_path / "nothing")


def test_invalid_manifest_names_the_field(package: Path) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["threshold"] = 3
    (package / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="threshold: Input should be less than or equal to 1"):
        load_package(package)


def test_unparseable_manifest(package: Path) -> None:
    (package / "manifest.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match="unreadable manifest"):
        load_package(package)


def test_input_size_mismatch_with_graph_is_refused(package: Path) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["input"]["width"] = 48
    (package / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match=r"graph input shape .* does not match manifest"):
        ModelRunner(load_package(package))


def test_corrupt_onnx_with_matching_hash_is_refused(package: Path) -> None:
    from appliance.inference.package import write_manifest

    (package / "model.onnx").write_bytes(b"this is not an onnx graph")
    write_manifest(package, json.loads((package / "manifest.json").read_text()))
    with pytest.raises(ModelPackageError, match="onnxruntime cannot load it"):
        ModelRunner(load_package(package))
