"""Health (retained, expiring), line state (retained), events, and the store alarms."""

from __future__ import annotations

import json
import time

from appliance.mqtt.state import StoreAlarms
from appliance.service import Service

BASE = "vision/test-node"


def test_health_retained_with_expiry_then_gone(mqtt_settings, run_service, listen):
    settings = mqtt_settings(health_interval_s=1.0)
    with run_service(settings):
        early = listen([f"{BASE}/health"])
        early.wait_for(lambda ms: any(not m.retain for m in ms))  # this run's, not a leftover
        late = listen([f"{BASE}/health", f"{BASE}/line/line1/state"])  # gets the retained ones
        late.wait_for(lambda ms: {m.topic for m in ms} >= {f"{BASE}/health", f"{BASE}/line/line1/state"})
        health = late.on(f"{BASE}/health")[0]
        assert health.retain
        assert 0 < health.properties.MessageExpiryInterval <= 3  # three intervals
        doc = json.loads(health.payload)
        assert doc["schema"] == "vision.health/1" and doc["status"] in {"ok", "degraded"}
        assert doc["components"]["mqtt"]["link"]["connection"] == "connected"
        state = json.loads(late.on(f"{BASE}/line/line1/state")[0].payload)
        assert state["schema"] == "vision.state/1" and state["running"] is True
        assert state["models"][0]["name"] == "bright1" and state["models"][0]["tier"] == 1
        assert set(state["counters"]) >= {"pass", "fail", "error", "total"}
        assert "cam1" in state["cameras"]
    time.sleep(3.5)  # the last health expires; a dead appliance's health must not linger
    after = listen([f"{BASE}/health", f"{BASE}/line/line1/state", f"{BASE}/availability"])
    after.wait_for(lambda ms: any(m.topic.endswith("availability") for m in ms))
    time.sleep(0.3)
    assert not after.on(f"{BASE}/health")
    assert after.on(f"{BASE}/line/line1/state"), "line state stays retained (availability says offline)"


def test_outbox_dropping_alarm_reaches_the_event_topic(mqtt_settings, run_service, listen):
    events = listen([f"{BASE}/event"])
    with run_service(mqtt_settings(health_interval_s=1.0)) as service:
        service.writer.dropped_unpublished += 7  # what retention does when undelivered rows go
        events.wait_for(lambda ms: any(json.loads(m.payload)["kind"] == "outbox_dropping" for m in ms))
    event = next(
        json.loads(m.payload) for m in events.messages if json.loads(m.payload)["kind"] == "outbox_dropping"
    )
    assert event["schema"] == "vision.event/1" and event["severity"] == "alarm"
    assert event["details"]["alarm"] == "outbox_dropping" and "7" in event["message"]


def test_store_alarms_near_cap_and_disk_low(make_settings):
    settings = make_settings(store={"max_rows": 1000, "min_free_mb": 10**9})
    settings.state_dir.mkdir(parents=True)
    service = Service(settings)
    backlog = {"rows": 950}
    alarms = StoreAlarms(service, lambda: (backlog["rows"], None))
    alarms.check()
    active = {a.details["alarm"]: a for a in service.events.alarms()}
    assert "95%" in active["outbox_dropping"].message
    assert "disk low" in active["disk_low"].message
    backlog["rows"] = 100
    alarms.check()
    assert "outbox_dropping" not in {a.details["alarm"] for a in service.events.alarms()}
    assert any(e.kind == "outbox_recovered" for e in service.events.recent())


def test_a_bad_event_or_pass_does_not_stop_health_and_events(mqtt_settings, run_service, listen, caplog):
    """An event that cannot be serialised is dropped; a failing pass backs off; the rest goes on."""
    events = listen([f"{BASE}/event", f"{BASE}/health"])
    with run_service(mqtt_settings(health_interval_s=1.0)) as service:
        publisher = service.components["mqtt"].state
        events.wait_for(lambda ms: any(m.topic.endswith("/health") for m in ms))
        loop: dict[str, object] = {}
        loop["self"] = loop  # asdict() recurses without end
        service.events.emit("weird", "an event with circular details", details=loop)
        service.events.emit("after", "the event behind it")
        events.wait_for(lambda ms: any(json.loads(m.payload).get("kind") == "after" for m in ms))
        assert not any(json.loads(m.payload).get("kind") == "weird" for m in events.messages)

        def broken() -> None:
            raise RuntimeError("alarm check bug")

        publisher.alarms.check = broken
        mark = len(events.messages)
        events.wait_for(lambda ms: sum(m.topic.endswith("/health") for m in ms[mark:]) >= 2, timeout=10)
        health = publisher.health()
        assert health["failed"] is None and publisher.alive
        assert health["item_errors"] >= 2 and health["events_dropped"] == 1
    assert any(r.exc_info for r in caplog.records if "unexpected error" in r.getMessage())
    caplog.clear()  # logged on purpose
