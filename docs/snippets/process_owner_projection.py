"""Projection of a process-per-core service core (docs/performance.md, "What 0.85 needs").

Decode + the ladder in a spawned process per core, as in the bench's process loop; each sends
its verdicts in chunks of 32 over a pipe to this process, whose real StoreWriter commits them
to SQLite. Nothing else: no kept images, live view, hard cases, MQTT, deferred refinements or
drop policies. Printed against the CPU budget and the bare process loop of the same run.

    python docs/snippets/process_owner_projection.py [simulator | FOLDER]   (from the repository)
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.bench import phases
from appliance.bench.cli import _source, load_settings
from appliance.bench.processes import parallel_processes_phase
from appliance.results import Verdict
from appliance.store.writer import StoreWriter

CHUNK = 32


def child(settings: Any, line: Any, source_config: Any, index: int, start: Any, stop: Any, pipe: Any) -> None:
    """The bench's bare loop, each part's verdict sent to the owner in chunks."""
    ctx = phases.BenchContext(settings, line, source_config, 0.0, 1, Path("."), lambda _msg: None)
    chunk: list[tuple[str, int, float, int, str | None]] = []
    parts = itertools.count(1)

    def send(tier: int, answer: Any) -> None:
        chunk.append(
            (
                f"c{index}-{next(parts)}",
                time.time_ns() // 1_000_000,
                float(answer.score),
                tier,
                answer.defect_class,
            )
        )
        if len(chunk) >= CHUNK:
            pipe.send(chunk[:])
            chunk.clear()

    _, cpu_s = phases.bare_loop(ctx, index, start, stop, on_part=send)
    pipe.send(chunk)
    pipe.send(("done", cpu_s))


def owner_run(ctx: phases.BenchContext) -> tuple[float, float, float]:
    """(parts committed per s, CPU-ms per part of all processes, CPU-ms per part of this one)."""
    writer = StoreWriter(ctx.workdir / f"owner-{time.time_ns()}.db", "bench", ctx.settings.store)
    writer.start()
    spawn = mp.get_context("spawn")
    start, stop = spawn.Barrier(ctx.cores + 1, timeout=120), spawn.Event()
    pipes = [spawn.Pipe(duplex=False) for _ in range(ctx.cores)]
    children = [
        spawn.Process(
            target=child, args=(ctx.settings, ctx.line, ctx.source, n, start, stop, pipes[n][1]), daemon=True
        )
        for n in range(ctx.cores)
    ]
    for process in children:
        process.start()
    child_cpu: list[float] = []

    def receive(n: int) -> None:
        while True:
            message = pipes[n][0].recv()
            if isinstance(message, tuple):
                child_cpu.append(message[1])
                return
            for part, ts_ms, score, tier, defect_class in message:
                failing = score >= 0.5
                writer.put(
                    Verdict(
                        part_id=part,
                        revision=0,
                        line="bench",
                        camera=f"cam{n}",
                        ts_capture_ms=ts_ms,
                        verdict="fail" if failing else "pass",
                        defect_class=defect_class if failing else None,
                        confidence=score if failing else 1 - score,
                        score=score,
                        tier=tier,
                        provisional=False,
                        defects=(),
                        inference_ms=1.0,
                        total_ms=2.0,
                        model=None,
                    )
                )

    receivers = [threading.Thread(target=receive, args=(n,), daemon=True) for n in range(ctx.cores)]
    for thread in receivers:
        thread.start()
    start.wait()
    rows0, cpu0, wall0 = writer.rows_committed, time.process_time(), time.perf_counter()
    time.sleep(ctx.seconds)
    rows, own_cpu, wall = (
        writer.rows_committed - rows0,
        time.process_time() - cpu0,
        time.perf_counter() - wall0,
    )
    stop.set()
    for thread in receivers:
        thread.join(30)
    writer.stop()
    for process in children:
        process.join(10)
    return rows / wall, (own_cpu + sum(child_cpu)) * 1000 / rows, own_cpu * 1000 / rows


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.ERROR)
    settings = load_settings(None)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=settings.state_dir) as workdir:
        ctx = phases.BenchContext(
            settings,
            settings.lines[0],
            _source(sys.argv[1] if len(sys.argv) > 1 else "simulator"),
            8.0,
            2,
            Path(workdir),
            lambda _msg: None,
        )
        decode, frames = phases.decode_phase(ctx)
        budget = (
            ctx.cores * 1000.0 / (decode["decode_cpu_ms"] + phases.infer_phase(ctx, frames)["infer_cpu_ms"])
        )
        for round_ in range(2):
            loop = parallel_processes_phase(ctx)["parallel_processes_fps"]
            fps, cpu_ms, owner_ms = owner_run(ctx)
            print(  # noqa: T201 (the snippet's output)
                f"round {round_}: budget {budget:.0f} fps; process loop {loop / budget:.2f} of it; "
                f"processes + owner committing {fps:.0f} fps = {fps / budget:.2f} of it "
                f"({cpu_ms:.2f} CPU-ms per part, the owner {owner_ms:.3f})"
            )
