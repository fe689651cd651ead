"""The capture loop: drop policies (never decoding a dropped frame), reconnects, corrupt frames."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.capture import Camera
from appliance.config import CameraConfig
from appliance.events import EventBus
from hardware.fakes.source import FakeSource


def make_camera(
    source: FakeSource, policy: str = "latest", depth: int = 4
) -> tuple[Camera, queue.Queue, EventBus]:
    config = CameraConfig(
        id="cam1", source={"kind": "simulator"}, drop_policy=policy, queue_depth=depth, reconnect_max_s=0.2
    )
    ready: queue.Queue = queue.Queue()
    events = EventBus()
    return Camera("line1", config, source, ready, events), ready, events


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def consume(camera: Camera, ready: queue.Queue, count: int, delay: float = 0.0) -> list:
    frames = []
    while len(frames) < count:
        cam, frame = ready.get(timeout=10)
        time.sleep(delay)
        cam.taken()
        frames.append(frame)
    return frames


def test_latest_policy_skips_frames_before_decoding_while_inference_is_busy() -> None:
    source = FakeSource(fps=200)
    camera, ready, _ = make_camera(source)
    camera.start()
    try:
        frames = consume(camera, ready, 10, delay=0.05)  # inference far slower than the camera
    finally:
        camera.stop()
        camera.join()
    assert camera.dropped > 20
    assert source.decodes <= source.grabs - camera.dropped, "a dropped frame was decoded"
    # The slot is refilled by the first grab after it frees up: frames stay fresh.
    ages = [frames[i + 1].index - frames[i].index for i in range(len(frames) - 1)]
    assert max(ages) < 30
    assert all(f.part_id.startswith("cam1-") for f in frames)
    assert len({f.part_id for f in frames}) == len(frames)


def test_latest_policy_keeps_a_second_frame_decoded_and_hands_over_the_held_grab_at_once() -> None:
    """A paced camera (5 fps): grabs at 0, 200, 400, 600 ms. Inference holds frame 1 without
    freeing its slot: frame 2 is still decoded and waits behind it (two per camera, so that
    another worker never idles through a decode). The grab at 400 ms finds both slots taken and
    is held undecoded; when a slot frees at ~500 ms it is handed over at once, not replaced by
    the grab at 600 ms."""
    source = FakeSource(fps=5)
    camera, ready, _ = make_camera(source)
    camera.start()
    try:
        cam, first = ready.get(timeout=10)
        started = time.monotonic()
        cam, second = ready.get(timeout=10)
        assert time.monotonic() - started < 0.35, "the second frame waited for the first to be freed"
        time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
        freed = time.monotonic()
        cam.taken()
        cam, third = ready.get(timeout=10)
        waited = time.monotonic() - freed
        cam.taken()
        cam.taken()
    finally:
        camera.stop()
        camera.join()
    assert (first.index, second.index, third.index) == (1, 2, 3)
    assert waited < 0.09, f"inference waited {waited * 1000:.0f} ms for a frame grabbed before"
    assert third.t_capture < freed, "the frame keeps its grab time: its latency is honest"
    assert camera.dropped == 0 and source.decodes == camera.delivered.count


def test_block_policy_drops_nothing() -> None:
    source = FakeSource(frames=40)
    camera, ready, _ = make_camera(source, policy="block", depth=2)
    camera.start()
    try:
        frames = consume(camera, ready, 40, delay=0.002)
    finally:
        camera.stop()
        camera.join()
    assert [f.index for f in frames] == list(range(1, 41))
    assert camera.dropped == 0
    wait_for(lambda: camera.state == "ended")


def test_paced_source_with_fps_zero_waits_for_inference() -> None:
    source = FakeSource(frames=15, fps=0)
    camera, ready, _ = make_camera(source, policy="latest")
    camera.start()
    try:
        frames = consume(camera, ready, 15, delay=0.01)
    finally:
        camera.stop()
        camera.join()
    assert camera.dropped == 0 and len(frames) == 15


def test_corrupt_frames_are_counted_and_skipped() -> None:
    source = FakeSource(frames=30, corrupt_every=3)
    camera, ready, _ = make_camera(source, policy="block")
    camera.start()
    try:
        frames = consume(camera, ready, 20)
        wait_for(lambda: camera.state == "ended")
    finally:
        camera.stop()
        camera.join()
    assert camera.corrupt == 10
    assert len(frames) == 20
    assert camera.health()["corrupt"] == 10


def test_a_source_that_dies_is_reopened_with_backoff_and_alarms() -> None:
    source = FakeSource(fps=100)
    source.die_after = 5
    source.fail_open = 0
    camera, ready, events = make_camera(source)
    camera.start()
    try:
        consume(camera, ready, 3)
        wait_for(lambda: camera.reconnects >= 1)
        source.fail_open = 3  # stays down for three attempts
        source.die_after = 0
        wait_for(lambda: camera.state == "reconnecting")
        wait_for(lambda: camera.state == "running" and source.opens >= 5)
        consume(camera, ready, 3)
    finally:
        camera.stop()
        camera.join()
    kinds = [e.kind for e in events.recent()]
    assert "camera_lost" in kinds and "camera_recovered" in kinds
    assert events.alarms() == []


def test_a_camera_that_never_opens_keeps_trying_without_stopping_anything() -> None:
    source = FakeSource(fps=10)
    source.fail_open = 10_000
    camera, _, events = make_camera(source)
    camera.start()
    try:
        wait_for(lambda: source.opens >= 3)
        assert camera.state == "reconnecting"
        assert camera.health()["state"] == "degraded"
        assert [a.kind for a in events.alarms()] == ["camera_lost"]
    finally:
        camera.stop()
        camera.join(2)
    assert camera.state == "stopped"


def test_a_decoder_that_raises_does_not_keep_the_slot(caplog: pytest.LogCaptureFixture) -> None:
    source = FakeSource(fps=200, crash_every=4)
    camera, ready, _ = make_camera(source)
    camera.start()
    try:
        frames = consume(camera, ready, 12)
    finally:
        camera.stop()
        camera.join()
    assert len(frames) == 12, "frames keep flowing after decoder errors"
    assert camera.reconnects >= 1
    for record in caplog.records:
        record.expected = True  # the decoder's traceback is logged on purpose


def test_an_undecodable_file_of_any_format_is_counted_as_corrupt(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from hardware.sources.base import CorruptFrame
    from hardware.sources.folder import FolderSource

    (tmp_path / "empty.bmp").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00 not really a tiff")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((4, 4), np.uint8))
    source = FolderSource(tmp_path, loop=False)
    source.open()
    outcomes = []
    for _ in range(3):
        source.grab()
        try:
            source.retrieve()
            outcomes.append("ok")
        except CorruptFrame:
            outcomes.append("corrupt")
    assert sorted(outcomes) == ["corrupt", "corrupt", "ok"]
