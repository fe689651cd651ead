"""Counters with a rate over a sliding window, cheap enough for the per-frame path."""

from __future__ import annotations

import threading
import time
from collections import deque


class RateCounter:
    """A monotonically increasing count and its rate over the last `window_s` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.count = 0
        self._lock = threading.Lock()
        self._marks: deque[tuple[float, int]] = deque()

    def add(self, n: int = 1) -> None:
        """Count `n` events now."""
        with self._lock:
            self.count += n
            now = time.monotonic()
            if not self._marks or now - self._marks[-1][0] >= 0.25:
                self._marks.append((now, self.count))
                while self._marks and now - self._marks[0][0] > self.window_s:
                    self._marks.popleft()

    def rate(self) -> float:
        """Events per second over the window (0 until two marks exist)."""
        with self._lock:
            if not self._marks:
                return 0.0
            now = time.monotonic()
            while len(self._marks) > 1 and now - self._marks[0][0] > self.window_s:
                self._marks.popleft()
            t0, c0 = self._marks[0]
            elapsed = now - t0
            return (self.count - c0) / elapsed if elapsed > 0.5 else 0.0
