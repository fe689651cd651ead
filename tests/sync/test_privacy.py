"""Privacy: crops never the frame, masks black, the policy described as it is."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.config import SyncConfig
from appliance.inference.runtime import Defect
from appliance.sync.privacy import Policy, apply_masks, crop_boxes, crop_defects, what_leaves


@pytest.mark.parametrize("shape", [(240, 320), (64, 48), (1024, 1280, 3)])
def test_crops_never_cover_the_frame(shape: tuple[int, ...]) -> None:
    height, width = shape[:2]
    rng = np.random.default_rng(0)
    defects = [Defect("d", 1.0, (0, 0, width, height))]  # a "defect" as large as the frame
    for _ in range(200):
        x1, y1 = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
        x2, y2 = int(rng.integers(x1 + 1, width + 1)), int(rng.integers(y1 + 1, height + 1))
        defects.append(Defect("d", 0.5, (x1, y1, x2, y2)))
    for defect in defects:
        for x1, y1, x2, y2 in crop_boxes(shape, (defect,), margin=0.5, min_px=32, max_fraction=0.5):
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert x2 - x1 <= width * 0.5 and y2 - y1 <= height * 0.5


def test_crop_keeps_the_defect_with_its_margin_when_it_fits() -> None:
    [box] = crop_boxes(
        (240, 320), (Defect("d", 1, (100, 100, 140, 120)),), margin=0.25, min_px=8, max_fraction=0.5
    )
    assert box == (90, 95, 150, 125)
    [small] = crop_boxes((240, 320), (Defect("d", 1, (0, 0, 2, 2)),), margin=0, min_px=32, max_fraction=0.5)
    assert small == (0, 0, 32, 32)


def test_masks_black_out_rectangles_and_scale_to_maps() -> None:
    image = np.full((240, 320, 3), 200, np.uint8)
    masked = apply_masks(image, [(0, 0, 100, 50), (300, 200, 400, 400)])
    assert masked[:50, :100].max() == 0 and masked[200:, 300:].max() == 0
    assert masked[60:, :290].min() == 200 and image.min() == 200  # the original is untouched
    small = apply_masks(np.ones((8, 8), np.uint8), [(0, 0, 100, 50)], scale=(8 / 320, 8 / 240))
    assert small[:2, :3].max() == 0 and small[3:, 4:].min() == 1


def test_uncertain_pass_is_cropped_where_the_map_points() -> None:
    defect_map = np.zeros((16, 16), np.float32)
    defect_map[4:6, 10:12] = 0.4
    [region] = crop_defects((), defect_map, (160, 160))
    assert region.bbox == (100, 40, 120, 60)
    assert crop_defects((), None, (160, 160)) == ()


def test_policy_ladder() -> None:
    assert not Policy("none").results and not Policy("none").images
    assert Policy("metadata").results and not Policy("metadata").crops
    assert Policy("crops").crops and not Policy("crops").frames
    assert Policy("frames").frames and Policy("frames").crops


def test_what_leaves_says_it_plainly() -> None:
    assert "no sync target" in what_leaves(SyncConfig(policy="frames"))[0]
    assert "Nothing leaves" in what_leaves(SyncConfig(target="s3://bkt", policy="none"))[0]
    metadata = " ".join(what_leaves(SyncConfig(target="s3://bkt", policy="metadata")))
    assert "No images leave" in metadata and "without the operator's name" in metadata
    crops = " ".join(
        what_leaves(SyncConfig(target="s3://bkt", policy="crops", masks={"cam1": [(0, 0, 9, 9)]}))
    )
    assert "never a whole frame" in crops and "cam1 (1)" in crops
    assert "Whole frames" in " ".join(what_leaves(SyncConfig(target="s3://bkt", policy="frames")))
