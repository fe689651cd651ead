"""The SQLite outbox: gap-free seq across restarts, batching, a full disk, migrations."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from appliance.config import StoreConfig
from appliance.results import Verdict
from appliance.store.db import MIGRATIONS, StoreError, connect, migrate, open_store
from appliance.store.writer import StoreWriter


def verdict(n: int, revision: int = 0) -> Verdict:
    return Verdict(
        part_id=f"p{n}",
        revision=revision,
        line="line1",
        camera="cam1",
        ts_capture_ms=1_700_000_000_000 + n,
        verdict="pass",
        defect_class=None,
        confidence=0.9,
        score=0.1,
        tier=1,
        provisional=False,
        defects=(),
        inference_ms=1.0,
        total_ms=2.0,
        model=None,
    )


def seqs(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT seq FROM results ORDER BY seq")]
    finally:
        conn.close()


def test_seq_is_gap_free_and_survives_restarts(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    for run in range(3):
        writer = StoreWriter(db, "node", StoreConfig())
        writer.start()
        for n in range(50):
            writer.put(verdict(run * 100 + n))
        writer.stop()
    assert seqs(db) == list(range(1, 151))
    conn = sqlite3.connect(db)
    payload = json.loads(conn.execute("SELECT payload FROM results WHERE seq = 77").fetchone()[0])
    conn.close()
    assert payload["seq"] == 77 and payload["msg_id"] == "node-77"
    assert payload["schema"] == "vision.result/1"


def test_seq_is_never_reused_after_rows_are_deleted(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    writer = StoreWriter(db, "node", StoreConfig())
    writer.start()
    for n in range(5):
        writer.put(verdict(n))
    writer.call(lambda conn: conn.execute("DELETE FROM results")).result(5)
    writer.put(verdict(99))
    writer.stop()
    assert seqs(db) == [6]


def test_duplicate_part_revision_is_ignored_without_consuming_a_seq(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    writer = StoreWriter(db, "node", StoreConfig())
    writer.start()
    writer.put(verdict(1))
    writer.put(verdict(1))
    writer.put(verdict(2))
    writer.stop()
    assert seqs(db) == [1, 2]


def test_results_are_batched_into_few_transactions(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig(batch_max_rows=64, batch_max_ms=50))
    writer.start()
    for n in range(300):
        writer.put(verdict(n))
    writer.stop()
    assert writer.rows_committed == 300
    assert writer.batches_committed < 60


def test_a_burst_is_not_held_back_by_the_wait_to_fill_a_batch(tmp_path: Path) -> None:
    # Ten batches' worth at once: only a batch that is not full yet waits batch_max_ms (1 s).
    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig(batch_max_rows=64, batch_max_ms=1000))
    writer.start()
    began = time.monotonic()
    for n in range(640):
        writer.put(verdict(n))
    while writer.rows_committed < 640 and time.monotonic() - began < 30:
        time.sleep(0.01)
    elapsed = time.monotonic() - began
    writer.stop()
    assert writer.rows_committed == 640
    assert elapsed < 5, f"a burst of 640 took {elapsed:.1f} s: the writer waited with full batches"


def test_an_idle_writer_does_not_wait_to_fill_a_batch(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig(batch_max_ms=3000))
    writer.start()
    event = writer.subscribe()
    writer.put(verdict(1))
    assert event.wait(1.5), "a lone verdict waited for a batch to fill"
    writer.stop()
    assert seqs(tmp_path / "a.db") == [1]


def test_commit_wakes_subscribers(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig())
    writer.start()
    event = writer.subscribe()
    writer.put(verdict(1))
    assert event.wait(5)
    writer.stop()


def test_call_runs_in_a_transaction_and_reports_its_own_error(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig())
    writer.start()
    assert writer.call(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0]).result(5) == 42
    failing = writer.call(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        failing.result(5)
    writer.put(verdict(1))  # the writer goes on
    writer.stop()
    assert seqs(tmp_path / "a.db") == [1]


def test_a_full_disk_stalls_writes_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    writer = StoreWriter(db, "node", StoreConfig(batch_max_rows=8, queue_size=64))
    writer.start()
    writer.put(verdict(0))
    deadline = time.monotonic() + 5
    while writer.last_seq < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    pages = writer._conn.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[union-attr]
    # SQLite's own limit is the most faithful way to make the disk "full" without root.
    writer._conn.execute(f"PRAGMA max_page_count = {pages}")  # type: ignore[union-attr]
    producer = threading.Thread(target=lambda: [writer.put(verdict(n)) for n in range(1, 200)])
    producer.start()
    deadline = time.monotonic() + 10
    while writer.retries < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.retries >= 3
    assert writer.health()["state"] == "degraded"
    assert "full" in (writer.health()["last_error"] or "")
    writer._conn.execute("PRAGMA max_page_count = 1073741823")  # type: ignore[union-attr]
    producer.join(20)
    writer.stop()
    assert seqs(db) == list(range(1, 201))


def test_migrations_run_once_and_an_additive_newer_schema_still_opens(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    conn = open_store(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert migrate(conn) == len(MIGRATIONS)  # idempotent
    conn.close()
    # A newer release adds a table: this (older) release can still run on the database,
    # which is what lets a failed upgrade roll back.
    newer = [*MIGRATIONS, "CREATE TABLE added_later (x);"]
    conn = connect(db)
    assert migrate(conn, newer) == len(newer)
    conn.close()
    conn = open_store(db)
    conn.close()


def test_a_breaking_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    open_store(db).close()
    newer = [*MIGRATIONS, "ALTER TABLE results RENAME COLUMN verdict TO outcome;"]
    conn = connect(db)
    migrate(conn, newer, breaking=frozenset({len(newer)}))
    conn.close()
    with pytest.raises(StoreError, match="newer than this software .* refusing"):
        open_store(db)


def test_a_failing_migration_rolls_back(tmp_path: Path) -> None:
    conn = connect(tmp_path / "a.db")
    with pytest.raises(StoreError, match="migration 2 failed"):
        migrate(conn, ["CREATE TABLE t (x);", "CREATE TABLE u (y); CREATE TABLE t (z);"])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'u'").fetchone() is None


def test_retention_drops_oldest_rows_beyond_budget_and_counts_undelivered(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig(max_rows=1000))
    writer.start()
    for n in range(1100):
        writer.put(verdict(n))
    writer.call(lambda conn: conn.execute("UPDATE results SET published_ms = 1 WHERE seq <= 40")).result(5)
    deleted = writer.call(writer._retention).result(5)
    writer.stop()
    assert deleted == 100
    assert seqs(tmp_path / "a.db")[0] == 101
    assert writer.dropped_unpublished == 60


def test_writes_handed_over_after_stop_fail_instead_of_hanging(tmp_path: Path) -> None:
    from appliance.store.writer import WriterFailed

    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig())
    writer.start()
    writer.stop()
    with pytest.raises(WriterFailed, match="stopped"):
        writer.call(lambda conn: 1).result(5)


def test_without_a_broker_retention_does_not_count_rows_as_undelivered(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig(max_rows=1000), track_unpublished=False)
    writer.start()
    for n in range(1010):
        writer.put(verdict(n))
    assert writer.call(writer._retention).result(5) == 10
    writer.stop()
    assert writer.dropped_unpublished == 0


def test_a_failing_companion_write_keeps_the_verdict_and_the_writer(tmp_path: Path) -> None:
    def broken(_conn: sqlite3.Connection) -> None:
        raise PermissionError("pending/ is not writable")

    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig())
    writer.start()
    writer.put(verdict(1), also=broken)
    writer.put(verdict(2))
    writer.stop()
    assert writer.failed is None
    assert seqs(tmp_path / "a.db") == [1, 2]


def test_a_verdict_handed_over_after_stop_is_refused_loudly(tmp_path: Path) -> None:
    from appliance.store.writer import WriterFailed

    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig())
    writer.start()
    writer.stop()
    with pytest.raises(WriterFailed, match="not written"):
        writer.put(verdict(1))


def test_a_full_queue_fails_a_call_after_its_deadline_instead_of_blocking(tmp_path: Path) -> None:
    from appliance.store.writer import WriterBusy

    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig(queue_size=16))
    gate = threading.Event()
    writer.start()
    writer.call(lambda conn: gate.wait(10))  # holds the writer thread
    time.sleep(0.2)
    for n in range(16):
        writer.put(verdict(n))
    started = time.monotonic()
    late = writer.call(lambda conn: 1, enqueue_timeout=0.5)
    with pytest.raises(WriterBusy):
        late.result(5)
    assert time.monotonic() - started < 3
    assert writer.backpressure_since is None or writer.backpressure_since > 0
    gate.set()
    writer.stop()
    assert seqs(tmp_path / "a.db") == list(range(1, 17))


def test_a_payload_never_carries_nan(tmp_path: Path) -> None:
    from dataclasses import replace

    writer = StoreWriter(tmp_path / "a.db", "node", StoreConfig())
    writer.start()
    writer.put(replace(verdict(1), confidence=float("nan"), total_ms=float("inf")))
    writer.stop()
    conn = sqlite3.connect(tmp_path / "a.db")
    payload = conn.execute("SELECT payload FROM results").fetchone()[0]
    conn.close()
    assert "NaN" not in payload and "Infinity" not in payload
    assert json.loads(payload)["confidence"] is None
