"""A scripted camera source: frames from a function, failures on cue, decode work counted."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from hardware.sources.base import CorruptFrame, EndOfStream, FrameSource, SourceError


class FakeSource(FrameSource):
    """Frame n is `render(n)`; `fail_open` opens fail, `die_after` grabs then SourceError;
    every `corrupt_every`-th frame is corrupt, every `crash_every`-th makes the decoder raise.

    Counts grabs, decodes (retrieves) and opens so that tests can check that dropped frames
    were never decoded and that reconnects happened.
    """

    def __init__(
        self,
        render: Callable[[int], np.ndarray] | None = None,
        *,
        fps: float = 0.0,
        live: bool = False,
        frames: int | None = None,
        corrupt_every: int = 0,
        crash_every: int = 0,
    ) -> None:
        self.render = render or (lambda n: np.full((16, 16), n % 256, np.uint8))
        self.fps = fps
        self.live = live
        self.frames = frames
        self.corrupt_every = corrupt_every
        self.crash_every = crash_every
        self.fail_open = 0
        self.die_after: int | None = None
        self.grabs = 0
        self.decodes = 0
        self.opens = 0
        self._n = -1
        self._lock = threading.Lock()

    def open(self) -> None:
        """Fail `fail_open` times, then succeed."""
        with self._lock:
            self.opens += 1
            if self.fail_open > 0:
                self.fail_open -= 1
                raise SourceError("fake camera unreachable")

    def grab(self) -> None:
        """Next frame, or EndOfStream/SourceError as scripted."""
        with self._lock:
            if self.die_after is not None:
                if self.die_after <= 0:
                    self.die_after = None
                    raise SourceError("fake camera died")
                self.die_after -= 1
            self._n += 1
            if self.frames is not None and self._n >= self.frames:
                raise EndOfStream("fake")
            self.grabs += 1

    def retrieve(self) -> np.ndarray:
        """Decode the current frame (counted); every `corrupt_every`-th is corrupt."""
        self.decodes += 1
        if self.crash_every and (self._n + 1) % self.crash_every == 0:
            raise RuntimeError(f"fake decoder crashed on frame {self._n}")
        if self.corrupt_every and (self._n + 1) % self.corrupt_every == 0:
            raise CorruptFrame(f"fake frame {self._n} corrupt")
        self.truth = "good"
        return self.render(self._n)

    def release(self) -> None:
        """Nothing to free."""
