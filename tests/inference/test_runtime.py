"""The runtime's pre- and post-processing for each model kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.inference.package import load_package
from appliance.inference.runtime import ModelRunner, nms_per_class, regions_from_map
from tests.conftest import grey


def test_classification_score_follows_the_graph(models_dir: Path) -> None:
    runner = ModelRunner(load_package(models_dir / "bright1"))
    assert runner.infer(grey(51)).score == pytest.approx(0.2, abs=1e-3)
    high = runner.infer(grey(204))
    assert high.score == pytest.approx(0.8, abs=1e-3)
    assert high.defect_class == "defect"
    assert runner.infer(grey(51)).defect_class is None


def test_colour_frames_are_converted_for_gray_models(models_dir: Path) -> None:
    runner = ModelRunner(load_package(models_dir / "bright1"))
    bgr = np.dstack([grey(100)] * 3)
    assert runner.infer(bgr).score == pytest.approx(100 / 255, abs=1e-3)


def test_segmentation_map_becomes_boxed_regions_in_frame_pixels(models_dir: Path) -> None:
    runner = ModelRunner(load_package(models_dir / "dark"))
    image = np.full((128, 128), 120, np.uint8)
    image[40:50, 80:92] = 10  # a dark spot
    result = runner.infer(image)
    assert result.score > 0.9
    assert result.defect_map is not None
    assert result.defects, "a failing segmentation must report its region"
    x1, y1, x2, y2 = result.defects[0].bbox
    assert x1 <= 80 and x2 >= 92 and y1 <= 40 and y2 >= 50
    assert x2 - x1 < 40 and y2 - y1 < 40


def test_regions_from_map_scales_and_orders_by_area() -> None:
    heat = np.zeros((10, 10), np.float32)
    heat[1:3, 1:3] = 0.9  # small
    heat[5:9, 4:9] = 0.7  # large
    regions = regions_from_map(heat, 100, 200, "crack")
    assert [r.bbox for r in regions] == [(40, 100, 90, 180), (10, 20, 30, 60)]
    assert regions[1].confidence == pytest.approx(0.9)


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.1, 0.7]], np.float32)
    found = nms_per_class(boxes, scores, ["scratch", "pit"], 0.25, 0.5, 200, 100)
    assert [(d.cls, d.bbox) for d in found] == [("scratch", (20, 10, 100, 50)), ("pit", (120, 60, 180, 90))]


def test_a_non_finite_score_is_refused_not_passed(models_dir: Path) -> None:
    from appliance.inference.runtime import ModelOutputError

    runner = ModelRunner(load_package(models_dir / "bright1"))
    with pytest.raises(ModelOutputError, match="non-finite score"):
        runner._scored({"score": np.array([np.nan], np.float32)}, 32, 32, 0.1)
    detector = ModelRunner(load_package(models_dir / "boxes"))
    boxes = np.zeros((1, 1, 4), np.float32)
    with pytest.raises(ModelOutputError, match="non-finite"):
        detector._detections({"boxes": boxes, "scores": np.full((1, 1, 1), np.inf, np.float32)}, 32, 32, 0.1)
