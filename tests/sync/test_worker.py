"""The sync worker: bandwidth cap, schedule windows, backoff, policies, health, alarms."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.config import Settings
from appliance.events import EventBus
from appliance.results import Frame
from appliance.store.writer import StoreWriter
from appliance.sync.images import ImageStore
from appliance.sync.worker import SyncWorker
from tests.sync.support import add_label, flush, make_verdict, mark_hard_case


def add_cases(settings: Settings, writer: StoreWriter, count: int, seed: int = 0) -> None:
    """`count` failed parts with noise frames kept on disk and selected as hard cases."""
    store = ImageStore(settings.state_dir / "images", settings.sync.images, EventBus())
    rng = np.random.default_rng(seed)
    for i in range(count):
        verdict = make_verdict(f"hc{i:03d}", verdict="fail", score=0.9, defect_class="crack")
        writer.put(verdict)
        image = rng.integers(0, 255, (240, 320), dtype=np.uint8)
        frame = Frame("line1", "cam1", verdict.part_id, i, verdict.ts_capture_ms, time.monotonic(), image)
        saved = store.save(frame, verdict, "class")
        assert saved is not None
        writer.call(store.insert_op(saved))
        mark_hard_case(writer, verdict.part_id)
    flush(writer)


def worker_for(settings: Settings, writer: StoreWriter, events: EventBus | None = None) -> SyncWorker:
    worker = SyncWorker(settings, writer, events or EventBus())
    worker.prepare()
    return worker


def test_bandwidth_cap_holds_within_20_percent(
    make_settings: Callable[..., Settings], writer: StoreWriter, proxy: Any, bucket: Any
) -> None:
    cap = 100_000
    settings = make_settings(
        sync={
            "target": f"s3://{bucket.name}",
            "endpoint_url": proxy.endpoint,
            "policy": "frames",
            "bandwidth_bytes_s": cap,
        }
    )
    add_cases(settings, writer, 6)
    worker = worker_for(settings, writer)
    proxy.sent.clear()
    worker.run_round()
    worker.stop()
    assert worker.cases == 6
    sent = [n for _, n in proxy.sent]
    span = proxy.sent[-1][0] - proxy.sent[0][0]
    total = sum(sent)
    assert total > 3 * cap, f"only {total} bytes sent: the test needs a few seconds of traffic"
    rate = total / span
    print(f"bandwidth: {rate:.0f} B/s on the wire for a cap of {cap} B/s ({rate / cap:.3f})")
    # Measured on the wire (bodies and HTTP headers), over the whole transfer.
    assert rate <= 1.2 * cap, f"{rate:.0f} B/s against a cap of {cap} B/s"


def test_closed_window_uploads_nothing(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], bucket: Any
) -> None:
    now = time.localtime()
    start = (now.tm_hour * 60 + now.tm_min + 120) % 1440  # opens in two hours
    end = (start + 60) % 1440
    window = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    settings = make_settings(
        sync={
            "target": f"s3://{bucket.name}",
            "endpoint_url": bucket.endpoint,
            "policy": "metadata",
            "windows": [window],
            "interval_s": 0.1,
        }
    )
    fill(5)
    worker = SyncWorker(settings, writer, EventBus())
    worker.start()
    time.sleep(0.5)
    health = worker.health()
    worker.stop()
    assert bucket.list_keys() == []
    assert health["activity"] == "window closed" and health["window_open"] is False
    assert health["backlog"]["results"] == 5


def test_failures_back_off_with_jitter_and_raise_the_stale_alarm(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], bucket: Any
) -> None:
    settings = make_settings(
        sync={
            "target": f"s3://{bucket.name}",
            "endpoint_url": "http://127.0.0.1:9",  # nothing listens there
            "policy": "metadata",
            "interval_s": 0.1,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.4,
            "stale_after_s": 1,
            "timeout_s": 1,
        }
    )
    fill(3)
    events = EventBus()
    worker = SyncWorker(settings, writer, events)
    worker.start()
    time.sleep(2.5)
    health = worker.health()
    worker.stop()
    assert health["state"] == "degraded"
    assert health["failures"] >= 3
    assert 0 <= health["retry_in_s"] <= 0.4
    assert "EndpointConnectionError" in health["last_error"]
    assert health["backlog"]["oldest_unsynced_age_s"] > 1
    assert "sync_stale" in {a.kind for a in events.alarms()}
    assert [e for e in events.recent() if e.kind == "sync_failed"]


def test_metadata_policy_sends_case_json_but_no_pixels(
    make_settings: Callable[..., Settings], writer: StoreWriter, bucket: Any
) -> None:
    settings = make_settings(
        sync={"target": f"s3://{bucket.name}", "endpoint_url": bucket.endpoint, "policy": "metadata"}
    )
    add_cases(settings, writer, 2)
    worker = worker_for(settings, writer)
    worker.run_round()
    worker.stop()
    keys = bucket.list_keys()
    assert [k for k in keys if k.endswith("case.json")] and not [
        k for k in keys if k.endswith((".jpg", ".png"))
    ]
    case = json.loads(bucket.get(next(k for k in keys if k.endswith("case.json"))))
    assert case["schema"] == "vision.case/1" and case["image_status"] == "withheld by policy"
    assert case["reasons"][0]["reason"] == "class" and case["results"][0]["verdict"] == "fail"


def test_labels_are_synced_without_the_operator_name(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], bucket: Any
) -> None:
    settings = make_settings(
        sync={"target": f"s3://{bucket.name}", "endpoint_url": bucket.endpoint, "policy": "metadata"}
    )
    fill(2)
    add_label(writer, "p0001", "pass", None, user="alice.smith")
    worker = worker_for(settings, writer)
    worker.run_round()
    worker.stop()
    [key] = [k for k in bucket.list_keys() if k.endswith("case.json")]
    body = bucket.get(key)
    assert b"alice" not in body
    case = json.loads(body)
    assert case["part_id"] == "p0001" and case["labels"] == [
        {"verdict": "pass", "defect_class": None, "created_ms": 1}
    ]


def test_kick_starts_a_round_at_once_and_health_reports_the_drain(
    make_settings: Callable[..., Settings], writer: StoreWriter, fill: Callable[..., Any], tmp_path: Path
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    settings = make_settings(
        sync={"target": f"file://{export}", "policy": "metadata", "interval_s": 3600, "batch_max_rows": 50}
    )
    worker = SyncWorker(settings, writer, EventBus())
    worker.start()
    time.sleep(0.3)  # the first round ran (nothing to do) and now waits an hour
    fill(500)
    worker.kick()
    deadline = time.monotonic() + 10
    while worker.last_round.get("rows") != 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    health = worker.health()
    worker.stop()
    assert worker.synced_cursor == 500
    drain = health["last_drain"]
    assert (
        drain["batches"] == 10 and drain["rows"] == 500 and drain["rows_per_s"] > 0 and drain["mb_per_s"] > 0
    )


def test_unreadable_credentials_fail_the_start_with_a_clear_message(
    make_settings: Callable[..., Settings], writer: StoreWriter, tmp_path: Path
) -> None:
    settings = make_settings(
        sync={"target": "s3://bkt", "policy": "metadata", "credentials_file": str(tmp_path / "missing")}
    )
    with pytest.raises(RuntimeError, match="credentials_file .*missing: cannot read"):
        SyncWorker(settings, writer, EventBus()).start()


def test_a_pass_that_raises_is_counted_and_the_worker_goes_on(
    make_settings: Callable[..., Settings],
    writer: StoreWriter,
    fill: Callable[..., Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception outside a round (here the stale check) used to end the sync thread for good."""
    export = tmp_path / "export"
    export.mkdir()
    settings = make_settings(sync={"target": f"file://{export}", "policy": "metadata", "interval_s": 0.1})
    worker = SyncWorker(settings, writer, EventBus())
    real = worker._oldest_unsynced_age_s
    calls = {"n": 0}

    def flaky() -> float | None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("stale check bug")
        return real()

    worker._oldest_unsynced_age_s = flaky  # type: ignore[method-assign]
    worker.start()
    try:
        fill(5)
        deadline = time.monotonic() + 10
        while worker.synced_cursor < 5 or worker.guard.failing:
            assert time.monotonic() < deadline, worker.health()
            time.sleep(0.05)
        health = worker.health()
        assert worker.alive and worker.failed is None
        assert health["iteration_errors"] == 2 and "stale check bug" in health["last_unexpected_error"]
    finally:
        worker.stop()
    assert any(r.exc_info for r in caplog.records if "iteration failed" in r.getMessage())
    caplog.clear()  # logged on purpose
