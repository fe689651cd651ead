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
            assert {"Inspection/Verdict", "Inspection/Seq", "Counters/Parts", "Inspection/Latency ms"} <= set(
                born
            )
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
