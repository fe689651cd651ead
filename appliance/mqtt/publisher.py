"""Results from the SQLite outbox to the broker: in `seq` order, delivered only on PUBACK.

One thread owns all the bookkeeping (paho's callbacks only enqueue):

- **messages**: one result each on `line/{line}/result`, or, with `mqtt.results_per_message`
  above 1, a batch of one line's waiting results on `line/{line}/results`: what is there when
  the window has room, once a batch's worth is waiting or the first waiting result has waited
  `mqtt.batch_linger_ms` (a backlog being drained is not held back);
- **window**: at most `min(mqtt.inflight, broker Receive Maximum)` messages are unacknowledged;
- **cursor**: the next `seq` to read; rows are read with `published_ms IS NULL`, in `seq` order;
- **in flight**: message id -> its rows, per connection; a PUBACK moves the rows to
  **unmarked**, and batches of unmarked rows get `published_ms` through the store writer (a
  row is delivered only once the broker acknowledged the message that carried it);
- **reconnect**: the in-flight map of the old connection is dropped and the cursor goes back
  to the lowest undelivered `seq`, so every unacknowledged row is sent again, once, with
  `replayed: true`. A row is in memory at most once (in flight, unmarked, or not at all).

`replayed: true` means "this message may have been published before": a resend after a lost
PUBACK, a republish command, or the first send, after a restart, of a row a previous run may
have sent (rows that were already in the outbox at start).

A PUBACK with a failure reason (MQTT 5, e.g. 0x87 not authorized by the broker's ACL) leaves
the row undelivered; it is counted, raised as an alarm, and tried again after the next
reconnect.

Each pass of the loop is isolated: an unexpected exception is counted and logged, the next pass
waits with backoff, rewinds the cursor to the lowest undelivered row (rows in flight or
acknowledged are skipped, so nothing is sent twice) and goes on. Only a failed store writer
ends the thread (nothing can be marked any more); a loop that has failed every pass for
10 minutes reports itself not alive, for the watchdog.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from appliance.control import Outcome
from appliance.guard import LoopGuard
from appliance.mqtt.client import MqttLink
from appliance.mqtt.topics import Topics
from appliance.rates import RateCounter
from appliance.results import now_ms
from appliance.store.db import connect
from appliance.store.writer import StoreWriter, WriterFailed

logger = logging.getLogger(__name__)

_TS_NULL = '"ts_publish_ms":null'
_NOT_REPLAYED = '"replayed":false'
_MARK_BATCH = 256
# Batched results stay under this, and under the broker's Maximum Packet Size when it sets one.
_BATCH_MAX_BYTES = 64 * 1024
_PACKET_HEADROOM = 512  # fixed header, topic, properties
_ENVELOPE_BYTES = 64  # the batch's schema key and brackets
_SPLICE_BYTES = 32  # a result's published text over its stored one: ts_publish_ms, replayed, comma
_MAX_READ = 2048  # rows read per pass beyond those skipped (batched: the window x N can be large)
_MARK_MAX_WAIT_S = 0.2
_STATS_PERIOD_S = 2.0


@dataclass(frozen=True, slots=True)
class _Sent:
    seqs: tuple[int, ...]  # one result, or a batch of one line's consecutive results
    ts_ms: int
    replay: bool  # a republish request (the rows were delivered before): nothing to mark
    topic: str


class _Batch:
    """The results of one message being gathered: one line's, in `seq` order."""

    __slots__ = ("items", "line", "max_bytes", "per_message", "size")

    def __init__(self, per_message: int, max_bytes: int = _BATCH_MAX_BYTES) -> None:
        self.per_message = per_message
        self.max_bytes = max_bytes
        self.items: list[tuple[int, str, bool]] = []  # (seq, stored payload, replayed)
        self.line = ""
        self.size = 0

    def takes(self, row: sqlite3.Row) -> bool:
        """Can `row` join? Same line, at most `per_message` results and, beyond the first
        result, `max_bytes` of message."""
        if not self.items:
            return True
        return (
            row["line"] == self.line
            and len(self.items) < self.per_message
            and self.size + len(row["payload"]) + _SPLICE_BYTES <= self.max_bytes
        )

    def add(self, row: sqlite3.Row, replayed: bool) -> None:
        self.items.append((row["seq"], row["payload"], replayed))
        self.line = row["line"]
        self.size += len(row["payload"]) + _SPLICE_BYTES + (0 if len(self.items) > 1 else _ENVELOPE_BYTES)


class _Gather:
    """The messages of one pass: an open batch per line while rows come in `seq` order (the
    lines of a node interleave), at most `room` messages in all."""

    def __init__(self, room: int, per_message: int, max_bytes: int = _BATCH_MAX_BYTES) -> None:
        self.room = room
        self.per_message = per_message
        self.max_bytes = max_bytes
        self.open: dict[str, _Batch] = {}
        self.closed: list[_Batch] = []

    def take(self, row: sqlite3.Row, replayed: bool) -> bool:
        """Put `row` in its line's batch; False (row not taken) when that needs a message
        beyond the window."""
        batch = self.open.get(row["line"])
        if batch is not None and batch.takes(row):
            batch.add(row, replayed)
            return True
        if len(self.closed) + len(self.open) >= self.room:
            return False
        if batch is not None:
            self.closed.append(batch)
        batch = self.open[row["line"]] = _Batch(self.per_message, self.max_bytes)
        batch.add(row, replayed)
        return True

    def batches(self) -> list[_Batch]:
        """Every message, by first `seq` (a line's own batches stay in order)."""
        return sorted([*self.closed, *self.open.values()], key=lambda batch: batch.items[0][0])


class OutboxPublisher:
    """Drains the results outbox to MQTT; see the module docstring."""

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        writer: StoreWriter,
        db_path: Path,
        *,
        inflight: int,
        boot_seq: int,
        on_rejected: Callable[[str], None] | None = None,
        on_accepted_again: Callable[[], None] | None = None,
        max_republish: int = 100_000,
        results_per_message: int = 1,
        batch_linger_s: float = 0.0,
    ) -> None:
        self.link = link
        self.topics = topics
        self.writer = writer
        self.db_path = db_path
        self.max_inflight = inflight
        self.boot_seq = boot_seq
        self.max_republish = max_republish
        self.per_message = results_per_message
        self.linger_s = batch_linger_s if results_per_message > 1 else 0.0
        self.batch_max_bytes = _BATCH_MAX_BYTES
        self._on_rejected = on_rejected or (lambda _reason: None)
        self._on_accepted_again = on_accepted_again or (lambda: None)
        self._refused: set[int] = set()  # seqs the broker refused, until one gets through again
        self._wake = writer.subscribe()
        # ("up", gen, window, max packet) | ("down", gen) | ("ack", ...)
        self._events: deque[tuple[Any, ...]] = deque()
        self._republish: deque[tuple[int, int]] = deque()
        self._stop = threading.Event()
        self._quiet = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        # thread-owned state
        self._generation: int | None = None
        self._window = inflight
        self._cursor = 1
        self._inflight: dict[int, _Sent] = {}
        self._inflight_seqs: set[int] = set()
        self._unmarked: dict[int, int] = {}  # seq -> published_ms, acked, not yet committed
        self._marking: list[tuple[Future[Any], list[int]]] = []
        self._unmarked_since: float | None = None
        self._sent_high = 0
        self._replay: tuple[int, int] | None = None  # (next seq, last seq) of a republish
        self._linger_since: float | None = None  # when results were first seen waiting for a batch
        self._flushing = False  # a graceful stop is settling: no result is held back
        self._next_stats = 0.0
        # A backlog being drained: (t0, published at t0, backlog at t0, last seq at t0)
        self._drain: tuple[float, int, int, int] | None = None
        # figures for health
        self.published = RateCounter()
        self.messages = 0  # result messages acknowledged (a batch is one)
        self.replayed = 0
        self.republished = 0
        self.rejected = 0
        self.last_rejection: str | None = None
        self.backlog = 0
        self.oldest_unpublished_ms: int | None = None
        self.last_acked_seq = 0
        self.last_drain: dict[str, Any] | None = None
        self.max_inflight_seen = 0
        self.failed: str | None = None
        self.guard = LoopGuard("MQTT outbox publisher", logger)
        self._rewind = False
        self.heartbeat = time.monotonic()

    # --- called from other threads --------------------------------------------------------

    def start(self) -> None:
        """Open the read connection and start the thread."""
        self._conn = connect(self.db_path, readonly=True)
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending; commit the marks of everything acknowledged so far."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def settle(self, timeout: float) -> bool:
        """Wait (at a graceful stop) until everything committed is published and acknowledged."""
        deadline = time.monotonic() + timeout
        self._flushing = True
        while time.monotonic() < deadline:
            if self._generation is None:
                return False  # not connected: the outbox keeps the rest for the next run
            if (
                self.writer.backlog == 0
                and self._cursor > self.writer.last_seq
                and not self._inflight
                and not self._events
            ):
                return True
            self._wake.set()
            time.sleep(0.02)
        return False

    def quiesce(self) -> None:
        """Publish nothing new (before a graceful disconnect); acks are still recorded."""
        self._quiet = True
        self._wake.set()

    def link_up(self, generation: int, receive_maximum: int, maximum_packet_size: int | None = None) -> None:
        """A connection is up (paho thread)."""
        self._events.append(("up", generation, receive_maximum, maximum_packet_size))
        self._wake.set()

    def link_down(self, generation: int) -> None:
        """That connection is gone (any thread)."""
        self._events.append(("down", generation))
        self._wake.set()

    def acked(self, generation: int, mid: int, reason: ReasonCode) -> None:
        """A PUBACK arrived (paho thread, under paho's lock: only enqueue)."""
        self._events.append(("ack", generation, mid, reason))
        self._wake.set()

    def republish(self, from_seq: int, to_seq: int | None) -> Outcome:
        """Queue stored results [from_seq, to_seq] to be published again, marked `replayed`."""
        last = self.writer.last_seq
        if not isinstance(from_seq, int) or from_seq < 1:
            return Outcome(False, "from_seq must be an integer >= 1")
        if from_seq > last:
            return Outcome(False, f"from_seq {from_seq} is beyond the last seq {last}")
        end = last if to_seq is None else to_seq
        if not isinstance(end, int) or end < from_seq:
            return Outcome(False, "to_seq must be an integer >= from_seq")
        end = min(end, last)
        if end - from_seq + 1 > self.max_republish:
            return Outcome(
                False, f"{end - from_seq + 1} rows requested; at most {self.max_republish} per command"
            )
        self._republish.append((from_seq, end))
        self._wake.set()
        return Outcome(True, None, {"from_seq": from_seq, "to_seq": end, "queued_rows": end - from_seq + 1})

    @property
    def alive(self) -> bool:
        """The thread runs and loops (and its passes do not all fail)."""
        return bool(
            self._thread
            and self._thread.is_alive()
            and time.monotonic() - self.heartbeat < 30
            and not self.guard.wedged
        )

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                self._wake.wait(self._sleep_s())
                self._wake.clear()
                # WriterFailed: nothing can be marked delivered any more, this loop is done.
                # Any other failure: rewind to the lowest unpublished row and go on.
                self.guard.run_pass(
                    self._iteration, self._stop, fatal=(WriterFailed,), on_failure=self._set_rewind
                )
            self._handle_events()
            self._flush_marks(force=True)
            for future, _ in self._marking:
                future.result(timeout=5.0)
        except WriterFailed as exc:
            self.failed = f"store writer failed: {exc}"
        except Exception as exc:  # thread boundary
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("MQTT outbox publisher failed")
        finally:
            if self._conn is not None:
                self._conn.close()

    def _set_rewind(self) -> None:
        self._rewind = True

    def _iteration(self) -> None:
        if self._rewind and self._generation is not None:
            self._cursor = min(self._cursor, self._lowest_unpublished())
        self._rewind = False
        self._handle_events()
        if self._generation is not None and not self._quiet:
            self._fill()
            self._check_drain()
        self._settle_marks()
        self._flush_marks(force=False)
        if time.monotonic() >= self._next_stats:
            self._stats()

    def _handle_events(self) -> None:
        while self._events:
            event = self._events.popleft()
            if event[0] == "ack":
                self._ack(event[1], event[2], event[3])
            elif event[0] == "up":
                self._up(event[1], event[2], event[3])
            elif event[0] == "down" and event[1] == self._generation:
                self._generation = None
                self._drain = None  # interrupted: the next connection measures afresh
                self._inflight.clear()
                self._inflight_seqs.clear()
                self._suspend_republish()

    def _suspend_republish(self) -> None:
        """A republish cut by a lost connection resumes where it was on the next one."""
        if self._replay is not None:
            self._republish.appendleft(self._replay)
            self._replay = None

    def _up(self, generation: int, receive_maximum: int, maximum_packet_size: int | None) -> None:
        self._generation = generation
        # What waited through the outage goes at once: a linger that has already run out.
        self._linger_since = time.monotonic() - self.linger_s if self.linger_s > 0 else None
        self.batch_max_bytes = (
            _BATCH_MAX_BYTES
            if maximum_packet_size is None
            else max(1024, min(_BATCH_MAX_BYTES, maximum_packet_size - _PACKET_HEADROOM))
        )
        # Leave a little of the broker's Receive Maximum to acks, events and health.
        self._window = max(1, min(self.max_inflight, receive_maximum - min(4, receive_maximum // 4)))
        self._inflight.clear()
        self._inflight_seqs.clear()
        self._suspend_republish()
        self._cursor = self._lowest_unpublished()
        self._stats()
        if self.backlog > self._window:
            self._drain = (time.monotonic(), self.published.count, self.backlog, self.writer.last_seq)
        logger.info("MQTT outbox: %d result(s) waiting, resuming at seq %d", self.backlog, self._cursor)

    def _lowest_unpublished(self) -> int:
        assert self._conn is not None
        # Read before the query: a commit landing in between must not move the cursor past it.
        last = self.writer.last_seq
        row = self._conn.execute("SELECT MIN(seq) FROM results WHERE published_ms IS NULL").fetchone()
        return int(row[0]) if row[0] is not None else last + 1

    def _ack(self, generation: int, mid: int, reason: ReasonCode) -> None:
        if generation != self._generation:
            return  # an ack of a connection already given up: its rows are being resent
        sent = self._inflight.pop(mid, None)
        if sent is None:
            return
        self._inflight_seqs.difference_update(sent.seqs)
        if reason.is_failure:
            self.rejected += len(sent.seqs)
            self.last_rejection = (
                f"broker refused seq {_seq_text(sent.seqs)} on {sent.topic}: {reason} (0x{reason.value:02x})"
            )
            if not self._refused:
                self._on_rejected(self.last_rejection)
            self._refused.update(sent.seqs)
            return
        if self._refused and not self._refused.isdisjoint(sent.seqs):
            self._refused.difference_update(sent.seqs)
            if not self._refused:
                self._on_accepted_again()
        self.published.add(len(sent.seqs))
        self.messages += 1
        self.last_acked_seq = max(self.last_acked_seq, sent.seqs[-1])
        if not sent.replay:
            for seq in sent.seqs:
                self._unmarked[seq] = sent.ts_ms
            if self._unmarked_since is None:
                self._unmarked_since = time.monotonic()

    def _fill(self) -> None:
        """Publish rows until the window is full: new results first, then republish requests."""
        waiting = self.writer.last_seq - self._cursor + 1
        if waiting <= 0:
            self._linger_since = None
        elif self.linger_s > 0 and self._linger_since is None:
            self._linger_since = time.monotonic()  # it runs while the window is full, too
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        take = self._linger_take(waiting) if waiting > 0 else 0
        if take == 0:
            # Nothing committed past the cursor (most wake-ups are acks), or a batch still
            # filling: no query.
            self._fill_republish(room)
            return
        assert self._conn is not None
        skip = len(self._unmarked)
        if self._inflight_seqs and self._cursor <= max(self._inflight_seqs):
            skip += len(self._inflight_seqs)  # after a rewind: rows in flight come up again
        rows = self._conn.execute(
            "SELECT seq, line, payload FROM results WHERE seq >= ? AND published_ms IS NULL "
            "ORDER BY seq LIMIT ?",
            (self._cursor, min(room * self.per_message, _MAX_READ, take or _MAX_READ) + skip),
        ).fetchall()
        gather = _Gather(room, self.per_message, self.batch_max_bytes)
        taken = 0
        for row in rows:
            seq = row["seq"]
            if seq in self._unmarked or seq in self._inflight_seqs:
                self._cursor = seq + 1
                continue  # acknowledged (its mark is on its way to the writer) or in flight
            if taken == take or not gather.take(row, seq <= self._sent_high or seq <= self.boot_seq):
                break  # the window is full, or the rest lingers: read again next time
            taken += 1
            self._cursor = seq + 1
        for batch in gather.batches():
            if not self._send(batch, replay=False):
                return
            room -= 1
        if room > 0:
            self._fill_republish(room)

    def _linger_take(self, waiting: int) -> int | None:
        """How many of the `waiting` results this pass sends: None for all of them; batched,
        until the first of them has waited the linger, only whole batches (0: none yet) and
        the rest waits on. Counted over all lines (the lines of a node interleave)."""
        if self.linger_s <= 0:
            return None
        expired = self._linger_since is None or time.monotonic() - self._linger_since >= self.linger_s
        if expired or self._drain is not None or self._flushing:
            self._linger_since = None
            return None
        whole = waiting - waiting % self.per_message
        if whole:
            self._linger_since = time.monotonic() if waiting > whole else None
        return whole

    def _sleep_s(self) -> float:
        """Until the next wake-up without an event: the end of a linger, else half a second."""
        if self.linger_s <= 0 or self._linger_since is None or self._generation is None or self._quiet:
            return 0.5
        if len(self._inflight) >= self._window:
            return 0.5  # an ack wakes the loop first
        return min(0.5, max(0.0, self._linger_since + self.linger_s - time.monotonic()))

    def _fill_republish(self, room: int) -> None:
        if self._replay is None:
            if not self._republish:
                return
            self._replay = self._republish.popleft()
        start, end = self._replay
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT seq, line, payload, published_ms FROM results WHERE seq BETWEEN ? AND ? "
            "ORDER BY seq LIMIT ?",
            (start, end, min(room * self.per_message, _MAX_READ)),
        ).fetchall()
        gather = _Gather(room, self.per_message, self.batch_max_bytes)
        for row in rows:
            seq = row["seq"]
            if seq in self._inflight_seqs or (row["published_ms"] is None and seq not in self._unmarked):
                start = seq + 1
                continue  # not delivered yet: the outbox path sends it
            if not gather.take(row, True):
                break
            start = seq + 1
        for batch in gather.batches():
            if not self._send(batch, replay=True):
                self._replay = (batch.items[0][0], end)
                return
            self.republished += len(batch.items)
        self._replay = None if not rows or start > end else (start, end)

    def _send(self, batch: _Batch, *, replay: bool) -> bool:
        """One message: a result (`result` topic) or, with results_per_message > 1, a batch."""
        ts = now_ms()
        items = batch.items
        if self.per_message == 1:
            _, stored, replayed = items[0]
            topic, data = self.topics.result(batch.line), publish_text(stored, ts, replayed)
        else:
            topic = self.topics.results(batch.line)
            data = batch_text([publish_text(stored, ts, replayed) for _, stored, replayed in items])
        ticket = self.link.publish(topic, data, qos=1, generation=self._generation)
        if ticket is None:
            return False  # connection gone; the "down" event follows
        seqs = tuple(seq for seq, _, _ in items)
        self._inflight[ticket.mid] = _Sent(seqs, ts, replay, topic)
        self._inflight_seqs.update(seqs)
        self.max_inflight_seen = max(self.max_inflight_seen, len(self._inflight))
        self.replayed += sum(1 for _, _, replayed in items if replayed)
        self._sent_high = max(self._sent_high, seqs[-1])
        return True

    # --- marks ----------------------------------------------------------------------------

    def _flush_marks(self, *, force: bool) -> None:
        if not self._unmarked or (self._unmarked_since is None and not force):
            return
        waiting = len(self._unmarked) - sum(len(seqs) for _, seqs in self._marking)
        if waiting <= 0:
            return
        due = self._unmarked_since is not None and time.monotonic() - self._unmarked_since >= _MARK_MAX_WAIT_S
        if not (force or due or waiting >= _MARK_BATCH):
            return
        submitted = {s for _, seqs in self._marking for s in seqs}
        batch = [(ts, seq) for seq, ts in self._unmarked.items() if seq not in submitted]

        def mark(conn: sqlite3.Connection) -> int:
            conn.executemany(
                "UPDATE results SET published_ms = ? WHERE seq = ? AND published_ms IS NULL", batch
            )
            return len(batch)

        self._marking.append((self.writer.call(mark), [seq for _, seq in batch]))
        self._unmarked_since = None

    def _settle_marks(self) -> None:
        still: list[tuple[Future[Any], list[int]]] = []
        for future, seqs in self._marking:
            if not future.done():
                still.append((future, seqs))
                continue
            error = future.exception()
            if error is not None:
                logger.warning("marking %d result(s) published failed, will retry: %s", len(seqs), error)
                self._unmarked_since = time.monotonic()
                if isinstance(error, WriterFailed):
                    raise error
                continue
            for seq in seqs:
                self._unmarked.pop(seq, None)
        self._marking = still
        if self._unmarked and self._unmarked_since is None and not self._marking:
            self._unmarked_since = time.monotonic()

    # --- figures --------------------------------------------------------------------------

    def _stats(self) -> None:
        assert self._conn is not None
        started = time.monotonic()
        count, oldest = self._conn.execute(
            "SELECT COUNT(*), MIN(created_ms) FROM results WHERE published_ms IS NULL"
        ).fetchone()
        self.backlog = max(0, int(count) - len(self._unmarked))
        self.oldest_unpublished_ms = oldest
        cost = time.monotonic() - started
        self._next_stats = time.monotonic() + max(_STATS_PERIOD_S, 20 * cost)

    def _check_drain(self) -> None:
        """The backlog found at reconnect is delivered once every seq up to its end was answered."""
        if self._drain is None:
            return
        target = self._drain[3]
        if self._cursor <= target or any(s.seqs[0] <= target for s in self._inflight.values()):
            return
        self._finish_drain()

    def _finish_drain(self) -> None:
        assert self._drain is not None
        t0, published0, backlog0, _target = self._drain
        self._drain = None
        seconds = time.monotonic() - t0
        rows = self.published.count - published0
        self.last_drain = {
            "rows": rows,
            "backlog_at_reconnect": backlog0,
            "seconds": round(seconds, 3),
            "rows_s": round(rows / seconds, 1) if seconds > 0 else None,
            "finished_ms": now_ms(),
        }
        logger.info("MQTT outbox drained: %d result(s) in %.1f s", rows, seconds)

    def health(self) -> dict[str, Any]:
        """Outbox figures for /api/health (drain_rows_s: acknowledged results per second)."""
        oldest = self.oldest_unpublished_ms
        state = "error" if self.failed or not self.alive else "degraded" if self.guard.failing else "ok"
        return {
            "state": state,
            "window": self._window,
            "inflight": len(self._inflight),
            "max_inflight_seen": self.max_inflight_seen,
            "published": self.published.count,
            "messages": self.messages,
            "drain_rows_s": round(self.published.rate(), 1),
            "replayed": self.replayed,
            "republished": self.republished,
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
            "backlog": self.backlog,
            "oldest_unpublished_age_s": round((now_ms() - oldest) / 1000, 1) if oldest else None,
            "last_acked_seq": self.last_acked_seq,
            "last_drain": self.last_drain,
            **self.guard.health(),
            "failed": self.failed,
        }


def batch_text(texts: list[str]) -> str:
    """A `vision.results/1` message: results of one line in `seq` order, each as published alone."""
    return '{"schema":"vision.results/1","results":[' + ",".join(texts) + "]}"


def _seq_text(seqs: tuple[int, ...]) -> str:
    return str(seqs[0]) if len(seqs) == 1 else f"{seqs[0]}-{seqs[-1]}"


def publish_text(stored: str, ts_publish_ms: int, replayed: bool) -> str:
    """The message for a stored payload: `ts_publish_ms` and `replayed` set, nothing else touched.

    The store writes every payload with `json.dumps(..., separators=(",", ":"))` from
    `Verdict.to_payload`, so it holds `"ts_publish_ms":null` and `"replayed":false` literally;
    the two values are spliced into the text (no parse, no re-serialisation: this runs for every
    message). A marker cannot occur inside a string value (its quotes would be escaped there)
    and the payload has no keys of its own making, so the one occurrence is the top-level key;
    when a marker is missing or repeated (a payload not written that way), the exact path
    through `json` is taken. Both give the same text.
    """
    ts_at = stored.find(_TS_NULL)
    flag_at = stored.find(_NOT_REPLAYED)
    if (
        ts_at < 0
        or flag_at < 0
        or stored.find(_TS_NULL, ts_at + 1) >= 0
        or stored.find(_NOT_REPLAYED, flag_at + 1) >= 0
    ):
        return reserialise(stored, ts_publish_ms, replayed)
    text = stored.replace(_TS_NULL, f'"ts_publish_ms":{int(ts_publish_ms)}', 1)
    return text.replace(_NOT_REPLAYED, '"replayed":true', 1) if replayed else text


def reserialise(stored: str, ts_publish_ms: int, replayed: bool) -> str:
    """The exact path: parse, set both keys, serialise again (compact, like the store)."""
    payload = json.loads(stored)
    payload["ts_publish_ms"] = ts_publish_ms
    payload["replayed"] = replayed
    return json.dumps(payload, separators=(",", ":"))
