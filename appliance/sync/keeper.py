"""The keeper: the thread that writes kept frames and hard-case rows, evicts, and scans labels.

The inference thread only hands it a `Job` (a bounded queue, never a wait): when the queue is
full the frame is dropped and counted, but the job's hard-case rows are still recorded (the case
goes to the cloud without its image), and a warning event says so, at most once a minute. Jobs
are written in small groups, one writer op each.
Every few seconds it evicts images beyond the budget or age, and turns operators' labels that
contradict the latest verdict into `disputed` hard cases.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Any

from appliance.config import Settings
from appliance.events import EventBus
from appliance.results import now_ms
from appliance.store.db import connect
from appliance.store.writer import StoreWriter
from appliance.sync.hardcases import LABELS_CURSOR, HardCaseSelector, Job
from appliance.sync.images import ImageStore, SavedImage
from appliance.sync.meta import get_meta
from appliance.sync.privacy import Policy
from appliance.sync.throttle import lower_priority

logger = logging.getLogger(__name__)

_GROUP = 32
_HOUSEKEEPING_S = 5.0
_RECENT = 4096
# Hard-case rows of jobs whose frame was dropped, waiting for the keeper: a few bytes each.
_CASES_WAITING = 10_000
_DROP_EVENT_S = 60.0


class Keeper:
    """Component `images`: local retention of frames and hard cases (works without a target)."""

    def __init__(self, settings: Settings, writer: StoreWriter, events: EventBus, ladders: Any) -> None:
        self.settings = settings
        self.config = settings.sync
        self.writer = writer
        self.events = events
        self.store = ImageStore(settings.state_dir / "images", self.config.images, events)
        self.selector = HardCaseSelector(
            self.config.hard_cases, self.config.images.retain, self.submit, ladders
        )
        self.ladders = ladders
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=self.config.images.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._conn: sqlite3.Connection | None = None
        self._drop_lock = threading.Lock()
        self.dropped = 0
        self.cases_dropped = 0
        self._cases_waiting: list[tuple[str, str, str]] = []
        self._dropped_reported = 0
        self._drop_event_at = 0.0
        self.jobs = 0
        self.last_error: str | None = None
        self.failed: str | None = None
        self.heartbeat = time.monotonic()

    @property
    def pixels_leave(self) -> bool:
        """Does any image of a hard case ever leave (target set and policy crops/frames)?"""
        return bool(self.config.target) and Policy(self.config.policy).images

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Attach to the ladders, restore counts, start the thread."""
        self._conn = connect(self.settings.db_path, readonly=True)
        self.store.load(self._conn)
        self.selector.restore(self._conn)
        for ladder in self.ladders.values():
            ladder.hard_cases = self.selector
        self._thread = threading.Thread(target=self._run, name="sync-keeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for ladder in self.ladders.values():
            if ladder.hard_cases is self.selector:
                ladder.hard_cases = None
        if self._conn is not None and not (self._thread and self._thread.is_alive()):
            self._conn.close()
            self._conn = None

    @property
    def alive(self) -> bool:
        """Thread running and looping."""
        return bool(
            self._thread
            and self._thread.is_alive()
            and self.failed is None
            and time.monotonic() - self.heartbeat < 120
        )

    def submit(self, job: Job) -> bool:
        """From the inference thread: enqueue, or drop the frame (counted) but keep its hard cases."""
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            cases = [(job.frame.part_id, job.verdict.line, reason) for reason in job.reasons]
            with self._drop_lock:  # several inference workers may drop at once
                self.dropped += 1
                if len(self._cases_waiting) + len(cases) <= _CASES_WAITING:
                    self._cases_waiting.extend(cases)
                else:
                    self.cases_dropped += len(cases)
            return False

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        lower_priority()  # encoding kept frames must never compete with inspection
        next_housekeeping = 0.0
        try:
            while True:
                self.heartbeat = time.monotonic()
                group = self._take_group()
                cases = self._take_cases_waiting()
                if group or cases:
                    self._write(group, cases)
                elif self._stop.is_set():
                    return
                self._report_drops()
                if time.monotonic() >= next_housekeeping and not self._stop.is_set():
                    next_housekeeping = time.monotonic() + _HOUSEKEEPING_S
                    self._housekeeping()
        except Exception as exc:  # thread boundary
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("image keeper stopped: %s", exc)

    def _take_group(self) -> list[Job]:
        try:
            group = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(group) < _GROUP:
            try:
                group.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return group

    def _take_cases_waiting(self) -> list[tuple[str, str, str]]:
        with self._drop_lock:
            cases, self._cases_waiting = self._cases_waiting, []
        return cases

    def _report_drops(self) -> None:
        """A warning event when frames were dropped since the last one, at most once a minute."""
        dropped = self.dropped
        if dropped == self._dropped_reported or time.monotonic() - self._drop_event_at < _DROP_EVENT_S:
            return
        self.events.emit(
            "images_dropped",
            f"image keeper behind: {dropped - self._dropped_reported} kept frame(s) dropped "
            f"({dropped} since start; their hard cases are recorded without the image)",
            "warning",
            dropped=dropped - self._dropped_reported,
            total=dropped,
            cases_dropped=self.cases_dropped,
        )
        self._dropped_reported, self._drop_event_at = dropped, time.monotonic()

    def _write(self, group: list[Job], cases: list[tuple[str, str, str]]) -> None:
        saved: list[SavedImage] = []
        for job in group:
            self.jobs += 1
            part = job.frame.part_id
            if job.keep_image and part not in self._recent:
                image = self.store.save(
                    job.frame, job.verdict, job.reasons[0] if job.reasons else job.verdict.verdict
                )
                if image is not None:
                    saved.append(image)
                    self._remember(part)
            cases.extend((part, job.verdict.line, reason) for reason in job.reasons)
        ops = [self.store.insert_op(image) for image in saved]

        def op(conn: sqlite3.Connection) -> list[bool]:
            inserted = [o(conn) for o in ops]
            created = now_ms()
            conn.executemany(
                "INSERT OR IGNORE INTO hard_cases (part_id, line, reason, created_ms) VALUES (?, ?, ?, ?)",
                [(part, line, reason, created) for part, line, reason in cases],
            )
            return inserted

        try:
            inserted = self.writer.call(op).result(timeout=60)
        except Exception as exc:  # the writer failed or is wedged: keep running, count it
            self.last_error = f"recording {len(group)} job(s): {exc}"
            logger.warning("cannot record kept images: %s", exc)
            for image in saved:
                self.store.committed(image, False)
            return
        self.last_error = None
        for image, ok in zip(saved, inserted, strict=True):
            self.store.committed(image, ok)

    def _remember(self, part: str) -> None:
        self._recent[part] = None
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def _housekeeping(self) -> None:
        assert self._conn is not None
        try:
            self.store.evict(self._conn, self.writer.call, pixels_leave=self.pixels_leave)
            self.store.maybe_clear_alarm()
            self._scan_labels()
        except (sqlite3.Error, OSError, TimeoutError) as exc:
            self.last_error = f"housekeeping: {exc}"
            logger.warning("image housekeeping failed: %s", exc)

    def _scan_labels(self) -> None:
        """Labels written by the console since the last scan: disputes become hard cases."""
        assert self._conn is not None
        cursor = int(get_meta(self._conn, LABELS_CURSOR) or 0)
        labels = self._conn.execute(
            "SELECT id, part_id, verdict, defect_class, created_ms FROM labels "
            "WHERE id > ? ORDER BY id LIMIT 500",
            (cursor,),
        ).fetchall()
        if labels:
            self.writer.call(self.selector.disputes_op(labels, int(labels[-1]["id"]))).result(timeout=60)

    def health(self) -> dict[str, Any]:
        """Retention and selection figures for /api/health."""
        state = "ok"
        if not self.alive:
            state = "error"
        elif self.last_error or self.store.last_error:
            state = "degraded"
        return {
            "state": state,
            "retain": self.config.images.retain,
            "queue": self._queue.qsize(),
            "dropped": self.dropped,
            "cases_dropped": self.cases_dropped,
            "last_error": self.last_error or self.failed,
            **self.store.health(),
            "hard_cases": self.selector.health(),
        }
