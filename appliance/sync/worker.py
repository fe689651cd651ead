"""The sync worker: one thread that moves the outbox to the cloud when the uplink allows.

Each round (every `interval_s`, or at once after `kick()`), inside a schedule window and
within the policy:

1. results: resume the recorded-but-unsynced batch if there is one, else cut the next batch;
   upload data then manifest; mark it synced; repeat back to back while full batches wait
   (a backlog drains at full speed), then one partial batch of what is left;
2. hard cases and labelled parts, up to `cases_per_round`;
3. verdicts from the cloud, every `pull_interval_s`.

A failure ends the round and the next one waits with exponential backoff and jitter (capped at
`backoff_max_s`, at most 5 minutes). Anything else that raises in a pass of the loop (the stale
check, the schedule) is counted and logged and the loop goes on after a backoff
(`appliance.guard.LoopGuard`); only a loop that has failed every pass for 10 minutes stops
counting as alive. The worker never blocks the pipeline: it reads with its own connection and
writes only small ops through the store writer (recording a batch boundary, marking it synced),
and all its waits are interruptible.

Local retention may delete results before they were uploaded (the uplink away for longer than
`store.max_age_days`, or a backlog past `store.max_rows`): `loss.py` counts each such row once
and raises the `sync_rows_lost` alarm, from every pass of the loop and from the batches.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.config import Settings
from appliance.events import EventBus
from appliance.guard import LoopGuard
from appliance.results import now_ms
from appliance.store.db import connect
from appliance.store.writer import StoreWriter
from appliance.sync import batches, cases
from appliance.sync.loss import LossWatch
from appliance.sync.meta import store_id_op
from appliance.sync.privacy import Policy, what_leaves
from appliance.sync.pullback import Puller
from appliance.sync.schedule import Backoff, Schedule
from appliance.sync.targets import KeyConflict, Target, TargetError, make_target
from appliance.sync.throttle import TokenBucket, lower_priority

logger = logging.getLogger(__name__)

STALE_ALARM = "sync:stale"
CONFLICT_ALARM = "sync:key_conflict"
_HEALTH_CACHE_S = 2.0


class SyncWorker:
    """Component `sync`: results batches, hard cases, verdict pull-back."""

    def __init__(
        self,
        settings: Settings,
        writer: StoreWriter,
        events: EventBus,
        *,
        target_factory: Callable[[str, TokenBucket], Target] | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.sync
        self.writer = writer
        self.events = events
        self.policy = Policy(self.config.policy)
        self.schedule = Schedule(self.config.windows)
        self.backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.limiter = TokenBucket(self.config.bandwidth_bytes_s, self._stop)
        self._target_factory = target_factory or (
            lambda store_id, limiter: make_target(self.config, store_id, limiter)
        )
        self.target: Target | None = None
        self.store_id = ""
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._health_conn: sqlite3.Connection | None = None
        self._health_lock = threading.Lock()
        self._health_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self.puller: Puller | None = None
        self.heartbeat = time.monotonic()
        self.state = "starting"
        self.failed: str | None = None
        self.last_error: str | None = None
        self.last_success_ms: int | None = None
        self.failing_since: float | None = None
        self.next_attempt_s = 0.0
        self.synced_cursor = 0
        self.batches = 0
        self.rows = 0
        self.bytes = 0
        self.skipped_existing = 0
        self.loss = LossWatch(events, 0)
        self.cases = 0
        self.failures = 0
        self.conflict = False
        self.last_round: dict[str, Any] = {}
        self._next_pull = 0.0
        self.guard = LoopGuard("sync worker", logger)

    # --- lifecycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Open the target (credentials are checked here) and the read connections."""
        self.store_id = self.writer.call(store_id_op).result(timeout=30)
        try:
            self.target = self._target_factory(self.store_id, self.limiter)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from exc
        self._conn = connect(self.settings.db_path, readonly=True)
        self._health_conn = connect(self.settings.db_path, readonly=True)
        self.synced_cursor = batches.synced_cursor(self._conn)
        self.loss = LossWatch(self.events, self.synced_cursor)
        self.puller = Puller(self.settings, self.writer, self._conn)

    @property
    def rows_lost(self) -> int:
        """Results deleted by retention before they were uploaded (since start)."""
        return self.loss.rows_lost

    def start(self) -> None:
        """Prepare, then start the thread."""
        self.prepare()
        assert self.target is not None
        self._thread = threading.Thread(target=self._run, name="sync-worker", daemon=True)
        self._thread.start()
        logger.info(
            "sync to %s, policy %s, every %.1f s",
            self.target.describe(),
            self.policy.name,
            self.config.interval_s,
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Finish the object in flight (at full speed), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("sync worker did not stop within %.1f s", timeout)
                return
        for conn in (self._conn, self._health_conn):
            if conn is not None:
                conn.close()
        self._conn = self._health_conn = None

    @property
    def alive(self) -> bool:
        """Thread running and looping (uploads are bounded by timeouts)."""
        stale = time.monotonic() - max(self.heartbeat, self.limiter.last_take)
        limit = max(120.0, 4 * self.config.timeout_s + self.config.backoff_max_s)
        return bool(
            self._thread
            and self._thread.is_alive()
            and self.failed is None
            and stale < limit
            and not self.guard.wedged
        )

    def kick(self) -> None:
        """Start a round now (skips the wait for the interval, not a backoff or a closed window)."""
        self._wake.set()

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        lower_priority()
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                try:
                    self._iteration()
                except Exception as exc:  # thread boundary: one pass; back off and go on
                    self._sleep(self.guard.failed(exc), wakeable=False)
                else:
                    self.guard.ok()
        except Exception as exc:  # thread boundary: report, never die silently
            self.failed = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            logger.exception("sync worker stopped: %s", exc)

    def _iteration(self) -> None:
        if self.policy.results and self._conn is not None:  # losses show while the uplink is down too
            self.loss.probe(self._conn, self.writer.last_seq, self.synced_cursor)
        if not self.schedule.is_open():
            self.state = "window closed"
            self._sleep(min(60.0, self.schedule.seconds_until_open()))
            return
        wait = self.next_attempt_s - time.monotonic()
        if wait > 0:
            self._sleep(wait, wakeable=False)
            return
        succeeded = self._attempt()
        self._check_stale()
        if succeeded:  # after a failure the loop waits for the backoff instead
            self._sleep(self.config.interval_s)

    def _sleep(self, seconds: float, *, wakeable: bool = True) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if wakeable:
                if self._wake.wait(min(left, 1.0)):
                    self._wake.clear()
                    return
            else:
                self._stop.wait(min(left, 1.0))

    def _attempt(self) -> bool:
        try:
            self.run_round()
        except (TargetError, sqlite3.Error, TimeoutError, OSError) as exc:
            self._failed(exc)
            return False
        except Exception as exc:  # a bug in a round must not end sync: log it, back off
            logger.exception("sync round failed: %s", exc)
            self._failed(exc)
            return False
        if self.failing_since is not None:
            self.events.emit("sync_recovered", f"cloud sync recovered after {self.failures} failure(s)")
        self.events.clear_alarm(CONFLICT_ALARM, "sync_key_conflict_cleared", "sync key conflict resolved")
        self.backoff.reset()
        self.conflict = False
        self.failing_since = None
        self.last_error = None
        self.last_success_ms = now_ms()
        self.state = "idle"
        return True

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        delay = self.backoff.next_delay()
        self.next_attempt_s = time.monotonic() + delay
        self.state = "backing off"
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            self.events.emit("sync_failed", f"cloud sync failed, retrying: {self.last_error}", "warning")
        self.conflict = isinstance(exc, KeyConflict)
        if self.conflict:
            self.events.raise_alarm(CONFLICT_ALARM, "sync_key_conflict", str(exc))
        logger.warning("sync failed, next attempt in %.1f s: %s", delay, self.last_error)

    def _check_stale(self) -> None:
        age = self._oldest_unsynced_age_s()
        if age is not None and age > self.config.stale_after_s:
            self.events.raise_alarm(
                STALE_ALARM,
                "sync_stale",
                f"results wait for the cloud for more than {self.config.stale_after_s:.0f} s "
                f"(oldest {age:.0f} s): {self.last_error or 'uplink busy or closed'}",
            )
        else:
            self.events.clear_alarm(STALE_ALARM, "sync_caught_up", "cloud sync caught up")
        if age is None:
            self.loss.caught_up()

    # --- a round ----------------------------------------------------------------------------

    def run_round(self) -> None:
        """One round: results, hard cases, verdicts (raises on the first failure)."""
        if not self.policy.results:
            self.state = "idle (policy none)"
            return
        self.state = "syncing"
        self._sync_results()
        self._sync_cases()
        if time.monotonic() >= self._next_pull and not self._stop.is_set():
            assert self.puller is not None and self.target is not None
            self.puller.pull(self.target, self._stop.is_set)
            self._next_pull = time.monotonic() + self.config.pull_interval_s

    def _sync_results(self) -> None:
        assert self._conn is not None and self.target is not None
        started, cpu_started = time.monotonic(), time.thread_time()
        rows = size = uploaded = 0
        cut_partial = False
        while not self._stop.is_set() and self.schedule.is_open():
            batch_started = time.monotonic()
            batch = batches.pending_batch(self._conn)
            retry = batch is not None
            if batch is None:
                if cut_partial:
                    break
                boundary = batches.next_boundary(self._conn, self.config.batch_max_rows)
                if boundary is None:
                    break
                # rows between the cursor and the oldest row left (a first sync included) are gone
                self.loss.seen_gone_through(boundary.first_seq - 1, self.synced_cursor)
                cut_partial = boundary.rows < self.config.batch_max_rows
                batch = self.writer.call(
                    batches.record_op(boundary, self.settings.site, self.settings.node_id)
                ).result(timeout=60)
            built = batches.build(self._conn, batch)
            missing = batch.last_seq - batch.first_seq + 1 - built.rows
            if missing > 0:  # retention reached a recorded batch: its head is gone
                self.loss.seen_gone_through(batch.first_seq + missing - 1, self.synced_cursor)
            try:
                written = self.target.put(batch.key, built.data, content_type="application/gzip", retry=retry)
                manifest = batches.manifest(
                    batch, built, self.settings.site, self.settings.node_id, self.store_id
                )
                self.target.put(batch.manifest_key, manifest, content_type="application/json", retry=retry)
            except TargetError:
                self.writer.call(batches.failed_op(batch))
                raise
            self.writer.call(batches.commit_op(batch, built)).result(timeout=60)
            self.synced_cursor = batch.last_seq
            if not written:
                self.skipped_existing += 1
                logger.info("batch %s was already in the store (earlier attempt); not sent again", batch.key)
            self.batches += 1
            self.rows += built.rows
            self.bytes += len(built.data) + len(manifest)
            rows += built.rows
            size += len(built.data) + len(manifest)
            uploaded += 1
            self._rest(time.monotonic() - batch_started)
            if uploaded >= 2:  # a backlog is draining (a steady round sends one partial batch)
                self.last_round = _drain_figures(uploaded, rows, size, started, cpu_started)

    def _rest(self, busy_s: float) -> None:
        """Yield the CPU after a batch so that a drain costs inspection little (duty cycle)."""
        fraction = self.config.drain_busy_fraction
        if fraction < 1.0 and not self._stop.is_set():
            self._stop.wait(busy_s * (1.0 / fraction - 1.0))

    def _sync_cases(self) -> None:
        assert self._conn is not None and self.target is not None
        images_root = self.settings.state_dir / "images"
        for part_id in cases.pending_parts(self._conn, self.config.cases_per_round):
            if self._stop.is_set() or not self.schedule.is_open():
                return
            upload = cases.build_case(
                self._conn, part_id, self.config, self.settings.site, self.settings.node_id, images_root
            )
            for key, data, content_type in upload.objects:
                self.target.put(key, data, content_type=content_type)
            self.target.put(
                upload.document_key, upload.document, content_type="application/json", immutable=False
            )
            self.writer.call(cases.commit_op(upload)).result(timeout=60)
            self.cases += 1
            self.bytes += upload.bytes

    # --- health -----------------------------------------------------------------------------

    def _oldest_unsynced_age_s(self) -> float | None:
        if not self.policy.results or self._health_conn is None:
            return None
        with self._health_lock:
            row = self._health_conn.execute(
                "SELECT created_ms FROM results WHERE seq > ? ORDER BY seq LIMIT 1", (self.synced_cursor,)
            ).fetchone()
        return None if row is None else max(0.0, (now_ms() - int(row[0])) / 1000.0)

    def _backlog(self) -> dict[str, Any]:
        """Backlog: results live (cheap); cases and images cached for a moment (health is polled)."""
        due = self.policy.results
        results = max(0, self.writer.last_seq - self.synced_cursor) if due else 0
        now = time.monotonic()
        stamp, cached = self._health_cache
        if now - stamp >= _HEALTH_CACHE_S or not cached:
            cached = {"cases": 0, "images": 0}
            if due and self._health_conn is not None:
                with self._health_lock:
                    cached["cases"] = self._health_conn.execute(
                        "SELECT COUNT(*) FROM (SELECT part_id FROM hard_cases WHERE synced_ms IS NULL "
                        "UNION SELECT part_id FROM labels WHERE synced_ms IS NULL)"
                    ).fetchone()[0]
                    if self.policy.images:
                        cached["images"] = self._health_conn.execute(
                            "SELECT COUNT(*) FROM images WHERE synced_ms IS NULL AND part_id IN "
                            "(SELECT part_id FROM hard_cases WHERE synced_ms IS NULL "
                            "UNION SELECT part_id FROM labels WHERE synced_ms IS NULL)"
                        ).fetchone()[0]
            self._health_cache = (now, cached)
        age = self._oldest_unsynced_age_s() if results else 0.0
        return {"results": results, **cached, "oldest_unsynced_age_s": None if age is None else round(age, 1)}

    def health(self) -> dict[str, Any]:
        """Sync state for /api/health."""
        backlog = self._backlog()
        age = backlog["oldest_unsynced_age_s"] or 0.0
        if not self.alive or self.conflict:
            state = "error"
        elif self.last_error or self.guard.failing or age > self.config.stale_after_s:
            state = "degraded"
        else:
            state = "ok"
        retry_in = max(0.0, self.next_attempt_s - time.monotonic()) if self.last_error else 0.0
        return {
            "state": state,
            "activity": self.state,
            "target": self.target.describe() if self.target else self.config.target,
            "policy": self.policy.name,
            "what_leaves": what_leaves(self.config),
            "window_open": self.schedule.is_open(),
            "backlog": backlog,
            "synced_seq": self.synced_cursor,
            "last_success_ms": self.last_success_ms,
            "last_success_age_s": None
            if self.last_success_ms is None
            else round((now_ms() - self.last_success_ms) / 1000.0, 1),
            "last_error": self.last_error or self.failed,
            "failures": self.failures,
            **self.guard.health(),
            "retry_in_s": round(retry_in, 1),
            "batches": self.batches,
            "rows": self.rows,
            "mb": round(self.bytes / 1e6, 3),
            "already_there": self.skipped_existing,
            **self.loss.health(),
            "cases": self.cases,
            "bandwidth_bytes_s": self.config.bandwidth_bytes_s,
            "last_drain": self.last_round,
            "verdicts": self.puller.health() if self.puller else {},
        }


def _drain_figures(
    batches_done: int, rows: int, size: int, started: float, cpu_started: float
) -> dict[str, Any]:
    """The current (or last) drain: effective rates including rests, and this thread's CPU cost."""
    elapsed = max(1e-6, time.monotonic() - started)
    cpu = time.thread_time() - cpu_started
    return {
        "batches": batches_done,
        "rows": rows,
        "mb": round(size / 1e6, 3),
        "seconds": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed, 1),
        "mb_per_s": round(size / 1e6 / elapsed, 3),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_1k_rows": round(1e6 * cpu / rows, 2) if rows else None,
    }
