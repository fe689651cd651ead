"""The placement ladder with models whose scores are controlled (score = frame brightness)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.inference.ladder import Escalation, Ladder, Load, LocalTier
from appliance.inference.package import load_package
from appliance.inference.runtime import ModelRunner
from appliance.results import Frame, Verdict, now_ms


class Sink:
    """Collects verdicts the way the store writer would receive them."""

    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.also: list[Any] = []

    def __call__(self, verdict: Verdict, also: Any = None) -> None:
        self.verdicts.append(verdict)
        self.also.append(also)


def tier(models_dir: Path, name: str, index: int, band: tuple[float, float] | None = None) -> LocalTier:
    runner = ModelRunner(load_package(models_dir / name))
    t = LocalTier(index, runner, band or runner.manifest.uncertain_band)
    t.warm_up(np.zeros((32, 32), np.uint8))
    return t


def frame(value: int, n: int = 1, age_ms: float = 0.0) -> Frame:
    return Frame(
        line="line1",
        camera="cam1",
        part_id=f"p{n}",
        index=n,
        ts_capture_ms=now_ms(),
        t_capture=time.monotonic() - age_ms / 1000.0,
        image=np.full((40, 40), value, np.uint8),
    )


def no_queue() -> Load:
    return Load(workers=2, idle_workers=1)


def ladder(
    models_dir: Path, second: str = "bright2", deadline_ms: float = 500, backlog: int = 8, **kwargs: Any
) -> tuple[Ladder, Sink]:
    sink = Sink()
    tiers = [tier(models_dir, "bright1", 1), tier(models_dir, second, 2)]
    return Ladder("line1", tiers, deadline_ms=deadline_ms, backlog=backlog, emit=sink, **kwargs), sink


def test_out_of_band_scores_are_decided_by_tier_one(models_dir: Path) -> None:
    lad, sink = ladder(models_dir)
    lad.judge(frame(25), no_queue)  # 0.10: clearly good
    lad.judge(frame(230, 2), no_queue)  # 0.90: clearly bad
    assert [(v.tier, v.verdict, v.revision, v.provisional) for v in sink.verdicts] == [
        (1, "pass", 0, False),
        (1, "fail", 0, False),
    ]
    assert lad.stats[0].escalated == 0


def test_in_band_escalates_inline_when_the_deadline_allows(models_dir: Path) -> None:
    lad, sink = ladder(models_dir, second="inverse2")
    lad.judge(frame(110), no_queue)  # tier 1: 0.43 pass (in band); tier 2: 0.57 fail
    assert len(sink.verdicts) == 1, "inline: only the later tier's verdict is published"
    v = sink.verdicts[0]
    assert (v.tier, v.verdict, v.revision, v.provisional) == (2, "fail", 0, False)
    assert v.model is not None and v.model.name == "inverse2"
    health = lad.health()
    assert health["inline_escalations"] == 1
    assert health["tiers"][0]["agreement_with_next"] == 0.0


def test_deadline_miss_gives_a_provisional_verdict_then_a_refinement(models_dir: Path) -> None:
    lad, sink = ladder(models_dir, second="inverse2", deadline_ms=50)
    lad.tiers[1].service_ms.value = 80.0  # measured service time longer than the deadline
    lad.judge(frame(110), no_queue)
    first = sink.verdicts[0]
    assert (first.tier, first.verdict, first.revision, first.provisional) == (1, "pass", 0, True)
    assert lad.backlog_size() == 1
    assert lad.refine_next()
    second = sink.verdicts[1]
    assert second.part_id == first.part_id
    assert (second.tier, second.verdict, second.revision, second.provisional) == (2, "fail", 1, False)
    assert second.refinement == "changed"
    assert second.to_payload("n", 9)["refinement"] == "changed"
    assert lad.health()["provisional_open"] == 0
    assert not lad.refine_next()


def test_agreement_publishes_a_confirmation(models_dir: Path) -> None:
    lad, sink = ladder(models_dir, second="bright2", deadline_ms=50)
    lad.tiers[1].service_ms.value = 80.0
    lad.judge(frame(140), no_queue)  # 0.55 fail on both tiers
    lad.refine_next()
    assert [(v.revision, v.verdict, v.provisional, v.refinement) for v in sink.verdicts] == [
        (0, "fail", True, None),
        (1, "fail", False, "confirmed"),
    ]
    assert lad.health()["tiers"][0]["agreement_with_next"] == 1.0


def test_a_waiting_frame_near_its_deadline_forces_deferral(models_dir: Path) -> None:
    lad, sink = ladder(models_dir, deadline_ms=100)
    lad.tiers[1].service_ms.value = 30.0
    # the oldest waiting frame has 20 ms left: no time for tier 2
    lad.judge(frame(120), lambda: Load(2, 1, 20.0))
    assert sink.verdicts[0].provisional is True
    lad.judge(frame(120, 2), lambda: Load(2, 1, 90.0))  # plenty of slack: inline
    assert (sink.verdicts[1].tier, sink.verdicts[1].provisional) == (2, False)


def test_inline_escalation_needs_another_worker_free_for_fresh_frames(models_dir: Path) -> None:
    lad, sink = ladder(models_dir, deadline_ms=100)
    lad.judge(frame(120), lambda: Load(workers=2, idle_workers=0))
    assert sink.verdicts[0].provisional is True
    lad.judge(frame(120, 2), lambda: Load(workers=1, idle_workers=0))  # a lone worker may go inline
    assert sink.verdicts[1].provisional is False


def test_full_backlog_finalizes_the_oldest_provisional_verdict(models_dir: Path) -> None:
    lad, sink = ladder(models_dir, deadline_ms=10, backlog=2)
    lad.tiers[1].service_ms.value = 50.0
    for n in range(3):
        lad.judge(frame(120, n), no_queue)
    health = lad.health()
    assert health["backlog"] == 2 and health["backlog_finalized"] == 1
    finalized = sink.verdicts[-1]
    assert (finalized.part_id, finalized.revision, finalized.provisional, finalized.refinement) == (
        "p0",
        1,
        False,
        "unrefined",
    )
    while lad.refine_next():
        pass
    provisional = {v.part_id for v in sink.verdicts if v.provisional}
    final = {v.part_id for v in sink.verdicts if not v.provisional and v.revision > 0}
    assert provisional == final == {"p0", "p1", "p2"}


def test_a_frame_the_model_cannot_take_becomes_an_error_verdict(models_dir: Path) -> None:
    lad, sink = ladder(models_dir)
    bad = Frame(
        line="line1",
        camera="cam1",
        part_id="bad",
        index=1,
        ts_capture_ms=now_ms(),
        t_capture=time.monotonic(),
        image=np.zeros((0, 0), np.uint8),
    )
    lad.judge(bad, no_queue)
    assert sink.verdicts[0].verdict == "error"
    assert sink.verdicts[0].error
    assert lad.health()["errors"] == 1


def test_escalations_are_persisted_with_the_provisional_verdict(models_dir: Path, tmp_path: Path) -> None:
    from appliance.inference.pending import PendingRefinements

    pending = PendingRefinements(tmp_path / "pending")
    lad, sink = ladder(models_dir, deadline_ms=10, pending=pending)
    lad.tiers[1].service_ms.value = 50.0
    lad.judge(frame(120), no_queue)
    assert sink.also[0] is not None, "the escalation row must commit with the provisional verdict"
    assert (tmp_path / "pending" / "p1.npy").exists()
    lad.refine_next()
    assert sink.also[1] is not None, "the refinement must delete the escalation in its transaction"


def test_kept_frames_read_back_exactly_including_an_older_release_png(tmp_path: Path) -> None:
    import cv2

    from appliance.inference.pending import _read_frame

    image = np.random.default_rng(0).integers(0, 256, (48, 64), np.uint8)
    np.save(tmp_path / "a.npy", image)
    cv2.imwrite(str(tmp_path / "b.png"), image)
    (tmp_path / "c.npy").write_bytes(b"not an array")
    (tmp_path / "d.npy").write_bytes(b"")
    assert _read_frame(tmp_path / "d.npy") is None
    assert np.array_equal(_read_frame(tmp_path / "a.npy"), image)
    assert np.array_equal(_read_frame(tmp_path / "b.png"), image)
    assert _read_frame(tmp_path / "c.npy") is None
    assert _read_frame(tmp_path / "gone.npy") is None


@pytest.mark.parametrize("value", [60, 120, 200])
def test_resume_refines_restored_escalations(models_dir: Path, value: int) -> None:
    lad, sink = ladder(models_dir)
    last = Verdict(
        part_id="old",
        revision=0,
        line="line1",
        camera="cam1",
        ts_capture_ms=now_ms() - 5000,
        verdict="pass",
        defect_class=None,
        confidence=0.5,
        score=0.45,
        tier=1,
        provisional=True,
        defects=(),
        inference_ms=0.1,
        total_ms=1.0,
        model=None,
    )
    lad.resume(Escalation(frame(value, 7), 2, last))
    assert lad.refine_next()
    refined = sink.verdicts[0]
    assert (refined.revision, refined.tier, refined.provisional) == (1, 2, False)
    assert refined.verdict == ("fail" if value / 255 >= 0.5 else "pass")


def test_a_detector_reports_only_boxes_at_or_above_its_threshold(models_dir: Path) -> None:
    sink = Sink()
    boxes = tier(models_dir, "boxes", 1)
    lad = Ladder("line1", [boxes], deadline_ms=500, backlog=4, emit=sink)
    lad.judge(frame(200), no_queue)  # boxes scored 0.78 and 0.1; threshold 0.5
    verdict = sink.verdicts[0]
    assert verdict.verdict == "fail"
    assert [round(d.confidence, 2) for d in verdict.defects] == [0.78]
    assert len(boxes.runner.infer(np.full((40, 40), 200, np.uint8)).defects) == 2  # evaluation sees both
    lad.judge(frame(60, 2), no_queue)
    assert sink.verdicts[1].verdict == "pass" and sink.verdicts[1].defects == ()


def test_a_model_that_answers_nan_gives_an_error_verdict(models_dir: Path, tmp_path: Path) -> None:
    from pipelines.synthetic import build_package

    package = build_package(tmp_path / "nan", "brightness", size=32)
    runner = ModelRunner(load_package(package))
    sink = Sink()
    lad = Ladder("line1", [LocalTier(1, runner, (0.3, 0.7))], deadline_ms=500, backlog=4, emit=sink)

    def broken(image: np.ndarray) -> Any:
        return runner._scored({"score": np.array([np.nan], np.float32)}, image.shape[1], image.shape[0], 0.0)

    runner.infer = broken  # type: ignore[method-assign]  # the seam: what the graph answered
    lad.judge(frame(120), no_queue)
    assert sink.verdicts[0].verdict == "error"
    assert "non-finite" in (sink.verdicts[0].error or "")


def test_refinements_of_a_part_stay_in_order_with_three_tiers_and_two_workers(models_dir: Path) -> None:
    import threading

    sink = Sink()
    tiers = [
        tier(models_dir, "bright1", 1, (0.3, 0.7)),
        tier(models_dir, "bright2", 2, (0.4, 0.6)),
        tier(models_dir, "inverse2", 3),
    ]
    lad = Ladder("line1", tiers, deadline_ms=1, backlog=1000, emit=sink)
    for t in tiers[1:]:
        t.service_ms.value = 50.0  # never inline: everything is deferred and refined
    for n in range(200):
        lad.judge(frame(120 + n % 8, n), no_queue)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while lad.refine_next():
                pass
        except BaseException as exc:  # noqa: BLE001 - the test reports any
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert errors == []
    by_part: dict[str, list[int]] = {}
    for v in sink.verdicts:
        by_part.setdefault(v.part_id, []).append(v.revision)
    assert all(revs == list(range(len(revs))) for revs in by_part.values())
    assert all(len(revs) == 3 for revs in by_part.values()), "every part went through all three tiers"
    assert lad.health()["provisional_open"] == 0


def test_verdicts_carry_the_deciding_tiers_calibrated_probability(models_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from appliance.inference.package import MANIFEST_FILE, write_manifest

    calibrated = tmp_path / "bright1"
    shutil.copytree(models_dir / "bright1", calibrated)
    raw = json.loads((calibrated / MANIFEST_FILE).read_text())
    raw["calibration"] = {"method": "platt-logit", "a": 2.0, "b": -1.0, "fitted_on": "test"}
    write_manifest(calibrated, raw)
    sink = Sink()
    tiers = [tier(tmp_path, "bright1", 1), tier(models_dir, "bright2", 2)]
    lad = Ladder("line1", tiers, deadline_ms=500, backlog=8, emit=sink)
    lad.judge(frame(230), no_queue)  # tier 1 decides: calibrated
    lad.judge(frame(127, 2), no_queue)  # in band: tier 2 (no calibration) decides
    first, second = sink.verdicts
    cal = load_package(calibrated).manifest.calibration
    assert cal is not None and first.tier == 1
    assert first.p_defect == pytest.approx(cal.p_defect(first.score))
    assert first.p_defect != pytest.approx(first.score)
    assert first.to_payload("n", 1)["p_defect"] == pytest.approx(first.p_defect, abs=1e-4)
    assert second.tier == 2 and second.p_defect is None
    assert second.to_payload("n", 2)["p_defect"] is None
