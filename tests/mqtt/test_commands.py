"""Commands over MQTT: every one answered, malformed/retained/stale refused, duplicates run once."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from appliance.mqtt.commands import CommandHandler, Envelope, Incoming
from appliance.mqtt.topics import CommandTopic
from appliance.results import now_ms

NODE = "test-node"
BASE = f"vision/{NODE}"


class Ot:
    """The OT side: publishes commands, reads acks."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener

    def send(self, topic: str, body: Any, *, retain: bool = False) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.listener.publish(f"{BASE}/{topic}", payload, retain=retain)

    def ready(self) -> None:
        """The appliance is subscribed: a live line state (published after subscribing) arrived.

        Not a retained one: that may be left over from an earlier test.
        """
        self.listener.wait_for(lambda ms: any(m.topic.endswith("/state") and not m.retain for m in ms))

    def acks(self, cmd_id: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(m.payload) for m in self.listener.on(f"{BASE}/ack")]
        return [a for a in out if cmd_id is None or a["cmd_id"] == cmd_id]

    def wait_final(self, cmd_id: str | None, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        def final(_ms: Any) -> bool:
            return sum(a["status"] in {"done", "failed"} for a in self.acks(cmd_id)) >= count

        self.listener.wait_for(final, timeout)
        return self.acks(cmd_id)


@pytest.fixture
def ot(listen: Any) -> Ot:
    return Ot(listen([f"{BASE}/ack", f"{BASE}/event", f"{BASE}/line/+/result", f"{BASE}/line/+/state"]))


def cmd(cmd_id: str, **args: Any) -> dict[str, Any]:
    return {"cmd_id": cmd_id, "ts_ms": now_ms(), "args": args}


def test_malformed_commands_get_a_failed_ack(mqtt_settings, run_service, ot):
    with run_service(mqtt_settings()):
        ot.ready()
        ot.send("line/line1/cmd/stop", b"{not json")
        ot.wait_final(None, 1)
        ot.send("line/line1/cmd/stop", b"[1, 2]")
        ot.send("line/line1/cmd/stop", {"args": {}})
        ot.send("line/line1/cmd/switch_model", cmd("m1", model="bright2", colour="red"))
        ot.send("line/line1/cmd/switch_model", cmd("m2"))
        ot.send("line/line1/cmd/explode", cmd("m3"))
        ot.send("cmd/stop", cmd("m4"))
        ot.send("line/nope/cmd/stop", cmd("m5"))
        ot.send("line/line1/cmd/switch_model", cmd("m6", model="no-such-model"))
        ot.send("cmd/republish", {"cmd_id": "m7", "args": {"from_seq": "one"}})
        acks = ot.wait_final(None, 10)
    by_id = {a["cmd_id"]: a for a in acks if a["cmd_id"]}
    anonymous = [a for a in acks if a["cmd_id"] is None]
    assert len(anonymous) == 3 and all(a["status"] == "failed" for a in anonymous)
    assert "not JSON" in anonymous[0]["reason"]
    assert "JSON object" in anonymous[1]["reason"]
    assert "cmd_id" in anonymous[2]["reason"]
    assert "colour: unknown key" in by_id["m1"]["reason"]
    assert "model" in by_id["m2"]["reason"]
    assert "unknown command 'explode'" in by_id["m3"]["reason"]
    assert "line command" in by_id["m4"]["reason"]
    assert "unknown line 'nope'" in by_id["m5"]["reason"]
    assert "cannot load model 'no-such-model'" in by_id["m6"]["reason"]
    assert "from_seq" in by_id["m7"]["reason"]
    assert all(a["status"] == "failed" and a["schema"] == "vision.ack/1" for a in by_id.values())


def test_stop_start_and_duplicates_run_once(mqtt_settings, run_service, ot):
    with run_service(mqtt_settings()) as service:
        ot.ready()
        camera = service.cameras[0]
        ot.send("line/line1/cmd/stop", cmd("stop-1"))
        acks = ot.wait_final("stop-1")
        assert [a["status"] for a in acks] == ["accepted", "done"]
        assert acks[-1]["result"] == {"line": "line1", "running": False, "changed": True}
        assert camera.paused
        ot.listener.wait_for(
            lambda ms: any(
                m.topic.endswith("line1/state") and not json.loads(m.payload)["running"] for m in ms
            )
        )
        seq = service.writer.last_seq
        time.sleep(0.5)
        assert service.writer.last_seq - seq <= 1  # nothing new inspected (one frame may be in flight)
        ot.send("line/line1/cmd/start", cmd("start-1"))
        ot.wait_final("start-1")
        assert not camera.paused
        ot.send("line/line1/cmd/stop", cmd("stop-1"))  # a SCADA retry of the first command
        acks = ot.wait_final("stop-1", 2)
        assert acks[-1]["duplicate"] is True and acks[-1]["status"] == "done"
        assert not camera.paused, "a duplicate must not run again"
        events = [json.loads(m.payload) for m in ot.listener.on(f"{BASE}/event")]
        assert [e["kind"] for e in events if e["kind"].startswith("line_")] == [
            "line_stopped",
            "line_started",
        ]


def test_retained_and_stale_commands_are_not_run(mqtt_settings, run_service, ot, listen):
    ot.send("line/line1/cmd/stop", cmd("left-over"), retain=True)
    try:
        with run_service(mqtt_settings()) as service:
            acks = ot.wait_final("left-over")
            assert acks[-1]["status"] == "failed" and "retained" in acks[-1]["reason"]
            old = {"cmd_id": "old-1", "ts_ms": now_ms() - 60_000, "args": {}}
            ot.send("line/line1/cmd/stop", old)
            acks = ot.wait_final("old-1")
            assert [a["status"] for a in acks] == ["failed"] and "stale" in acks[0]["reason"]
            future = {"cmd_id": "future-1", "ts_ms": now_ms() + 3_600_000, "args": {}}
            ot.send("line/line1/cmd/stop", future)
            assert "future" in ot.wait_final("future-1")[-1]["reason"]
            assert not service.cameras[0].paused
    finally:
        ot.send("line/line1/cmd/stop", b"", retain=True)  # clear the retained message


def test_switch_model_ack_alarm_and_republish(mqtt_settings, run_service, ot):
    with run_service(mqtt_settings()) as service:
        ot.listener.wait_for(lambda ms: sum(m.topic.endswith("/result") for m in ms) >= 5)
        ot.send("line/line1/cmd/switch_model", cmd("sw-1", model="bright2"))
        acks = ot.wait_final("sw-1")
        assert acks[-1]["status"] == "done", acks
        assert acks[-1]["result"]["model"]["name"] == "bright2"
        assert acks[-1]["result"]["previous"]["name"] == "bright1"
        mark = len(ot.listener.messages)
        ot.listener.wait_for(
            lambda ms: any(
                m.topic.endswith("/result") and json.loads(m.payload)["model"]["name"] == "bright2"
                for m in ms[mark:]
            )
        )
        events = [json.loads(m.payload) for m in ot.listener.on(f"{BASE}/event")]
        switched = [e for e in events if e["kind"] == "model_switched"]
        assert switched and switched[0]["details"]["previous"]["name"] == "bright1"

        service.events.raise_alarm("test:door", "door_open", "cabinet door open")
        ot.send("cmd/ack_alarm", cmd("ack-1", key="test:door"))
        assert ot.wait_final("ack-1")[-1]["status"] == "done"
        alarm = next(a for a in service.events.alarms() if a.details.get("alarm") == "test:door")
        assert alarm.details["acknowledged_by"] == "mqtt:ack-1"
        ot.send("cmd/ack_alarm", cmd("ack-2", key="nothing"))
        assert "no active alarm" in ot.wait_final("ack-2")[-1]["reason"]

        ot.send("cmd/republish", cmd("rp-1", from_seq=2, to_seq=4))
        acks = ot.wait_final("rp-1")
        assert acks[-1]["result"] == {"from_seq": 2, "to_seq": 4, "queued_rows": 3}

        def replayed(ms: Any) -> set[int]:
            out = set()
            for m in ms:
                if m.topic.endswith("/result"):
                    p = json.loads(m.payload)
                    if p["replayed"]:
                        out.add(p["seq"])
            return out

        ot.listener.wait_for(lambda ms: replayed(ms) == {2, 3, 4})
        ot.send("cmd/republish", cmd("rp-2", from_seq=10**9))
        assert "beyond the last seq" in ot.wait_final("rp-2")[-1]["reason"]


def test_expired_while_waiting_is_stale():
    """A command whose MQTT 5 expiry passes while it waits in the queue is not run."""
    handler = CommandHandler.__new__(CommandHandler)
    handler.max_age_s = 30.0
    envelope = Envelope(cmd_id="x")
    fresh = Incoming("t", CommandTopic("stop", "l"), b"", False, 5, time.monotonic())
    waited = Incoming("t", CommandTopic("stop", "l"), b"", False, 1, time.monotonic() - 2)
    assert handler._stale(envelope, fresh) is None
    assert "expiry" in (handler._stale(envelope, waited) or "")


def test_every_command_is_answered_even_when_handling_raises(mqtt_settings, run_service, ot, caplog):
    """Deep nesting, oversize payloads and a command that raises all get a `failed` ack."""
    with run_service(mqtt_settings()) as service:
        ot.ready()
        ot.send("line/line1/cmd/stop", b"[" * 5000 + b"]" * 5000)  # RecursionError in json.loads
        ot.send(
            "line/line1/cmd/stop", b'{"cmd_id": "deep-1", "args": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
        )
        ot.send("line/line1/cmd/stop", b'{"cmd_id": "big-1", "args": {"pad": "' + b"x" * 70_000 + b'"}}')
        acks = ot.wait_final(None, 3)
        anonymous = [a for a in acks if a["cmd_id"] is None]
        assert len(anonymous) == 1 and "nested too deep" in anonymous[0]["reason"]
        assert "nested too deep" in ot.acks("deep-1")[-1]["reason"]  # cmd_id read without parsing
        assert "too large" in ot.acks("big-1")[-1]["reason"]
        assert all(a["status"] == "failed" for a in acks)

        handler = service.components["mqtt"].commands

        def broken(line: str, by: str) -> Any:
            raise RuntimeError("controller bug")

        service.components["mqtt"].controller.stop_line = broken
        ot.send("line/line1/cmd/stop", cmd("boom-1"))
        acks = ot.wait_final("boom-1")
        assert [a["status"] for a in acks] == ["accepted", "failed"]
        assert "internal error: RuntimeError: controller bug" in acks[-1]["reason"]
        ot.send("line/line1/cmd/stop", cmd("boom-1"))  # a redelivery is told the same, runs nothing
        again = ot.wait_final("boom-1", 2)[-1]
        assert again["duplicate"] is True and again["status"] == "failed"
        assert handler.internal_errors == 1 and handler.alive
    assert any("controller bug" in r.getMessage() for r in caplog.records)
    caplog.clear()  # logged on purpose


def test_a_busy_store_gets_a_failed_ack_not_silence(mqtt_settings, run_service, ot):
    with run_service(mqtt_settings()) as service:
        ot.ready()
        handler = service.components["mqtt"].commands
        handler.store_timeout_s = 0.3
        release = threading.Event()
        blocked = service.writer.call(lambda conn: release.wait(10))  # the writer is stuck
        try:
            ot.send("line/line1/cmd/stop", cmd("busy-1"))
            acks = ot.wait_final("busy-1")
        finally:
            release.set()
        blocked.result(timeout=10)
        assert [a["status"] for a in acks] == ["failed"]
        assert "store busy" in acks[0]["reason"] and "not run" in acks[0]["reason"]
        assert not service.cameras[0].paused and handler.store_timeouts == 1
        ot.send("line/line1/cmd/stop", cmd("busy-1"))  # the late insert was marked failed too
        again = ot.wait_final("busy-1", 2)[-1]
        assert again["duplicate"] is True and again["status"] == "failed"
        assert not service.cameras[0].paused
