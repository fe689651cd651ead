"""Training end to end on generated images, export parity, quantization bound, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from appliance.inference.package import load_package  # noqa: E402
from pipelines import evaluate, quantize, train  # noqa: E402
from pipelines.architectures import build, exportable  # noqa: E402
from pipelines.export import export_onnx, onnx_matches_torch  # noqa: E402


def _train(data: Path, out: Path, arch: str, size: int, epochs: int = 2) -> Path:
    argv = [
        "--data",
        str(data),
        "--arch",
        arch,
        "--out",
        str(out),
        "--name",
        f"t-{arch}",
        "--size",
        str(size),
        str(size),
        "--epochs",
        str(epochs),
        "--batch",
        "4",
        "--threads",
        "1",
        "--split-seed",
        "3",
        "--fractions",
        "0.5",
        "0.25",
        "0.25",
    ]
    assert train.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.pipelines.conftest import make_tiles

    root = tmp_path_factory.mktemp("tiny")
    data = make_tiles(root / "tiles")
    return _train(data, root / "pkg", "tiny", 48, epochs=3), data


def test_tiny_trains_end_to_end(tiny_package: tuple[Path, Path]):
    pkg, data = tiny_package
    package = load_package(pkg)
    m = package.manifest
    assert m.kind == "classification" and m.labels == ["good", "blowhole", "crack"]
    assert m.training["split"] == {
        "seed": 3,
        "fractions": [0.5, 0.25, 0.25],
        "method": m.training["split"]["method"],
        "counts": {"train": 12, "val": 6, "test": 6},
    }
    assert m.metrics["split"] == "val" and 0.0 <= m.threshold <= 1.0
    assert m.score_reference["n"] == 6
    assert m.training["onnx_vs_torch_max_abs_diff"] < 1e-3
    assert m.provenance["file_list_sha256"]
    report = evaluate.evaluate_model(pkg, data, "test", quiet=True)
    assert report["n_images"] == 6
    for key in ("image_auroc", "accuracy", "per_class_recall", "confusion", "latency_ms_p50"):
        assert key in report


def test_training_is_deterministic(tiles: Path, tmp_path: Path, tiny_package: tuple[Path, Path]):
    again = _train(tiles, tmp_path / "again", "tiny", 48, epochs=3)
    first = json.loads((tiny_package[0] / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert first["training"]["history"] == second["training"]["history"]
    assert first["metrics"]["image_auroc"] == second["metrics"]["image_auroc"]


def test_segdec_trains_and_exports_defect_map(tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    pkg = _train(tiles, tmp_path / "seg", "segdec", 64, epochs=1)
    m = load_package(pkg).manifest
    assert m.kind == "segmentation"
    assert evaluate.main(["--model", str(pkg), "--data", str(tiles), "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_images"] == 6 and "image_auroc" in out


def test_detector_trains_and_evaluates(neu: Path, tmp_path: Path):
    pkg = _train(neu, tmp_path / "det", "fcos", 64, epochs=1)
    m = load_package(pkg).manifest
    assert m.kind == "detection" and len(m.labels) == 6
    report = evaluate.evaluate_model(pkg, neu, "test", quiet=True)
    assert set(report["ap50_per_class"]) <= set(m.labels)
    assert 0.0 <= report["map50"] <= 1.0


@pytest.mark.parametrize(("arch", "classes", "size"), [("tiny", 3, 48), ("segdec", 1, 64), ("fcos", 6, 64)])
def test_onnx_matches_torch(arch: str, classes: int, size: int, tmp_path: Path):
    torch.manual_seed(0)
    net = build(arch, classes).eval()
    wrapper, names = exportable(arch, net, size, size)
    path = export_onnx(wrapper, tmp_path / "m.onnx", size, size, names)
    images = np.random.default_rng(0).integers(0, 256, (3, size, size)).astype(np.uint8)
    assert onnx_matches_torch(wrapper, path, images, atol=1e-3) < 1e-3


def test_int8_within_bound_is_written(tiny_package: tuple[Path, Path], tmp_path: Path):
    pkg, data = tiny_package
    out = tmp_path / "int8"
    record = quantize.quantize_package(pkg, out, data, n_calibration=8, max_drop=1.0)
    assert not record.get("refused")
    m = load_package(out).manifest
    assert m.training["precision"] == "int8"
    assert abs(record["drop"]) <= 1.0
    assert record["calibration"]["n_images"] == 8


def test_int8_beyond_bound_is_refused(tiny_package: tuple[Path, Path], tmp_path: Path):
    pkg, data = tiny_package
    out = tmp_path / "refused"
    code = quantize.main(
        [
            "--model",
            str(pkg),
            "--out",
            str(out),
            "--data",
            str(data),
            "--calibration",
            "8",
            "--max-drop",
            "-2",
        ]
    )
    assert code == 2 and not out.exists()


def test_train_on_corrupt_folder_names_the_file(tiles: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    (tiles / "crack" / "crack_1.jpg").write_bytes(b"\x00garbage")
    with pytest.raises(SystemExit) as exc:
        train.main(
            [
                "--data",
                str(tiles),
                "--arch",
                "tiny",
                "--out",
                str(tmp_path / "x"),
                "--name",
                "x",
                "--size",
                "32",
                "32",
                "--epochs",
                "1",
            ]
        )
    assert exc.value.code == 2
    assert "crack_1.jpg: unreadable image" in capsys.readouterr().err


def test_ladder_calibration_and_evaluation(
    tiny_package: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
):
    from pipelines import ladder

    tier1, data = tiny_package
    local1 = tmp_path / "tier1"
    local1.mkdir()
    for f in ("model.onnx", "manifest.json"):
        (local1 / f).write_bytes((tier1 / f).read_bytes())
    tier2 = _train(data, tmp_path / "tier2", "segdec", 64, epochs=1)
    tiers = f"{local1},{tier2}"
    # With the whole val split as budget the best band ranks at least as well as tier 2 alone.
    assert ladder.main(["--ladder", tiers, "--data", str(data), "--max-escalation", "1"]) == 0
    m1 = load_package(local1).manifest
    lo, hi = m1.uncertain_band
    assert lo <= m1.threshold <= hi
    assert m1.model_extra["ladder"]["split"] == "val"
    capsys.readouterr()
    assert evaluate.main(["--ladder", tiers, "--data", str(data), "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "image_auroc",
        "accuracy",
        "escalated_fraction",
        "mean_compute_ms",
        "last_tier_alone",
        "auroc_ratio",
        "compute_ratio",
    ):
        assert key in out
    assert out["auroc_ratio"] >= 1.0 - 1e-4  # chosen on val, evaluated on val


def test_seed_ensemble_averages_members(tiny_package: tuple[Path, Path], tmp_path: Path):
    import onnxruntime as ort

    from pipelines.ensemble import ensemble_package

    pkg, data = tiny_package
    other = _train(data, tmp_path / "other", "tiny", 48, epochs=1)
    merged = ensemble_package([pkg, other], tmp_path / "ens", data)
    m = load_package(merged).manifest
    assert [e["sha256"] for e in m.training["ensemble"]] == [
        load_package(pkg).manifest.sha256,
        load_package(other).manifest.sha256,
    ]
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 48, 48)).astype(np.float32)

    def run(folder: Path) -> list[np.ndarray]:
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        return session.run(["score", "class_probs"], {"image": x})

    a, b, e = run(pkg), run(other), run(merged)
    for i in range(2):
        assert np.allclose(e[i], (a[i] + b[i]) / 2, atol=1e-5)


def test_distill_loss_is_the_cross_entropy_of_p_defect():
    logits = torch.tensor([[2.0, 0.5, -1.0], [-1.0, 1.0, 0.3]])
    target = torch.tensor([0.9, 0.2])
    p_defect = 1.0 - torch.softmax(logits, 1)[:, 0]
    expected = torch.nn.functional.binary_cross_entropy(p_defect, target)
    assert float(train.distill_loss(logits, target)) == pytest.approx(float(expected), rel=1e-5)


def test_mask_in_head_net_exports_its_defect_map_reader_and_distils(tiles: Path, tmp_path: Path):
    from pipelines.datasets import load_dataset

    net = build("tiny", 3, mask_in_head=True).eval()
    plain = build("tiny", 3).eval()
    from pipelines.architectures import count_parameters

    # The map reader is part of the exported graph: its 1x1 head is counted, and 2 more inputs.
    assert count_parameters(net) == count_parameters(plain) + (32 + 1) + 2 * 3
    ds = load_dataset(tiles)
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps({str(s.path.relative_to(ds.root)): 0.5 for s in ds.samples}))
    out = tmp_path / "kd"
    argv = ["--data", str(tiles), "--arch", "tiny", "--out", str(out), "--name", "kd"]
    argv += ["--size", "48", "48", "--epochs", "1", "--batch", "4", "--threads", "1"]
    argv += ["--set", "mask_in_head=true", "--set", f'teacher_scores="{teacher}"']
    assert train.main(argv) == 0
    m = load_package(out).manifest
    assert m.training["config"]["mask_in_head"] is True
    teacher.write_text("{}")
    with pytest.raises(SystemExit, match="no teacher score"):
        train.main([*argv[:-2], "--set", f'teacher_scores="{teacher}"', "--out", str(tmp_path / "x")])
