"""The line simulator: magnetic-tile-like parts passing a camera, some with defects.

Parts are rendered procedurally in the shipped models' domain (ground grey ceramic with
vertical grinding streaks, uneven lighting and dark tile edges) so that the embedded demo
shows the real thing without any dataset: blowholes, cracks, breaks, fray and uneven patches
are drawn the way they look on the real tiles, and the models catch them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from hardware.sources.base import FrameSource

DEFECT_KINDS = ("blowhole", "crack", "break", "fray", "uneven")


class LineSimulator(FrameSource):
    """Renders one part per frame with probability `defect_rate` of carrying a defect."""

    def __init__(
        self,
        *,
        fps: float = 10.0,
        defect_rate: float = 0.2,
        kinds: tuple[str, ...] = DEFECT_KINDS,
        width: int = 320,
        height: int = 320,
        seed: int = 0,
    ) -> None:
        unknown = set(kinds) - set(DEFECT_KINDS)
        if unknown:
            raise ValueError(f"unknown defect kinds {sorted(unknown)}; known: {DEFECT_KINDS}")
        self.fps = fps
        self.defect_rate = defect_rate
        self.kinds = tuple(kinds)
        self.width = width
        self.height = height
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._textures: list[np.ndarray] = []
        self._pending: tuple[int, str] | None = None

    def describe(self) -> str:
        """Simulator settings."""
        return f"simulator {self.width}x{self.height} defect_rate={self.defect_rate}"

    def open(self) -> None:
        """Prepare a few base textures (the costly part) once."""
        if not self._textures:
            self._textures = [self._texture() for _ in range(6)]

    def grab(self) -> None:
        """Decide the next part without drawing it."""
        kind = "good"
        if self.kinds and self._rng.random() < self.defect_rate:
            kind = self.kinds[int(self._rng.integers(len(self.kinds)))]
        self._pending = (int(self._rng.integers(1 << 31)), kind)

    def retrieve(self) -> np.ndarray:
        """Draw the part decided by the last grab."""
        assert self._pending is not None, "retrieve() before grab()"
        part_seed, kind = self._pending
        self.truth = kind
        return self.render(part_seed, kind)

    def release(self) -> None:
        """Nothing to free."""

    def render(self, part_seed: int, kind: str) -> np.ndarray:
        """One part: a shifted, re-lit base texture with the defect drawn on it."""
        rng = np.random.default_rng(part_seed)
        base = self._textures[int(rng.integers(len(self._textures)))]
        image = np.roll(base, int(rng.integers(base.shape[1])), axis=1)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        gain = rng.uniform(0.8, 1.2)
        image = image.astype(np.float32) * gain + rng.uniform(-10, 10)
        _draw_tile_edges(image, rng)
        if kind != "good":
            _DRAW[kind](image, rng)
        image += rng.normal(0, 2.0, image.shape).astype(np.float32)
        return image.clip(0, 255).astype(np.uint8)

    def _texture(self) -> np.ndarray:
        """Grey ceramic: vertical grinding streaks and a bright specular band."""
        h, w = self.height, self.width
        rng = self._rng
        streaks: np.ndarray = rng.normal(0, 1, (1, w * 2)).astype(np.float32)
        streaks = cv2.GaussianBlur(streaks, (0, 0), sigmaX=1.2)
        column = np.repeat(streaks[:, :w], h, axis=0) * 7.0
        grain: np.ndarray = rng.normal(0, 1, (h, w)).astype(np.float32)
        grain = cv2.GaussianBlur(grain, (0, 0), sigmaX=0.6, sigmaY=12) * 10.0
        x = np.linspace(0, 1, w, dtype=np.float32)
        centre = rng.uniform(0.2, 0.8)
        band: np.ndarray = 45.0 * np.exp(-((x - centre) ** 2) / (2 * rng.uniform(0.04, 0.15) ** 2))
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        shade = 10.0 * np.sin(math.pi * y) + rng.uniform(-8, 8) * (y - 0.5)
        level = rng.uniform(65, 95)
        texture: np.ndarray = level + column + grain + band[None, :] + shade  # numpy types [None, :] as Any
        return texture


def _soft_blob(
    image: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    delta: float,
    blur: float,
) -> None:
    mask: np.ndarray = np.zeros(image.shape, np.float32)
    cv2.ellipse(
        mask,
        (int(centre[0]), int(centre[1])),
        (max(1, int(axes[0])), max(1, int(axes[1]))),
        angle,
        0,
        360,
        1.0,
        -1,
        cv2.LINE_AA,
    )
    if blur > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur)
    image += delta * mask


def _draw_tile_edges(image: np.ndarray, rng: np.random.Generator) -> None:
    """Dark chamfer lines at the tile's left/right ends, as in most real crops."""
    h, w = image.shape
    for side in (0, 1):
        if rng.random() < 0.6:
            x = int(rng.integers(0, 6)) if side == 0 else w - 1 - int(rng.integers(0, 6))
            width = int(rng.integers(2, 6))
            lo, hi = (x, x + width) if side == 0 else (x - width, x)
            image[:, max(0, lo) : max(1, hi)] *= rng.uniform(0.3, 0.6)


def _blowhole(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape
    for _ in range(int(rng.integers(1, 3))):
        r = rng.uniform(3, 9) * w / 320
        centre = (rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h)
        _soft_blob(
            image, centre, (r * rng.uniform(1.0, 1.8), r), rng.uniform(0, 180), -rng.uniform(45, 70), 1.0
        )


def _crack(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape
    mask: np.ndarray = np.zeros(image.shape, np.float32)
    x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.5) * h
    heading = rng.uniform(0, 2 * math.pi)
    points = [(x, y)]
    for _ in range(int(rng.integers(8, 20))):
        heading += rng.normal(0, 0.35)
        step = rng.uniform(5, 10) * w / 320
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        points.append((x, y))
    pts = np.array(points, np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [pts], False, 1.0, int(rng.integers(1, 3)), cv2.LINE_AA)
    image -= rng.uniform(35, 60) * cv2.GaussianBlur(mask, (0, 0), 0.6)


def _break(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape
    top = rng.random() < 0.5
    x0 = rng.uniform(0.1, 0.8) * w
    span = rng.uniform(0.08, 0.25) * w
    depth = rng.uniform(0.04, 0.12) * h
    edge_y = 0 if top else h - 1
    inner_y = depth if top else h - 1 - depth
    poly = np.array(
        [
            (x0, edge_y),
            (x0 + span * 0.3, inner_y),
            (x0 + span * 0.7, inner_y + rng.normal(0, depth * 0.2)),
            (x0 + span, edge_y),
        ],
        np.int32,
    )
    mask: np.ndarray = np.zeros(image.shape, np.float32)
    cv2.fillPoly(mask, [poly], 1.0, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.0)
    image[:] = image * (1 - mask) + rng.uniform(10, 30) * mask


def _fray(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.9) * h
    for _ in range(int(rng.integers(4, 9))):
        centre = (cx + rng.normal(0, 0.05 * w), cy + rng.normal(0, 0.08 * h))
        axes = (rng.uniform(0.02, 0.06) * w, rng.uniform(0.04, 0.12) * h)
        _soft_blob(image, centre, axes, rng.uniform(-20, 20), -rng.uniform(20, 40), 3.0)


def _uneven(image: np.ndarray, rng: np.random.Generator) -> None:
    h, w = image.shape
    centre = (rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h)
    axes = (rng.uniform(0.12, 0.3) * w, rng.uniform(0.2, 0.4) * h)
    _soft_blob(image, centre, axes, rng.uniform(-15, 15), -rng.uniform(25, 40), 8.0)


_DRAW = {"blowhole": _blowhole, "crack": _crack, "break": _break, "fray": _fray, "uneven": _uneven}
