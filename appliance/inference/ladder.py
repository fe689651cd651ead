"""The placement ladder: the cheapest model answers every part, later tiers look at the unsure.

For each frame, tier 1 runs. When its score falls in its uncertain band, the next tier is asked:

- **inline**, when that tier can still finish before the line's deadline and no other frame
  would miss its own deadline by waiting: only the later tier's verdict is published;
- **deferred** otherwise: tier 1's verdict is published at once with ``provisional: true`` and
  the part joins a bounded backlog; a worker refines it when no fresh frame waits or the
  backlog is three quarters full, publishing revision + 1 (``refinement: changed`` or
  ``confirmed``, ``provisional: false``).

The backlog is persisted (the row committed with the provisional verdict; the frame written
once it has waited `store.pending_hold_ms`, see `pending.py`), so a provisional verdict that
survives a crash is refined after the restart, or closed ``unrefined`` if its frame was not yet
on disk. When the backlog is full, the policy ``finalize_oldest`` turns the oldest provisional
verdict final as it stands (``refinement: unrefined``), counted: no provisional verdict is ever
left open.

What is still uncertain after the last local tier is offered to the cloud tier as a hard case.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from appliance.inference.runtime import Defect, Inference, ModelRunner
from appliance.results import Frame, ModelRef, Verdict

logger = logging.getLogger(__name__)

BACKLOG_POLICY = "finalize_oldest"


class VerdictSink(Protocol):
    """Where verdicts go (the store writer); `also` runs in the same transaction."""

    def __call__(self, verdict: Verdict, also: Any = None) -> None: ...


class HardCaseSink(Protocol):
    """Receives parts the local ladder stayed unsure about (the sync worker, under policy)."""

    def offer(self, frame: Frame, verdict: Verdict, reason: str) -> None: ...


class PendingStore(Protocol):
    """Persistence of deferred escalations (image + row), so they survive a crash."""

    def save_op(self, escalation: Escalation) -> Callable[[Any], None]: ...
    def keep_image(self, escalation: Escalation) -> None: ...
    def delete_op(self, part_id: str) -> Callable[[Any], None]: ...
    def discard(self, part_id: str) -> None: ...


class Ewma:
    """Exponentially weighted mean, for per-tier service time."""

    def __init__(self, initial: float, alpha: float = 0.1) -> None:
        self.value = initial
        self.alpha = alpha

    def add(self, sample: float) -> None:
        """Fold in one sample."""
        self.value += self.alpha * (sample - self.value)


@dataclass
class LocalTier:
    """A local model on the ladder with its uncertain band and measured service time."""

    index: int  # 1-based
    runner: ModelRunner
    band: tuple[float, float]
    service_ms: Ewma = field(default_factory=lambda: Ewma(5.0))

    @property
    def model(self) -> ModelRef:
        """Identity of the model for the payload."""
        m = self.runner.manifest
        return ModelRef(m.name, m.version, m.sha256)

    def in_band(self, score: float) -> bool:
        """True when this tier is unsure about `score`."""
        lo, hi = self.band
        return lo <= score < hi

    def run(self, image: Any) -> Inference:
        """Infer and update the service-time estimate (wall time, what the line waits)."""
        start = time.perf_counter()
        result = self.runner.infer(image)
        self.service_ms.add((time.perf_counter() - start) * 1000.0)
        return result

    def warm_up(self, image: Any, runs: int = 3) -> None:
        """Run a few frames so that the first real part does not pay for lazy initialisation."""
        for _ in range(runs):
            self.runner.infer(image)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            self.runner.infer(image)
            samples.append((time.perf_counter() - start) * 1000.0)
        self.service_ms.value = sorted(samples)[len(samples) // 2]


@dataclass(frozen=True, slots=True)
class Load:
    """The inference pool as a worker sees it when deciding to escalate inline."""

    workers: int = 1
    idle_workers: int = 0  # besides the one asking
    waiting_slack_ms: float | None = None  # time left for the oldest waiting frame, if any


@dataclass
class Escalation:
    """A part with a provisional verdict waiting for tier `next_tier`."""

    frame: Frame
    next_tier: int  # 1-based index of the tier that should look next
    last: Verdict
    t_provisional: float = field(default_factory=time.monotonic)


#: Upper bounds (ms) of the per-tier inference latency histogram; the last bucket is +Inf.
LATENCY_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


@dataclass
class TierStats:
    """Counters per tier, read by health and /metrics."""

    judged: int = 0
    escalated: int = 0
    agreed: int = 0
    disagreed: int = 0
    latency_ms_sum: float = 0.0
    #: Verdicts per latency bucket (not cumulative), len(LATENCY_BUCKETS_MS) + 1 with +Inf last.
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))


class Ladder:
    """One line's ladder; shared by the inference workers (thread-safe)."""

    def __init__(
        self,
        line_id: str,
        tiers: list[LocalTier],
        *,
        deadline_ms: float,
        backlog: int,
        emit: VerdictSink,
        pending: PendingStore | None = None,
        hard_cases: HardCaseSink | None = None,
        cloud: bool = False,
        observe: Callable[[Frame, Verdict], None] | None = None,
    ) -> None:
        if not tiers:
            raise ValueError("a ladder needs at least one local tier")
        self.line_id = line_id
        self.tiers = tiers
        self.deadline_ms = deadline_ms
        self.cloud = cloud
        self._emit = emit
        self._observe = observe
        self._pending = pending
        self.hard_cases = hard_cases
        self._backlog: deque[Escalation] = deque()
        self._backlog_max = backlog
        self._lock = threading.Lock()
        self.stats = [TierStats() for _ in tiers]
        self.parts = 0
        self.inline = 0
        self.deferred = 0
        self.deadline_missed = 0
        self.backlog_finalized = 0
        self.refined = 0
        self.errors = 0
        self.provisional_open = 0
        self.resolve_ms_sum = 0.0
        self.resolve_ms_max = 0.0

    # --- the per-frame path ---------------------------------------------------------------

    def judge(self, frame: Frame, load: Callable[[], Load]) -> None:
        """Give `frame` its first verdict; escalate inline or defer, per the deadline."""
        with self._lock:
            self.parts += 1
        tier = self.tiers[0]
        try:
            answer = tier.run(frame.image)
        except Exception as exc:  # a frame the model cannot take becomes an error verdict
            self._error(frame, exc)
            return
        verdict = self._verdict(frame, tier, answer, revision=0, inference_ms=answer.compute_ms)
        self._count(0, verdict)
        index = 0
        while index + 1 < len(self.tiers) and self.tiers[index].in_band(answer.score):
            nxt = self.tiers[index + 1]
            with self._lock:
                self.stats[index].escalated += 1
            if not self._fits_inline(frame, nxt, load):
                self._defer(frame, index + 1, replace(verdict, provisional=True))
                return
            try:
                deeper = nxt.run(frame.image)
            except Exception as exc:
                logger.warning(
                    "tier %d failed, keeping tier %d verdict: %s",
                    nxt.index,
                    index + 1,
                    exc,
                    extra={"line": self.line_id},
                )
                break
            with self._lock:
                self.inline += 1
            deeper_verdict = self._verdict(
                frame,
                nxt,
                deeper,
                revision=0,
                inference_ms=verdict.inference_ms + deeper.compute_ms,
            )
            self._agreement(index, verdict, deeper_verdict)
            self._count(index + 1, deeper_verdict)
            verdict, answer, index = deeper_verdict, deeper, index + 1
        verdict = replace(verdict, total_ms=_since(frame))
        if verdict.total_ms > self.deadline_ms:
            with self._lock:
                self.deadline_missed += 1
        self._publish(frame, verdict)
        self._offer_if_unsure(frame, verdict, index, answer.score)

    def _fits_inline(self, frame: Frame, tier: LocalTier, load: Callable[[], Load]) -> bool:
        """Would running `tier` now keep this part, and every part after it, within deadline?

        Inline work is allowed only while another worker is free for fresh frames (so that a
        long tier never starves tier 1 of the parts that keep coming) and the oldest waiting
        frame still has time for tier 1 after it.
        """
        expected_done = _since(frame) + tier.service_ms.value
        if expected_done > self.deadline_ms:
            return False
        now = load()
        if now.workers > 1 and now.idle_workers < 1:
            return False
        return now.waiting_slack_ms is None or (
            now.waiting_slack_ms >= tier.service_ms.value + self.tiers[0].service_ms.value
        )

    def _defer(self, frame: Frame, next_tier: int, provisional: Verdict) -> None:
        provisional = replace(provisional, total_ms=_since(frame))
        escalation = Escalation(frame, next_tier + 1, provisional)
        also = self._pending.save_op(escalation) if self._pending else None
        if provisional.total_ms > self.deadline_ms:
            with self._lock:
                self.deadline_missed += 1
        self._publish(frame, provisional, also)
        if self._pending:
            self._pending.keep_image(escalation)  # after the line has its answer
        evicted = None
        with self._lock:
            self.deferred += 1
            self.provisional_open += 1
            self._backlog.append(escalation)
            if len(self._backlog) > self._backlog_max:
                evicted = self._backlog.popleft()
                self.backlog_finalized += 1
        if evicted is not None:
            self._finalize(evicted, "unrefined")

    def replace_tier(self, position: int, tier: LocalTier) -> LocalTier:
        """Put `tier` at 1-based `position` (a model switch); return the tier it replaces.

        Every step of judge/refine reads its tier once, so a frame already being judged
        finishes with the old model and names it in its verdict; the next frame uses the new one.
        """
        with self._lock:
            old = self.tiers[position - 1]
            self.tiers[position - 1] = tier
            return old

    # --- refinements ----------------------------------------------------------------------

    def refinement_fits_single_worker(self) -> bool:
        """True when the next refinement plus a tier-1 pass fits in the line's deadline."""
        with self._lock:
            if not self._backlog:
                return False
            tier = self.tiers[self._backlog[0].next_tier - 1]
        return tier.service_ms.value + self.tiers[0].service_ms.value <= self.deadline_ms

    def backlog_size(self) -> int:
        """Escalations waiting."""
        return len(self._backlog)

    def backlog_pressed(self) -> bool:
        """The backlog is three quarters full: refine before it has to close verdicts unrefined."""
        return len(self._backlog) * 4 >= self._backlog_max * 3

    def refine_next(self) -> bool:
        """Refine the oldest deferred part with its next tier; False when there is none."""
        with self._lock:
            if not self._backlog:
                return False
            escalation = self._backlog.popleft()
        tier_pos = escalation.next_tier - 1
        tier = self.tiers[tier_pos]
        try:
            answer = tier.run(escalation.frame.image)
        except Exception as exc:
            logger.warning("refinement by tier %d failed: %s", tier.index, exc, extra={"line": self.line_id})
            self._finalize(escalation, "unrefined")
            return True
        previous = escalation.last
        verdict = self._verdict(
            escalation.frame,
            tier,
            answer,
            revision=previous.revision + 1,
            inference_ms=previous.inference_ms + answer.compute_ms,
        )
        self._agreement(tier_pos - 1, previous, verdict)
        self._count(tier_pos, verdict)
        more = tier_pos + 1 < len(self.tiers) and tier.in_band(answer.score)
        refinement = "confirmed" if verdict.verdict == previous.verdict else "changed"
        verdict = replace(verdict, provisional=more, total_ms=_since(escalation.frame), refinement=refinement)
        # The next step is built here and becomes visible to other workers only after this
        # revision is handed to the store, so revisions of one part stay in order.
        follow_up = Escalation(escalation.frame, escalation.next_tier + 1, verdict) if more else None
        also = None
        if self._pending:
            part_id = escalation.frame.part_id
            also = self._pending.save_op(follow_up) if follow_up else self._pending.delete_op(part_id)
        self._publish(escalation.frame, verdict, also)
        if follow_up is not None:
            with self._lock:
                self.stats[tier_pos].escalated += 1
                self._backlog.append(follow_up)
            return True
        if self._pending:
            self._pending.discard(escalation.frame.part_id)
        self._resolved(escalation)
        self._offer_if_unsure(escalation.frame, verdict, tier_pos, answer.score)
        return True

    def resume(self, escalation: Escalation) -> None:
        """Put back an escalation persisted before a restart (its provisional verdict is out)."""
        with self._lock:
            self.provisional_open += 1
            self._backlog.append(escalation)

    def finalize_orphan(self, last: Verdict) -> None:
        """Close a provisional verdict restored without its image: final as it stands."""
        final = replace(last, revision=last.revision + 1, provisional=False, refinement="unrefined")
        also = self._pending.delete_op(last.part_id) if self._pending else None
        self._emit(final, also)
        if self._pending:
            self._pending.discard(last.part_id)
        with self._lock:
            self.refined += 1

    def _finalize(self, escalation: Escalation, why: str) -> None:
        """Make a provisional verdict final as it stands (its refinement will not happen)."""
        last = escalation.last
        final = replace(
            last,
            revision=last.revision + 1,
            provisional=False,
            total_ms=_since(escalation.frame),
            refinement=why,
        )
        also = self._pending.delete_op(escalation.frame.part_id) if self._pending else None
        self._publish(escalation.frame, final, also)
        if self._pending:
            self._pending.discard(escalation.frame.part_id)
        self._resolved(escalation)

    def _resolved(self, escalation: Escalation) -> None:
        elapsed = (time.monotonic() - escalation.t_provisional) * 1000.0
        with self._lock:
            self.refined += 1
            self.provisional_open -= 1
            self.resolve_ms_sum += elapsed
            self.resolve_ms_max = max(self.resolve_ms_max, elapsed)

    # --- helpers --------------------------------------------------------------------------

    def _publish(self, frame: Frame, verdict: Verdict, also: Any = None) -> None:
        self._emit(verdict, also)
        if self._observe is not None:
            self._observe(frame, verdict)

    def _verdict(
        self, frame: Frame, tier: LocalTier, answer: Inference, *, revision: int, inference_ms: float
    ) -> Verdict:
        threshold = tier.runner.manifest.threshold
        calibration = tier.runner.manifest.calibration
        failing = answer.score >= threshold
        return Verdict(
            part_id=frame.part_id,
            revision=revision,
            line=frame.line,
            camera=frame.camera,
            ts_capture_ms=frame.ts_capture_ms,
            verdict="fail" if failing else "pass",
            defect_class=answer.defect_class if failing else None,
            confidence=answer.score if failing else 1.0 - answer.score,
            score=answer.score,
            tier=tier.index,
            provisional=False,
            defects=_reported_defects(tier, answer, failing),
            inference_ms=inference_ms,
            total_ms=_since(frame),
            model=tier.model,
            defect_map=answer.defect_map,
            p_defect=calibration.p_defect(answer.score) if calibration else None,
        )

    def _error(self, frame: Frame, exc: Exception) -> None:
        logger.error("inference failed: %s", exc, extra={"line": frame.line, "camera": frame.camera})
        with self._lock:
            self.errors += 1
        tier = self.tiers[0]
        self._publish(
            frame,
            Verdict(
                part_id=frame.part_id,
                revision=0,
                line=frame.line,
                camera=frame.camera,
                ts_capture_ms=frame.ts_capture_ms,
                verdict="error",
                defect_class=None,
                confidence=0.0,
                score=0.0,
                tier=tier.index,
                provisional=False,
                defects=(),
                inference_ms=0.0,
                total_ms=_since(frame),
                model=tier.model,
                error=str(exc)[:200],
            ),
        )

    def _count(self, pos: int, verdict: Verdict) -> None:
        with self._lock:
            stats = self.stats[pos]
            stats.judged += 1
            stats.latency_ms_sum += verdict.inference_ms
            stats.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_MS, verdict.inference_ms)] += 1

    def _agreement(self, pos: int, lower: Verdict, upper: Verdict) -> None:
        with self._lock:
            if lower.verdict == upper.verdict:
                self.stats[pos].agreed += 1
            else:
                self.stats[pos].disagreed += 1

    def _offer_if_unsure(self, frame: Frame, verdict: Verdict, pos: int, score: float) -> None:
        if self.cloud and self.hard_cases is not None and self.tiers[pos].in_band(score):
            self.hard_cases.offer(frame, verdict, "uncertain")

    def health(self) -> dict[str, Any]:
        """Ladder figures for health, /metrics and the console."""
        with self._lock:
            tiers = []
            for tier, stats in zip(self.tiers, self.stats, strict=True):
                compared = stats.agreed + stats.disagreed
                tiers.append(
                    {
                        "tier": tier.index,
                        "model": tier.runner.manifest.name,
                        "version": tier.runner.manifest.version,
                        "band": list(tier.band),
                        "service_ms": round(tier.service_ms.value, 3),
                        "judged": stats.judged,
                        "escalated": stats.escalated,
                        "escalation_rate": round(stats.escalated / stats.judged, 4) if stats.judged else 0.0,
                        "agreement_with_next": round(stats.agreed / compared, 4) if compared else None,
                        "mean_inference_ms": round(stats.latency_ms_sum / stats.judged, 3)
                        if stats.judged
                        else None,
                        "latency_hist": {
                            "le_ms": list(LATENCY_BUCKETS_MS),
                            "counts": list(stats.latency_counts),
                            "sum_ms": round(stats.latency_ms_sum, 3),
                        },
                    }
                )
            resolved = self.refined
            return {
                "state": "degraded"
                if self.errors and self.parts and self.errors / self.parts > 0.1
                else "ok",
                "deadline_ms": self.deadline_ms,
                "parts": self.parts,
                "inline_escalations": self.inline,
                "deferred_escalations": self.deferred,
                "deadline_missed": self.deadline_missed,
                "backlog": len(self._backlog),
                "backlog_policy": BACKLOG_POLICY,
                "backlog_finalized": self.backlog_finalized,
                "provisional_open": self.provisional_open,
                "provisional_resolved": resolved,
                "provisional_to_final_ms_mean": round(self.resolve_ms_sum / resolved, 1)
                if resolved
                else None,
                "provisional_to_final_ms_max": round(self.resolve_ms_max, 1),
                "errors": self.errors,
                "cloud_tier": self.cloud,
                "tiers": tiers,
            }


def _reported_defects(tier: LocalTier, answer: Inference, failing: bool) -> tuple[Defect, ...]:
    """The regions a verdict reports: none for a pass; for detectors only boxes at or above the
    decision threshold (the runtime keeps weaker candidates for evaluation, not for the line)."""
    if not failing:
        return ()
    manifest = tier.runner.manifest
    if manifest.kind == "detection":
        return tuple(d for d in answer.defects if d.confidence >= manifest.threshold)
    return answer.defects


def _since(frame: Frame) -> float:
    """Milliseconds since the frame was grabbed."""
    return (time.monotonic() - frame.t_capture) * 1000.0
