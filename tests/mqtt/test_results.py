"""Results from the outbox to the broker: every seq, in order, schema-valid, marked on PUBACK."""

from __future__ import annotations

import json
import threading
import time

import pytest

from appliance.control import Controller
from appliance.store.db import connect
from tests.brokers import MOSQUITTO_MISSING, Broker, Gate, mosquitto_binary

RESULT_KEYS = {
    "schema",
    "msg_id",
    "seq",
    "part_id",
    "revision",
    "line",
    "camera",
    "ts_capture_ms",
    "ts_publish_ms",
    "verdict",
    "defect_class",
    "confidence",
    "tier",
    "provisional",
    "defects",
    "latency_ms",
    "model",
    "replayed",
}


def results_in(messages, per_message: int) -> list[dict]:
    """The results the messages carry, checking the batch envelope when batched."""
    out: list[dict] = []
    for m in messages:
        payload = json.loads(m.payload)
        if per_message == 1:
            out.append(payload)
            continue
        assert set(payload) == {"schema", "results"} and payload["schema"] == "vision.results/1"
        batch = payload["results"]
        assert 1 <= len(batch) <= per_message
        assert len({r["line"] for r in batch}) == 1, "a batch holds one line's results"
        assert [r["seq"] for r in batch] == sorted(r["seq"] for r in batch)
        out.extend(batch)
    return out


def result_topic(settings, per_message: int) -> str:
    return f"vision/{settings.node_id}/line/line1/result" + ("s" if per_message > 1 else "")


@pytest.mark.parametrize("per_message", [1, 8])
def test_results_delivered_in_seq_order_with_schema(mqtt_settings, listen, run_service, per_message):
    settings = mqtt_settings(results_per_message=per_message)
    topic = result_topic(settings, per_message)
    other = result_topic(settings, 8 if per_message == 1 else 1)
    listener = listen([topic, other])
    with run_service(settings) as service:
        listener.wait_for(lambda ms: len(results_in(ms, per_message)) >= 20)
    last = service.writer.last_seq
    # a graceful stop publishes everything first
    listener.wait_for(lambda ms: len(results_in(ms, per_message)) >= last)
    assert not listener.on(other), "results go on one topic only"
    payloads = results_in(listener.on(topic), per_message)
    seqs = [p["seq"] for p in payloads]
    assert seqs == list(range(1, last + 1))
    for p in payloads:
        assert set(p) >= RESULT_KEYS
        assert p["schema"] == "vision.result/1"
        assert p["msg_id"] == f"{settings.node_id}-{p['seq']}"
        assert p["verdict"] in {"pass", "fail", "error"}
        assert p["ts_publish_ms"] >= p["ts_capture_ms"]
        assert p["replayed"] is False
        assert set(p["latency_ms"]) == {"inference", "total"}
        assert set(p["model"]) == {"name", "version", "sha256"}
    conn = connect(settings.db_path, readonly=True)
    try:
        marked = conn.execute(
            "SELECT seq, published_ms, payload FROM results WHERE published_ms IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    delivered = {p["seq"]: p for p in payloads}
    assert len(marked) == last, "every delivered row is marked published"
    for row in marked:
        assert row["seq"] in delivered
        assert row["published_ms"] == delivered[row["seq"]]["ts_publish_ms"]


def _seqs(messages, per_message: int = 1) -> list[tuple[int, bool]]:
    return [(p["seq"], p["replayed"]) for p in results_in(messages, per_message)]


OUTAGE_S = 3.0  # the 30 s outage, shortened: the backoff cap is 1 s here, so it is the same path


@pytest.mark.parametrize("per_message", [1, 8])
def test_broker_outage_loses_no_seq(mqtt_settings, outage_broker, listen, run_service, per_message):
    """Kill the broker while the line produces; after it is back every seq arrives, gap-free."""
    gate = Gate(outage_broker.host, outage_broker.port)
    settings = mqtt_settings(to=outage_broker, port=gate.port, inflight=4, results_per_message=per_message)
    topic = result_topic(settings, per_message)
    before = listen([topic], to=outage_broker)
    try:
        with run_service(settings) as service:
            before.wait_for(lambda ms: len(results_in(ms, per_message)) >= 20)
            outage_broker.kill()  # PUBACKs in flight are lost with it
            gate.close()
            before.close()
            time.sleep(OUTAGE_S)  # production goes on into the outbox
            health = service.health()["components"]["mqtt"]
            assert health["state"] == "degraded"
            assert health["link"]["connection"] in {"unreachable", "disconnected"}
            assert service.health()["status"] != "error"
            produced = service.writer.last_seq
            outage_broker.start()
            after = listen([topic], to=outage_broker)  # subscribed before the appliance is let through
            gate.open()
            after.wait_for(lambda ms: any(s >= produced + 5 for s, _ in _seqs(ms, per_message)), timeout=30)
            deadline = time.monotonic() + 10
            while (outbox := service.health()["components"]["mqtt"]["outbox"])["last_drain"] is None:
                assert time.monotonic() < deadline, "the drain of the backlog was not recorded"
                time.sleep(0.05)
    finally:
        gate.stop()
    received = _seqs(before.messages, per_message) + _seqs(after.messages, per_message)
    seqs = [s for s, _ in received]
    top = max(seqs)
    assert set(seqs) == set(range(1, top + 1)), "a seq is missing"
    first_seen: set[int] = set()
    for seq, replayed in received:
        if seq in first_seen:
            assert replayed, f"seq {seq} delivered twice without replayed: true"
        first_seen.add(seq)
    delivered_before = len(_seqs(before.messages, per_message))
    assert produced - delivered_before > 10, "the outage must have built a backlog"
    assert outbox["max_inflight_seen"] == 4  # the window (of messages) was used, and never exceeded
    if per_message > 1:
        sizes = [len(json.loads(m.payload)["results"]) for m in after.messages]
        assert max(sizes) == per_message, "the backlog went out in full batches"
    drain = outbox["last_drain"]
    assert drain["backlog_at_reconnect"] >= produced - delivered_before - 4 * per_message
    assert drain["rows"] >= drain["backlog_at_reconnect"] and drain["rows_s"] > 0


def test_acl_denial_is_detected(mqtt_settings, broker, run_service):
    """The broker's ACL refuses results (PUBACK 0x87): counted, alarmed, the rows stay undelivered."""
    settings = mqtt_settings(username="restricted", password_file=broker.password_file("restricted"))
    with run_service(settings) as service:
        deadline = time.monotonic() + 10
        while service.health()["components"]["mqtt"]["outbox"]["rejected"] < 3:
            assert time.monotonic() < deadline, "no rejection seen"
            time.sleep(0.1)
        health = service.health()
        outbox = health["components"]["mqtt"]["outbox"]
        assert health["components"]["mqtt"]["state"] == "degraded"
        assert "Not authorized" in outbox["last_rejection"] and "0x87" in outbox["last_rejection"]
        assert any(a["kind"] == "mqtt_denied" for a in health["alarms"])
    conn = connect(settings.db_path, readonly=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM results WHERE published_ms IS NOT NULL").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_pass_that_raises_does_not_stop_the_outbox(mqtt_settings, listen, run_service, caplog):
    """One unexpected exception in a pass used to end the publisher thread for good."""
    settings = mqtt_settings()
    topic = f"vision/{settings.node_id}/line/line1/result"
    listener = listen([topic])
    with run_service(settings) as service:
        outbox = service.components["mqtt"].outbox
        real = outbox._check_drain  # runs right after rows were put in flight
        calls = {"n": 0}

        def flaky() -> None:
            calls["n"] += 1
            if calls["n"] in {3, 4}:
                raise RuntimeError("outbox bug")
            real()

        outbox._check_drain = flaky
        listener.wait_for(lambda ms: len(ms) >= 30, timeout=20)
        health = service.health()["components"]["mqtt"]["outbox"]
        assert health["failed"] is None and health["iteration_errors"] == 2
        assert outbox.alive
    last = service.writer.last_seq
    listener.wait_for(lambda ms: len(ms) >= last)
    seqs = [json.loads(m.payload)["seq"] for m in listener.on(topic)]
    assert seqs == list(range(1, last + 1))  # the rewind resent nothing in flight, lost nothing
    assert not any(json.loads(m.payload)["replayed"] for m in listener.on(topic))
    assert any(r.exc_info for r in caplog.records if "iteration failed" in r.getMessage())
    caplog.clear()  # logged on purpose


def test_batched_republish_sends_each_row_once_marked_replayed(mqtt_settings, listen, run_service):
    """With batches, a republish request goes out in batches too: rows 2..9, each once, replayed."""
    settings = mqtt_settings(results_per_message=4)
    topic = result_topic(settings, 4)
    listener = listen([topic])
    with run_service(settings) as service:
        listener.wait_for(lambda ms: len(results_in(ms, 4)) >= 12)
        outbox = service.components["mqtt"].outbox
        wait_until = time.monotonic() + 10
        while outbox.last_acked_seq < 9:  # a row still in flight is delivered by that message
            assert time.monotonic() < wait_until, "rows 2..9 were not acknowledged"
            time.sleep(0.02)
        outcome = outbox.republish(2, 9)
        assert outcome.ok and outcome.details == {"from_seq": 2, "to_seq": 9, "queued_rows": 8}

        def replayed(ms) -> list[int]:
            return [r["seq"] for r in results_in(ms, 4) if r["replayed"]]

        listener.wait_for(lambda ms: len(replayed(ms)) >= 8)
        time.sleep(0.3)  # anything sent twice would arrive by now
        assert replayed(listener.on(topic)) == list(range(2, 10))
        assert service.components["mqtt"].outbox.republished == 8


def test_batches_wait_for_company_at_most_the_linger(mqtt_settings, listen, run_service):
    """Batched at 40 parts/s: what waits when the window has room is one result, so each
    result went alone before the linger; now a batch gathers for 400 ms (about 16 results), and
    the first result of a batch has waited about the linger, not until the batch is full."""
    settings = mqtt_settings(results_per_message=50, batch_linger_ms=400)
    topic = result_topic(settings, 50)
    listener = listen([topic])
    with run_service(settings):
        listener.wait_for(lambda ms: len(ms) >= 5, timeout=20)
    batches = [json.loads(m.payload)["results"] for m in listener.on(topic)[1:5]]
    sizes = [len(batch) for batch in batches]
    assert min(sizes) >= 4, f"results went (nearly) alone: {sizes}"
    assert max(sizes) <= 35, f"batches waited well beyond the linger: {sizes}"
    for batch in batches:
        waited = batch[0]["ts_publish_ms"] - batch[0]["ts_capture_ms"]
        assert waited < 400 + 1000, f"the first result waited {waited} ms"


def test_a_full_batch_goes_without_waiting_for_the_linger(mqtt_settings, listen, run_service):
    """A batch's worth waiting goes at once: 10 results at 40 parts/s take a quarter of a
    second, far less than the 10 s linger, and every message carries exactly 10."""
    settings = mqtt_settings(results_per_message=10, batch_linger_ms=10_000)
    topic = result_topic(settings, 10)
    listener = listen([topic])
    with run_service(settings):
        listener.wait_for(lambda ms: len(ms) >= 4, timeout=8)
        sizes = [len(json.loads(m.payload)["results"]) for m in listener.on(topic)[:4]]
    # the first may be what waited for the connection, which goes at once
    assert 1 <= sizes[0] <= 10 and sizes[1:] == [10, 10, 10], sizes


def test_a_graceful_stop_sends_what_lingers(mqtt_settings, listen, run_service):
    """Results held for a batch (10 s linger, 50 per message) go out at a graceful stop, once
    and not replayed: they are not left in the outbox for the next run."""
    settings = mqtt_settings(results_per_message=50, batch_linger_ms=10_000)
    topic = result_topic(settings, 50)
    listener = listen([topic])
    with run_service(settings) as service:
        wait_until = time.monotonic() + 15
        while service.writer.last_seq < 10:
            assert time.monotonic() < wait_until, "the line did not produce"
            time.sleep(0.05)
        # fewer than a batch, long before the linger: held (what waited for the connection
        # may have gone at once)
        assert len(results_in(listener.on(topic), 50)) < service.writer.last_seq
    last = service.writer.last_seq
    listener.wait_for(lambda ms: len(results_in(ms, 50)) >= last, timeout=5)
    assert _seqs(listener.on(topic), 50) == [(seq, False) for seq in range(1, last + 1)]


@pytest.mark.parametrize(("per_message", "linger_ms"), [(1, 0), (50, 0), (50, 100)])
def test_the_outbox_sleeps_while_the_line_is_idle(mqtt_settings, listen, run_service, per_message, linger_ms):
    """After results went out and the line stopped, the publisher thread waits for events
    instead of looping: well under 5 % of a core over a second."""
    settings = mqtt_settings(results_per_message=per_message, batch_linger_ms=linger_ms)
    listener = listen([result_topic(settings, per_message)])
    with run_service(settings) as service:
        listener.wait_for(lambda ms: len(results_in(ms, per_message)) >= 10)
        assert Controller(service).stop_line("line1").ok
        time.sleep(0.5)  # the last results and their acks
        thread = next(t for t in threading.enumerate() if t.name == "mqtt-outbox")
        assert thread.ident is not None
        clock = time.pthread_getcpuclockid(thread.ident)
        cpu0 = time.clock_gettime(clock)
        time.sleep(1.0)
        used = time.clock_gettime(clock) - cpu0
    assert used < 0.05, f"the idle publisher used {used:.3f} s of CPU in 1 s"


def test_two_lines_are_batched_apart_and_every_seq_arrives_once(mqtt_settings, broker, listen, run_service):
    """Two lines' results interleave in the outbox; a backlog (broker out of reach) drains in
    full batches per line, each on its own line's topic, every seq once and in order per line."""
    gate = Gate(broker.host, broker.port)
    settings = mqtt_settings(port=gate.port, results_per_message=8)
    line2 = settings.lines[0].model_copy(deep=True)
    line2.id = "line2"
    line2.cameras[0].id = "cam2"
    settings.lines.append(line2)
    topics = [f"vision/{settings.node_id}/line/{line}/results" for line in ("line1", "line2")]
    listener = listen(topics)
    gate.close()
    try:
        with run_service(settings) as service:
            wait_until = time.monotonic() + 15
            while service.writer.last_seq < 60:  # both lines produce into the outbox
                assert time.monotonic() < wait_until, "the lines did not produce"
                time.sleep(0.05)
            gate.open()
            listener.wait_for(lambda ms: len(results_in(ms, 8)) >= 60, timeout=30)
        last = service.writer.last_seq
        listener.wait_for(lambda ms: len(results_in(ms, 8)) >= last)
    finally:
        gate.stop()
    for topic, line in zip(topics, ("line1", "line2"), strict=True):
        messages = listener.on(topic)
        results = results_in(messages, 8)
        assert {r["line"] for r in results} == {line}, "a line's results on its own topic only"
        assert [r["seq"] for r in results] == sorted(r["seq"] for r in results)
        sizes = [len(json.loads(m.payload)["results"]) for m in messages]
        assert max(sizes) == 8, "the backlog went in full batches"
    seqs = sorted(r["seq"] for r in results_in(listener.messages, 8))
    assert seqs == list(range(1, last + 1)), "every seq once"


def test_batches_stay_under_the_brokers_maximum_packet_size(mqtt_settings, tmp_path, listen, run_service):
    """A broker that announces a 4 KiB Maximum Packet Size (MQTT 5 CONNACK) gets batches under
    it: a 64 KiB batch would be refused and resent after every reconnect, delivering nothing."""
    if mosquitto_binary() is None:
        pytest.skip(MOSQUITTO_MISSING)
    small = Broker(tmp_path / "small-broker", extra_config="max_packet_size 4096\n")
    small.start()
    gate = Gate(small.host, small.port)
    try:
        settings = mqtt_settings(to=small, port=gate.port, results_per_message=50)
        topic = result_topic(settings, 50)
        listener = listen([topic], to=small)
        gate.close()
        with run_service(settings) as service:
            wait_until = time.monotonic() + 15
            while service.writer.last_seq < 40:  # a backlog: batches would be full
                assert time.monotonic() < wait_until, "the line did not produce"
                time.sleep(0.05)
            gate.open()
            listener.wait_for(lambda ms: len(results_in(ms, 50)) >= 40, timeout=20)
        assert max(len(m.payload) for m in listener.on(topic)) <= 4096
        assert max(len(json.loads(m.payload)["results"]) for m in listener.on(topic)) > 1
    finally:
        gate.stop()
        small.kill()
