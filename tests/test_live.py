"""The live view: latest frame per camera and the bounded ring of recent frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from appliance.live import LiveView
from appliance.results import Frame, Verdict


def frame(index: int, size: int = 10, camera: str = "c1") -> Frame:
    image = np.zeros((size, size), np.uint8)
    return Frame("l1", camera, f"{camera}-{index}", index, 1000 + index, float(index), image)


def verdict(f: Frame, revision: int = 0, word: str = "pass") -> Verdict:
    return Verdict(
        f.part_id,
        revision,
        f.line,
        f.camera,
        f.ts_capture_ms,
        word,
        None,
        0.9,
        0.1,
        1,
        False,
        (),
        1.0,
        2.0,
        None,
    )  # type: ignore[arg-type]


def test_ring_is_bounded_by_count_and_bytes() -> None:
    live = LiveView(keep_frames=3, keep_bytes=10_000)
    frames = [frame(i) for i in range(5)]
    for f in frames:
        live.observe(f, verdict(f))
    assert [live.recent(f.part_id) is not None for f in frames] == [False, False, True, True, True]
    big = LiveView(keep_frames=100, keep_bytes=250)
    for i in range(5):
        f = frame(i, size=10)  # 100 bytes each
        big.observe(f, verdict(f))
    assert sum(big.recent(f"c1-{i}") is not None for i in range(5)) == 2
    # A frame read from a JPEG file also holds the file's bytes: they count too.
    with_files = LiveView(keep_frames=100, keep_bytes=250)
    for i in range(5):
        f = replace(frame(i, size=10), encoded=b"j" * 50)
        with_files.observe(f, verdict(f))
    assert sum(with_files.recent(f"c1-{i}") is not None for i in range(5)) == 1


def test_refinement_replaces_the_part_but_not_the_live_frame() -> None:
    live = LiveView()
    old, new = frame(1), frame(2)
    live.observe(old, verdict(old))
    live.observe(new, verdict(new))
    live.observe(old, verdict(old, revision=1, word="fail"))  # a late refinement of an older part
    latest = live.latest("c1")
    assert latest is not None and latest.frame.part_id == new.part_id
    snap = live.recent(old.part_id)
    assert snap is not None and snap.verdict.revision == 1 and snap.verdict.verdict == "fail"
