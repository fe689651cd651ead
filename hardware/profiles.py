"""Edge-box profiles: how many inference workers, onnxruntime threads and which providers.

On small boxes the rule is no oversubscription: inference workers x intra-op threads plus the
busy decode threads stay within the cores, and onnxruntime's spin-waiting is off (spinning
threads steal the cores that decode and the other workers need).

Execution providers: CPU always (and last, as the fallback); TensorRT, CUDA or OpenVINO when the
installed onnxruntime build has them **and** the box has the device (an onnxruntime-gpu wheel
lists CUDA on a box without a GPU). A profile is chosen by name (`profile = "nvidia-cuda"` in the
config) or detected (`profile = "auto"`, the default). Providers a named profile asks for but the
box lacks are dropped, logged and reported in health (`missing`), so the health document always
says what actually runs.

Accelerator caches (TensorRT engines, OpenVINO blobs) go to systemd's `$CACHE_DIRECTORY`
(`/var/cache/appliance`, the only writable place besides the state under `ProtectSystem=strict`)
or, outside systemd, to `<state_dir>/cache`: a TensorRT engine takes minutes to build on a
Jetson, and a cache makes it a once-per-model cost instead of a once-per-start one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
ACCELERATORS = (TENSORRT, CUDA, OPENVINO)  # best first


@dataclass(frozen=True, slots=True)
class EdgeProfile:
    """Thread and provider settings for one class of box."""

    name: str
    cores: int
    inference_workers: int
    intra_op_threads: int
    providers: tuple[str, ...] = (CPU,)
    allow_spinning: bool = False
    #: OpenVINO device: CPU, GPU (Intel iGPU, needs /dev/dri) or NPU.
    openvino_device: str = "CPU"
    #: How the profile was chosen: "named" or "detected".
    source: str = "named"
    #: Providers the profile asked for that this box lacks (dropped).
    missing: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """For health and the console (JSON types: lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def provider_options(self, cache_dir: Path) -> dict[str, dict[str, str]]:
        """onnxruntime options per provider in `providers` (caches under `cache_dir`, created)."""
        options: dict[str, dict[str, str]] = {}
        for provider, sub in ((TENSORRT, "tensorrt"), (OPENVINO, "openvino")):
            if provider in self.providers:
                try:
                    (cache_dir / sub).mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # a missing cache costs start-up time, nothing else
                    logger.warning("accelerator cache %s unusable: %s", cache_dir / sub, exc)
        if TENSORRT in self.providers:
            options[TENSORRT] = {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache_dir / "tensorrt"),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache_dir / "tensorrt"),
            }
        if CUDA in self.providers:
            options[CUDA] = {"device_id": "0"}
        if OPENVINO in self.providers:
            options[OPENVINO] = {
                "device_type": self.openvino_device,
                "cache_dir": str(cache_dir / "openvino"),
                "num_of_threads": str(self.intra_op_threads),
            }
        return options


def cache_dir(state_dir: Path, env: dict[str, str] | None = None) -> Path:
    """Where accelerator caches go: systemd's $CACHE_DIRECTORY, else `<state_dir>/cache`."""
    env = dict(os.environ) if env is None else env
    first = env.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(first) / "onnxruntime" if first else state_dir / "cache" / "onnxruntime"


def usable_cores() -> int:
    """Cores this process may run on (respects cgroup/affinity limits, e.g. CPUAffinity=)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def onnxruntime_providers() -> list[str]:
    """Execution providers compiled into the installed onnxruntime."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def device_present(provider: str, exists: Callable[[str], bool] = os.path.exists) -> bool:
    """Whether this box has the device a provider needs (CPU-side OpenVINO needs none)."""
    if provider in (CUDA, TENSORRT):
        return exists("/dev/nvidiactl") or exists("/dev/nvhost-ctrl-gpu") or exists("/dev/nvgpu/igpu0")
    return True


def available_providers(
    compiled: list[str] | None = None, exists: Callable[[str], bool] = os.path.exists
) -> list[str]:
    """Usable execution providers on this box, best first, CPU last."""
    have = onnxruntime_providers() if compiled is None else compiled
    return [p for p in ACCELERATORS if p in have and device_present(p, exists)] + [CPU]


def detect_profile(
    cameras: int = 1, providers: list[str] | None = None, cores: int | None = None
) -> EdgeProfile:
    """A profile for this box: one single-threaded worker per core left after busy decoders."""
    cores = usable_cores() if cores is None else cores
    chosen = tuple(available_providers() if providers is None else providers)
    if chosen[0] in (TENSORRT, CUDA):
        # One worker feeds the GPU; more would only queue on the same device.
        return EdgeProfile("auto-gpu", cores, 1, 1, chosen, source="detected")
    if chosen[0] == OPENVINO:
        workers = max(1, min(2, cores // 2))
        threads = max(1, cores // workers)
        return EdgeProfile("auto-openvino", cores, workers, threads, chosen, source="detected")
    # Decode of small frames costs a few percent of a core per camera; one core is reserved
    # only when there are more cameras than cores.
    busy_decoders = 1 if cameras > cores else 0
    workers = max(1, cores - busy_decoders)
    return EdgeProfile(
        f"auto-cpu{cores}", cores, workers, 1, chosen, allow_spinning=cores >= 8, source="detected"
    )


PROFILES: dict[str, EdgeProfile] = {
    # CPU only.
    "single-core": EdgeProfile("single-core", 1, 1, 1),
    "small-cpu": EdgeProfile("small-cpu", 2, 2, 1),
    "x86-4core": EdgeProfile("x86-4core", 4, 4, 1),
    "x86-8core": EdgeProfile("x86-8core", 8, 6, 1, allow_spinning=True),
    # Intel boxes with onnxruntime-openvino: OpenVINO on the CPU cores, or on the iGPU.
    "intel-openvino": EdgeProfile("intel-openvino", 4, 2, 2, (OPENVINO, CPU)),
    "intel-igpu": EdgeProfile("intel-igpu", 4, 1, 1, (OPENVINO, CPU), openvino_device="GPU"),
    # NVIDIA: a discrete GPU with onnxruntime-gpu, or a Jetson (TensorRT, engines cached).
    "nvidia-cuda": EdgeProfile("nvidia-cuda", 4, 1, 1, (CUDA, CPU)),
    "jetson-orin": EdgeProfile("jetson-orin", 6, 1, 1, (TENSORRT, CUDA, CPU)),
}


def resolve_profile(name: str, cameras: int = 1, available: list[str] | None = None) -> EdgeProfile:
    """The named profile (without providers this box lacks), or the detected one for 'auto'."""
    if name == "auto":
        profile = detect_profile(cameras, available)
        logger.info("edge-box profile detected: %s, providers %s", profile.name, ", ".join(profile.providers))
        return profile
    if name not in PROFILES:
        raise ValueError(f"unknown edge-box profile {name!r}; known: auto, {', '.join(PROFILES)}")
    profile = PROFILES[name]
    usable = set(available_providers() if available is None else available)
    kept = tuple(p for p in profile.providers if p in usable) or (CPU,)
    missing = tuple(p for p in profile.providers if p not in usable)
    if missing:
        logger.warning(
            "edge-box profile %s asks for %s, which this box lacks; running on %s",
            name,
            ", ".join(missing),
            ", ".join(kept),
        )
    return replace(profile, providers=kept, missing=missing)
