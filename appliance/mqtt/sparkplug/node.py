"""The appliance as a Sparkplug B 3.0 edge node; each line is a device.

Session (its own MQTT connection, client id `vision-{node}-spb`, clean start):

1. before every CONNECT the Will is set to an NDEATH carrying the next `bdSeq` (0..255,
   persisted in SQLite first, so that a restart never reuses one the broker may still hold);
2. once connected: subscribe to NCMD, DCMD and, with a primary host, its STATE; then NBIRTH
   (seq 0, `bdSeq`, `Node Control/Rebirth`) and one DBIRTH per line - with a primary host, only
   after its STATE says online;
3. every result of the outbox becomes a DDATA of its line (QoS 0, as the specification wants).
   Results produced while there was no born session (broker away, primary host offline) are
   sent after the next births with `is_historical = true` (store-and-forward from SQLite; the
   highest forwarded seq is persisted);
4. NCMD `Node Control/Rebirth` -> births again; DCMD `Control/Running` / `Control/Model` ->
   start/stop the line, switch its tier-1 model, then a DDATA with the values now in force;
5. primary host STATE offline (newer than the last one seen) after the births -> NDEATH,
   disconnect, reconnect (a new bdSeq) and wait for it to come back;
6. graceful stop -> NDEATH, then DISCONNECT.

Every message and event is handled in isolation: one that raises (a malformed STATE retained
on the broker, a hostile NCMD) is counted, logged and dropped, and the worker goes on; a
failing iteration backs off and retries (`appliance.guard.LoopGuard`). Payloads over a size
cap are refused on arrival, and at most `_MAX_WAITING` messages wait for the worker.

Every message with a seq (NBIRTH, DBIRTH, DDATA) is published by the one worker thread, so
`seq` runs 0..255 and wraps without gaps.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from importlib import metadata
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from appliance.control import Controller
from appliance.events import Event
from appliance.guard import LoopGuard
from appliance.mqtt.client import MqttLink, Session, Will
from appliance.mqtt.credentials import LinkConfigError
from appliance.mqtt.sparkplug import payloads as sp
from appliance.results import now_ms
from appliance.store.db import connect

if TYPE_CHECKING:
    from appliance.service import Service

logger = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
_CHUNK = 200  # results forwarded per round (bounded memory while a backlog drains)
_PERSIST_PERIOD_S = 1.0
_MAX_STATE_BYTES = 4096  # a STATE is {"online": true, "timestamp": ...}: tens of bytes
_MAX_COMMAND_BYTES = 256 * 1024  # NCMD / DCMD: a few metrics
_MAX_WAITING = 1000  # messages queued for the worker; more are refused (counted)
_STATE_FUTURE_MS = 86_400_000  # a STATE timestamp further ahead than this is not believed


class SparkplugTopics:
    """Topic names of one edge node."""

    def __init__(self, group: str, edge: str) -> None:
        self.group, self.edge = group, edge

    def node(self, kind: str) -> str:
        """NBIRTH, NDEATH, NDATA, NCMD."""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge}"

    def device(self, kind: str, device: str) -> str:
        """DBIRTH, DDEATH, DDATA, DCMD of one device (a line)."""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge}/{device}"

    @staticmethod
    def state(host: str) -> str:
        """A primary host application's STATE."""
        return f"{NAMESPACE}/STATE/{host}"


class SparkplugComponent:
    """Sparkplug B edge node over its own MQTT session; see the module docstring."""

    def __init__(self, service: Service, controller: Controller | None = None) -> None:
        settings = service.settings
        config = settings.mqtt.sparkplug
        self.service = service
        self.controller = controller or Controller(service)
        self.topics = SparkplugTopics(config.group_id, config.edge_node_id or settings.node_id)
        self.primary_host = config.primary_host_id
        self.link = MqttLink(
            settings.mqtt,
            client_id=f"vision-{settings.node_id}-spb",
            handler=self,
            will=self._will,
            name="sparkplug",
        )
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = service.writer.subscribe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        # bdSeq: the value of the latest Will; advanced only after a CONNECT actually went out
        self.bd_seq = 0
        self._bd_sent_seen = 0
        self._bd_used = False
        # session state (worker thread)
        self._generation: int | None = None
        self._born = False
        self.seq = 0
        self.host_online: bool | None = None
        self._host_ts = -1
        self.forwarded_seq = 0
        self._live_from = 0
        self._persisted_forwarded = 0
        self._next_persist = 0.0
        # figures
        self.births = 0
        self.rebirths = 0
        self.ddata = 0
        self.historical = 0
        self.commands = 0
        self.command_errors = 0
        self.states_unreadable = 0
        self.messages_refused = 0
        self.last_error: str | None = None
        self.failed: str | None = None
        self.guard = LoopGuard("Sparkplug worker", logger)
        self.heartbeat = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Load bdSeq and the forward cursor, then connect."""
        self._load_state()
        self._conn = connect(self.service.settings.db_path, readonly=True)
        self.service.events.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="sparkplug", daemon=True)
        self._thread.start()
        self.link.start()

    def stop(self) -> None:
        """NDEATH, DISCONNECT, persist the cursor."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)
        self.link.stop(farewell=[(self.topics.node("NDEATH"), self._ndeath(self.bd_seq), False)])
        self._persist(force=True)
        if self._conn is not None:
            self._conn.close()

    @property
    def alive(self) -> bool:
        """The link and the worker loop (not wedged: failing every iteration for minutes)."""
        worker = bool(self._thread and self._thread.is_alive() and time.monotonic() - self.heartbeat < 60)
        return worker and not self.guard.wedged and self.link.alive

    # --- bdSeq and the cursor, persisted ----------------------------------------------------

    def _load_state(self) -> None:
        edge, last = self.topics.edge, self.service.writer.last_seq

        def load(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute(
                "SELECT bd_seq, forwarded_seq FROM sparkplug_state WHERE edge_node = ?", (edge,)
            ).fetchone()
            if row is None:  # a new edge node starts with what is produced from now on
                conn.execute(
                    "INSERT INTO sparkplug_state (edge_node, bd_seq, forwarded_seq, updated_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (edge, 255, last, now_ms()),
                )
                return 255, last
            return int(row[0]), int(row[1])

        stored, forwarded = self.service.writer.call(load).result(timeout=30)
        # The stored value may have been used in a CONNECT before a crash: never reuse it.
        self.bd_seq = stored
        self._bd_used = True
        self.forwarded_seq = self._persisted_forwarded = forwarded

    def _will(self) -> Will:
        """Called before every CONNECT (link thread): the NDEATH with the next bdSeq."""
        if self.link.connects_sent != self._bd_sent_seen:
            self._bd_sent_seen = self.link.connects_sent
            self._bd_used = True
        if self._bd_used:
            value = (self.bd_seq + 1) % 256
            edge = self.topics.edge

            def save(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "UPDATE sparkplug_state SET bd_seq = ?, updated_ms = ? WHERE edge_node = ?",
                    (value, now_ms(), edge),
                )

            try:
                self.service.writer.call(save).result(timeout=10)
            except Exception as exc:  # the Will must not carry a bdSeq we could not persist
                raise LinkConfigError(f"cannot persist the Sparkplug bdSeq: {exc}") from exc
            self.bd_seq = value
            self._bd_used = False
        return Will(self.topics.node("NDEATH"), self._ndeath(self.bd_seq), qos=1, retain=False)

    def _ndeath(self, bd_seq: int) -> bytes:
        payload = sp.build(now_ms(), None)
        sp.add_metric(payload, "bdSeq", sp.INT64, bd_seq)
        return bytes(payload.SerializeToString())

    def _persist(self, *, force: bool = False) -> None:
        if self.forwarded_seq == self._persisted_forwarded:
            return
        if not force and time.monotonic() < self._next_persist:
            return
        self._next_persist = time.monotonic() + _PERSIST_PERIOD_S
        value, edge = self.forwarded_seq, self.topics.edge
        self.service.writer.call(
            lambda conn: conn.execute(
                "UPDATE sparkplug_state SET forwarded_seq = ?, updated_ms = ? WHERE edge_node = ?",
                (value, now_ms(), edge),
            )
        )
        self._persisted_forwarded = value

    # --- LinkHandler (paho's thread): enqueue only ------------------------------------------

    def on_connected(self, session: Session) -> None:
        """Subscriptions first; the worker publishes the births."""
        filters = [self.topics.node("NCMD"), self.topics.device("DCMD", "+")]
        if self.primary_host:
            filters.append(SparkplugTopics.state(self.primary_host))
        session.subscribe(filters, qos=1)
        self._post("up", session.generation)

    def on_disconnected(self, generation: int) -> None:
        """The session is gone; results wait for the next births."""
        self._post("down", generation)

    def on_message(self, message: paho.MQTTMessage) -> None:
        """STATE, NCMD or DCMD; oversized payloads and a flood beyond the queue are refused."""
        topic, size = message.topic, len(message.payload)
        state = bool(self.primary_host) and topic == SparkplugTopics.state(self.primary_host or "")
        limit = _MAX_STATE_BYTES if state else _MAX_COMMAND_BYTES
        if size > limit:
            self._refuse(f"{topic}: {size} bytes, over the {limit} byte cap")
        elif len(self._queue) >= _MAX_WAITING:
            self._refuse(f"{topic}: {_MAX_WAITING} messages already wait for the worker")
        else:
            self._post("message", topic, bytes(message.payload))

    def _refuse(self, reason: str) -> None:
        self.messages_refused += 1
        self.last_error = f"message refused: {reason}"
        logger.warning("Sparkplug %s", self.last_error)

    def on_published(self, generation: int, mid: int, reason: ReasonCode) -> None:
        """QoS 0 data needs no bookkeeping."""

    def _on_event(self, event: Event) -> None:
        if event.kind in {"line_started", "line_stopped", "model_switched"} and event.line:
            self._post("changed", event.line)

    def _post(self, *item: Any) -> None:
        self._queue.append(item)
        self._wake.set()

    # --- the worker -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                self._wake.wait(0.5)
                self._wake.clear()
                self.guard.run_pass(self._iteration, self._stop)
        except Exception as exc:  # thread boundary (the loop itself)
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("Sparkplug worker failed")

    def _iteration(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            try:
                self._handle(item)
            except Exception as exc:  # thread boundary: one message or event, never the worker
                self.guard.skipped(exc, f"{item[0]} {item[1] if len(item) > 1 else ''}".strip())
        if self._born:
            self._forward()
        self._persist()

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "up":
            self._generation, self._born = item[1], False
            if self.primary_host is None:
                self._birth()
            else:
                self.host_online = None  # this session must read the host's STATE first
        elif kind == "down" and item[1] == self._generation:
            self._generation, self._born = None, False
        elif kind == "message":
            self._message(item[1], item[2])
        elif kind == "changed" and self._born:
            self._device_data(item[1], self._control_metrics(item[1]))

    def _message(self, topic: str, data: bytes) -> None:
        if self.primary_host and topic == SparkplugTopics.state(self.primary_host):
            self._host_state(data)
            return
        try:
            payload = sp.decode(data)
        except ValueError as exc:
            self.command_errors += 1
            self.last_error = f"{topic}: {exc}"
            logger.warning("Sparkplug command ignored: %s", self.last_error)
            return
        if topic == self.topics.node("NCMD"):
            self._node_command(payload)
            return
        prefix = self.topics.device("DCMD", "")
        if topic.startswith(prefix):
            self._device_command(topic[len(prefix) :], payload)

    def _host_state(self, data: bytes) -> None:
        """Act on the primary host's STATE (see `parse_state`); an unreadable one is ignored."""
        parsed = parse_state(data, now_ms())
        if parsed is None:
            self.states_unreadable += 1
            self.last_error = f"unreadable STATE from primary host {self.primary_host}"
            logger.warning("%s: %r", self.last_error, data[:100])
            return
        online, timestamp = parsed
        if timestamp is not None:
            if timestamp < self._host_ts:
                return  # an older STATE than the one we acted on
            self._host_ts = timestamp
        was, self.host_online = self.host_online, online
        logger.info("primary host %s is %s", self.primary_host, "online" if online else "offline")
        if online and not self._born and self._generation is not None:
            self._birth()
        elif not online and was and self._born:
            self._born = False
            self.link.end_session(
                [(self.topics.node("NDEATH"), self._ndeath(self.bd_seq), False)],
                f"primary host {self.primary_host} went offline",
            )

    def _node_command(self, payload: Any) -> None:
        for metric in payload.metrics:
            self.commands += 1
            if metric.name == "Node Control/Rebirth" and sp.metric_value(metric) is True:
                self.rebirths += 1
                if self._generation is not None and (self.primary_host is None or self.host_online):
                    self._birth()
            else:
                self.command_errors += 1
                self.last_error = f"unsupported NCMD metric {metric.name!r}"
                logger.warning("Sparkplug %s", self.last_error)

    def _device_command(self, line: str, payload: Any) -> None:
        if line not in self.controller.lines():
            self.command_errors += 1
            self.last_error = f"DCMD for unknown device {line!r}"
            logger.warning("Sparkplug %s", self.last_error)
            return
        for metric in payload.metrics:
            self.commands += 1
            value = sp.metric_value(metric)
            if metric.name == "Control/Running" and isinstance(value, bool):
                outcome = (self.controller.start_line if value else self.controller.stop_line)(
                    line, "sparkplug"
                )
            elif metric.name == "Control/Model" and isinstance(value, str):
                outcome = self.controller.switch_model(line, value, 1, "sparkplug")
            else:
                self.command_errors += 1
                self.last_error = f"unsupported DCMD metric {metric.name!r} for {line}"
                logger.warning("Sparkplug %s", self.last_error)
                continue
            if not outcome.ok:
                self.command_errors += 1
                self.last_error = f"DCMD {metric.name} on {line}: {outcome.reason}"
                logger.warning("Sparkplug %s", self.last_error)
        if self._born:  # report the values now in force, whatever the command did
            self._device_data(line, self._control_metrics(line))

    # --- births and data ------------------------------------------------------------------

    def _next_seq(self) -> int:
        value = self.seq
        self.seq = (self.seq + 1) % 256
        return value

    def _publish(self, topic: str, payload: Any) -> bool:
        ticket = self.link.publish(topic, payload.SerializeToString(), qos=0, generation=self._generation)
        return ticket is not None

    def _birth(self) -> None:
        """NBIRTH (seq 0) and a DBIRTH per line, then the backlog as historical data."""
        self.seq = 0
        ts = now_ms()
        nbirth = sp.build(ts, self._next_seq())
        sp.add_metric(nbirth, "bdSeq", sp.INT64, self.bd_seq, timestamp=ts)
        sp.add_metric(nbirth, "Node Control/Rebirth", sp.BOOLEAN, False, timestamp=ts)
        sp.add_metric(nbirth, "Node Info/Node Id", sp.STRING, self.service.settings.node_id, timestamp=ts)
        sp.add_metric(nbirth, "Node Info/Software Version", sp.STRING, _version(), timestamp=ts)
        if not self._publish(self.topics.node("NBIRTH"), nbirth):
            return
        for line in self.controller.lines():
            dbirth = sp.build(ts, self._next_seq())
            for name, datatype, value in self._control_metrics(line) + self._counter_metrics(line):
                sp.add_metric(dbirth, name, datatype, value, timestamp=ts)
            last = self._last_result(line)  # births carry current values (null when none yet)
            for name, datatype, value in _result_metrics(last):
                sp.add_metric(dbirth, name, datatype, value, timestamp=last.get("ts_capture_ms", ts))
            self._publish(self.topics.device("DBIRTH", line), dbirth)
        self._born = True
        self.births += 1
        self._live_from = self.service.writer.last_seq
        logger.info("Sparkplug births published (bdSeq %d)", self.bd_seq)

    def _last_result(self, line: str) -> dict[str, Any]:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT payload FROM results WHERE line = ? ORDER BY seq DESC LIMIT 1", (line,)
        ).fetchone()
        return json.loads(row[0]) if row else {}

    def _control_metrics(self, line: str) -> list[tuple[str, int, Any]]:
        models = self.controller.models(line)
        return [
            ("Control/Running", sp.BOOLEAN, self.controller.running(line)),
            ("Control/Model", sp.STRING, models[0]["name"] if models else None),
        ]

    def _counter_metrics(self, line: str) -> list[tuple[str, int, Any]]:
        counts = self.service.live.counts().get(line, {})
        return [
            ("Counters/Parts", sp.UINT64, counts.get("total", 0)),
            ("Counters/Pass", sp.UINT64, counts.get("pass", 0)),
            ("Counters/Fail", sp.UINT64, counts.get("fail", 0)),
            ("Counters/Error", sp.UINT64, counts.get("error", 0)),
        ]

    def _device_data(
        self,
        line: str,
        metrics: list[tuple[str, int, Any]],
        *,
        ts: int | None = None,
        historical: bool = False,
    ) -> bool:
        payload = sp.build(now_ms(), self._next_seq())
        for name, datatype, value in metrics:
            sp.add_metric(
                payload, name, datatype, value, timestamp=ts or payload.timestamp, historical=historical
            )
        if not self._publish(self.topics.device("DDATA", line), payload):
            return False
        self.ddata += 1
        return True

    def _forward(self) -> None:
        """Results after the forward cursor, in seq order; historical up to the birth."""
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT seq, line, payload FROM results WHERE seq > ? ORDER BY seq LIMIT ?",
            (self.forwarded_seq, _CHUNK),
        ).fetchall()
        lines = set(self.controller.lines())
        for row in rows:
            if row["line"] in lines:
                try:
                    result = json.loads(row["payload"])
                except ValueError as exc:  # a row we cannot read must not hold up the rest
                    self.guard.skipped(exc, f"result seq {row['seq']}")
                    self.forwarded_seq = row["seq"]
                    continue
                historical = row["seq"] <= self._live_from
                metrics = _result_metrics(result)
                if not historical:
                    metrics += self._counter_metrics(row["line"])
                if not self._device_data(
                    row["line"], metrics, ts=result["ts_capture_ms"], historical=historical
                ):
                    return  # the session ended; the rest waits for the next births
                if historical:
                    self.historical += 1
            self.forwarded_seq = row["seq"]
        if len(rows) == _CHUNK:
            self._wake.set()  # more to send: come back at once

    def health(self) -> dict[str, Any]:
        """Sparkplug session figures for /api/health."""
        link = self.link.health()
        state = link["state"]
        if self.failed or not self.alive:
            state = "error"
        elif state == "ok" and self.guard.failing:
            state = "degraded"
        elif state == "ok" and not self._born:
            state = "degraded"  # connected but not born: waiting for the primary host
        return {
            "state": state,
            "group_id": self.topics.group,
            "edge_node_id": self.topics.edge,
            "bd_seq": self.bd_seq,
            "seq": self.seq,
            "born": self._born,
            "primary_host": None
            if self.primary_host is None
            else {"id": self.primary_host, "online": self.host_online},
            "forwarded_seq": self.forwarded_seq,
            "waiting": max(0, self.service.writer.last_seq - self.forwarded_seq),
            "births": self.births,
            "rebirth_requests": self.rebirths,
            "ddata": self.ddata,
            "historical": self.historical,
            "commands": self.commands,
            "command_errors": self.command_errors,
            "states_unreadable": self.states_unreadable,
            "messages_refused": self.messages_refused,
            **self.guard.health(),
            "last_error": self.last_error,
            "failed": self.failed,
            "link": link,
        }


def parse_state(data: bytes, now: int) -> tuple[bool, int | None] | None:
    """(online, timestamp) of a primary host's STATE, or None when it cannot be believed.

    Sparkplug 3.0: JSON `{"online": bool, "timestamp": ms}`; 2.2: `ONLINE` / `OFFLINE` (no
    timestamp). The timestamp must be a finite number from 0 up to a day ahead of our clock:
    `1e400` (infinite) or 10**30 would otherwise either raise or make every later, genuine
    STATE look older and be ignored until a restart.
    """
    text = data.decode("utf-8", "replace").strip()
    if text.upper() in {"ONLINE", "OFFLINE"}:
        return text.upper() == "ONLINE", None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, a huge number, or nested too deep
        return None
    if not isinstance(body, dict):
        return None
    online, timestamp = body.get("online"), body.get("timestamp")
    if not isinstance(online, bool) or isinstance(timestamp, bool):
        return None
    if not isinstance(timestamp, int | float) or not math.isfinite(timestamp):
        return None
    if not 0 <= timestamp <= now + _STATE_FUTURE_MS:
        return None
    return online, int(timestamp)


def _result_metrics(result: dict[str, Any]) -> list[tuple[str, int, Any]]:
    """The metrics of one result (all null in a DBIRTH)."""
    latency = result.get("latency_ms") or {}
    return [
        ("Inspection/Seq", sp.UINT64, result.get("seq")),
        ("Inspection/Part Id", sp.STRING, result.get("part_id")),
        ("Inspection/Revision", sp.UINT32, result.get("revision")),
        ("Inspection/Verdict", sp.STRING, result.get("verdict")),
        ("Inspection/Defect Class", sp.STRING, result.get("defect_class")),
        ("Inspection/Confidence", sp.DOUBLE, result.get("confidence")),
        ("Inspection/P Defect", sp.DOUBLE, result.get("p_defect")),
        ("Inspection/Provisional", sp.BOOLEAN, result.get("provisional")),
        ("Inspection/Tier", sp.UINT32, result.get("tier")),
        ("Inspection/Latency ms", sp.DOUBLE, latency.get("total")),
    ]


def _version() -> str:
    try:
        return metadata.version("vision-appliance")
    except metadata.PackageNotFoundError:
        return "dev"
