"""The inference pool: refinements keep up with a backlog even while fresh frames keep waiting."""

from __future__ import annotations

import queue
import time
from pathlib import Path

from appliance.inference.pool import InferencePool
from tests.inference.test_ladder import frame, ladder


class Camera:
    """The one thing the pool asks of a camera: that its slot be freed."""

    def taken(self) -> None:
        pass


def test_a_nearly_full_backlog_is_refined_although_fresh_frames_keep_waiting(models_dir: Path) -> None:
    """Every part defers (a deadline no tier can meet) and frames never stop waiting, as from
    cameras at full speed. Refining only when no frame waits let the backlog overflow and closed
    every provisional verdict unrefined until the frames ran out; near full, a worker refines
    first, so refinements go out while fresh frames are still being judged."""
    lad, sink = ladder(models_dir, deadline_ms=0.001, backlog=8)
    ready: queue.Queue = queue.Queue()
    camera = Camera()
    parts = 600
    for n in range(parts):
        ready.put((camera, frame(120, n=n)))
    pool = InferencePool(ready, {"line1": lad}, workers=2)
    pool.start()
    try:
        deadline = time.monotonic() + 60
        while not pool.quiet() or lad.backlog_size():
            assert time.monotonic() < deadline, "the pool did not finish"
            time.sleep(0.02)
    finally:
        pool.stop()
    health = lad.health()
    assert health["deferred_escalations"] == parts
    assert health["provisional_resolved"] == parts
    last_first = max(i for i, v in enumerate(sink.verdicts) if v.revision == 0)
    early = [v for v in sink.verdicts[:last_first] if v.revision == 1 and v.refinement != "unrefined"]
    assert len(early) >= parts // 40, (len(early), health)


def test_a_single_worker_never_refines_ahead_of_a_waiting_frame(models_dir: Path) -> None:
    """One worker is the only one to judge fresh frames: a full backlog waits for an idle moment
    (and closes its oldest verdicts unrefined meanwhile) instead of delaying waiting parts."""
    lad, sink = ladder(models_dir, deadline_ms=100, backlog=4)
    ready: queue.Queue = queue.Queue()
    camera = Camera()
    for n in range(40):  # too old for an inline escalation: every part defers
        ready.put((camera, frame(120, n=n, age_ms=200)))
    pool = InferencePool(ready, {"line1": lad}, workers=1)
    pool.start()
    try:
        deadline = time.monotonic() + 60
        while not pool.quiet() or lad.backlog_size():
            assert time.monotonic() < deadline, "the pool did not finish"
            time.sleep(0.02)
    finally:
        pool.stop()
    revisions = [v.revision for v in sink.verdicts]
    last_first = max(i for i, r in enumerate(revisions) if r == 0)
    refined = [v for v in sink.verdicts[:last_first] if v.revision == 1 and v.refinement != "unrefined"]
    assert refined == [], "a refinement went ahead of a waiting frame"
    assert any(v.refinement in {"confirmed", "changed"} for v in sink.verdicts[last_first:])
