"""The inference pool: refinements keep up with a backlog even while fresh frames keep waiting."""

from __future__ import annotations

import queue
import time
from pathlib import Path

from appliance.inference.ladder import Ladder
from appliance.inference.pool import InferencePool
from appliance.results import Frame, Verdict
from tests.inference.test_ladder import Sink, frame, ladder, tier


class Camera:
    """The one thing the pool asks of a camera: that its slot be freed."""

    def taken(self) -> None:
        pass


def run_until_settled(lad: Ladder, frames: list[Frame], workers: int) -> None:
    """Queue every frame at once (cameras far faster than inference), run the pool until every
    frame is judged and the backlog is empty."""
    ready: queue.Queue = queue.Queue()
    camera = Camera()
    for f in frames:
        ready.put((camera, f))
    pool = InferencePool(ready, {"line1": lad}, workers=workers)
    pool.start()
    try:
        deadline = time.monotonic() + 60
        while not pool.quiet() or lad.backlog_size():
            assert time.monotonic() < deadline, "the pool did not finish"
            time.sleep(0.02)
    finally:
        pool.stop()


def refined_before_last_first_verdict(verdicts: list[Verdict]) -> list[Verdict]:
    """Refinements (not closures) published while fresh frames were still being judged."""
    last_first = max(i for i, v in enumerate(verdicts) if v.revision == 0)
    return [v for v in verdicts[:last_first] if v.revision == 1 and v.refinement != "unrefined"]


def test_a_nearly_full_backlog_is_refined_although_fresh_frames_keep_waiting(models_dir: Path) -> None:
    """Every part defers (a deadline no tier can meet) and frames never stop waiting, as from
    cameras at full speed. Refining only when no frame waits let the backlog overflow and closed
    every provisional verdict unrefined until the frames ran out; near full, a worker refines
    first, so refinements go out while fresh frames are still being judged. Tier 1 is the slow
    model here (its work runs outside the GIL), so how the two workers share the GIL cannot
    decide the outcome."""
    tiers = [tier(models_dir, "slow2", 1), tier(models_dir, "bright2", 2)]
    sink = Sink()
    lad = Ladder("line1", tiers, deadline_ms=0.001, backlog=8, emit=sink)
    parts = 100
    run_until_settled(lad, [frame(120, n=n) for n in range(parts)], workers=2)
    health = lad.health()
    assert health["deferred_escalations"] == parts
    assert health["provisional_resolved"] == parts
    early = refined_before_last_first_verdict(sink.verdicts)
    assert len(early) >= parts // 4, (len(early), health)


def test_a_single_worker_never_refines_ahead_of_a_waiting_frame(models_dir: Path) -> None:
    """One worker is the only one to judge fresh frames: a full backlog waits for an idle moment
    (and closes its oldest verdicts unrefined meanwhile) instead of delaying waiting parts."""
    lad, sink = ladder(models_dir, deadline_ms=100, backlog=4)
    # Too old for an inline escalation: every part defers.
    run_until_settled(lad, [frame(120, n=n, age_ms=200) for n in range(40)], workers=1)
    early = refined_before_last_first_verdict(sink.verdicts)
    assert early == [], "a refinement went ahead of a waiting frame"
    assert any(v.refinement in {"confirmed", "changed"} for v in sink.verdicts)
