"""Results from the outbox to the broker: every seq, in order, schema-valid, marked on PUBACK."""

from __future__ import annotations

import json
import time

from appliance.store.db import connect

RESULT_KEYS = {
    "schema", "msg_id", "seq", "part_id", "revision", "line", "camera", "ts_capture_ms",
    "ts_publish_ms", "verdict", "defect_class", "confidence", "tier", "provisional", "defects",
    "latency_ms", "model", "replayed",
}


def test_results_delivered_in_seq_order_with_schema(mqtt_settings, listen, run_service):
    settings = mqtt_settings()
    topic = f"vision/{settings.node_id}/line/line1/result"
    listener = listen([topic])
    with run_service(settings) as service:
        listener.wait_for(lambda ms: len(ms) >= 20)
        last = service.writer.last_seq
    payloads = [json.loads(m.payload) for m in listener.on(topic)]
    seqs = [p["seq"] for p in payloads]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] >= min(20, last)
    for p in payloads:
        assert RESULT_KEYS <= set(p)
        assert p["schema"] == "vision.result/1"
        assert p["msg_id"] == f"{settings.node_id}-{p['seq']}"
        assert p["verdict"] in {"pass", "fail", "error"}
        assert p["ts_publish_ms"] >= p["ts_capture_ms"]
        assert p["replayed"] is False
        assert set(p["latency_ms"]) == {"inference", "total"}
        assert set(p["model"]) == {"name", "version", "sha256"}
    conn = connect(settings.db_path, readonly=True)
    try:
        marked = conn.execute("SELECT seq, published_ms, payload FROM results WHERE published_ms IS NOT NULL").fetchall()
    finally:
        conn.close()
    delivered = {p["seq"]: p for p in payloads}
    assert marked, "delivered rows must be marked published"
    for row in marked:
        assert row["seq"] in delivered
        assert row["published_ms"] == delivered[row["seq"]]["ts_publish_ms"]
