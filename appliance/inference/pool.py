"""The inference workers: fresh frames first, refinements when none waits or a backlog nears full."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.capture import ReadyQueue
from appliance.inference.ladder import Ladder, Load
from appliance.rates import RateCounter

logger = logging.getLogger(__name__)


class InferencePool:
    """`workers` threads sharing the cameras' ready queue and the lines' ladders."""

    def __init__(
        self,
        ready: ReadyQueue,
        ladders: dict[str, Ladder],
        workers: int,
        wedge_after_s: float = 30.0,
        store_blocked: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ready = ready
        self.ladders = ladders
        self.workers = workers
        self.wedge_after_s = wedge_after_s
        # A worker waiting for a full outbox queue (slow or full disk) is blocked, not wedged:
        # restarting the service would lose what waits in memory and cure nothing.
        self.store_blocked = store_blocked
        self.frames = RateCounter()
        self.failures = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._beats: list[float] = []
        self._order = list(ladders.values())
        # Refinements never occupy every worker: one stays free for fresh frames, so that a
        # part arriving during a long refinement still gets its first verdict in time.
        self._max_refining = max(1, workers - 1)
        # Ahead of waiting frames, at most half the workers refine (so fresh frames keep at least
        # half the pool even when escalations outpace refinements), and never the only worker.
        self._max_refining_first = workers // 2
        self._refining = 0
        self._refining_lock = threading.Lock()
        self._busy = 0
        self._turn = itertools.count()

    def start(self) -> None:
        """Start the worker threads."""
        self._beats = [time.monotonic()] * self.workers
        for n in range(self.workers):
            thread = threading.Thread(target=self._run, args=(n,), name=f"inference-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the frames already taken, then stop; frames still queued are handled first."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            logger.error("inference workers still busy after %.0f s at stop: %s", timeout, ", ".join(stuck))

    @property
    def alive(self) -> bool:
        """Every worker thread runs and none has been stuck on one frame too long."""
        now = time.monotonic()
        blocked = self.store_blocked()
        return bool(self._threads) and all(
            t.is_alive() and (blocked or now - beat < self.wedge_after_s)
            for t, beat in zip(self._threads, self._beats, strict=True)
        )

    def _run(self, n: int) -> None:
        while True:
            self._beats[n] = time.monotonic()
            # Fresh frames first, except when a backlog nears its end: then refining beats
            # closing provisional verdicts unrefined to make room.
            if self._max_refining_first:
                pressed = [ladder for ladder in self._order if ladder.backlog_pressed()]
                if pressed and self._refine_guarded(pressed):
                    continue
            try:
                camera, frame = self.ready.get_nowait()
            except queue.Empty:
                if self._stop.is_set():
                    return
                if self._refine_guarded():
                    continue
                try:
                    camera, frame = self.ready.get(timeout=0.1)
                except queue.Empty:
                    continue
            camera.taken()
            self._beats[n] = time.monotonic()
            self._set_busy(+1)
            try:
                self.ladders[frame.line].judge(frame, self._load)
            except Exception:  # thread boundary: one bad frame must not stop inspection
                self.failures += 1
                logger.exception(
                    "inference worker failed on a frame", extra={"line": frame.line, "camera": frame.camera}
                )
            finally:
                self._set_busy(-1)
            self.frames.add()

    def _refine_guarded(self, pressed: list[Ladder] | None = None) -> bool:
        try:
            return self._refine_one(pressed)
        except Exception:  # thread boundary: a failed refinement must not stop the worker
            self.failures += 1
            logger.exception("inference worker failed on a refinement")
            return False

    def _refine_one(self, pressed: list[Ladder] | None = None) -> bool:
        """Refine one deferred part, rotating over lines so that none starves.

        `pressed`: only these lines, ahead of waiting frames (see `_max_refining_first`). With a
        single worker, a refinement runs only when it is short enough for a frame that arrives
        meanwhile to still meet its deadline.
        """
        limit = self._max_refining if pressed is None else self._max_refining_first
        with self._refining_lock:
            if self._refining >= limit:
                return False
            self._refining += 1
            self._busy += 1
        try:
            order = self._order if pressed is None else pressed
            start = next(self._turn)
            count = len(order)
            for i in range(count):
                ladder = order[(start + i) % count]
                if self.workers == 1 and not ladder.refinement_fits_single_worker():
                    continue
                if ladder.refine_next():
                    return True
            return False
        finally:
            with self._refining_lock:
                self._refining -= 1
                self._busy -= 1

    def quiet(self) -> bool:
        """No frame waiting and no worker judging or refining (e.g. after the cameras stopped)."""
        with self._refining_lock:
            busy = self._busy
        return busy == 0 and self.ready.qsize() == 0

    def _set_busy(self, delta: int) -> None:
        with self._refining_lock:
            self._busy += delta

    def _load(self) -> Load:
        """Workers free besides the caller, and the slack of the oldest waiting frame."""
        with self._refining_lock:
            idle = self.workers - self._busy
        with self.ready.mutex:
            oldest = self.ready.queue[0][1] if self.ready.queue else None
        slack = None
        if oldest is not None:
            slack = self.ladders[oldest.line].deadline_ms - (time.monotonic() - oldest.t_capture) * 1000.0
        return Load(self.workers, idle, slack)

    def health(self) -> dict[str, Any]:
        """Pool state for /api/health."""
        return {
            "state": "ok" if self.alive else "error",
            "workers": self.workers,
            "fps": round(self.frames.rate(), 2),
            "frames": self.frames.count,
            "waiting": self.ready.qsize(),
            "failures": self.failures,
        }
