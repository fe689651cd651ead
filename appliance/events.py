"""Operational events and alarms: logged, kept for the console, fanned out to MQTT.

An event is something that happened (camera lost, model switched); an alarm is a condition that
stays until it clears (camera still lost, disk still low). Subscribers are called on the
emitting thread and must only enqueue.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from appliance.results import now_ms

logger = logging.getLogger("appliance.events")
Severity = Literal["info", "warning", "alarm"]
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, for the event topic, the console and the log."""

    kind: str
    message: str
    severity: Severity = "info"
    line: str | None = None
    camera: str | None = None
    ts_ms: int = field(default_factory=now_ms)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for JSON payloads."""
        return asdict(self)


class EventBus:
    """Fan-out of events plus the set of active alarms."""

    def __init__(self, keep: int = 200) -> None:
        self._lock = threading.Lock()
        self._recent: deque[Event] = deque(maxlen=keep)
        self._alarms: dict[str, Event] = {}
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call `callback(event)` for every later event (on the emitter's thread)."""
        with self._lock:
            self._subscribers.append(callback)

    def emit(
        self,
        kind: str,
        message: str,
        severity: Severity = "info",
        *,
        line: str | None = None,
        camera: str | None = None,
        **details: Any,
    ) -> Event:
        """Record, log and fan out one event."""
        event = Event(kind, message, severity, line, camera, details=details)
        level = {"info": logging.INFO, "warning": logging.WARNING, "alarm": logging.ERROR}[severity]
        # Details become log fields; names a LogRecord already has (module, name...) get a prefix.
        fields = {(f"detail_{k}" if k in _RECORD_ATTRIBUTES else k): v for k, v in details.items()}
        logger.log(level, "%s", message, extra={"event": kind, "line": line, "camera": camera, **fields})
        with self._lock:
            self._recent.append(event)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a failing subscriber must not break the emitter
                logger.exception("event subscriber failed")
        return event

    def raise_alarm(self, key: str, kind: str, message: str, **fields: Any) -> None:
        """Raise alarm `key` (once; repeated raises while it is active are silent)."""
        placeholder = Event(kind, message, "alarm", fields.get("line"), fields.get("camera"))
        with self._lock:  # check and claim together: two threads never both raise it
            if key in self._alarms:
                return
            self._alarms[key] = placeholder
        event = self.emit(kind, message, "alarm", alarm=key, **fields)
        with self._lock:
            if self._alarms.get(key) is placeholder:
                self._alarms[key] = event

    def clear_alarm(self, key: str, kind: str, message: str, **fields: Any) -> None:
        """Clear alarm `key` if active, emitting the recovery event."""
        with self._lock:
            if self._alarms.pop(key, None) is None:
                return
        self.emit(kind, message, "info", **fields)

    def acknowledge(self, key: str, by: str) -> bool:
        """Mark active alarm `key` acknowledged (it stays active until it clears); False if none."""
        with self._lock:
            event = self._alarms.get(key)
            if event is None:
                return False
            if "acknowledged_by" in event.details:
                return True
            self._alarms[key] = replace(
                event, details={**event.details, "acknowledged_by": by, "acknowledged_ms": now_ms()}
            )
        self.emit("alarm_acknowledged", f"alarm {key} acknowledged by {by}", alarm=key, by=by)
        return True

    def alarms(self) -> list[Event]:
        """Active alarms, oldest first."""
        with self._lock:
            return sorted(self._alarms.values(), key=lambda e: e.ts_ms)

    def recent(self, limit: int = 50) -> list[Event]:
        """The latest events, newest first."""
        with self._lock:
            return list(self._recent)[::-1][:limit]
