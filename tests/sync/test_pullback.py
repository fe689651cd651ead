"""Cloud verdicts pulled back and published as refinements of the part."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from appliance.config import Settings
from appliance.events import EventBus
from appliance.store.db import connect
from appliance.store.writer import StoreWriter
from appliance.sync.images import day_path
from appliance.sync.worker import SyncWorker
from tests.sync.support import flush, make_verdict

EXPERT = {"name": "expert", "version": "3.1", "sha256": "ab" * 32}


def cloud_verdict(part_id: str, verdict: str = "fail", **extra: Any) -> bytes:
    doc = {
        "schema": "vision.cloud-verdict/1",
        "part_id": part_id,
        "verdict": verdict,
        "defect_class": "crack" if verdict == "fail" else None,
        "confidence": 0.97,
        "defects": [{"class": "crack", "confidence": 0.97, "bbox": [1, 2, 30, 40]}]
        if verdict == "fail"
        else [],
        "model": EXPERT,
        "ts_ms": 1,
        **extra,
    }
    return json.dumps(doc).encode()


def put_verdict(bucket: Any, name: str, body: bytes, day: str | None = None) -> None:
    day = day or day_path(int(time.time() * 1000))
    bucket.client.put_object(
        Bucket=bucket.name, Key=f"demo-site/test-node/verdicts/{day}/{name}.json", Body=body
    )


def history(writer: StoreWriter, part: str) -> list[dict[str, Any]]:
    flush(writer)
    conn = connect(writer.path, readonly=True)
    rows = [
        json.loads(r[0])
        for r in conn.execute("SELECT payload FROM results WHERE part_id = ? ORDER BY seq", (part,))
    ]
    conn.close()
    return rows


def pull(settings: Settings, writer: StoreWriter) -> SyncWorker:
    worker = SyncWorker(settings, writer, EventBus())
    worker.prepare()
    worker.run_round()
    worker.stop()
    return worker


def settings_for(
    make_settings: Callable[..., Settings], bucket: Any, tiers: list[str] | None = None
) -> Settings:
    return make_settings(
        tiers=tiers,
        sync={"target": f"s3://{bucket.name}", "endpoint_url": bucket.endpoint, "policy": "metadata"},
    )


def test_cloud_verdict_becomes_the_next_revision(
    make_settings: Callable[..., Settings], writer: StoreWriter, bucket: Any
) -> None:
    writer.put(make_verdict("part-a", score=0.5))
    writer.put(make_verdict("part-b", score=0.5))
    put_verdict(bucket, "part-a", cloud_verdict("part-a", "fail"))
    put_verdict(bucket, "part-b", cloud_verdict("part-b", "pass"))
    settings = settings_for(make_settings, bucket, tiers=["bright1", "cloud"])
    worker = pull(settings, writer)
    [first, refined] = history(writer, "part-a")
    assert (refined["revision"], refined["tier"], refined["refinement"]) == (1, 2, "changed")
    assert refined["verdict"] == "fail" and refined["defect_class"] == "crack" and not refined["provisional"]
    assert refined["model"]["name"] == "expert" and refined["defects"][0]["bbox"] == [1, 2, 30, 40]
    assert refined["seq"] > first["seq"]
    assert history(writer, "part-b")[-1]["refinement"] == "confirmed"
    assert worker.puller is not None and worker.puller.health()["applied"] == 2
    # Pulled again: nothing new.
    assert len(history(writer, "part-a")) == 2
    pull(settings, writer)
    assert len(history(writer, "part-a")) == 2
    # The cloud rewrites its verdict (new ETag): one more revision.
    put_verdict(bucket, "part-a", cloud_verdict("part-a", "pass", confidence=0.6))
    pull(settings, writer)
    assert [r["revision"] for r in history(writer, "part-a")] == [0, 1, 2]


def test_bad_objects_are_rejected_once_and_provisional_parts_wait(
    make_settings: Callable[..., Settings], writer: StoreWriter, bucket: Any
) -> None:
    writer.put(make_verdict("pending", score=0.5, provisional=True))
    put_verdict(bucket, "garbage", b"{not json")
    put_verdict(bucket, "wrong", cloud_verdict("x", verdict="maybe"))
    put_verdict(bucket, "stranger", cloud_verdict("not-from-this-node"))
    put_verdict(bucket, "pending", cloud_verdict("pending"))
    settings = settings_for(make_settings, bucket)
    worker = pull(settings, writer)
    assert worker.puller is not None
    assert worker.puller.rejected == 3 and worker.puller.waiting == 1
    conn = connect(writer.path, readonly=True)
    rejected = dict(
        conn.execute("SELECT part_id, detail FROM cloud_verdicts WHERE status = 'rejected'").fetchall()
    )
    conn.close()
    assert "unknown part" in rejected["not-from-this-node"]
    assert len(history(writer, "pending")) == 1  # the ladder still owns it
    # The ladder refines it (final); the next pull applies the cloud's verdict on top.
    writer.put(make_verdict("pending", revision=1, score=0.5))
    again = pull(settings, writer)
    assert again.puller is not None and again.puller.rejected == 0 and again.puller.applied == 1
    assert [r["revision"] for r in history(writer, "pending")] == [0, 1, 2]


def test_old_day_folders_are_not_listed_again(
    make_settings: Callable[..., Settings], writer: StoreWriter, bucket: Any
) -> None:
    writer.put(make_verdict("late", score=0.5))
    settings = settings_for(make_settings, bucket)
    pull(settings, writer)  # a complete pass: remembers when
    put_verdict(bucket, "late", cloud_verdict("late"), day="2020/01/01")
    pull(settings, writer)
    assert len(history(writer, "late")) == 1  # written into a day long past: not looked at
    put_verdict(bucket, "late", cloud_verdict("late"))
    pull(settings, writer)
    assert len(history(writer, "late")) == 2
