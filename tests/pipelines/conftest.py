"""Small generated datasets in both layouts (written to tmp folders, never to the repo)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

TILE_CLASSES = ("free", "blowhole", "crack")
NEU_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


def make_tiles(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """Magnetic-tile layout: class folders, X.jpg + X.png mask; defects are dark blobs/lines."""
    rng = np.random.default_rng(seed)
    for c in TILE_CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = int(rng.integers(60, 90)), int(rng.integers(50, 100))
            image = rng.normal(140, 8, (h, w)).clip(0, 255).astype(np.uint8)
            mask = np.zeros((h, w), np.uint8)
            if c == "blowhole":
                cv2.circle(mask, (w // 2, h // 2), 8, 255, -1)
            elif c == "crack":
                cv2.line(mask, (5, 5), (w - 5, h - 5), 255, 3)
            image[mask > 0] = 40
            cv2.imwrite(str(root / c / f"{c}_{i}.jpg"), image)
            cv2.imwrite(str(root / c / f"{c}_{i}.png"), mask)
    return root


VOC = """<annotation><filename>{name}</filename><size><width>{aw}</width><height>{ah}</height>
<depth>1</depth></size>{objects}</annotation>"""
OBJ = """<object><name>{cls}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>
<ymax>{y2}</ymax></bndbox></object>"""


def make_neu(root: Path, per_class: int = 4, size: int = 96, annotated: int = 48, seed: int = 0) -> Path:
    """NEU-DET layout with images of `size` px but VOC boxes in an `annotated` px frame."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for k, c in enumerate(NEU_CLASSES):
        for i in range(per_class):
            image = rng.normal(120, 6, (size, size, 3)).clip(0, 255).astype(np.uint8)
            x1, y1 = int(rng.integers(2, annotated // 2)), int(rng.integers(2, annotated // 2))
            x2, y2 = x1 + annotated // 3, y1 + annotated // 3
            s = size / annotated
            cv2.rectangle(
                image,
                (int(x1 * s), int(y1 * s)),
                (int(x2 * s), int(y2 * s)),
                (30 + 30 * k,) * 3,
                -1,
            )
            name = f"{c}_{i}"
            cv2.imwrite(str(root / "images" / f"{name}.jpg"), image)
            objects = OBJ.format(cls=c, x1=x1, y1=y1, x2=x2, y2=y2)
            (root / "annotations" / f"{name}.xml").write_text(
                VOC.format(name=name, aw=annotated, ah=annotated, objects=objects)
            )
    return root


@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    """A generated magnetic-tile style folder."""
    return make_tiles(tmp_path / "tiles")


@pytest.fixture
def neu(tmp_path: Path) -> Path:
    """A generated neu-det style folder."""
    return make_neu(tmp_path / "neu")
