"""Health, line state and events on MQTT, and the alarms that watch the outbox and the disk.

- `{base}/health`: retained, QoS 1, every `health_interval_s`, with an MQTT 5 Message Expiry
  of three intervals so that a dead appliance's health disappears instead of lying;
- `{base}/line/{line}/state`: retained, QoS 1, on every change (start/stop, model switch,
  camera lost/recovered) and every interval;
- `{base}/event`: QoS 1, not retained, every event of the service's EventBus. Events that happen
  while the broker is away wait in a bounded queue (oldest dropped first, counted).

Each pass of the publisher's loop is isolated (an unexpected exception is counted, logged and
followed by a backoff; the next pass goes on), and so is each event: one that cannot be
serialised is dropped and counted instead of blocking the queue behind it. The store alarms'
check has its own boundary, so a failure there never stops health and state going out.

`StoreAlarms` raises `outbox_dropping` when retention deletes undelivered results (or is about
to: the undelivered backlog is past 90 % of a cap) and `disk_low` when free space is under
`store.min_free_mb`; both clear by themselves with a recovery event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.control import Controller
from appliance.events import Event
from appliance.guard import LoopGuard
from appliance.mqtt.client import MqttLink
from appliance.mqtt.topics import Topics
from appliance.results import now_ms

if TYPE_CHECKING:
    from appliance.service import Service

logger = logging.getLogger(__name__)

HEALTH_SCHEMA = "vision.health/1"
STATE_SCHEMA = "vision.state/1"
EVENT_SCHEMA = "vision.event/1"
_EVENT_QUEUE = 1000
_STATE_KINDS = {"line_started", "line_stopped", "model_switched", "camera_lost", "camera_recovered"}
_WATCH_PERIOD_S = 5.0
_COMPACT = (",", ":")


def line_state(service: Service, controller: Controller, line: str) -> dict[str, Any]:
    """The retained state document of one line."""
    cameras = [c for c in service.cameras if c.line_id == line]
    counts = service.live.counts().get(line) or {"pass": 0, "fail": 0, "error": 0, "total": 0, "yield": None}
    snapshots = [s for s in (service.live.latest(c.id) for c in cameras) if s is not None]
    last = max(snapshots, key=lambda s: s.version).verdict if snapshots else None
    return {
        "schema": STATE_SCHEMA,
        "node": service.settings.node_id,
        "line": line,
        "ts_ms": now_ms(),
        "running": controller.running(line),
        "models": controller.models(line),
        "counters": counts,
        "cameras": {
            c.id: {
                "status": c.state,
                "paused": c.paused,
                "fps": round(c.grabbed.rate(), 2),
                "frames": c.grabbed.count,
                "dropped": c.dropped,
                "skipped_paused": c.skipped_paused,
            }
            for c in cameras
        },
        "last_verdict": None
        if last is None
        else {
            "part_id": last.part_id,
            "revision": last.revision,
            "verdict": last.verdict,
            "defect_class": last.defect_class,
            "confidence": round(last.confidence, 4),
            "provisional": last.provisional,
            "ts_capture_ms": last.ts_capture_ms,
        },
    }


class StoreAlarms:
    """Raises and clears `outbox_dropping` and `disk_low` from the store's figures."""

    def __init__(self, service: Service, backlog: Callable[[], tuple[int, int | None]]) -> None:
        self.service = service
        self._backlog = backlog  # () -> (undelivered rows, created_ms of the oldest)
        self._dropped_seen = service.writer.dropped_unpublished

    def check(self) -> None:
        """Compare the figures with the caps; raise or clear."""
        writer, events = self.service.writer, self.service.events
        store = self.service.settings.store
        dropped = writer.dropped_unpublished
        rows, oldest_ms = self._backlog()
        age_days = (now_ms() - oldest_ms) / 86_400_000 if oldest_ms else 0.0
        fill = max(rows / store.max_rows, age_days / store.max_age_days)
        if dropped > self._dropped_seen:
            events.raise_alarm(
                "outbox_dropping",
                "outbox_dropping",
                f"outbox full: retention dropped {dropped - self._dropped_seen} result(s) never delivered "
                f"to MQTT ({dropped} since start)",
                dropped_unpublished=dropped,
            )
        elif fill >= 0.9:
            events.raise_alarm(
                "outbox_dropping",
                "outbox_dropping",
                f"outbox at {fill:.0%} of its cap ({rows} undelivered results): retention will drop "
                "undelivered results soon",
                backlog=rows,
            )
        elif fill < 0.5:
            events.clear_alarm(
                "outbox_dropping", "outbox_recovered", "outbox back under half of its cap", backlog=rows
            )
        self._dropped_seen = dropped
        health = writer.health()
        if health["disk_free_mb"] < store.min_free_mb:
            events.raise_alarm(
                "disk_low",
                "disk_low",
                f"disk low: {health['disk_free_mb']:.0f} MB free under {self.service.settings.state_dir}",
                disk_free_mb=health["disk_free_mb"],
            )
        elif health["disk_free_mb"] >= store.min_free_mb * 1.2:
            events.clear_alarm(
                "disk_low", "disk_ok", "disk space recovered", disk_free_mb=health["disk_free_mb"]
            )


class StatePublisher:
    """The thread that publishes health, line states and events."""

    def __init__(
        self,
        service: Service,
        controller: Controller,
        link: MqttLink,
        topics: Topics,
        alarms: StoreAlarms,
        *,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.service = service
        self.controller = controller
        self.link = link
        self.topics = topics
        self.alarms = alarms
        self.interval = service.settings.mqtt.health_interval_s
        self._on_connected = on_connected or (lambda: None)
        self._events: deque[Event] = deque(maxlen=_EVENT_QUEUE)
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation: int | None = None
        self._next_health = 0.0
        self._next_watch = 0.0
        self.events_published = 0
        self.events_dropped = 0
        self.failed: str | None = None
        self.guard = LoopGuard("MQTT state publisher", logger)
        self.heartbeat = time.monotonic()

    def start(self) -> None:
        """Subscribe to the EventBus and start the thread."""
        self.service.events.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="mqtt-state", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (queued events are dropped; the log has them)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poke(self) -> None:
        """Publish everything now (a new connection)."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        """The thread runs and loops (and its passes do not all fail)."""
        return bool(
            self._thread
            and self._thread.is_alive()
            and time.monotonic() - self.heartbeat < 30
            and not self.guard.wedged
        )

    def _on_event(self, event: Event) -> None:
        """EventBus subscriber (any thread): enqueue only."""
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.events_dropped += 1
            self._events.append(event)
            if event.kind in _STATE_KINDS and event.line:
                self._dirty.add(event.line)
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                self._wake.wait(0.5)
                self._wake.clear()
                self.guard.run_pass(self._iteration, self._stop)
        except Exception as exc:  # thread boundary (the loop itself)
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("MQTT state publisher failed")

    def _iteration(self) -> None:
        now = time.monotonic()
        if now >= self._next_watch:
            self._next_watch = now + min(_WATCH_PERIOD_S, self.interval)
            try:
                self.alarms.check()
            except Exception as exc:  # thread boundary: the alarms must not stop health going out
                self.guard.skipped(exc, "store alarm check")
        session = self.link.session
        if session is None or not session.up:
            return
        fresh = session.generation != self._generation
        if fresh:
            self._generation = session.generation
            self._on_connected()
        self._publish_events()
        if fresh or now >= self._next_health:
            self._next_health = now + self.interval
            self.publish_health()
            self._publish_states(self.controller.lines())
        else:
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            self._publish_states(sorted(dirty))

    def _publish_events(self) -> None:
        while True:
            with self._lock:
                if not self._events:
                    return
                event = self._events[0]
            try:
                payload = {"schema": EVENT_SCHEMA, "node": self.service.settings.node_id, **event.to_json()}
                text = json.dumps(payload, default=str, separators=_COMPACT)
            except Exception as exc:  # thread boundary: one event must not block the queue behind it
                self.guard.skipped(exc, f"event {event.kind}")
                self.events_dropped += 1
                text = None
            if text is not None and self.link.publish(self.topics.event, text, qos=1) is None:
                return  # disconnected: keep it for the next connection
            with self._lock:
                if self._events and self._events[0] is event:
                    self._events.popleft()
            self.events_published += text is not None

    def publish_health(self) -> None:
        """The retained health document, expiring after three intervals."""
        document = {"schema": HEALTH_SCHEMA, "ts_ms": now_ms(), **self.service.health()}
        self.link.publish(
            self.topics.health,
            json.dumps(document, default=str, separators=_COMPACT),
            qos=1,
            retain=True,
            expiry_s=int(self.interval * 3),
        )

    def _publish_states(self, lines: list[str]) -> None:
        for line in lines:
            state = line_state(self.service, self.controller, line)
            self.link.publish(
                self.topics.state(line), json.dumps(state, separators=_COMPACT), qos=1, retain=True
            )

    def health(self) -> dict[str, Any]:
        """State-publisher figures for /api/health."""
        return {
            "state": "error" if self.failed or not self.alive else "degraded" if self.guard.failing else "ok",
            "events_published": self.events_published,
            "events_waiting": len(self._events),
            "events_dropped": self.events_dropped,
            **self.guard.health(),
            "failed": self.failed,
        }
