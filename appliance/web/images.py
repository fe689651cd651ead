"""Where the console finds a part's image and defect map, and how it sends them.

In order: a frame retained on disk (table `images`, files under `<state_dir>/images`), then the
live view's ring of recently judged frames (the last few dozen parts, in memory). When neither
has it, the console says "image not retained" rather than showing some other part's picture.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from appliance.live import Snapshot, annotate
from appliance.sync.images import png_to_map

if TYPE_CHECKING:
    from appliance.service import Service

Source = Literal["retained", "recent"]


@dataclass(frozen=True, slots=True)
class PartImage:
    """A part's frame and (when known) its defect map in [0, 1]."""

    image: np.ndarray
    defect_map: np.ndarray | None
    source: Source

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Located:
    """Where a part's image is, its size, and whether a defect map goes with it."""

    source: Source
    width: int
    height: int
    has_map: bool


def locate(service: Service, part_id: str) -> Located | None:
    """Where the image is, without decoding it."""
    row = _retained_row(service, part_id)
    if row is not None and _inside(service, row["path"]) is not None:
        has_map = bool(row["map_png"]) or _inside(service, row["map_path"]) is not None
        return Located("retained", int(row["width"]), int(row["height"]), has_map)
    snap = service.live.recent(part_id)
    if snap is not None:
        h, w = snap.frame.image.shape[:2]
        return Located("recent", int(w), int(h), snap.verdict.defect_map is not None)
    return None


def load(service: Service, part_id: str) -> PartImage | None:
    """The part's image and defect map, or None when it was not retained."""
    row = _retained_row(service, part_id)
    if row is not None:
        path = _inside(service, row["path"])
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path is not None else None
        if image is not None:
            return PartImage(image, _load_map(service, row), "retained")
    snap = service.live.recent(part_id)
    if snap is not None:
        return PartImage(snap.frame.image, snap.verdict.defect_map, "recent")
    return None


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """The image as JPEG bytes."""
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else b""


def heat_png(defect_map: np.ndarray) -> bytes:
    """The defect map as a red, semi-transparent PNG at its own resolution (the browser scales it)."""
    heat = np.clip(np.nan_to_num(defect_map.astype(np.float32)), 0.0, 1.0)
    rgba = np.zeros((*heat.shape[:2], 4), np.uint8)
    rgba[..., 2] = 255  # OpenCV writes BGRA: red
    rgba[..., 1] = (80 * (1 - heat)).astype(np.uint8)
    rgba[..., 3] = (heat * 200).astype(np.uint8)
    ok, data = cv2.imencode(".png", rgba)
    return data.tobytes() if ok else b""


def _retained_row(service: Service, part_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = (
        service.reader.conn()
        .execute("SELECT path, map_path, map_png, width, height FROM images WHERE part_id = ?", (part_id,))
        .fetchone()
    )
    return row


def _inside(service: Service, relative: str | None) -> Path | None:
    """The file under <state_dir>/images, or None when missing or pointing outside it."""
    if not relative:
        return None
    root = (service.state_dir / "images").resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def _load_map(service: Service, row: sqlite3.Row) -> np.ndarray | None:
    if row["map_png"]:
        stored = png_to_map(row["map_png"])
        return None if stored is None else stored.astype(np.float32) / 255.0
    path = _inside(service, row["map_path"])  # a row kept before maps moved into the rows
    if path is None:
        return None
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return data.astype(np.float32).squeeze() if data.ndim >= 2 else None
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return None if image is None else image.astype(np.float32) / 255.0


class AnnotatedCache:
    """The last annotated JPEG per camera, keyed by frame version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jpegs: dict[str, tuple[int, bytes]] = {}

    def get(self, camera: str, snap: Snapshot) -> bytes:
        """The JPEG of `snap`, drawn at most once."""
        with self._lock:
            cached = self._jpegs.get(camera)
        if cached is not None and cached[0] == snap.version:
            return cached[1]
        data = annotate(snap.frame, snap.verdict)
        with self._lock:
            self._jpegs[camera] = (snap.version, data)
        return data
