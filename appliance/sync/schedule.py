"""When sync may use the uplink: schedule windows (local time) and backoff after failures."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """A daily window [start, end) in minutes after local midnight; wraps past midnight."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> Window:
        """'22:00-06:00' -> Window(1320, 360); '24:00' as an end means midnight."""
        start, end = text.split("-")
        return cls(_minutes(start), _minutes(end) % 1440)

    def contains(self, minute: int) -> bool:
        """Is `minute` (after local midnight) inside the window?"""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def minutes_until_open(self, minute: int) -> int:
        """Minutes from `minute` until the window next opens (0 when open)."""
        if self.contains(minute):
            return 0
        return (self.start - minute) % 1440


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Schedule:
    """The configured windows; no windows means always open."""

    def __init__(self, windows: list[str]) -> None:
        self.windows = [Window.parse(w) for w in windows]

    @staticmethod
    def _minute_now() -> int:
        now = time.localtime()
        return now.tm_hour * 60 + now.tm_min

    def is_open(self, minute: int | None = None) -> bool:
        """May uploads run now?"""
        if not self.windows:
            return True
        minute = self._minute_now() if minute is None else minute
        return any(w.contains(minute) for w in self.windows)

    def seconds_until_open(self, minute: int | None = None) -> float:
        """Seconds until some window opens (0 when open); at least until the next minute."""
        if not self.windows:
            return 0.0
        minute = self._minute_now() if minute is None else minute
        wait = min(w.minutes_until_open(minute) for w in self.windows)
        if wait == 0:
            return 0.0
        return max(1.0, wait * 60.0 - time.localtime().tm_sec)


class Backoff:
    """Exponential backoff with jitter: initial * 2^n, capped, each delay drawn in [d/2, d]."""

    def __init__(self, initial_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before the next attempt."""
        ceiling = min(self.cap_s, self.initial_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """A success: start again from the initial delay."""
        self.failures = 0
