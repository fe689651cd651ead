"""MQTT commands: validated, deduplicated by `cmd_id` in SQLite, executed once, always answered.

A command is `{"cmd_id": "...", "ts_ms": 1700000000000, "args": {...}}` on
`{prefix}/{node}/cmd/{name}` (node commands) or `{prefix}/{node}/line/{line}/cmd/{name}` (line
commands). Every command gets acks on `{prefix}/{node}/ack`: `accepted` then `done` or `failed`,
or a single `failed` when it is refused. In order:

0. larger than `_MAX_PAYLOAD` bytes -> `failed` at once, never parsed;
1. not JSON (or nested too deep to parse), not an object, no usable `cmd_id` -> `failed` (with
   the `cmd_id` when one can be read, else `cmd_id: null`);
2. delivered as a retained message -> ignored: `failed` once for an unknown `cmd_id`, silence
   for one already handled (a retained leftover must never act again);
3. `cmd_id` seen before -> the stored ack is sent again (`duplicate: true`), nothing runs;
4. older than `mqtt.command_max_age_s` by `ts_ms`, or past its MQTT 5 Message Expiry while it
   waited here -> `failed` (stale);
5. unknown command, wrong topic level or invalid `args` -> `failed` with the reason;
6. `accepted`, run on the command thread, then `done` (with `result`) or `failed`.

Every ack is stored with its command (dedupe window: `_KEEP_DAYS`), so a redelivery, or the
same command sent twice by a SCADA retry, is answered with the outcome and never run twice.

Nothing goes unanswered: a command whose handling raises anything unexpected gets `failed`
(`internal error: ...`, stored so that a redelivery is told the same). When the store does not
answer within `store_timeout_s` before the command ran, it gets `failed` ("store busy", not
run; send it again with a new `cmd_id`); once it ran, its real outcome is sent even if storing
that outcome is still waiting for the store.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.control import Controller, Outcome
from appliance.mqtt.client import MqttLink
from appliance.mqtt.topics import CommandTopic, Topics
from appliance.results import now_ms
from appliance.store.writer import StoreWriter, WriterFailed

logger = logging.getLogger(__name__)

_KEEP_DAYS = 7
_QUEUE = 64
_MAX_PAYLOAD = 64 * 1024  # a command is a few hundred bytes; anything this large is refused unread
_STORE_TIMEOUT_S = 30.0
_CMD_ID = re.compile(rb'"cmd_id"\s*:\s*"([\x21\x23-\x5b\x5d-\x7e]{1,128})"')
ACK_SCHEMA = "vision.ack/1"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    """start, stop: no arguments."""


class SwitchModelArgs(_Args):
    """switch_model: the package name and the tier it goes to."""

    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    tier: int = Field(1, ge=1, le=4)


class AckAlarmArgs(_Args):
    """ack_alarm: the alarm key (as in health `alarms[].details.alarm`)."""

    key: str = Field(min_length=1, max_length=200)


class RepublishArgs(_Args):
    """republish: a seq range (to the newest when to_seq is absent)."""

    from_seq: int = Field(ge=1)
    to_seq: int | None = Field(None, ge=1)


class Envelope(BaseModel):
    """The command message itself."""

    model_config = ConfigDict(extra="forbid")

    cmd_id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    ts_ms: int | None = Field(None, ge=0)
    args: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Spec:
    """A command: its level, its arguments and what runs it."""

    line_level: bool
    args: type[_Args]
    run: Callable[[Controller, str | None, Any, str], Outcome]


COMMANDS: dict[str, Spec] = {
    "start": Spec(True, NoArgs, lambda c, line, a, by: c.start_line(line or "", by)),
    "stop": Spec(True, NoArgs, lambda c, line, a, by: c.stop_line(line or "", by)),
    "switch_model": Spec(
        True, SwitchModelArgs, lambda c, line, a, by: c.switch_model(line or "", a.model, a.tier, by)
    ),
    "ack_alarm": Spec(False, AckAlarmArgs, lambda c, line, a, by: c.acknowledge_alarm(a.key, by)),
    "republish": Spec(False, RepublishArgs, lambda c, line, a, by: c.republish(a.from_seq, a.to_seq)),
}


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message on a command topic, as it arrived."""

    topic: str
    where: CommandTopic
    payload: bytes
    retained: bool
    expiry_s: int | None
    arrived: float  # time.monotonic()


class CommandHandler:
    """Queue of incoming commands and the thread that answers them."""

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        writer: StoreWriter,
        controller: Controller,
        *,
        max_age_s: float,
    ) -> None:
        self.link = link
        self.topics = topics
        self.writer = writer
        self.controller = controller
        self.max_age_s = max_age_s
        self._queue: queue.Queue[Incoming] = queue.Queue(maxsize=_QUEUE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0
        self.received = 0
        self.executed = 0
        self.failed = 0
        self.duplicates = 0
        self.ignored_retained = 0
        self.stale = 0
        self.store_timeouts = 0
        self.internal_errors = 0
        self.store_timeout_s = _STORE_TIMEOUT_S
        self.last_error: str | None = None
        self._count_lock = threading.Lock()
        self.heartbeat = time.monotonic()
        # the command being handled (command thread): what an unexpected failure must answer
        self._cmd_id: str | None = None
        self._ran = False
        self._answered = False

    def start(self) -> None:
        """Start the command thread."""
        self._thread = threading.Thread(target=self._run, name="mqtt-commands", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the command being run, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The thread runs and loops."""
        return bool(self._thread and self._thread.is_alive() and time.monotonic() - self.heartbeat < 120)

    def _count_failed(self) -> None:
        # Both paho's thread (refusals in `offer`) and the command thread count failures.
        with self._count_lock:
            self.failed += 1

    def offer(self, topic: str, payload: bytes, retained: bool, expiry_s: int | None) -> None:
        """Take a message from paho's thread: enqueue, or refuse at once when the queue is full."""
        where = self.topics.parse_command(topic)
        if where is None:
            return
        self.received += 1
        if len(payload) > _MAX_PAYLOAD:
            self._count_failed()
            # A local: the command thread writes last_error concurrently (paho calls this).
            why = f"too large: {len(payload)} bytes (limit {_MAX_PAYLOAD})"
            self.last_error = why
            logger.warning("command refused on %s: %s", where.name, why, extra={"line": where.line})
            self._send(_ack(_scan_cmd_id(payload), where, "failed", f"malformed: {why}"))
            return
        item = Incoming(topic, where, payload, retained, expiry_s, time.monotonic())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count_failed()
            cmd_id = _peek_cmd_id(payload)
            self._send(_ack(cmd_id, where, "failed", "busy: too many commands waiting; send it again later"))

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                self._prune()
                continue
            self._cmd_id, self._ran, self._answered = None, False, False
            try:
                self._handle(item)
            except Exception as exc:  # thread boundary: one bad command must not stop the rest
                self._unexpected(item, exc)

    def _unexpected(self, item: Incoming, exc: Exception) -> None:
        """Answer a command whose handling raised: `failed`, stored when it was recorded."""
        self._count_failed()
        cmd_id, where = self._cmd_id, item.where
        if isinstance(exc, TimeoutError) and not self._ran:
            self.store_timeouts += 1
            reason = (
                f"store busy: no answer within {self.store_timeout_s:.0f} s; not run, "
                "send it again with a new cmd_id"
            )
            logger.warning(
                "command %s %s not run: %s", where.name, cmd_id, reason, extra={"line": where.line}
            )
        else:
            self.internal_errors += 1
            reason = f"internal error: {type(exc).__name__}: {exc}"[:500]
            if self._ran:
                reason += " (after the command ran)"
            logger.error(
                "command %s %s failed: %s",
                where.name,
                cmd_id,
                reason,
                exc_info=exc,
                extra={"line": where.line},
            )
        self.last_error = reason
        if self._answered:
            return  # its final ack went out; what failed came after
        ack = _ack(cmd_id, where, "failed", reason)
        if cmd_id is not None:
            # Queued behind the insert (which may still be waiting): a redelivery gets this ack.
            self.writer.call(_record_failure(cmd_id, ack))
        self._send(ack)

    def _handle(self, item: Incoming) -> None:
        where = item.where
        try:
            data = json.loads(item.payload)
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, or nested too deep
            why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
            return self._refuse(_scan_cmd_id(item.payload), where, f"malformed: not JSON ({why})")
        if not isinstance(data, dict):
            return self._refuse(None, where, "malformed: the command must be a JSON object")
        try:
            envelope = Envelope.model_validate(data)
        except ValidationError as exc:
            cmd_id = data.get("cmd_id") if isinstance(data.get("cmd_id"), str) else None
            return self._refuse(cmd_id, where, f"malformed: {_explain(exc)}")
        cmd_id = envelope.cmd_id
        self._cmd_id = cmd_id
        if item.retained:
            self.ignored_retained += 1
            if self._stored(cmd_id) is None:
                self._send(
                    _ack(
                        cmd_id,
                        where,
                        "failed",
                        "retained command ignored (publish commands with retain=false)",
                    )
                )
            return None
        first = _ack(cmd_id, where, "accepted", None)
        stored = self._insert(cmd_id, item, first)
        if stored is not None:
            self.duplicates += 1
            again = json.loads(stored)
            again["duplicate"] = True
            self._send(again)
            return None
        reason = self._stale(envelope, item)
        if reason:
            self.stale += 1
            return self._finish(cmd_id, where, "failed", reason)
        spec = COMMANDS.get(where.name)
        if spec is None:
            return self._finish(
                cmd_id, where, "failed", f"unknown command {where.name!r}; known: {', '.join(COMMANDS)}"
            )
        if spec.line_level and where.line is None:
            return self._finish(
                cmd_id,
                where,
                "failed",
                f"{where.name} is a line command: use {self.topics.base}/line/LINE/cmd/{where.name}",
            )
        if not spec.line_level and where.line is not None:
            return self._finish(
                cmd_id,
                where,
                "failed",
                f"{where.name} is a node command: use {self.topics.base}/cmd/{where.name}",
            )
        try:
            args = spec.args.model_validate(envelope.args)
        except ValidationError as exc:
            return self._finish(cmd_id, where, "failed", f"invalid args: {_explain(exc)}")
        self._send(first)
        self._ran = True
        outcome = spec.run(self.controller, where.line, args, f"mqtt:{cmd_id}")
        self.executed += 1
        if outcome.ok:
            return self._finish(cmd_id, where, "done", None, outcome.details)
        return self._finish(cmd_id, where, "failed", outcome.reason, outcome.details or None)

    def _stale(self, envelope: Envelope, item: Incoming) -> str | None:
        if item.expiry_s is not None and time.monotonic() - item.arrived > item.expiry_s:
            return "stale: its MQTT message expiry passed before it could run"
        if envelope.ts_ms is not None:
            age_s = (now_ms() - envelope.ts_ms) / 1000.0
            if age_s > self.max_age_s:
                return f"stale: ts_ms is {age_s:.0f} s old (limit {self.max_age_s:.0f} s)"
            if age_s < -self.max_age_s:
                return f"stale: ts_ms is {-age_s:.0f} s in the future (check the sender's clock)"
        return None

    # --- acks and storage -----------------------------------------------------------------

    def _refuse(self, cmd_id: str | None, where: CommandTopic, reason: str) -> None:
        self._count_failed()
        self.last_error = reason
        logger.warning("command refused on %s: %s", where.name, reason, extra={"line": where.line})
        self._send(_ack(cmd_id, where, "failed", reason))

    def _finish(
        self,
        cmd_id: str,
        where: CommandTopic,
        status: str,
        reason: str | None,
        result: dict[str, Any] | None = None,
    ) -> None:
        if status == "failed":
            self._count_failed()
            self.last_error = reason
            logger.warning("command %s %s failed: %s", where.name, cmd_id, reason, extra={"line": where.line})
        else:
            logger.info("command %s %s done", where.name, cmd_id, extra={"line": where.line})
        ack = _ack(cmd_id, where, status, reason, result)
        text = json.dumps(ack, separators=(",", ":"))

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE commands SET status = ?, ack = ?, updated_ms = ? WHERE cmd_id = ?",
                (status, text, now_ms(), cmd_id),
            )

        try:
            self.writer.call(update).result(timeout=self.store_timeout_s)
        except (TimeoutError, WriterFailed, sqlite3.Error) as exc:
            if not self._ran:
                raise  # not run: the caller answers `failed`
            # It ran: its outcome is what the sender must hear, stored or not (yet).
            self.store_timeouts += isinstance(exc, TimeoutError)
            logger.warning("command %s %s: its ack could not be stored yet: %s", where.name, cmd_id, exc)
        self._answered = True
        self._send(ack)

    def _insert(self, cmd_id: str, item: Incoming, ack: dict[str, Any]) -> str | None:
        """Record the command (atomically on the writer); the stored ack if it was seen before."""
        text = json.dumps(ack, separators=(",", ":"))

        def insert(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT ack FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
            if row is not None:
                return str(row[0])
            ts = now_ms()
            conn.execute(
                "INSERT INTO commands (cmd_id, topic, name, status, ack, received_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cmd_id, item.topic, item.where.name, "accepted", text, ts, ts),
            )
            return None

        result: str | None = self.writer.call(insert).result(timeout=self.store_timeout_s)
        return result

    def _stored(self, cmd_id: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT ack FROM commands WHERE cmd_id = ?", (cmd_id,)).fetchone()
            return None if row is None else str(row[0])

        result: str | None = self.writer.call(read).result(timeout=self.store_timeout_s)
        return result

    def _prune(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + 3600
        cutoff = now_ms() - _KEEP_DAYS * 86_400_000
        self.writer.call(lambda conn: conn.execute("DELETE FROM commands WHERE received_ms < ?", (cutoff,)))

    def _send(self, ack: dict[str, Any]) -> None:
        ticket = self.link.publish(self.topics.ack, json.dumps(ack, separators=(",", ":")), qos=1)
        if ticket is None:
            logger.warning("ack for %s not sent: not connected", ack.get("cmd_id"))

    def health(self) -> dict[str, Any]:
        """Command figures for /api/health."""
        return {
            "state": "ok" if self.alive else "error",
            "received": self.received,
            "executed": self.executed,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "ignored_retained": self.ignored_retained,
            "stale": self.stale,
            "store_timeouts": self.store_timeouts,
            "internal_errors": self.internal_errors,
            "waiting": self._queue.qsize(),
            "last_error": self.last_error,
        }


def _ack(
    cmd_id: str | None,
    where: CommandTopic,
    status: str,
    reason: str | None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ack: dict[str, Any] = {
        "schema": ACK_SCHEMA,
        "cmd_id": cmd_id,
        "command": where.name,
        "line": where.line,
        "status": status,
        "reason": reason,
        "ts_ms": now_ms(),
    }
    if result:
        ack["result"] = result
    return ack


def _record_failure(cmd_id: str, ack: dict[str, Any]) -> Callable[[sqlite3.Connection], None]:
    """The writer op that stores a `failed` ack for a command recorded as accepted."""
    text = json.dumps(ack, separators=(",", ":"))

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE commands SET status = 'failed', ack = ?, updated_ms = ? "
            "WHERE cmd_id = ? AND status = 'accepted'",
            (text, now_ms(), cmd_id),
        )

    return op


def _peek_cmd_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return _scan_cmd_id(payload)
    cmd_id = data.get("cmd_id") if isinstance(data, dict) else None
    return cmd_id if isinstance(cmd_id, str) else None


def _scan_cmd_id(payload: bytes) -> str | None:
    """The `cmd_id` of a payload that cannot be parsed, if one can be read (for the ack only)."""
    match = _CMD_ID.search(payload[:4096])
    return match.group(1).decode("ascii") if match else None


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(message)"
        reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{key}: {reason}")
    return "; ".join(parts)
