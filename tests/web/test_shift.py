"""Shift windows and the incremental per-line figures, refinements included."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from appliance.auth import in_transaction
from appliance.results import now_ms
from appliance.store.db import open_store
from appliance.web.shift import ShiftStats, current_window

STARTS = ["06:00", "14:00", "22:00"]


def local(hour: int, minute: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hour, minute).astimezone()


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (local(6, 0), local(6), local(14)),
        (local(13, 59), local(6), local(14)),
        (local(23, 30), local(22), local(6, day=11)),
        (local(2, 0), local(22, day=9), local(6)),
    ],
)
def test_current_window(now: datetime, start: datetime, end: datetime) -> None:
    window = current_window(STARTS, now)
    assert window.start_ms == int(start.timestamp() * 1000)
    assert window.end_ms == int(end.timestamp() * 1000)
    assert window.bucket_ms == 30 * 60_000 and window.buckets == 16


def test_one_shift_per_day_uses_hour_buckets() -> None:
    window = current_window(["07:30"], local(12))
    assert (window.end_ms - window.start_ms) == 24 * 3_600_000 and window.bucket_ms == 3_600_000


def insert(
    conn: sqlite3.Connection, seq: int, part: str, revision: int, verdict: str, cls: str | None, ts: int
) -> None:
    with in_transaction(conn):
        conn.execute(
            "INSERT INTO results (seq, part_id, revision, line, camera, ts_capture_ms, created_ms, verdict, "
            "defect_class, confidence, tier, provisional, payload) "
            "VALUES (?, ?, ?, 'l1', 'c1', ?, ?, ?, ?, 1, 1, 0, '{}')",
            (seq, part, revision, ts, now_ms(), verdict, cls),
        )


def test_counts_follow_refinements_incrementally(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "a.db")
    stats = ShiftStats(lambda: conn, ["00:00"])  # one shift a day: everything today counts
    now = now_ms()
    insert(conn, 1, "p1", 0, "pass", None, now)
    insert(conn, 2, "p2", 0, "fail", "crack", now)
    insert(conn, 3, "old", 0, "fail", "crack", now - 2 * 86_400_000)  # yesterday's: not this shift
    figures = stats.snapshot(["l1", "l2"])["lines"]
    assert (figures["l1"]["pass"], figures["l1"]["fail"], figures["l1"]["yield"]) == (1, 1, 0.5)
    assert figures["l2"]["total"] == 0 and figures["l2"]["yield"] is None
    insert(conn, 4, "p2", 1, "pass", None, now)  # the refinement says p2 was good after all
    insert(conn, 5, "p3", 0, "fail", "blowhole", now)
    figures = stats.snapshot(["l1"])["lines"]["l1"]
    assert (figures["pass"], figures["fail"], figures["total"]) == (2, 1, 3)
    assert figures["classes"] == [{"class": "blowhole", "count": 1}]
    assert sum(b["pass"] + b["fail"] for b in figures["buckets"]) == 3
    fresh = ShiftStats(lambda: conn, ["00:00"])  # after a restart: read from the store once
    again = fresh.snapshot(["l1"])["lines"]["l1"]
    assert (again["pass"], again["fail"]) == (2, 1)
    conn.close()
