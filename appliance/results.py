"""Values that travel between stages: frames in, verdicts out. Frozen, never shared dicts."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from appliance.inference.runtime import Defect

RESULT_SCHEMA = "vision.result/1"
VerdictWord = Literal["pass", "fail", "error"]


def now_ms() -> int:
    """Unix epoch milliseconds (UTC)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded image of one part, stamped at grab time."""

    line: str
    camera: str
    part_id: str
    index: int
    ts_capture_ms: int
    t_capture: float  # time.monotonic() at grab, for latencies immune to clock steps
    image: np.ndarray = field(repr=False, compare=False)
    truth: str | None = None
    #: The JPEG file these pixels were decoded from, where the source has one (kept as that file).
    encoded: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model produced a verdict."""

    name: str
    version: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        """The `model` object of the result payload."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision about one part, before the store gives it a `seq`.

    `revision` 0 is the first answer for a part; each later tier that looks at the same part
    adds a revision (a refinement when it disagrees, a confirmation when it agrees).
    """

    part_id: str
    revision: int
    line: str
    camera: str
    ts_capture_ms: int
    verdict: VerdictWord
    defect_class: str | None
    confidence: float
    score: float
    tier: int
    provisional: bool
    defects: tuple[Defect, ...]
    inference_ms: float
    total_ms: float
    model: ModelRef | None
    error: str | None = None
    #: For revision > 0: "confirmed" (same verdict as before), "changed", or "unrefined"
    #: (the later tier could not look; the previous verdict became final as it stood).
    refinement: str | None = None
    #: The deciding model's calibrated P(defect): one scale across the ladder's tiers (None when
    #: its package carries no calibration, e.g. cloud verdicts).
    p_defect: float | None = None
    #: The model's defect map, for the console overlay; never part of the payload.
    defect_map: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_payload(self, node_id: str, seq: int) -> dict[str, Any]:
        """The `vision.result/1` object (`ts_publish_ms` and `replayed` are set on publish)."""
        payload: dict[str, Any] = {
            "schema": RESULT_SCHEMA,
            "msg_id": f"{node_id}-{seq}",
            "seq": seq,
            "part_id": self.part_id,
            "revision": self.revision,
            "line": self.line,
            "camera": self.camera,
            "ts_capture_ms": self.ts_capture_ms,
            "ts_publish_ms": None,
            "verdict": self.verdict,
            "defect_class": self.defect_class,
            "confidence": _finite(self.confidence, 4),
            "score": _finite(self.score, 4),
            "p_defect": None if self.p_defect is None else _finite(self.p_defect, 4),
            "tier": self.tier,
            "provisional": self.provisional,
            "defects": [d.to_json() for d in self.defects],
            "latency_ms": {"inference": _finite(self.inference_ms, 3), "total": _finite(self.total_ms, 3)},
            "model": self.model.to_json() if self.model else None,
            "replayed": False,
        }
        if self.refinement:
            payload["refinement"] = self.refinement
        if self.error:
            payload["error"] = self.error
        return payload


def _finite(value: float, digits: int) -> float | None:
    """Rounded, or None for NaN/infinity (strict JSON consumers reject those literals)."""
    return round(value, digits) if math.isfinite(value) else None
