"""Publish benchmark: the outbox publisher's CPU per message, against a private mosquitto.

By hand (needs Debian's mosquitto)::

    python -m appliance.mqtt.publishbench --rows 20000

Fills a fresh outbox with `--rows` results (one in five a fail with a defect box, like
`appliance.sync.drainbench`), starts a private broker on loopback and the real `OutboxPublisher`
over a real `MqttLink`, and waits until the broker has acknowledged every row. Prints one JSON
object: the publisher thread's own CPU per message (`CLOCK_THREAD_CPUTIME_ID` of that thread,
so paho's network thread and the store writer are not in it), the drain rate, and the cost of
preparing one message's text from its stored payload two ways, measured in this thread:
`splice_us` (what the publisher does) and `reserialise_us` (json.loads + json.dumps, the
fallback).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from appliance.bench.broker import PrivateBroker
from appliance.config import MqttConfig, StoreConfig
from appliance.mqtt.client import MqttLink, Session
from appliance.mqtt.publisher import OutboxPublisher, publish_text, reserialise
from appliance.mqtt.topics import Topics
from appliance.store.db import connect
from appliance.store.writer import StoreWriter
from appliance.sync.drainbench import fill


class _Handler:
    """The link's handler: what MqttComponent forwards to the outbox, nothing else."""

    def __init__(self) -> None:
        self.outbox: OutboxPublisher | None = None

    def on_connected(self, session: Session) -> None:
        assert self.outbox is not None
        self.outbox.link_up(session.generation, session.receive_maximum, session.maximum_packet_size)

    def on_disconnected(self, generation: int) -> None:
        assert self.outbox is not None
        self.outbox.link_down(generation)

    def on_message(self, message: paho.MQTTMessage) -> None:
        """Nothing is subscribed."""

    def on_published(self, generation: int, mid: int, reason: ReasonCode) -> None:
        assert self.outbox is not None
        self.outbox.acked(generation, mid, reason)


def _thread_cpu_s(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def prepare_costs(db: Path, rows: int = 2000, rounds: int = 20) -> dict[str, float]:
    """Microseconds of CPU per message to make the published text: splice vs parse+serialise."""
    conn = connect(db, readonly=True)
    try:
        stored = [r[0] for r in conn.execute("SELECT payload FROM results ORDER BY seq LIMIT ?", (rows,))]
    finally:
        conn.close()
    out = {}
    for name, make in (("splice_us", publish_text), ("reserialise_us", reserialise)):
        best = float("inf")
        for _ in range(3):
            start = time.thread_time()
            for _ in range(rounds):
                for text in stored:
                    make(text, 1_700_000_000_000, False)
            best = min(best, time.thread_time() - start)
        out[name] = round(1e6 * best / (rounds * len(stored)), 2)
    return out


def measure_publish(workdir: Path, rows: int, inflight: int = 64) -> dict[str, Any]:
    """Fill, publish everything once, return the figures (see the module docstring)."""
    db = workdir / "appliance.db"
    writer = StoreWriter(db, "bench-node", StoreConfig(max_rows=max(rows * 2, 1000)), track_unpublished=True)
    writer.start()
    broker = PrivateBroker(workdir)
    broker.start()
    handler = _Handler()
    link = MqttLink(MqttConfig(port=broker.port, inflight=inflight), "bench-publisher", handler)
    outbox = OutboxPublisher(link, Topics("vision", "bench-node"), writer, db, inflight=inflight, boot_seq=0)
    handler.outbox = outbox
    try:
        fill(writer, rows)
        outbox.start()
        assert outbox._thread is not None  # started just above
        cpu0, t0 = _thread_cpu_s(outbox._thread), time.monotonic()
        link.start()
        deadline = t0 + 60 + rows / 500
        while outbox.published.count < rows:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {outbox.published.count} of {rows} acknowledged")
            time.sleep(0.01)
        seconds = time.monotonic() - t0
        cpu = _thread_cpu_s(outbox._thread) - cpu0
    finally:
        outbox.quiesce()
        link.stop()
        outbox.stop()
        broker.stop()
        writer.stop()
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1),
        "publisher_cpu_us_per_row": round(1e6 * cpu / rows, 1),
        **prepare_costs(db),
    }


def main() -> None:
    """Command line: print the figures as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--inflight", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="publishbench-") as tmp:
        print(json.dumps(measure_publish(Path(tmp), args.rows, args.inflight)))  # noqa: T201


if __name__ == "__main__":
    main()
