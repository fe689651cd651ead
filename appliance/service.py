"""The running appliance: builds every part from the settings, starts and stops them in order.

Start: store (migrated) -> models (verified, warmed up) -> ladders (backlog restored) ->
inference workers -> cameras -> consumers (web, MQTT, sync). Stop runs the other way round,
so that every frame already grabbed gets its verdict and every verdict is committed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from appliance.capture import Camera, ReadyQueue, slot_depth
from appliance.config import LineConfig, Settings
from appliance.events import EventBus
from appliance.inference.ladder import Ladder, LocalTier
from appliance.inference.package import ModelPackageError, load_package
from appliance.inference.pending import PendingRefinements
from appliance.inference.pool import InferencePool
from appliance.inference.runtime import ModelRunner, SessionSettings
from appliance.live import LiveView
from appliance.results import Frame, Verdict
from appliance.store.db import StoreError, open_store
from appliance.store.reader import Reader
from appliance.store.writer import StoreWriter
from hardware.profiles import EdgeProfile, cache_dir, resolve_profile
from hardware.sources.base import FrameSource
from hardware.sources.factory import make_source

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """The service cannot start (bad model, unusable state dir, port taken...)."""


class Component(Protocol):
    """Anything the service starts and stops after the core (web, MQTT, sync)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def health(self) -> dict[str, Any]: ...
    @property
    def alive(self) -> bool: ...


SourceFactory = Callable[[Any], FrameSource]


class Service:
    """Owns every thread of the appliance."""

    def __init__(
        self,
        settings: Settings,
        *,
        source_factory: SourceFactory = make_source,
        profile: EdgeProfile | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        #: The config file the settings came from (None: the embedded default); the console edits it.
        self.config_path = config_path
        self.source_factory = source_factory
        cameras = sum(len(line.cameras) for line in settings.lines)
        self.profile = profile or resolve_profile(settings.profile, cameras)
        self.events = EventBus()
        self.live = LiveView()
        self.writer = StoreWriter(
            settings.db_path, settings.node_id, settings.store, track_unpublished=settings.mqtt.enabled
        )
        self.reader = Reader(settings.db_path)
        self.pending = PendingRefinements(settings.state_dir / "pending", settings.store.pending_hold_ms)
        self.runners: dict[str, ModelRunner] = {}
        self.ladders: dict[str, Ladder] = {}
        self.cameras: list[Camera] = []
        depth = sum(slot_depth(c) for line in settings.lines for c in line.cameras)
        self.ready: ReadyQueue = queue.Queue(maxsize=depth)
        self.pool: InferencePool | None = None
        self.components: dict[str, Component] = {}
        self._observers: list[Callable[[Frame, Verdict], None]] = [self.live.observe]
        self.started_monotonic: float | None = None
        self._state_lock: IO[str] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def add_observer(self, observer: Callable[[Frame, Verdict], None]) -> None:
        """Call `observer(frame, verdict)` for every verdict, on the inference thread.

        Observers see the frame (for image retention, hard-case selection, the live view) and
        must be quick: enqueue or copy, never block on I/O.
        """
        self._observers.append(observer)

    def _observe(self, frame: Frame, verdict: Verdict) -> None:
        for observer in self._observers:
            try:
                observer(frame, verdict)
            except Exception:  # an observer's bug must not stop inspection
                logger.exception("verdict observer failed", extra={"line": frame.line})

    def add_component(self, name: str, component: Component) -> None:
        """Register a consumer (web, mqtt, sync) started after the core and stopped before it."""
        self.components[name] = component

    def start(self, on_progress: Callable[[str], None] | None = None) -> None:
        """Bring everything up; raise ServiceError with a clear reason when something cannot."""
        try:
            self._start(on_progress or (lambda _msg: None))
        except ServiceError:
            self.stop()
            raise

    def _start(self, progress: Callable[[str], None]) -> None:
        try:
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"state dir {self.settings.state_dir}: {exc.strerror}") from exc
        self._lock_state_dir()
        try:
            self.writer.start()
        except StoreError as exc:
            raise ServiceError(str(exc)) from exc
        progress("store ready")
        for line in self.settings.lines:
            self.ladders[line.id] = self._build_ladder(line, progress)
        self._restore_backlog()
        self.pending.start()
        self.pool = InferencePool(
            self.ready,
            self.ladders,
            self.profile.inference_workers,
            self.settings.wedge_after_s,
            store_blocked=lambda: self.writer.backpressure_since is not None,
        )
        self.pool.start()
        for line in self.settings.lines:
            for cam in line.cameras:
                try:
                    source = self.source_factory(cam.source)
                except ValueError as exc:
                    raise ServiceError(f"camera {cam.id}: {exc}") from exc
                camera = Camera(line.id, cam, source, self.ready, self.events)
                self.cameras.append(camera)
        for name, component in self.components.items():
            try:
                component.start()
            except Exception as exc:
                raise ServiceError(f"{name}: {exc}") from exc
        for camera in self.cameras:
            camera.start()
        self.started_monotonic = time.monotonic()
        logger.info(
            "inspection started: %d line(s), %d camera(s), profile %s",
            len(self.ladders),
            len(self.cameras),
            self.profile.name,
        )

    def stop(self) -> None:
        """Stop cameras, finish inference, commit every verdict, then stop consumers."""
        for camera in self.cameras:
            camera.stop()
        for camera in self.cameras:
            camera.join()
        if self.pool is not None:
            self.pool.stop()
        self.pending.stop()  # the frames of refinements still waiting, for the next start
        for name, component in reversed(list(self.components.items())):
            try:
                component.stop()
            except Exception:  # keep stopping the rest
                logger.exception("stopping %s failed", name)
        self.writer.stop()
        self.reader.close()
        if self._state_lock is not None:
            self._state_lock.close()  # releases the flock
            self._state_lock = None
        parts = sum(ladder.parts for ladder in self.ladders.values())
        logger.info(
            "stopped: %d parts judged, last seq %d",
            parts,
            self.writer.last_seq,
            extra={"parts": parts, "last_seq": self.writer.last_seq},
        )

    def settle_refinements(self, timeout: float = 60.0) -> bool:
        """Wait (once the cameras are stopped) until no frame waits or is being judged and no
        line has a provisional verdict open; False at the timeout. Two quiet checks 0.1 s apart:
        a frame just taken from the queue is not counted busy for an instant, and judging it
        may still defer an escalation."""
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 2:
            if time.monotonic() >= deadline:
                return False
            quiet = self.pool is None or self.pool.quiet()
            open_ = any(ladder.health()["provisional_open"] for ladder in self.ladders.values())
            calm = calm + 1 if quiet and not open_ else 0
            time.sleep(0.1)
        return True

    def _lock_state_dir(self) -> None:
        """One service per state dir: a second one would share the outbox and its `seq`."""
        path = self.settings.state_dir / ".lock"
        handle = path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise ServiceError(
                f"another appliance is already running on {self.settings.state_dir} (lock {path} is held)"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._state_lock = handle

    # --- building -------------------------------------------------------------------------

    def runner(self, name: str) -> ModelRunner:
        """The (shared) runner for model package `name`, loaded and verified once."""
        if name not in self.runners:
            path = self.settings.models_dir / name
            try:
                package = load_package(path)
            except ModelPackageError as exc:
                raise ServiceError(str(exc)) from exc
            settings = SessionSettings(
                intra_op_threads=self.profile.intra_op_threads,
                providers=self.profile.providers,
                allow_spinning=self.profile.allow_spinning,
                provider_options=self.profile.provider_options(cache_dir(self.settings.state_dir)),
            )
            try:
                self.runners[name] = ModelRunner(package, settings)
            except ModelPackageError as exc:
                raise ServiceError(str(exc)) from exc
            if package.manifest.synthetic:
                logger.warning("model %s was trained on synthetic data only (demo model)", name)
        return self.runners[name]

    def _build_ladder(self, line: LineConfig, progress: Callable[[str], None]) -> Ladder:
        tiers: list[LocalTier] = []
        cloud = False
        for position, tier_config in enumerate(line.tiers, start=1):
            if tier_config.model == "cloud":
                cloud = True
                continue
            runner = self.runner(tier_config.model)
            band = tier_config.band or runner.manifest.uncertain_band
            tier = LocalTier(position, runner, band)
            spec = runner.manifest.input
            shape = (spec.height, spec.width) if spec.channels == 1 else (spec.height, spec.width, 3)
            tier.warm_up(np.full(shape, 128, np.uint8))
            tiers.append(tier)
            progress(f"model {tier_config.model} loaded for line {line.id}")
        return Ladder(
            line.id,
            tiers,
            deadline_ms=line.deadline_ms,
            backlog=line.backlog,
            emit=self._emit,
            pending=self.pending,
            cloud=cloud,
            observe=self._observe,
        )

    def _emit(self, verdict: Verdict, also: Any = None) -> None:
        self.writer.put(verdict, also)

    def _restore_backlog(self) -> None:
        conn = open_store(self.settings.db_path)
        try:
            escalations, orphans = self.pending.load(conn)
            swept = self.pending.sweep(conn)
        finally:
            conn.close()
        if swept:
            logger.info("removed %d kept frame(s) no escalation refers to", swept)
        for escalation in escalations:
            ladder = self.ladders.get(escalation.frame.line)
            if ladder is None or escalation.next_tier > len(ladder.tiers):
                orphans.append(escalation.last)
                continue
            ladder.resume(escalation)
        for last in orphans:
            ladder = self.ladders.get(last.line)
            if ladder is not None:
                ladder.finalize_orphan(last)
        if escalations or orphans:
            logger.info("restored %d deferred escalation(s), closed %d", len(escalations), len(orphans))

    # --- state ----------------------------------------------------------------------------

    def loops_alive(self) -> dict[str, bool]:
        """Liveness of every loop, for the systemd watchdog."""
        alive = {f"camera/{c.id}": c.alive for c in self.cameras}
        alive["inference"] = bool(self.pool and self.pool.alive)
        alive["store"] = self.writer.alive
        for name, component in self.components.items():
            alive[name] = component.alive
        return alive

    @property
    def fatal(self) -> str | None:
        """A reason to exit non-zero (so that systemd restarts us), or None."""
        if self.writer.failed is not None:
            return f"store writer failed: {self.writer.failed}"
        return None

    def health(self) -> dict[str, Any]:
        """The /api/health document: overall status and per-component state."""
        components: dict[str, Any] = {
            "cameras": {c.id: c.health() for c in self.cameras},
            "inference": (
                {**self.pool.health(), "pending_frames": self.pending.health()}
                if self.pool
                else {"state": "error"}
            ),
            "ladders": {line: ladder.health() for line, ladder in self.ladders.items()},
            "store": self.writer.health(),
        }
        for name, component in self.components.items():
            try:
                components[name] = component.health()
            except Exception as exc:  # health must always answer
                components[name] = {"state": "error", "last_error": str(exc)}
        states = [c["state"] for c in _leaves(components)]
        status = "error" if "error" in states else "degraded" if "degraded" in states else "ok"
        uptime = time.monotonic() - self.started_monotonic if self.started_monotonic else 0.0
        return {
            "status": status,
            "node_id": self.settings.node_id,
            "uptime_s": round(uptime, 1),
            "profile": {
                **self.profile.to_json(),
                "sessions": {name: runner.providers for name, runner in self.runners.items()},
            },
            "alarms": [a.to_json() for a in self.events.alarms()],
            "counts": self.live.counts(),
            "components": components,
        }

    @property
    def state_dir(self) -> Path:
        """Where this service keeps its state."""
        return self.settings.state_dir


def _leaves(components: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for comp in components.values():
        if isinstance(comp, dict) and "state" in comp:
            out.append(comp)
        elif isinstance(comp, dict):
            out.extend(c for c in comp.values() if isinstance(c, dict) and "state" in c)
    return out
