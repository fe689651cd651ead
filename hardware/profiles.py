"""Edge-box profiles: how many inference workers, onnxruntime threads and which providers.

On small boxes the rule is no oversubscription: inference workers x intra-op threads plus the
busy decode threads stay within the cores, and onnxruntime's spin-waiting is off (spinning
threads steal the cores that decode and the other workers need).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EdgeProfile:
    """Thread and provider settings for one class of box."""

    name: str
    cores: int
    inference_workers: int
    intra_op_threads: int
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    allow_spinning: bool = False

    def to_json(self) -> dict[str, Any]:
        """For health and the console."""
        return asdict(self)


def usable_cores() -> int:
    """Cores this process may run on (respects cgroup/affinity limits, e.g. CPUAffinity=)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def available_providers() -> list[str]:
    """onnxruntime execution providers present on this box, best first."""
    import onnxruntime as ort

    preferred = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider"]
    have = ort.get_available_providers()
    return [p for p in preferred if p in have] + ["CPUExecutionProvider"]


def detect_profile(cameras: int = 1) -> EdgeProfile:
    """A profile for this box: one single-threaded worker per core left after busy decoders."""
    cores = usable_cores()
    providers = tuple(available_providers())
    if providers[0] != "CPUExecutionProvider":
        return EdgeProfile("auto-accelerated", cores, 1, 1, providers)
    # Decode of small frames costs a few percent of a core per camera; one core is reserved
    # only when there are more cameras than cores.
    busy_decoders = 1 if cameras > cores else 0
    workers = max(1, cores - busy_decoders)
    return EdgeProfile(f"auto-cpu{cores}", cores, workers, 1, providers, allow_spinning=cores >= 8)


PROFILES: dict[str, EdgeProfile] = {
    "small-cpu": EdgeProfile("small-cpu", 2, 2, 1),
    "single-core": EdgeProfile("single-core", 1, 1, 1),
    "x86-8core": EdgeProfile("x86-8core", 8, 6, 1, allow_spinning=True),
}


def resolve_profile(name: str, cameras: int = 1) -> EdgeProfile:
    """The named profile, or the detected one for 'auto'."""
    if name == "auto":
        return detect_profile(cameras)
    if name not in PROFILES:
        raise ValueError(f"unknown edge-box profile {name!r}; known: auto, {', '.join(PROFILES)}")
    return PROFILES[name]
