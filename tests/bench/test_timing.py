"""Grab times noted by the bench map back to the parts the camera made of those grabs."""

from __future__ import annotations

import queue
import time

from appliance.bench.sampling import TimedSource, grab_number
from appliance.capture import Camera
from appliance.config import CameraConfig
from appliance.events import EventBus
from hardware.fakes.source import FakeSource


def test_every_part_finds_the_wall_time_of_its_grab() -> None:
    grabs: list[int] = []
    source = TimedSource(FakeSource(fps=200), grabs)
    config = CameraConfig(id="cam-1", source={"kind": "simulator"}, drop_policy="latest")
    ready: queue.Queue = queue.Queue()
    camera = Camera("line1", config, source, ready, EventBus())
    before = time.time_ns()
    camera.start()
    frames = []
    try:
        while len(frames) < 5:
            cam, frame = ready.get(timeout=10)
            cam.taken()
            frames.append(frame)
    finally:
        camera.stop()
        camera.join()
    for frame in frames:
        number = grab_number(frame.part_id)
        assert number == frame.index
        grabbed = grabs[number - 1]
        assert before <= grabbed <= time.time_ns()
        assert abs(grabbed / 1e6 - frame.ts_capture_ms) < 2, "not the grab of this frame"
