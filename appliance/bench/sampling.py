"""Small measuring tools: CPU time, RSS, percentiles."""

from __future__ import annotations

import os
import re
import resource
import threading
import time
from pathlib import Path

import numpy as np

from hardware.sources.base import FrameSource


def rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[rank]


class CpuClock:
    """Process CPU time (and the kernel's part of it), context switches and wall time in a `with`."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.kernel_s = 0.0
        self.wall_s = 0.0
        #: Threads of this process taken off a core: waiting (a lock, the GIL, a queue, I/O)
        #: and preempted. Each costs kernel time and cold caches.
        self.switches = 0
        self._cpu0 = 0.0
        self._usage0: resource.struct_rusage | None = None
        self._wall0 = 0.0

    def __enter__(self) -> CpuClock:
        self._cpu0 = time.process_time()
        self._usage0 = resource.getrusage(resource.RUSAGE_SELF)
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.cpu_s = time.process_time() - self._cpu0
        usage, usage0 = resource.getrusage(resource.RUSAGE_SELF), self._usage0
        assert usage0 is not None
        self.kernel_s = usage.ru_stime - usage0.ru_stime
        self.switches = usage.ru_nvcsw + usage.ru_nivcsw - usage0.ru_nvcsw - usage0.ru_nivcsw
        self.wall_s = time.perf_counter() - self._wall0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc stat times are in these


def thread_cpu_s() -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds used so far by each live thread of this process, by role: (user + system,
    system alone), from one read of each thread's /proc stat.

    Threads are named by role with a number (`inference-0`, `capture-cam1`): the numbers are
    dropped so that a role's threads add up. Empty where /proc is not available.
    """
    names = {t.native_id: t.name for t in threading.enumerate()}
    used: dict[str, float] = {}
    kernel: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return used, kernel
    for tid in tasks:
        try:
            cpu, system = _stat_cpu_s(Path(f"/proc/self/task/{tid}/stat"))
        except OSError:
            continue  # ended meanwhile
        role = re.sub(r"[-_]?\d+$", "", names.get(int(tid), "native (onnxruntime, sqlite, ...)"))
        role = re.sub(r"^capture-.*", "capture", role)
        role = re.sub(r"^paho-mqtt-client-.*", "paho-mqtt", role)
        used[role] = used.get(role, 0.0) + cpu
        kernel[role] = kernel.get(role, 0.0) + system
    return used, kernel


def _stat_cpu_s(stat: Path) -> tuple[float, float]:
    """(user + system, system) CPU seconds from a /proc `stat` file (a process or a thread)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS
    return user + system, system


def process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by another process (a loopback peer), if readable."""
    if pid is None:
        return None
    try:
        return _stat_cpu_s(Path(f"/proc/{pid}/stat"))[0]
    except (OSError, IndexError):
        return None


def cpu_split(before: dict[str, float], after: dict[str, float], parts: int) -> dict[str, float]:
    """CPU-ms per part by thread role between two `thread_cpu_s` snapshots, largest first.

    Threads that ended between the snapshots are missing (their time is still in the total).
    """
    split = {role: (after[role] - before.get(role, 0.0)) * 1000.0 / max(1, parts) for role in after}
    return dict(sorted(((k, round(v, 3)) for k, v in split.items() if v > 0), key=lambda kv: -kv[1]))


class TimedSource(FrameSource):
    """Wraps a source and notes the wall time (ns) of every grab, in order: latencies finer than
    the whole milliseconds of the payload's `ts_capture_ms` (a frame's grab number is the last
    part of its `part_id`)."""

    def __init__(self, inner: FrameSource, grabs: list[int]) -> None:
        self.inner = inner
        self.grabs = grabs
        self.live = inner.live
        self.fps = inner.fps

    def open(self) -> None:
        self.inner.open()

    def grab(self) -> None:
        self.inner.grab()
        self.grabs.append(time.time_ns())

    def retrieve(self) -> np.ndarray:
        image = self.inner.retrieve()
        self.truth, self.encoded = self.inner.truth, self.inner.encoded
        return image

    def release(self) -> None:
        self.inner.release()

    def describe(self) -> str:
        return self.inner.describe()


def grab_number(part_id: str) -> int:
    """The camera's grab counter in a part id (`{camera}-{ts_ms}-{4 hex run token}{grab}`)."""
    return int(part_id.rsplit("-", 1)[1][4:])
