"""The camera-source interface: four methods, like OpenCV's VideoCapture.

`grab()` advances to the next frame as cheaply as the source allows (for files and folders it
does not decode); `retrieve()` decodes the frame last grabbed. The capture loop decodes only the
frames it will hand to inference, so a dropped frame costs a grab, not a decode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class SourceError(Exception):
    """The source cannot be opened or has died; the capture loop reconnects with backoff."""


class EndOfStream(Exception):
    """A finite source (file, folder) has no more frames and is not set to loop."""


class CorruptFrame(Exception):
    """The grabbed frame cannot be decoded; it is counted and skipped."""


class FrameSource(ABC):
    """A camera or anything that behaves like one."""

    #: True when grab() blocks until the device delivers (RTSP, V4L2); False when the capture
    #: loop must pace it (files, folders, the simulator) at `fps`.
    live: bool = False
    #: Frames per second for paced sources; 0 = as fast as the consumer takes them.
    fps: float = 0.0
    #: Ground truth of the frame last retrieved, where the source knows it (the simulator, a
    #: labelled dataset folder); None otherwise. Used by the demo and the bench, never by models.
    truth: str | None = None
    #: The JPEG file the frame last retrieved was decoded from, where retrieve() returned its
    #: pixels unconverted; None otherwise. A kept frame is stored as this file, less its
    #: metadata (hardware/sources/jpeg.py), instead of being encoded again.
    encoded: bytes | None = None

    @abstractmethod
    def open(self) -> None:
        """Connect or rewind; raise SourceError when it cannot."""

    @abstractmethod
    def grab(self) -> None:
        """Advance to the next frame without decoding it; EndOfStream or SourceError."""

    @abstractmethod
    def retrieve(self) -> np.ndarray:
        """Decode the frame last grabbed (gray HxW or BGR HxWx3 uint8); CorruptFrame if bad."""

    @abstractmethod
    def release(self) -> None:
        """Free the device; safe to call twice."""

    def describe(self) -> str:
        """A short human-readable name for logs and health (no credentials)."""
        return type(self).__name__
