"""The Controller: line start/stop, model switch, alarm acknowledgement, validated."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from appliance.capture import Camera
from appliance.config import CameraConfig
from appliance.control import Controller
from appliance.events import EventBus
from appliance.service import Service
from hardware.sources.base import FrameSource


def _running(settings):
    service = Service(settings)
    service.start()
    return service


def test_stop_and_start_a_line(make_settings):
    service = _running(make_settings())
    try:
        control = Controller(service)
        assert control.running("line1")
        out = control.stop_line("line1", "tester")
        assert out.ok and out.details == {"line": "line1", "running": False, "changed": True}
        assert not control.running("line1") and service.cameras[0].paused
        assert control.stop_line("line1").details["changed"] is False  # idempotent
        assert control.start_line("line1").ok and control.running("line1")
        kinds = [e.kind for e in service.events.recent()][::-1]
        assert kinds.count("line_stopped") == 1 and kinds.count("line_started") == 1
        bad = control.stop_line("line9")
        assert not bad.ok and "unknown line 'line9'" in (bad.reason or "")
    finally:
        service.stop()


def test_switch_model_between_frames(make_settings):
    service = _running(make_settings())
    try:
        control = Controller(service)
        assert control.switch_model("line1", "bright1").details["changed"] is False
        assert "local tiers 1..1" in (control.switch_model("line1", "bright2", tier=2).reason or "")
        assert "invalid model name" in (control.switch_model("line1", "../etc").reason or "")
        assert "cannot load" in (control.switch_model("line1", "missing").reason or "")
        out = control.switch_model("line1", "bright2", by="tester")
        assert out.ok and out.details["model"]["name"] == "bright2"
        assert service.ladders["line1"].tiers[0].runner.manifest.name == "bright2"
        event = next(e for e in service.events.recent() if e.kind == "model_switched")
        assert event.details["previous"]["name"] == "bright1" and event.details["by"] == "tester"
        deadline = time.monotonic() + 10
        while not any(r["model"]["name"] == "bright2" for r in service.reader.recent_results(5)):
            assert time.monotonic() < deadline, "no verdict from the new model"
            time.sleep(0.05)
    finally:
        service.stop()


def test_acknowledge_alarm_and_republish_without_mqtt(make_settings):
    service = Service(make_settings())
    control = Controller(service)
    service.events.raise_alarm("k1", "thing_broken", "thing broken")
    assert control.acknowledge_alarm("k1", "tester").ok
    assert service.events.alarms()[0].details["acknowledged_by"] == "tester"
    assert not control.acknowledge_alarm("k2").ok
    out = control.republish(1)
    assert not out.ok and "MQTT is not enabled" in (out.reason or "")


class _LiveSource(FrameSource):
    live = True

    def __init__(self) -> None:
        self.grabs = 0

    def open(self) -> None:
        pass

    def grab(self) -> None:
        self.grabs += 1
        time.sleep(0.005)

    def retrieve(self) -> np.ndarray:
        return np.zeros((8, 8), np.uint8)

    def release(self) -> None:
        pass


def test_paused_live_camera_keeps_grabbing_and_counts_apart():
    ready: queue.Queue = queue.Queue(maxsize=1)
    camera = Camera("l1", CameraConfig(id="c1", source={"kind": "v4l2"}), _LiveSource(), ready, EventBus())
    camera.paused = True
    camera.start()
    try:
        time.sleep(0.3)
        health = camera.health()
        assert health["paused"] is True and health["skipped_paused"] > 5
        assert health["dropped"] == 0 and ready.empty()
        camera.paused = False
        ready.get(timeout=2)
    finally:
        camera.stop()
        threading.Thread(target=ready.get, daemon=True).start()
        camera.join()
