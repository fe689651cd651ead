"""The bench's bare loops: the process-per-core loop reports its frames, or why it could not run."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.bench.phases import BenchContext, parallel_phase
from appliance.bench.processes import _collect, parallel_processes_phase
from appliance.bench.sampling import thread_cpu_s
from appliance.config import FolderSource, Settings


def _context(settings: Settings, folder: Path, cores: int) -> BenchContext:
    return BenchContext(
        settings=settings,
        line=settings.lines[0],
        source=FolderSource(path=folder),
        seconds=0.5,
        cores=cores,
        workdir=folder,
        progress=lambda _: None,
    )


def test_a_process_per_core_runs_the_same_loop_as_the_threads(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    for i in range(8):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((32, 32), 30 * i, np.uint8))
    ctx = _context(make_settings(), tmp_path, cores=2)
    processes = parallel_processes_phase(ctx)
    threads = parallel_phase(ctx)
    assert processes["parallel_processes_fps"] > 0 and threads["parallel_loop_fps"] > 0
    assert 0 < processes["parallel_processes_cpu_utilization"] <= 1.05
    assert processes["parallel_processes_cpu_ms"] > 0
    assert 0 <= threads["parallel_loop_kernel_cpu_ms"] <= threads["parallel_loop_cpu_ms"]


def test_a_process_that_cannot_start_its_loop_says_why(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    ctx = _context(make_settings(), tmp_path / "no-such-folder", cores=2)
    with pytest.raises(RuntimeError, match="process loop failed: .*no-such-folder"):
        parallel_processes_phase(ctx)


def test_kernel_time_is_part_of_each_threads_cpu() -> None:
    total, kernel = thread_cpu_s(), thread_cpu_s(kernel_only=True)
    assert kernel and set(kernel) <= set(total)
    assert all(0 <= kernel[role] <= total[role] + 0.02 for role in kernel)  # read a moment apart


def test_a_process_that_dies_without_reporting_is_not_waited_for() -> None:
    mp = multiprocessing.get_context("spawn")
    results = mp.Queue()
    reporter = mp.Process(target=results.put, args=((0, 5, 0.1, None),))
    silent = mp.Process(target=time.sleep, args=(0.2,))  # ends without a report, like a crash
    for process in (reporter, silent):
        process.start()
    began = time.monotonic()
    reports = _collect(results, [reporter, silent])
    assert reports == [(0, 5, 0.1, None)]
    assert time.monotonic() - began < 30  # not the two-minute wait for a report that never comes
    for process in (reporter, silent):
        process.join()
