"""Result batches: deterministic boundaries, keys and bytes; exactly-once across crashes."""

from __future__ import annotations

import gzip
import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.events import EventBus
from appliance.store.db import connect
from appliance.store.writer import StoreWriter
from appliance.sync import batches
from appliance.sync.worker import SyncWorker

HERE = Path(__file__).resolve().parent


def s3_settings(make_settings: Callable[..., Settings], bucket: Any, **sync: Any) -> Settings:
    config = {
        "target": f"s3://{bucket.name}/plant",
        "endpoint_url": bucket.endpoint,
        "policy": "metadata",
        "batch_max_rows": 10,
        **sync,
    }
    return make_settings(site="site-a", sync=config)


def worker_for(settings: Settings, writer: StoreWriter) -> SyncWorker:
    worker = SyncWorker(settings, writer, EventBus())
    worker.prepare()
    return worker


def test_key_layout_and_deterministic_bytes(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any]
) -> None:
    fill(7, ts_ms=1_764_300_000_000)  # 2025-11-28 03:20 UTC
    conn = connect(make_settings().db_path, readonly=True)
    boundary = batches.next_boundary(conn, 5)
    assert boundary is not None and (boundary.first_seq, boundary.last_seq, boundary.rows) == (1, 5, 5)
    batch = writer.call(batches.record_op(boundary, "site-a", "test-node")).result()
    assert batch.key == "site-a/test-node/results/2025/11/28/000000000001-000000000005.jsonl.gz"
    assert batch.manifest_key.endswith("000000000001-000000000005.manifest.json")
    first, again = batches.build(conn, batch), batches.build(conn, batch)
    assert first.data == again.data and first.sha256 == hashlib.sha256(first.data).hexdigest()
    assert first.data[4:8] == b"\0\0\0\0"  # gzip mtime zero: same bytes on every rebuild
    lines = gzip.decompress(first.data).decode().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5]
    assert batches.pending_batch(conn) == batch
    nxt = batches.next_boundary(conn, 5)
    assert nxt is not None and (nxt.first_seq, nxt.last_seq) == (6, 7)
    conn.close()


def test_worker_uploads_every_seq_once_with_manifests(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], bucket: Any
) -> None:
    fill(25)
    fill(3, start=100, verdict="fail", score=0.9, defect_class="crack")
    worker = worker_for(s3_settings(make_settings, bucket), writer)
    worker.run_round()
    assert bucket.result_seqs("plant/") == [list(range(1, 11)), list(range(11, 21)), list(range(21, 29))]
    manifests = [k for k in bucket.list_keys("plant/") if k.endswith(".manifest.json")]
    assert len(manifests) == 3
    last = json.loads(bucket.get(manifests[-1]))
    data = bucket.get(manifests[-1].replace(".manifest.json", ".jsonl.gz"))
    assert last["sha256"] == hashlib.sha256(data).hexdigest()
    assert (last["first_seq"], last["last_seq"], last["rows"], last["counts"]) == (
        21,
        28,
        8,
        {"fail": 3, "pass": 5},
    )
    assert worker.health()["backlog"]["results"] == 0
    # Nothing new: a second round uploads nothing.
    worker.run_round()
    assert len(bucket.result_seqs("plant/")) == 3
    fill(4, start=200)
    worker.run_round()
    assert bucket.result_seqs("plant/")[-1] == [29, 30, 31, 32]
    worker.stop()


def test_crash_between_upload_and_commit_reuploads_same_key_without_duplicates(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], bucket: Any
) -> None:
    """Simulated in-process: the objects are up, the commit never happened; a new worker resumes."""
    fill(15)
    settings = s3_settings(make_settings, bucket)
    first = worker_for(settings, writer)
    assert first._conn is not None and first.target is not None
    boundary = batches.next_boundary(first._conn, 10)
    assert boundary is not None
    batch = writer.call(batches.record_op(boundary, settings.site, settings.node_id)).result()
    built = batches.build(first._conn, batch)
    first.target.put(batch.key, built.data, content_type="application/gzip")
    first.target.put(
        batch.manifest_key,
        batches.manifest(batch, built, settings.site, settings.node_id, first.store_id),
        content_type="application/json",
    )
    first.stop()  # "crash": batch recorded, objects uploaded, never committed
    before = bucket.client.head_object(Bucket=bucket.name, Key=f"plant/{batch.key}")["LastModified"]

    again = worker_for(settings, writer)
    again.run_round()
    assert again.skipped_existing == 1
    assert bucket.result_seqs("plant/") == [list(range(1, 11)), list(range(11, 16))]
    after = bucket.client.head_object(Bucket=bucket.name, Key=f"plant/{batch.key}")["LastModified"]
    assert after == before  # not written again
    again.stop()


def test_sigkill_between_upload_and_commit(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], bucket: Any
) -> None:
    fill(23)
    settings = s3_settings(make_settings, bucket, interval_s=0.1)
    writer.stop()  # the subprocess owns the database while it runs
    harness = subprocess.run(
        [sys.executable, str(HERE / "kill_after_upload.py"), settings.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert harness.returncode == -signal.SIGKILL, harness.stderr
    conn = connect(settings.db_path, readonly=True)
    row = conn.execute("SELECT first_seq, last_seq, synced_ms FROM sync_batches").fetchall()
    conn.close()
    assert [tuple(r) for r in row] == [(1, 10, None)]  # uploaded, never committed
    assert bucket.result_seqs("plant/") == [list(range(1, 11))]

    restarted = StoreWriter(settings.db_path, settings.node_id, settings.store)
    restarted.start()
    try:
        worker = worker_for(settings, restarted)
        worker.run_round()
        worker.stop()
    finally:
        restarted.stop()
    seqs = bucket.result_seqs("plant/")
    flat = [s for batch in seqs for s in batch]
    assert flat == list(range(1, 24))  # every seq exactly once, in order
    assert worker.skipped_existing == 1


def test_rows_deleted_by_retention_before_sync_are_counted_and_reported(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], bucket: Any
) -> None:
    fill(10)
    events = EventBus()
    worker = SyncWorker(s3_settings(make_settings, bucket), writer, events)
    worker.prepare()
    worker.run_round()
    fill(10, start=10)
    writer.call(lambda c: c.execute("DELETE FROM results WHERE seq BETWEEN 11 AND 15")).result()
    worker.run_round()
    worker.stop()
    assert worker.rows_lost == 5 and worker.health()["rows_lost_to_retention"] == 5
    assert [e.details for e in events.recent() if e.kind == "sync_rows_lost"] == [
        {"alarm": "sync:rows_lost", "first_seq": 11, "last_seq": 15, "rows": 5, "total": 5}
    ]
    assert bucket.result_seqs("plant/") == [list(range(1, 11)), list(range(16, 21))]
