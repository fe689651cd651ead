"""The bare decode + ladder loop in a process per core: the box's limit without a shared GIL.

The service runs its cameras and workers as threads of one process; the bench's parallel loop
does the same work the same way. Run in separate processes, the loop shows what the cores give
this work when nothing is shared but the hardware: the gap between the two is what one
interpreter lock costs, the gap to the budget what the box itself costs (caches, memory, the
hypervisor).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from pathlib import Path
from typing import Any

from appliance.bench.phases import BenchContext, bare_loop
from appliance.config import LineConfig, Settings, SourceConfig

_READY_TIMEOUT_S = 120.0


def _child(
    settings: Settings,
    line: LineConfig,
    source: SourceConfig,
    index: int,
    start: Any,
    stop: Any,
    results: Any,
) -> None:
    ctx = BenchContext(settings, line, source, 0.0, 1, Path("."), lambda _msg: None)
    try:
        results.put((index, *bare_loop(ctx, index, start, stop), None))
    except threading.BrokenBarrierError:  # another process failed to get ready: its report says why
        results.put((index, 0, 0.0, None))
    except Exception as exc:  # reported to the parent, which raises it
        start.abort()
        results.put((index, 0, 0.0, f"{type(exc).__name__}: {exc}"))


def _collect(results: Any, children: list[Any]) -> list[tuple[int, int, float, str | None]]:
    """Every child's report; stops waiting once the children that have not reported are gone."""
    reports: list[tuple[int, int, float, str | None]] = []
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while len(reports) < len(children):
        try:
            reports.append(results.get(timeout=0.5))
        except queue.Empty:
            if time.monotonic() > deadline:
                break
            if not any(child.is_alive() for child in children):
                try:  # a report put just before its process ended is in the pipe by now
                    reports.append(results.get(timeout=0.5))
                except queue.Empty:
                    break
    return reports


def parallel_processes_phase(ctx: BenchContext) -> dict[str, Any]:
    """`parallel_phase`'s loop in `ctx.cores` processes at once (spawned: nothing inherited)."""
    mp = multiprocessing.get_context("spawn")
    start, stop, results = mp.Barrier(ctx.cores + 1, timeout=_READY_TIMEOUT_S), mp.Event(), mp.Queue()
    children = [
        mp.Process(
            target=_child,
            args=(ctx.settings, ctx.line, ctx.source, n, start, stop, results),
            name=f"bench-process-{n}",
            daemon=True,
        )
        for n in range(ctx.cores)
    ]
    for child in children:
        child.start()
    reports: list[tuple[int, int, float, str | None]] = []
    wall_s = 0.0
    try:
        try:
            start.wait()
        except Exception:  # a child failed to get ready (its report says why) or died
            start.abort()
        else:
            wall0 = time.perf_counter()
            stop.wait(ctx.seconds)
            stop.set()
            wall_s = time.perf_counter() - wall0
        reports = _collect(results, children)
    finally:
        stop.set()
        for child in children:
            child.join(10)
            if child.is_alive():
                child.terminate()
                child.join(5)
    errors = [r[3] for r in reports if r[3]]
    if errors or len(reports) < len(children) or wall_s <= 0:
        silent = [c.name for c in children if c.exitcode != 0]
        raise RuntimeError(f"process loop failed: {errors[0] if errors else f'no report from {silent}'}")
    frames = sum(r[1] for r in reports)
    cpu_s = sum(r[2] for r in reports)
    return {
        "parallel_processes_fps": frames / wall_s,
        "parallel_processes_cpu_ms": cpu_s * 1000.0 / max(1, frames),
        "parallel_processes_cpu_utilization": cpu_s / wall_s / ctx.cores,
    }
