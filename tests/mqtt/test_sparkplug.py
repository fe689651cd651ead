"""Sparkplug B edge node against a real broker: births, bdSeq, seq, Rebirth, DCMD, STATE."""

from __future__ import annotations

import json
import time
from typing import Any

from appliance.mqtt.sparkplug import payloads as sp
from appliance.results import now_ms
from tests.brokers import Gate

GROUP, EDGE, HOST = "plant", "edge1", "scada"
NS = f"spBv1.0/{GROUP}"


def settings_for(mqtt_settings: Any, **sparkplug: Any) -> Any:
    return mqtt_settings(sparkplug={"enabled": True, "group_id": GROUP, "edge_node_id": EDGE, **sparkplug})


def decoded(listener: Any, kind: str) -> list[tuple[str, Any]]:
    return [(m.topic, sp.decode(m.payload)) for m in listener.messages if f"/{kind}/" in m.topic]


def metrics(payload: Any) -> dict[str, Any]:
    return {m.name: sp.metric_value(m) for m in payload.metrics}


def wait_count(listener: Any, kind: str, count: int, timeout: float = 15) -> list[tuple[str, Any]]:
    listener.wait_for(lambda ms: sum(f"/{kind}/" in m.topic for m in ms) >= count, timeout)
    return decoded(listener, kind)


def with_seq(listener: Any) -> list[tuple[str, int]]:
    """(kind, seq) of every message that carries a seq, in arrival order."""
    out = []
    for m in listener.messages:
        kind = m.topic.split("/")[2]
        if kind in {"NBIRTH", "DBIRTH", "DDATA", "NDATA"}:
            out.append((kind, sp.decode(m.payload).seq))
    return out


def test_births_bdseq_across_reconnects_and_restarts(mqtt_settings, broker, listen, run_service):
    gate = Gate(broker.host, broker.port)
    settings = mqtt_settings(
        port=gate.port, sparkplug={"enabled": True, "group_id": GROUP, "edge_node_id": EDGE}
    )
    spb = listen([f"{NS}/#"])
    try:
        with run_service(settings) as service:
            ((topic, nbirth),) = wait_count(spb, "NBIRTH", 1)
            assert topic == f"{NS}/NBIRTH/{EDGE}" and nbirth.seq == 0
            first = metrics(nbirth)
            assert first["Node Control/Rebirth"] is False
            bd0 = first["bdSeq"]
            ((dtopic, dbirth),) = wait_count(spb, "DBIRTH", 1)
            assert dtopic == f"{NS}/DBIRTH/{EDGE}/line1" and dbirth.seq == 1
            born = metrics(dbirth)
            assert born["Control/Running"] is True and born["Control/Model"] == "bright1"
            assert {
                "Inspection/Verdict",
                "Inspection/Seq",
                "Counters/Parts",
                "Inspection/Latency ms",
                "Inspection/P Defect",
            } <= set(born)
            spb.wait_for(
                lambda ms: any(
                    "/DDATA/" in m.topic and not sp.decode(m.payload).metrics[0].is_historical for m in ms
                )
            )
            live = next(p for _, p in decoded(spb, "DDATA") if not p.metrics[0].is_historical)
            values = metrics(live)
            assert values["Inspection/Verdict"] in {"pass", "fail"} and values["Inspection/Seq"] >= 1
            assert values["Counters/Parts"] >= 1

            gate.close()  # the network drops: the broker publishes the Will
            ((_, ndeath),) = wait_count(spb, "NDEATH", 1)
            assert metrics(ndeath) == {"bdSeq": bd0} and not ndeath.HasField("seq")
            gate.open()
            births = wait_count(spb, "NBIRTH", 2)
            assert metrics(births[1][1])["bdSeq"] == (bd0 + 1) % 256 and births[1][1].seq == 0
            assert service.health()["components"]["sparkplug"]["bd_seq"] == (bd0 + 1) % 256
        deaths = wait_count(spb, "NDEATH", 2)  # a graceful stop publishes the NDEATH itself
        assert metrics(deaths[1][1])["bdSeq"] == (bd0 + 1) % 256
        with run_service(settings):  # persisted: a restart never reuses a bdSeq
            births = wait_count(spb, "NBIRTH", 3)
            assert metrics(births[2][1])["bdSeq"] == (bd0 + 2) % 256
    finally:
        gate.stop()


def test_rebirth_and_device_commands(mqtt_settings, listen, run_service):
    spb = listen([f"{NS}/#"])
    with run_service(settings_for(mqtt_settings)) as service:
        wait_count(spb, "DDATA", 2)
        bd = metrics(decoded(spb, "NBIRTH")[0][1])["bdSeq"]
        rebirth = sp.build(now_ms(), None)
        sp.add_metric(rebirth, "Node Control/Rebirth", sp.BOOLEAN, True)
        spb.publish(f"{NS}/NCMD/{EDGE}", rebirth.SerializeToString())
        births = wait_count(spb, "NBIRTH", 2)
        assert births[1][1].seq == 0 and metrics(births[1][1])["bdSeq"] == bd  # same session
        wait_count(spb, "DBIRTH", 2)

        stop = sp.build(now_ms(), None)
        sp.add_metric(stop, "Control/Running", sp.BOOLEAN, False)
        sp.add_metric(stop, "Control/Model", sp.STRING, "bright2")
        spb.publish(f"{NS}/DCMD/{EDGE}/line1", stop.SerializeToString())
        spb.wait_for(
            lambda ms: any(
                "/DDATA/" in m.topic and metrics(sp.decode(m.payload)).get("Control/Running") is False
                for m in ms
            )
        )
        control = [metrics(p) for _, p in decoded(spb, "DDATA") if "Control/Running" in metrics(p)][-1]
        assert control == {"Control/Running": False, "Control/Model": "bright2"}
        assert service.cameras[0].paused
        assert service.ladders["line1"].tiers[0].runner.manifest.name == "bright2"
        spb.publish(f"{NS}/DCMD/{EDGE}/line1", b"\xff garbage")
        deadline = time.monotonic() + 5
        while service.health()["components"]["sparkplug"]["command_errors"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    sequence = [seq for kind, seq in with_seq(spb)]
    for previous, current in zip(sequence, sequence[1:], strict=False):
        assert current == (previous + 1) % 256 or current == 0  # 0: a (re)birth


def test_primary_host_state_store_and_forward_and_seq_wrap(mqtt_settings, listen, run_service):
    """Offline host: no births, results wait; online: births, the backlog as historical data."""
    spb = listen([f"{NS}/#"])
    state_topic = f"spBv1.0/STATE/{HOST}"
    t0 = now_ms()
    spb.publish(state_topic, json.dumps({"online": False, "timestamp": t0}), retain=True)
    settings = settings_for(mqtt_settings, primary_host_id=HOST)
    settings.lines[0].cameras[0].source.fps = 100  # a backlog of > 256 results quickly
    try:
        with run_service(settings) as service:
            deadline = time.monotonic() + 20
            while service.writer.last_seq < 300:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            health = service.health()["components"]["sparkplug"]
            assert health["born"] is False and health["state"] == "degraded"
            assert not decoded(spb, "NBIRTH")
            backlog_end = service.writer.last_seq
            spb.publish(state_topic, json.dumps({"online": True, "timestamp": t0 + 1}), retain=True)
            spb.wait_for(
                lambda ms: any(
                    "/DDATA/" in m.topic
                    and metrics(sp.decode(m.payload)).get("Inspection/Seq", 0) > backlog_end + 5
                    for m in ms
                ),
                timeout=30,
            )
            ddata = decoded(spb, "DDATA")
            historical = [metrics(p)["Inspection/Seq"] for _, p in ddata if p.metrics[0].is_historical]
            live = [metrics(p)["Inspection/Seq"] for _, p in ddata if not p.metrics[0].is_historical]
            assert historical[0] == 1 and historical[-1] >= backlog_end
            assert historical == list(range(1, historical[-1] + 1))  # nothing lost, in order
            assert live and live[0] == historical[-1] + 1
            sequence = [seq for _, seq in with_seq(spb)]
            assert sequence[:3] == [0, 1, 2] and 255 in sequence
            wrap = sequence.index(255)
            assert sequence[wrap + 1] == 0  # wraps at 255
            assert sequence == [i % 256 for i in range(len(sequence))]  # no gap across the wrap
            bd = metrics(decoded(spb, "NBIRTH")[0][1])["bdSeq"]

            # An older STATE is ignored; a newer offline ends the session with an NDEATH.
            spb.publish(state_topic, json.dumps({"online": False, "timestamp": t0 - 5}), retain=True)
            time.sleep(0.5)
            assert not decoded(spb, "NDEATH")
            spb.publish(state_topic, json.dumps({"online": False, "timestamp": t0 + 2}), retain=True)
            ((_, ndeath),) = wait_count(spb, "NDEATH", 1)
            assert metrics(ndeath)["bdSeq"] == bd
            time.sleep(1.0)
            assert len(decoded(spb, "NBIRTH")) == 1  # reconnected, waiting for the host
            spb.publish(state_topic, json.dumps({"online": True, "timestamp": t0 + 3}), retain=True)
            births = wait_count(spb, "NBIRTH", 2)
            assert metrics(births[1][1])["bdSeq"] == (bd + 1) % 256
    finally:
        spb.publish(state_topic, b"", retain=True)


def wait_health(service: Any, key: str, at_least: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = service.health()["components"]["sparkplug"]
        if health[key] >= at_least:
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.05)


def test_malformed_retained_state_does_not_kill_the_node(mqtt_settings, listen, run_service, caplog):
    """A poisoned STATE retained on the broker used to end the worker on every start."""
    spb = listen([f"{NS}/#"])
    state_topic = f"spBv1.0/STATE/{HOST}"
    spb.publish(state_topic, b'{"online":true,"timestamp":1e400}', retain=True)  # OverflowError
    try:
        with run_service(settings_for(mqtt_settings, primary_host_id=HOST)) as service:
            wait_health(service, "states_unreadable", 1)
            nested = b'{"online":true,"timestamp":' + b"[" * 1500 + b"]" * 1500 + b"}"  # RecursionError
            spb.publish(state_topic, nested, retain=True)
            wait_health(service, "states_unreadable", 2)
            far = now_ms() + 10 * 86_400_000  # would make every genuine STATE look older
            spb.publish(state_topic, json.dumps({"online": True, "timestamp": far}), retain=True)
            wait_health(service, "states_unreadable", 3)
            spb.publish(state_topic, b"[" * 5000, retain=True)  # over the STATE size cap
            wait_health(service, "messages_refused", 1)
            assert not decoded(spb, "NBIRTH")
            spb.publish(state_topic, json.dumps({"online": True, "timestamp": now_ms()}), retain=True)
            wait_count(spb, "NBIRTH", 1)
            wait_count(spb, "DDATA", 1)
            health = service.health()["components"]["sparkplug"]
            assert health["failed"] is None and health["born"] is True
            assert health["item_errors"] == 0 and health["state"] == "ok"
    finally:
        spb.publish(state_topic, b"", retain=True)


def test_a_message_that_raises_is_dropped_and_the_worker_goes_on(mqtt_settings, listen, run_service, caplog):
    """The per-message boundary: an unexpected exception is counted, logged and skipped."""
    spb = listen([f"{NS}/#"])
    with run_service(settings_for(mqtt_settings)) as service:
        wait_count(spb, "DDATA", 1)
        node = service.components["sparkplug"]

        def broken(line: str, payload: Any) -> None:
            raise RecursionError("maximum recursion depth exceeded")

        node._device_command = broken
        bad = sp.build(now_ms(), None)
        sp.add_metric(bad, "Control/Running", sp.BOOLEAN, False)
        spb.publish(f"{NS}/DCMD/{EDGE}/line1", bad.SerializeToString())
        health = wait_health(service, "item_errors", 1)
        assert "RecursionError" in health["last_unexpected_error"]
        deadline = time.monotonic() + 5  # the count is up a moment before the log record
        while not any(r.exc_info for r in caplog.records if "unexpected error" in r.getMessage()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        caplog.clear()  # logged on purpose
        ddata = len(decoded(spb, "DDATA"))
        wait_count(spb, "DDATA", ddata + 3)  # still forwarding results
        assert node.alive and service.health()["components"]["sparkplug"]["failed"] is None
        spb.publish(f"{NS}/DCMD/{EDGE}/line1", b"\0" * (300 * 1024))  # over the command cap
        wait_health(service, "messages_refused", 1)


def test_parse_state() -> None:
    from appliance.mqtt.sparkplug.node import parse_state

    now = 1_700_000_000_000
    assert parse_state(b'{"online": true, "timestamp": 5}', now) == (True, 5)
    assert parse_state(b"OFFLINE", now) == (False, None)
    for bad in (
        b'{"online":true,"timestamp":1e400}',
        b'{"online":true,"timestamp":NaN}',
        b'{"online":true,"timestamp":-1}',
        b'{"online":"yes","timestamp":1}',
        b'{"online":true,"timestamp":true}',
        b'{"online":true}',
        b"[" * 2000,
        b"[1]",
        b"\xff\xfe",
        f'{{"online":true,"timestamp":{now + 2 * 86_400_000}}}'.encode(),
    ):
        assert parse_state(bad, now) is None, bad
