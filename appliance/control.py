"""Operations on a running service, validated, for MQTT commands and the console alike.

Each operation checks its arguments against the running service and returns an `Outcome`
(`ok`, a reason a person can act on, details); none raises for bad input. Changes last until
the service restarts: the config file stays the source of truth.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from appliance.inference.ladder import LocalTier
from appliance.service import ServiceError

if TYPE_CHECKING:
    from appliance.service import Service

logger = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation did: ok or not, why, and what changed."""

    ok: bool
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Republisher(Protocol):
    """Something that can publish stored results again (the MQTT component)."""

    def republish(self, from_seq: int, to_seq: int | None) -> Outcome: ...


class Controller:
    """Start/stop lines, switch models, acknowledge alarms, republish results."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._switch_lock = threading.Lock()  # one model switch at a time

    # --- lines ----------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """Configured line ids."""
        return [line.id for line in self.service.settings.lines]

    def running(self, line: str) -> bool:
        """True unless every camera of the line is paused."""
        cameras = [c for c in self.service.cameras if c.line_id == line]
        return not cameras or not all(c.paused for c in cameras)

    def stop_line(self, line: str, by: str = "operator") -> Outcome:
        """Pause the line's cameras: no new parts are inspected until it is started again."""
        return self._set_paused(line, True, by)

    def start_line(self, line: str, by: str = "operator") -> Outcome:
        """Resume inspection on the line."""
        return self._set_paused(line, False, by)

    def _set_paused(self, line: str, paused: bool, by: str) -> Outcome:
        if line not in self.lines():
            return Outcome(False, f"unknown line {line!r}; lines: {', '.join(self.lines())}")
        cameras = [c for c in self.service.cameras if c.line_id == line]
        if not cameras:
            return Outcome(False, "the service is not running")
        was_running = self.running(line)
        for camera in cameras:
            camera.paused = paused
        word = "stopped" if paused else "started"
        if was_running == paused:  # a real change
            self.service.events.emit(f"line_{word}", f"line {line} {word} by {by}", line=line, by=by)
        return Outcome(True, None, {"line": line, "running": not paused, "changed": was_running == paused})

    # --- models ---------------------------------------------------------------------------

    def models(self, line: str) -> list[dict[str, Any]]:
        """The local tiers of a line and their models."""
        ladder = self.service.ladders.get(line)
        if ladder is None:
            return []
        return [{"tier": t.index, **t.model.to_json(), "band": list(t.band)} for t in list(ladder.tiers)]

    def switch_model(self, line: str, model: str, tier: int = 1, by: str = "operator") -> Outcome:
        """Load package `model`, warm it up and make it tier `tier` of `line` between two frames."""
        ladder = self.service.ladders.get(line)
        if ladder is None:
            return Outcome(False, f"unknown line {line!r}; lines: {', '.join(self.lines())}")
        if not isinstance(model, str) or not MODEL_NAME.match(model):
            return Outcome(False, f"invalid model name {model!r}")
        if not 1 <= tier <= len(ladder.tiers):
            return Outcome(False, f"line {line} has local tiers 1..{len(ladder.tiers)}, not {tier}")
        with self._switch_lock:
            current = ladder.tiers[tier - 1]
            if current.runner.manifest.name == model:
                return Outcome(True, None, {"line": line, "tier": tier, "model": model, "changed": False})
            try:
                runner = self.service.runner(model)
            except ServiceError as exc:
                return Outcome(False, f"cannot load model {model!r}: {exc}")
            new = LocalTier(tier, runner, runner.manifest.uncertain_band)
            spec = runner.manifest.input
            shape = (spec.height, spec.width) if spec.channels == 1 else (spec.height, spec.width, 3)
            try:
                new.warm_up(np.full(shape, 128, np.uint8))
            except Exception as exc:  # a model that cannot run a grey frame must not go live
                return Outcome(False, f"model {model!r} failed its warm-up: {exc}")
            old = ladder.replace_tier(tier, new)
        previous = old.model.to_json()
        self.service.events.emit(
            "model_switched",
            f"line {line} tier {tier}: model {previous['name']} -> {model} (by {by})",
            line=line,
            tier=tier,
            model=new.model.to_json(),
            previous=previous,
            by=by,
        )
        return Outcome(
            True, None, {"line": line, "tier": tier, "model": new.model.to_json(), "previous": previous}
        )

    # --- alarms ---------------------------------------------------------------------------

    def acknowledge_alarm(self, key: str, by: str = "operator") -> Outcome:
        """Acknowledge active alarm `key` (it stays listed until its condition clears)."""
        if not isinstance(key, str) or not key:
            return Outcome(False, "alarm key missing")
        if not self.service.events.acknowledge(key, by):
            active = [a.details.get("alarm") for a in self.service.events.alarms()]
            return Outcome(False, f"no active alarm {key!r}; active: {active or 'none'}")
        return Outcome(True, None, {"alarm": key})

    # --- results --------------------------------------------------------------------------

    def republish(self, from_seq: int, to_seq: int | None = None) -> Outcome:
        """Publish stored results from `from_seq` (to `to_seq`) again, marked `replayed`."""
        component = self.service.components.get("mqtt")
        if component is None or not hasattr(component, "republish"):
            return Outcome(False, "MQTT is not enabled on this appliance")
        result: Outcome = component.republish(from_seq, to_seq)
        return result
