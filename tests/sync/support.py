"""Helpers shared by the sync tests (verdicts as the ladder makes them, waiting for commits)."""

from __future__ import annotations

from appliance.inference.runtime import Defect
from appliance.results import ModelRef, Verdict, now_ms
from appliance.store.writer import StoreWriter


def make_verdict(
    part_id: str,
    *,
    revision: int = 0,
    verdict: str = "pass",
    score: float = 0.1,
    line: str = "line1",
    camera: str = "cam1",
    ts_ms: int | None = None,
    defects: tuple[Defect, ...] = (),
    defect_class: str | None = None,
    provisional: bool = False,
    tier: int = 1,
) -> Verdict:
    """A verdict as the ladder would make it."""
    return Verdict(
        part_id=part_id,
        revision=revision,
        line=line,
        camera=camera,
        ts_capture_ms=ts_ms if ts_ms is not None else now_ms(),
        verdict=verdict,  # type: ignore[arg-type]
        defect_class=defect_class,
        confidence=score if verdict == "fail" else 1 - score,
        score=score,
        tier=tier,
        provisional=provisional,
        defects=defects,
        inference_ms=1.0,
        total_ms=2.0,
        model=ModelRef("bright1", "0.0.1", "0" * 64),
    )


def flush(store: StoreWriter) -> None:
    """Wait until everything handed to the writer is committed."""
    store.call(lambda conn: None).result(timeout=30)


def mark_hard_case(store: StoreWriter, part_id: str, reason: str = "class", line: str = "line1") -> None:
    """Record a hard case the way the keeper does (without waiting)."""
    store.call(
        lambda c: c.execute(
            "INSERT INTO hard_cases (part_id, line, reason, created_ms) VALUES (?, ?, ?, 0)",
            (part_id, line, reason),
        )
    )


def add_label(
    store: StoreWriter, part_id: str, verdict: str, defect_class: str | None, user: str = "op"
) -> None:
    """An operator's label as the console writes it."""
    store.call(
        lambda c: c.execute(
            "INSERT INTO labels (part_id, verdict, defect_class, user, created_ms) VALUES (?, ?, ?, ?, 1)",
            (part_id, verdict, defect_class, user),
        )
    ).result()
