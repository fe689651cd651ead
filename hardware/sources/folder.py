"""A folder of images replayed as a camera, optionally looping; labelled by sub-folder name."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np

from hardware.sources.base import CorruptFrame, EndOfStream, FrameSource, SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def looks_truncated(data: bytes, suffix: str) -> bool:
    """True when a JPEG lacks its end-of-image marker or a PNG its IEND chunk.

    libjpeg decodes a truncated JPEG into a half-grey picture with only a warning; a model
    would then judge a part it never saw, so such files are treated as corrupt.
    """
    if suffix in {".jpg", ".jpeg"}:
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if suffix == ".png":
        return b"IEND" not in data[-16:]
    return False


class FolderSource(FrameSource):
    """Images under a folder (recursively), in name order or shuffled with a seed.

    Files whose name ends in a mask suffix (``X.png`` beside ``X.jpg``) are skipped so that a
    magnetic-tile style folder replays its photos, not their masks.
    """

    def __init__(
        self,
        folder: Path,
        *,
        fps: float = 0.0,
        loop: bool = True,
        shuffle: bool = False,
        seed: int = 0,
        good_label: str = "free",
    ) -> None:
        self.folder = Path(folder)
        self.fps = fps
        self.loop = loop
        self.shuffle = shuffle
        self.good_label = good_label
        self._rng = random.Random(seed)
        self._files: list[Path] = []
        self._index = -1

    def describe(self) -> str:
        """The folder path."""
        return str(self.folder)

    def open(self) -> None:
        """List the images; SourceError when the folder is missing or empty."""
        if not self.folder.is_dir():
            raise SourceError(f"folder {self.folder} does not exist")
        files = sorted(
            p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not _is_mask(p)
        )
        if not files:
            raise SourceError(f"folder {self.folder} holds no images")
        if self.shuffle:
            self._rng.shuffle(files)
        self._files = files
        self._index = -1

    def grab(self) -> None:
        """Move to the next file without reading it."""
        self._index += 1
        if self._index >= len(self._files):
            if not self.loop:
                raise EndOfStream(str(self.folder))
            self._index = 0
            if self.shuffle:
                self._rng.shuffle(self._files)

    @property
    def current(self) -> Path:
        """The file last grabbed."""
        return self._files[self._index]

    def retrieve(self) -> np.ndarray:
        """Read and decode the current file; CorruptFrame names it when it is bad."""
        path = self.current
        self.truth = self.encoded = None  # nothing of the last file stays if this one is bad
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CorruptFrame(f"{path}: unreadable: {exc}") from exc
        if looks_truncated(data, path.suffix.lower()):
            raise CorruptFrame(f"{path}: truncated image file")
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:  # some codecs raise instead of returning None (empty BMP, TIFF)
            raise CorruptFrame(f"{path}: not a decodable image ({exc.err})") from exc
        if image is None or image.size == 0:
            raise CorruptFrame(f"{path}: not a decodable image")
        # Kept frames are stored as the file itself when its pixels are used as they decode.
        as_decoded = image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] == 3)
        if as_decoded and path.suffix.lower() in {".jpg", ".jpeg"}:
            self.encoded = data
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        if image.dtype != np.uint8:
            image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(image.max())))
        parent = path.parent.name if path.parent != self.folder else None
        self.truth = None if parent is None else ("good" if parent == self.good_label else parent)
        return image

    def release(self) -> None:
        """Nothing to free."""


def _is_mask(path: Path) -> bool:
    """A PNG with a JPEG of the same stem beside it is a ground-truth mask."""
    return path.suffix.lower() == ".png" and path.with_suffix(".jpg").exists()
