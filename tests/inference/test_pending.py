"""Frames of deferred escalations: held in memory first, on disk when a refinement takes long."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from appliance.inference.ladder import Escalation
from appliance.inference.pending import PendingRefinements, _read_frame
from appliance.results import Frame, now_ms
from tests.sync.support import make_verdict


def escalation(part_id: str, value: int = 7) -> Escalation:
    image = np.random.default_rng(value).integers(0, 256, (24, 32), np.uint8)
    frame = Frame("line1", "cam1", part_id, 1, now_ms(), time.monotonic(), image)
    return Escalation(frame, 2, make_verdict(part_id, provisional=True))


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_frame_refined_within_the_hold_never_touches_the_disk(tmp_path: Path) -> None:
    pending = PendingRefinements(tmp_path, hold_ms=300)
    pending.start()
    try:
        pending.keep_image(escalation("quick"))
        pending.discard("quick")
        time.sleep(0.5)
        assert not list(tmp_path.iterdir())
        assert pending.health() == {"held": 0, "written": 0, "never_written": 1, "write_failed": 0}
    finally:
        pending.stop()
    assert not list(tmp_path.iterdir()), "stop must not write a frame that was already refined"


def test_a_frame_held_past_the_hold_is_written_exactly_and_removed_when_refined(tmp_path: Path) -> None:
    pending = PendingRefinements(tmp_path, hold_ms=50)
    pending.start()
    try:
        slow = escalation("slow", value=3)
        pending.keep_image(slow)
        assert not (tmp_path / "slow.npy").exists(), "written before its hold"
        assert wait_until(lambda: (tmp_path / "slow.npy").exists())
        read = _read_frame(tmp_path / "slow.npy")
        assert read is not None and np.array_equal(read, slow.frame.image)
        pending.discard("slow")
        assert not (tmp_path / "slow.npy").exists()
        assert pending.health()["written"] == 1
    finally:
        pending.stop()


def test_stop_writes_every_frame_still_held(tmp_path: Path) -> None:
    pending = PendingRefinements(tmp_path, hold_ms=60_000)
    pending.start()
    for n in range(3):
        pending.keep_image(escalation(f"p{n}", value=n))
    pending.discard("p1")
    assert not list(tmp_path.iterdir())
    pending.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0.npy", "p2.npy"]


def test_without_a_hold_the_frame_is_written_at_once(tmp_path: Path) -> None:
    pending = PendingRefinements(tmp_path, hold_ms=0)
    pending.start()
    pending.keep_image(escalation("now"))
    assert (tmp_path / "now.npy").exists()
    pending.discard("now")
    assert not (tmp_path / "now.npy").exists()
    pending.stop()


def test_a_refinement_racing_the_write_leaves_no_file(tmp_path: Path) -> None:
    """Discards arriving while the background thread writes: every file is gone in the end."""
    pending = PendingRefinements(tmp_path, hold_ms=1)
    pending.start()
    try:
        for n in range(300):
            pending.keep_image(escalation(f"r{n}", value=n))
            if n % 3:
                time.sleep(0.0005)
            pending.discard(f"r{n}")
        assert wait_until(lambda: pending.health()["held"] == 0 and not list(tmp_path.glob("*.npy")))
        assert not list(tmp_path.glob(".*.tmp"))
    finally:
        pending.stop()
    assert not list(tmp_path.iterdir())


def test_a_frame_that_cannot_be_written_is_counted_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "pending"
    pending = PendingRefinements(folder, hold_ms=0)
    folder.rmdir()  # as good as a full or failed disk for the write
    pending.keep_image(escalation("lost"))
    assert pending.health()["write_failed"] == 1
    assert not folder.exists()
