"""Results deleted by local retention before upload: counted once, alarmed, seen while offline."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.events import EventBus
from appliance.store.writer import StoreWriter
from appliance.sync.worker import SyncWorker


def retention(writer: StoreWriter, through: int) -> None:
    """What the store writer's retention does: delete from the head."""
    writer.call(lambda c: c.execute("DELETE FROM results WHERE seq <= ?", (through,))).result(timeout=10)


def file_settings(make_settings: Callable[..., Settings], export: Path, **sync: Any) -> Settings:
    return make_settings(
        sync={"target": f"file://{export}", "policy": "metadata", "batch_max_rows": 50, **sync}
    )


def uploaded_seqs(export: Path) -> list[int]:
    import gzip

    seqs = []
    for path in sorted(export.rglob("*.jsonl.gz")):
        seqs += [json.loads(line)["seq"] for line in gzip.decompress(path.read_bytes()).splitlines()]
    return seqs


def lost_events(events: EventBus) -> list[dict[str, Any]]:
    return [e.details for e in reversed(events.recent()) if e.kind == "sync_rows_lost"]


def test_rows_gone_before_the_first_sync_are_counted(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], tmp_path: Path
) -> None:
    """The cursor behind the oldest row on a first sync (after == 0) used to count nothing."""
    export = tmp_path / "export"
    export.mkdir()
    fill(10)
    retention(writer, 4)
    events = EventBus()
    worker = SyncWorker(file_settings(make_settings, export), writer, events)
    worker.prepare()
    worker.run_round()
    worker.stop()
    assert worker.rows_lost == 4 and worker.health()["rows_lost_to_retention"] == 4
    assert worker.health()["last_rows_lost"]["first_seq"] == 1
    assert lost_events(events) == [
        {"alarm": "sync:rows_lost", "first_seq": 1, "last_seq": 4, "rows": 4, "total": 4}
    ]
    assert uploaded_seqs(export) == list(range(5, 11))


def test_a_recorded_batch_reached_by_retention_while_offline(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], tmp_path: Path
) -> None:
    """The batch is recorded, its upload fails, retention deletes its head: seen offline, counted once."""
    export = tmp_path / "export"  # missing: the removable medium is not plugged in
    settings = file_settings(
        make_settings, export, interval_s=0.1, backoff_initial_s=0.1, backoff_max_s=0.2, stale_after_s=3600
    )
    fill(10)
    events = EventBus()
    worker = SyncWorker(settings, writer, events)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while worker.failures < 1:  # the batch 1..10 is recorded, its upload failed
            assert time.monotonic() < deadline
            time.sleep(0.05)
        retention(writer, 6)
        while worker.rows_lost < 6:  # detected while the target is still away
            assert time.monotonic() < deadline, worker.health()
            time.sleep(0.05)
        assert worker.synced_cursor == 0 and "sync:rows_lost" in {a.details["alarm"] for a in events.alarms()}
        fill(5, start=10)
        retention(writer, 8)  # more of the recorded batch goes before the medium returns
        export.mkdir()
        worker.kick()
        while worker.synced_cursor < 15:
            assert time.monotonic() < deadline, worker.health()
            time.sleep(0.05)
        time.sleep(0.3)  # a few more passes: nothing is counted twice
    finally:
        worker.stop()
    assert worker.rows_lost == 8
    assert [(d["first_seq"], d["last_seq"], d["total"]) for d in lost_events(events)] == [
        (1, 6, 6),
        (7, 8, 8),
    ]
    assert uploaded_seqs(export) == list(range(9, 16))
    manifest = json.loads(next(export.rglob("*000000000010.manifest.json")).read_text())
    assert manifest["missing_rows"] == 8
    assert "sync:rows_lost" not in {a.details.get("alarm") for a in events.alarms()}  # caught up: cleared
