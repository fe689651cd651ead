"""Pass/fail counts, yield, defect classes and a time series for the current shift, per line.

Shifts start at the local times in `web.shift_starts`. A part counts once, with its latest
revision: a refinement that turns a provisional fail into a pass moves the part from fail to
pass (in the time bucket of its capture). The figures are kept up to date incrementally: each
refresh reads only the rows committed since the last one (by `seq`), so watching the console
costs a few cheap queries per second however long the shift. At a shift change (or after a
restart) the shift's rows are read once, starting from a `seq` found by binary search.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

_CHUNK = 5000
_PART_CACHE = 20_000


@dataclass(frozen=True, slots=True)
class Window:
    """One shift: [start_ms, end_ms) and the width of its chart buckets."""

    start_ms: int
    end_ms: int
    bucket_ms: int
    label: str

    @property
    def buckets(self) -> int:
        """Number of buckets in the shift."""
        return max(1, -(-(self.end_ms - self.start_ms) // self.bucket_ms))


def current_window(starts: list[str], now: datetime | None = None) -> Window:
    """The shift containing `now` (local time) for the given HH:MM start times."""
    now = now or datetime.now().astimezone()
    times = sorted(starts)
    candidates = []
    for day in (-1, 0, 1):
        base = (now + timedelta(days=day)).replace(second=0, microsecond=0)
        for text in times:
            hour, minute = (int(p) for p in text.split(":"))
            candidates.append(base.replace(hour=hour, minute=minute))
    candidates.sort()
    start = max(c for c in candidates if c <= now)
    end = min(c for c in candidates if c > start)
    span_min = (end - start).total_seconds() / 60
    bucket_min = next((b for b in (10, 15, 30, 60) if span_min / b <= 24), 120)
    label = f"{start:%a %H:%M} - {end:%H:%M}"
    return Window(int(start.timestamp() * 1000), int(end.timestamp() * 1000), bucket_min * 60_000, label)


@dataclass
class LineShift:
    """Counts of one line in one shift."""

    counts: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    buckets: dict[int, Counter[str]] = field(default_factory=dict)

    def add(self, verdict: str, cls: str | None, bucket: int, sign: int) -> None:
        """Count (+1) or uncount (-1) one part."""
        self.counts[verdict] += sign
        if verdict == "fail":
            self.classes[cls or "defect"] += sign
        self.buckets.setdefault(bucket, Counter())[verdict] += sign

    def to_json(self, window: Window) -> dict[str, Any]:
        """Totals, yield, classes (most frequent first) and the bucket series."""
        total = sum(self.counts.values())
        series = []
        for index in range(window.buckets):
            c = self.buckets.get(index, Counter())
            series.append(
                {
                    "start_ms": window.start_ms + index * window.bucket_ms,
                    "pass": c["pass"],
                    "fail": c["fail"],
                    "error": c["error"],
                }
            )
        return {
            "pass": self.counts["pass"],
            "fail": self.counts["fail"],
            "error": self.counts["error"],
            "total": total,
            "yield": round(self.counts["pass"] / total, 4) if total else None,
            "classes": [{"class": k, "count": v} for k, v in self.classes.most_common() if v > 0],
            "buckets": series,
        }


class ShiftStats:
    """Incrementally maintained per-line figures for the current shift."""

    def __init__(self, read: Callable[[], sqlite3.Connection], starts: list[str]) -> None:
        self._read = read
        self._starts = starts
        self._lock = threading.Lock()
        self._window: Window | None = None
        self._cursor = 0
        self._lines: dict[str, LineShift] = {}
        self._parts: OrderedDict[str, tuple[str, str, str | None, int]] = OrderedDict()

    def snapshot(self, lines: list[str]) -> dict[str, Any]:
        """{"window": ..., "lines": {line: figures}} for every configured line."""
        with self._lock:
            self._refresh()
            window = self._window
            assert window is not None
            return {
                "shift": {"start_ms": window.start_ms, "end_ms": window.end_ms, "label": window.label},
                "bucket_ms": window.bucket_ms,
                "lines": {line: self._lines.get(line, LineShift()).to_json(window) for line in lines},
            }

    def _refresh(self) -> None:
        conn = self._read()
        window = current_window(self._starts)
        if window != self._window:
            self._window = window
            self._lines = {}
            self._parts.clear()
            self._cursor = _first_seq_at(conn, window.start_ms) - 1
        while True:
            rows = conn.execute(
                "SELECT seq, part_id, revision, line, verdict, defect_class, ts_capture_ms FROM results "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._cursor, _CHUNK),
            ).fetchall()
            for row in rows:
                self._apply(conn, window, row)
            if rows:
                self._cursor = rows[-1]["seq"]
            if len(rows) < _CHUNK:
                return

    def _apply(self, conn: sqlite3.Connection, window: Window, row: sqlite3.Row) -> None:
        ts = row["ts_capture_ms"]
        if not window.start_ms <= ts < window.end_ms:
            return
        bucket = (ts - window.start_ms) // window.bucket_ms
        stats = self._lines.setdefault(row["line"], LineShift())
        part = row["part_id"]
        if row["revision"] > 0:
            previous = self._parts.pop(part, None) or _previous(conn, part, row["revision"], window)
            if previous is not None:
                stats_prev = self._lines.setdefault(previous[0], LineShift())
                stats_prev.add(previous[1], previous[2], previous[3], -1)
        stats.add(row["verdict"], row["defect_class"], bucket, +1)
        self._parts[part] = (row["line"], row["verdict"], row["defect_class"], bucket)
        while len(self._parts) > _PART_CACHE:
            self._parts.popitem(last=False)


def _previous(
    conn: sqlite3.Connection, part_id: str, revision: int, window: Window
) -> tuple[str, str, str | None, int] | None:
    """The part's previous revision when it was counted in this window (cache miss)."""
    row = conn.execute(
        "SELECT line, verdict, defect_class, ts_capture_ms FROM results WHERE part_id = ? AND revision < ? "
        "ORDER BY revision DESC LIMIT 1",
        (part_id, revision),
    ).fetchone()
    if row is None or not window.start_ms <= row["ts_capture_ms"] < window.end_ms:
        return None
    return (
        row["line"],
        row["verdict"],
        row["defect_class"],
        (row["ts_capture_ms"] - window.start_ms) // window.bucket_ms,
    )


def _first_seq_at(conn: sqlite3.Connection, start_ms: int) -> int:
    """Smallest seq committed at or after `start_ms` (seq and created_ms grow together)."""
    low, high = conn.execute("SELECT MIN(seq), MAX(seq) FROM results").fetchone()
    if low is None:
        return 1
    # Results refined later carry an older capture time: start a little before the shift.
    target = start_ms - 600_000
    while low < high:
        mid = (low + high) // 2
        row = conn.execute(
            "SELECT created_ms FROM results WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
        ).fetchone()
        if row is None or row["created_ms"] >= target:
            high = mid
        else:
            low = mid + 1
    return int(low)
