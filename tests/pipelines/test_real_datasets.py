"""Checks on the real shared datasets and the shipped packages (skipped when data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from appliance.inference.package import load_package
from pipelines.datasets import datasets_root, load_dataset, read_image, split_dataset
from pipelines.evaluate import evaluate_model
from pipelines.metrics import auroc

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.datasets


def _folder(name: str) -> Path:
    folder = datasets_root() / name
    if not folder.is_dir():
        pytest.skip(f"dataset folder {folder} is absent (set APPLIANCE_DATASETS)")
    return folder


def test_magnetic_tile_layout_and_split():
    ds = load_dataset(_folder("magnetic-tile"))
    assert ds.labels[0] == "good" and len(ds.samples) >= 700
    split = split_dataset(ds, 20240, (0.6, 0.2, 0.2))
    for part in ("val", "test"):
        labels = {ds.samples[i].label for i in split[part]}
        assert labels == set(ds.labels), f"{part} misses a class"


def test_neu_boxes_are_in_the_annotated_frame():
    ds = load_dataset(_folder("neu-det"))
    assert len(ds.labels) == 6
    s = ds.samples[0]
    image = read_image(s.path)
    # On disk 416x416, annotated 200x200: normalised boxes must fit inside the image.
    assert image.shape[0] != 200
    assert (s.boxes >= 0).all() and (s.boxes <= 1).all()
    assert all(len(x.boxes) == len(x.box_labels) > 0 for x in ds.samples)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mt-tier1", "mt-tier2", "neu-det"])
def test_shipped_package_reproduces_its_val_metrics(name: str):
    pkg = ROOT / "models" / name
    if not (pkg / "manifest.json").is_file():
        pytest.skip(f"{pkg} not built")
    manifest = load_package(pkg).manifest
    data = _folder(manifest.provenance["dataset"])
    report = evaluate_model(pkg, data, "val", quiet=True)
    key = "map50" if manifest.kind == "detection" else "image_auroc"
    if manifest.training.get("crossval"):
        # A cross-fit package records out-of-fold figures; its val scores are in-sample.
        held = json.loads((pkg / "reference" / "oof_scores.json").read_text(encoding="utf-8"))
        ds = load_dataset(data)
        by_path = {str(s.path.relative_to(ds.root)): not s.is_good for s in ds.samples}
        y = [by_path[p] for p in held]
        assert auroc(y, list(held.values())) == pytest.approx(manifest.metrics[key], abs=1e-4)
        assert report[key] >= manifest.metrics[key] - 0.01
    else:
        assert report[key] == pytest.approx(manifest.metrics[key], abs=1e-4)
    assert np.isfinite(report["latency_ms_p50"])
