"""The bench's bare loops: the process-per-core loop reports its frames, or why it could not run."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.bench.phases import BenchContext, parallel_phase
from appliance.bench.processes import _collect, parallel_processes_phase
from appliance.bench.sampling import CpuClock, thread_cpu_s
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


def test_kernel_time_is_told_apart_from_the_threads_own() -> None:
    # One thread spends its CPU in the kernel (zeroing buffers read from /dev/zero), the other
    # in Python; both stay alive, idle, until the snapshot is taken.
    busy_done = threading.Barrier(3, timeout=30)
    snapshot_taken = threading.Event()

    def in_kernel() -> None:
        buffer = bytearray(1 << 20)
        with open("/dev/zero", "rb", buffering=0) as zero:
            end = time.thread_time() + 0.3
            while time.thread_time() < end:
                zero.readinto(buffer)
        busy_done.wait()
        snapshot_taken.wait()

    def in_python() -> None:
        end, total = time.thread_time() + 0.3, 0
        while time.thread_time() < end:
            total += sum(range(1000))
        busy_done.wait()
        snapshot_taken.wait()

    threads = [
        threading.Thread(target=in_kernel, name="test-in-kernel"),
        threading.Thread(target=in_python, name="test-in-python"),
    ]
    for thread in threads:
        thread.start()
    try:
        busy_done.wait()
        total, kernel = thread_cpu_s()
    finally:
        snapshot_taken.set()
        for thread in threads:
            thread.join()
    assert set(kernel) == set(total)
    assert kernel["test-in-kernel"] > 0.5 * total["test-in-kernel"] > 0.1
    assert kernel["test-in-python"] < 0.5 * total["test-in-python"]
    assert all(0 <= kernel[role] <= total[role] for role in kernel)


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


def test_the_clock_counts_the_threads_taken_off_a_core() -> None:
    # Two threads handing a token back and forth wait for each other at every turn.
    ping, pong = threading.Event(), threading.Event()

    def other() -> None:
        for _ in range(200):
            ping.wait()
            ping.clear()
            pong.set()

    with CpuClock() as handing:
        thread = threading.Thread(target=other)
        thread.start()
        for _ in range(200):
            ping.set()
            pong.wait()
            pong.clear()
        thread.join()
    with CpuClock() as computing:
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            sum(range(1000))
    assert handing.switches >= 200
    assert computing.switches < 50
