"""One capture thread per camera: grab, decide, decode only what inference will see.

Drop policies (per camera, named in the config):

- ``latest`` (default): at most two decoded frames wait for inference (`LATEST_DEPTH`). While
  they wait, newer grabs are skipped *before* decoding; the newest of them is held undecoded,
  and when inference takes a waiting frame it is decoded at once (a paced source does not wait
  for its next grab: inference would idle up to a frame period for it). Every other skipped
  grab is counted as dropped. With no more cameras than workers, a frame never waits longer
  than two service times plus one frame period.
- ``queue``: like ``latest`` with up to ``queue_depth`` frames waiting (for short bursts); the
  newest skipped grab is held the same way.
- ``block``: the source waits until inference is ready; nothing is dropped. For replays, and
  implied for paced sources with fps 0 (as fast as inference can take them).

A source that fails is released and reopened with exponential backoff; corrupt frames are
counted and skipped. Nothing a camera does can stop the service.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from typing import Any

from appliance.config import CameraConfig
from appliance.events import EventBus
from appliance.rates import RateCounter
from appliance.results import Frame, now_ms
from hardware.sources.base import CorruptFrame, EndOfStream, FrameSource, SourceError

logger = logging.getLogger(__name__)

ReadyQueue = queue.Queue[tuple["Camera", Frame]]


# Two, not one: with a single waiting frame per camera, the frame inference takes next is
# decoded only after the previous one was taken, and with as many cameras as workers the workers
# idle through those decodes (2x offered load delivered 0.83-0.90 of the maximum with one,
# 0.99-1.02 with two, paired windows with real JPEGs; docs/performance.md, "2x overload"). The
# second frame costs at most one service time of freshness and is never decoded only to be
# dropped.
LATEST_DEPTH = 2


def slot_depth(config: CameraConfig) -> int:
    """Decoded frames of this camera that may wait for inference."""
    return LATEST_DEPTH if config.drop_policy == "latest" else config.queue_depth


class Camera:
    """Owns one FrameSource and its thread; hands frames to the shared ready queue."""

    def __init__(
        self,
        line_id: str,
        config: CameraConfig,
        source: FrameSource,
        ready: ReadyQueue,
        events: EventBus,
    ) -> None:
        self.line_id = line_id
        self.id = config.id
        self.config = config
        self.source = source
        self.ready = ready
        self.events = events
        self.depth = slot_depth(config)
        self.blocking = config.drop_policy == "block" or (not source.live and source.fps <= 0)
        self.state = "starting"
        self.last_error: str | None = None
        self.grabbed = RateCounter()
        self.delivered = RateCounter()
        self.dropped = 0
        #: Set by the controller (line stopped): frames are not inspected, counted apart from drops.
        self.paused = False
        self.skipped_paused = 0
        self.corrupt = 0
        self.reconnects = 0
        self.heartbeat = time.monotonic()
        self._pending = 0
        self._slot = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0
        # Part ids stay unique across restarts even when the clock is set back (no RTC).
        self._run_token = secrets.token_hex(2)
        self._log = {"line": line_id, "camera": self.id}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the capture thread."""
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (join separately so that many cameras stop in parallel)."""
        self._stop.set()
        with self._slot:
            self._slot.notify_all()

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the thread to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Thread running (or finished because a finite source ended) and looping."""
        if self.state == "ended":
            return True
        stale = time.monotonic() - self.heartbeat
        limit = max(30.0, 2 * self.config.reconnect_max_s)
        return bool(self._thread and self._thread.is_alive() and stale < limit)

    def taken(self) -> None:
        """Inference took one of this camera's frames: free its slot."""
        with self._slot:
            self._pending -= 1
            self._slot.notify()

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        lost_since: float | None = None
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self.source.open()
            except SourceError as exc:
                lost_since = self._lost(exc, lost_since)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            except Exception as exc:  # thread boundary: a source bug must not kill capture
                logger.exception("camera source failed to open", extra=self._log)
                lost_since = self._lost(exc, lost_since)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            if lost_since is not None:
                self.events.clear_alarm(
                    f"camera:{self.id}",
                    "camera_recovered",
                    f"camera {self.id} recovered after {time.monotonic() - lost_since:.1f} s",
                    line=self.line_id,
                    camera=self.id,
                )
                lost_since = None
            self.state = "running"
            self.last_error = None
            logger.info("camera streaming from %s", self.source.describe(), extra=self._log)
            try:
                self._stream()
                backoff = 0.5
            except EndOfStream:
                self.state = "ended"
                logger.info("source ended", extra=self._log)
                return
            except SourceError as exc:
                lost_since = self._lost(exc, lost_since)
                self._stop.wait(0.5)
            except Exception as exc:  # thread boundary
                logger.exception("camera loop failed", extra=self._log)
                lost_since = self._lost(exc, lost_since)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
            finally:
                self.source.release()
        self.state = "stopped"

    def _lost(self, exc: Exception, lost_since: float | None) -> float:
        self.state = "reconnecting"
        self.last_error = str(exc)
        self.reconnects += 1
        self.source.release()
        if lost_since is None:
            self.events.raise_alarm(
                f"camera:{self.id}",
                "camera_lost",
                f"camera {self.id} lost: {exc}",
                line=self.line_id,
                camera=self.id,
            )
            return time.monotonic()
        logger.debug("camera still unavailable: %s", exc, extra=self._log)
        return lost_since

    def _stream(self) -> None:
        source = self.source
        period = 1.0 / source.fps if (not source.live and source.fps > 0) else 0.0
        next_due = time.monotonic()
        # The last grab, skipped because the slot was full, not decoded: (ts_ms, t_mono, index).
        held: tuple[int, float, int] | None = None
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                wait = next_due - time.monotonic() if period else 0.0
                if held is not None and not self.paused and self._free_slot(wait):
                    self._deliver(*held)  # inference freed the slot before the next grab
                    held = None
                    continue
                if period:
                    delay = next_due - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    # Fall behind by more than a frame and the schedule restarts: no bursts.
                    next_due = max(next_due + period, time.monotonic() - period)
                if self.paused and not source.live:
                    # A replay holds its place while the line is stopped (and burns no CPU).
                    self._drop(held)
                    held = None
                    self._stop.wait(0.05)
                    continue
                source.grab()
                self._index += 1
                grab = (now_ms(), time.monotonic(), self._index)
                self.grabbed.add()
                self._drop(held)  # superseded by this grab, never decoded
                held = None
                if self.paused:  # a live camera keeps its stream fresh; the frame is not inspected
                    self.skipped_paused += 1
                    continue
                if not self._reserve_slot():
                    if not self.blocking:  # (a blocking camera is refused a slot only at stop)
                        held = grab
                    continue
                self._deliver(*grab)
        finally:
            self._drop(held)

    def _drop(self, held: tuple[int, float, int] | None) -> None:
        """Count a held grab that will never be decoded as dropped."""
        if held is not None:
            self.dropped += 1

    def _deliver(self, ts_ms: int, t_mono: float, index: int) -> None:
        """Decode the last grab into the reserved slot and hand it to inference."""
        try:
            image = self.source.retrieve()
        except CorruptFrame as exc:
            self._release_slot()
            self.corrupt += 1
            logger.warning("corrupt frame skipped: %s", exc, extra=self._log)
            return
        except BaseException:
            self._release_slot()  # whatever went wrong, the slot must not stay taken
            raise
        frame = Frame(
            line=self.line_id,
            camera=self.id,
            part_id=f"{self.id}-{ts_ms}-{self._run_token}{index}",
            index=index,
            ts_capture_ms=ts_ms,
            t_capture=t_mono,
            image=image,
            truth=self.source.truth,
            encoded=self.source.encoded,
        )
        self.delivered.add()
        self.ready.put((self, frame))

    def _reserve_slot(self) -> bool:
        """Take a slot for the next frame; False when full (blocking: wait, False only at stop)."""
        if not self.blocking:
            return self._free_slot(0.0)
        with self._slot:
            while self._pending >= self.depth:
                if self._stop.is_set():
                    return False
                self._slot.wait(0.2)
                self.heartbeat = time.monotonic()
            self._pending += 1
            return True

    def _free_slot(self, timeout: float) -> bool:
        """Take a slot as soon as one frees, waiting at most `timeout` (until the next grab)."""
        deadline = time.monotonic() + timeout
        with self._slot:
            while self._pending >= self.depth:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return False
                self._slot.wait(remaining)
            self._pending += 1
            return True

    def _release_slot(self) -> None:
        with self._slot:
            self._pending -= 1

    def health(self) -> dict[str, Any]:
        """Camera state for /api/health."""
        state = {"running": "ok", "ended": "ok", "starting": "ok"}.get(self.state, "degraded")
        if not self.alive:
            state = "error"
        return {
            "state": state,
            "status": self.state,
            "line": self.line_id,
            "source": self.source.describe(),
            "drop_policy": self.config.drop_policy,
            "fps_in": round(self.grabbed.rate(), 2),
            "fps_processed": round(self.delivered.rate(), 2),
            "frames_in": self.grabbed.count,
            "frames_processed": self.delivered.count,
            "dropped": self.dropped,
            "paused": self.paused,
            "skipped_paused": self.skipped_paused,
            "corrupt": self.corrupt,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }
