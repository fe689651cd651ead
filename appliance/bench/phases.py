"""The bench's measurements, one function per phase, all on the same model, source and box."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.bench.sampling import (
    CpuClock,
    TimedSource,
    cpu_split,
    grab_number,
    percentile,
    process_cpu_s,
    rss_mb,
    thread_cpu_s,
)
from appliance.config import CameraConfig, DropPolicy, LineConfig, Settings, SourceConfig
from appliance.inference.package import load_package
from appliance.inference.runtime import Inference, ModelRunner, SessionSettings
from appliance.results import now_ms
from appliance.service import Service
from appliance.wiring import add_components
from hardware.sources.base import CorruptFrame, FrameSource
from hardware.sources.factory import make_source

logger = logging.getLogger(__name__)


@dataclass
class BenchContext:
    """What every phase shares: settings, the ladder under test, the source, the budget."""

    settings: Settings
    line: LineConfig
    source: SourceConfig
    seconds: float
    cores: int
    workdir: Path
    progress: Callable[[str], None]

    def local_tiers(self) -> list[str]:
        """Model package names of the local tiers, cheapest first."""
        return [t.model for t in self.line.tiers if t.model != "cloud"]

    def band(self, name: str, manifest_band: tuple[float, float]) -> tuple[float, float]:
        """A tier's uncertain band as the service takes it: the line's config, else the manifest's."""
        configured = next((t.band for t in self.line.tiers if t.model == name and t.band), None)
        return configured or manifest_band

    def runner(self, name: str, threads: int = 1, path: Path | None = None) -> ModelRunner:
        """A runner for `name` with `threads` intra-op threads (spinning off)."""
        package = load_package(path or self.settings.models_dir / name)
        return ModelRunner(package, SessionSettings(intra_op_threads=threads))


def _open(source_config: SourceConfig, fps: float | None = None) -> FrameSource:
    config = (
        source_config.model_copy(update={"fps": fps})
        if fps is not None and hasattr(source_config, "fps")
        else source_config
    )
    source = make_source(config)
    source.open()
    return source


_SAMPLE_BYTES = 512_000_000


def decode_phase(ctx: BenchContext, keep: int = 256) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Decode-only throughput of the source on one thread, and sample frames for later phases.

    The sample is drawn evenly from every frame decoded (a reservoir, seeded; which frames it
    holds depends on how many were decoded): the ladder's CPU per part and its escalation share
    are measured on it, and the first frames of a folder in name order are one class (the
    first 64 tile photos are all blowholes).
    """
    source = _open(ctx.source, fps=0)
    frames: list[np.ndarray] = []
    pick = random.Random(0)
    count = 0
    deadline = time.perf_counter() + ctx.seconds
    with CpuClock() as clock:
        while time.perf_counter() < deadline:
            source.grab()
            try:
                image = source.retrieve()
            except CorruptFrame:
                continue
            if not frames:  # 256 frames of a 4K stream would be 6 GB: the sample has a budget
                keep = max(8, min(keep, _SAMPLE_BYTES // max(1, image.nbytes)))
            if len(frames) < keep:
                frames.append(image)
            elif (slot := pick.randrange(count + 1)) < keep:
                frames[slot] = image
            count += 1
    source.release()
    pick.shuffle(frames)  # a time-bounded phase that gets through part of them sees a fair part
    return {
        "decode_fps": count / clock.wall_s,
        "decode_cpu_ms": clock.cpu_s * 1000.0 / max(1, count),
        "decode_wall_ms": clock.wall_s * 1000.0 / max(1, count),
        "sampled_frames": len(frames),
    }, frames


class _BareLadder:
    """The line's local tiers on one thread each, walked as the service does, nothing else."""

    def __init__(self, ctx: BenchContext) -> None:
        tiers = ctx.local_tiers()
        self.runners = [ctx.runner(t, threads=1) for t in tiers]
        self.bands = [
            ctx.band(t, r.manifest.uncertain_band) for t, r in zip(tiers, self.runners, strict=True)
        ]

    def warm(self, image: np.ndarray) -> None:
        """One run of every tier (the first run of a session is slow)."""
        for runner in self.runners:
            runner.infer(image)

    def judge(self, image: np.ndarray) -> tuple[int, Inference]:
        """Run tier 1, and the next tiers while the score is in the band: the (1-based) tier
        that decided and its answer."""
        for position, runner in enumerate(self.runners):
            answer = runner.infer(image)
            lo, hi = self.bands[position]
            if not (position + 1 < len(self.runners) and lo <= answer.score < hi):
                break
        return position + 1, answer


def bare_loop(
    ctx: BenchContext,
    index: int,
    start: Any,
    stop: Any,
    on_part: Callable[[int, Inference], None] | None = None,
) -> tuple[int, float]:
    """Decode + ladder on this thread until `stop` is set: (frames, CPU seconds of the process).

    `start` is a barrier passed once the source and sessions are ready (the first run of a
    session is slow); `start`/`stop` are threading or multiprocessing primitives alike. The CPU
    is this process's from the barrier on (all its threads: with one loop per process, its own).
    `on_part(tier, answer)` gets each part's deciding tier and answer (docs/snippets).
    """
    source: FrameSource | None = None
    try:
        seeded = hasattr(ctx.source, "seed")
        source = _open(ctx.source.model_copy(update={"seed": index}) if seeded else ctx.source, fps=0)
        ladder = _BareLadder(ctx)
        source.grab()
        ladder.warm(source.retrieve())
        start.wait()
        cpu0, frames = time.process_time(), 0
        while not stop.is_set():
            source.grab()
            try:
                image = source.retrieve()
            except CorruptFrame:
                continue
            decided = ladder.judge(image)
            if on_part is not None:
                on_part(*decided)
            frames += 1
        return frames, time.process_time() - cpu0
    finally:
        if source is not None:
            source.release()


def parallel_phase(ctx: BenchContext) -> dict[str, Any]:
    """Decode + ladder in a bare loop on every core at once: the box's own limit for this work.

    No queues, store or delivery: a thread per core, each with its own source and sessions
    (cv2 and onnxruntime release the GIL). Against the budget (per-frame CPU measured on one
    core, the others idle) it shows what running every core at once costs the same work here
    (shared caches and memory, the hypervisor, the GIL); against it, the pipeline's own cost.
    `parallel_processes_phase` runs the same loop in a process per core, without the GIL.
    """
    start, stop = threading.Barrier(ctx.cores + 1, timeout=120), threading.Event()
    counts = [0] * ctx.cores
    failures: list[Exception] = []

    def loop(index: int) -> None:
        try:
            counts[index] = bare_loop(ctx, index, start, stop)[0]
        except threading.BrokenBarrierError:
            pass  # another thread failed to get ready: its error is raised
        except Exception as exc:  # raised by the caller once every thread has ended
            failures.append(exc)
            start.abort()
            stop.set()

    threads = [threading.Thread(target=loop, args=(n,), name=f"bench-parallel-{n}") for n in range(ctx.cores)]
    for thread in threads:
        thread.start()
    clock = CpuClock()
    try:
        start.wait()
        with clock:
            stop.wait(ctx.seconds)
            stop.set()
            for thread in threads:
                thread.join()
    except threading.BrokenBarrierError:  # a thread failed to get ready: the others end at once
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    frames = sum(counts)
    return {
        "parallel_loop_fps": frames / clock.wall_s,
        "parallel_loop_cpu_ms": clock.cpu_s * 1000.0 / max(1, frames),
        "parallel_loop_kernel_cpu_ms": clock.kernel_s * 1000.0 / max(1, frames),
        "parallel_loop_switches_per_part": clock.switches / max(1, frames),
        "parallel_loop_cpu_utilization": clock.cpu_s / clock.wall_s / ctx.cores,
    }


def infer_phase(ctx: BenchContext, frames: list[np.ndarray]) -> dict[str, Any]:
    """Raw onnxruntime throughput (threads = cores) and per-frame CPU of the ladder (one thread)."""
    tiers = ctx.local_tiers()
    first = ctx.runner(tiers[0], threads=ctx.cores)
    blobs = [first.blob(f) for f in frames]
    name = first.manifest.input.name
    for blob in blobs[:8]:
        first.session.run(None, {name: blob})
    count = 0
    deadline = time.perf_counter() + ctx.seconds / 2
    with CpuClock() as clock:
        while time.perf_counter() < deadline:
            first.session.run(None, {name: blobs[count % len(blobs)]})
            count += 1
    raw_fps = count / clock.wall_s

    # The ladder on one thread: what one part costs, escalations included.
    ladder = _BareLadder(ctx)
    ladder.warm(frames[0])
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    escalated_wall_ms: list[float] = []
    escalated = 0
    deadline = time.perf_counter() + ctx.seconds / 2
    n = 0
    while time.perf_counter() < deadline:
        image = frames[n % len(frames)]
        n += 1
        c0, w0 = time.thread_time(), time.perf_counter()
        went_up = ladder.judge(image)[0] > 1
        escalated += went_up
        cpu_ms.append((time.thread_time() - c0) * 1000.0)
        wall_ms.append((time.perf_counter() - w0) * 1000.0)
        if went_up:
            escalated_wall_ms.append(wall_ms[-1])
    return {
        "model": tiers[0],
        "ladder": tiers,
        "raw_infer_fps": raw_fps,
        "infer_cpu_ms": float(np.mean(cpu_ms)),
        "infer_wall_ms_p50": percentile(wall_ms, 50),
        # The slow path of a ladder: the frames the latency tail is made of.
        "infer_wall_ms_escalated_p50": percentile(escalated_wall_ms, 50) if escalated_wall_ms else None,
        "escalated_fraction": escalated / max(1, n),
    }


def int8_phase(ctx: BenchContext, frames: list[np.ndarray]) -> dict[str, Any]:
    """INT8 vs FP32 raw speed (one thread) of every tier whose package ships an FP32 reference.

    The headline `int8_speedup` is the heaviest such tier's: quantization matters where the
    compute is (a tiny tier 1 gains little, its run time being mostly fixed overhead).
    """
    from appliance.inference.runtime import make_session

    per_tier: dict[str, dict[str, float]] = {}
    for name in ctx.local_tiers():
        folder = ctx.settings.models_dir / name
        references = sorted(folder.glob("reference/*.onnx"))
        if not references:
            continue
        runner = ctx.runner(name, threads=1)
        blob = runner.blob(frames[0])
        speeds = {}
        for label, path in (("int8", folder / runner.manifest.file), ("fp32", references[0])):
            session = make_session(str(path), SessionSettings(intra_op_threads=1))
            feed = {session.get_inputs()[0].name: blob}
            for _ in range(20):
                session.run(None, feed)
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < ctx.seconds / 4:
                session.run(None, feed)
                count += 1
            speeds[label] = count / (time.perf_counter() - t0)
        per_tier[name] = {
            "int8_fps": speeds["int8"],
            "fp32_fps": speeds["fp32"],
            "speedup": speeds["int8"] / speeds["fp32"],
        }
    if not per_tier:
        return {"int8_speedup": None, "int8_note": "no tier ships an FP32 reference (models/NAME/reference/)"}
    heaviest = min(per_tier, key=lambda n: per_tier[n]["fp32_fps"])
    return {"int8_speedup": per_tier[heaviest]["speedup"], "int8_model": heaviest, "int8_per_tier": per_tier}


@dataclass
class Delivery:
    """Where a pipeline phase delivers: a loopback broker (and its subscriber), a sync target."""

    mqtt_port: int | None = None
    receipts: Path | None = None  # the subscriber process's log of arrivals
    results_per_message: int = 1  # mqtt.results_per_message (batched results above 1)
    batch_linger_ms: int | None = None  # mqtt.batch_linger_ms; None: the configured one
    sync: dict[str, Any] | None = None  # SyncConfig overrides (target, endpoint_url, ...)
    peer_pid: int | None = None  # the loopback broker or S3 server, whose CPU is noted too


def max_window(ctx: BenchContext, phase: str, delivery: Delivery | None = None) -> dict[str, Any]:
    """One window at the pipeline's maximum: a blocking camera per core."""
    return pipeline_phase(
        ctx, phase, streams=ctx.cores, fps=0, policy="block", seconds=ctx.seconds, delivery=delivery
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (of an odd number of windows)."""
    return sorted(runs, key=lambda run: run["parts_per_s"])[len(runs) // 2]


def bench_settings(
    ctx: BenchContext,
    phase: str,
    *,
    streams: int,
    fps: float,
    policy: DropPolicy,
    delivery: Delivery | None = None,
) -> Settings:
    """A one-line service configuration for a pipeline phase, state in its own folder."""
    delivery = delivery or Delivery()
    cameras = []
    for n in range(streams):
        source = ctx.source.model_copy(update={"fps": fps}) if hasattr(ctx.source, "fps") else ctx.source
        if hasattr(source, "seed"):
            source = source.model_copy(update={"seed": n})
        cameras.append(CameraConfig(id=f"cam{n + 1}", source=source, drop_policy=policy))
    line = ctx.line.model_copy(update={"id": "bench", "cameras": cameras})
    settings = ctx.settings.model_copy(deep=True)
    settings.lines = [line]
    settings.state_dir = ctx.workdir / phase
    settings.web.enabled = False
    settings.mqtt = settings.mqtt.model_copy(
        update={
            "enabled": delivery.mqtt_port is not None,
            "host": "127.0.0.1",
            "port": delivery.mqtt_port or 1883,
            "username": None,
            "password_file": None,
            "tls_ca": None,
            "tls_cert": None,
            "tls_key": None,
            "reconnect_max_s": 1.0,
            "results_per_message": delivery.results_per_message,
        }
    )
    if delivery.batch_linger_ms is not None:
        settings.mqtt.batch_linger_ms = delivery.batch_linger_ms
    sync = {"target": "", "interval_s": 0.5, **(delivery.sync or {})}
    if sync["target"].startswith("s3://"):
        # Every window is a new store, which the bucket would refuse under another's prefix.
        sync["target"] = f"{sync['target'].rstrip('/')}/{re.sub(r'[^A-Za-z0-9_-]+', '-', phase)}"
    settings.sync = settings.sync.model_copy(update=sync)
    return settings


def pipeline_phase(
    ctx: BenchContext,
    phase: str,
    *,
    streams: int,
    fps: float,
    policy: DropPolicy,
    seconds: float,
    warmup: float = 1.0,
    delivery: Delivery | None = None,
    during: Callable[[Service, float], None] | None = None,
    until: Callable[[Service], bool] | None = None,
) -> dict[str, Any]:
    """Run the real service and measure parts/s committed, CPU per part and latencies.

    `during(service, elapsed_s)` is called about ten times in the window (e.g. to end an outage);
    with `until(service)`, the window goes on (up to a minute more) until it is true.
    """
    delivery = delivery or Delivery()
    settings = bench_settings(ctx, phase, streams=streams, fps=fps, policy=policy, delivery=delivery)
    grabs: list[int] = []  # wall time of each grab, for the receipt latencies (one camera)
    timed = delivery.receipts is not None and streams == 1
    service = Service(
        settings, source_factory=lambda c: TimedSource(make_source(c), grabs) if timed else make_source(c)
    )
    add_components(service)
    rss: list[tuple[float, float]] = []
    window_ms: tuple[int, int] = (0, 0)
    try:
        service.start()  # inside: a bench stopped while the service starts stops what started
        time.sleep(warmup)
        ladder = service.ladders["bench"]
        parts0, seq0 = ladder.parts, service.writer.last_seq
        dropped0 = sum(c.dropped for c in service.cameras)
        start = time.perf_counter()
        start_ms = now_ms()
        threads0, kernel0 = thread_cpu_s()
        peer0 = process_cpu_s(delivery.peer_pid)
        with CpuClock() as clock:
            give_up = start + seconds + 60
            while time.perf_counter() - start < seconds or (
                until is not None and not until(service) and time.perf_counter() < give_up
            ):
                rss.append((time.perf_counter() - start, rss_mb()))
                if during is not None:
                    during(service, time.perf_counter() - start)
                time.sleep(min(1.0, seconds / 10))
        window_ms = (start_ms, now_ms())
        parts = ladder.parts - parts0
        threads1, kernel1 = thread_cpu_s()
        by_thread = cpu_split(threads0, threads1, parts)
        kernel_by_thread = cpu_split(kernel0, kernel1, parts)
        peer1 = process_cpu_s(delivery.peer_pid)
        committed = service.writer.last_seq - seq0
        dropped = sum(c.dropped for c in service.cameras) - dropped0
        # Let the ladder resolve what it deferred: no provisional verdict may be forgotten (frames
        # still queued when the cameras stop may defer more; they would wait on disk otherwise).
        for camera in service.cameras:
            camera.stop()
        service.settle_refinements()
        ladder_health = ladder.health()
        components = service.health()["components"]
    finally:
        service.stop()
    if delivery.receipts is not None:
        time.sleep(0.5)  # the last acknowledgements on their way to the subscriber
        latencies = receipt_latencies(delivery.receipts, window_ms, grabs if timed else None)
    else:
        latencies = commit_latencies(settings.db_path, seq0)
    within, unresolved = deadline_record(settings.db_path, seq0, ctx.line.deadline_ms)
    # A window leaves thousands of rows and kept images; twenty of them would hold gigabytes
    # of the disk (or, with /tmp on tmpfs, of the memory) until the bench ends.
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    return {
        "parts_per_s": parts / clock.wall_s,
        "committed_per_s": committed / clock.wall_s,
        "cpu_ms_per_part": clock.cpu_s * 1000.0 / max(1, parts),
        "cpu_utilization": clock.cpu_s / (clock.wall_s * ctx.cores),
        "cpu_ms_per_part_by_thread": by_thread,
        # Of which in the kernel: system calls, page cache, futexes, creating files.
        "kernel_cpu_ms_per_part": clock.kernel_s * 1000.0 / max(1, parts),
        "kernel_cpu_ms_per_part_by_thread": kernel_by_thread,
        "switches_per_part": clock.switches / max(1, parts),
        "peer_cpu_ms_per_part": (
            (peer1 - peer0) * 1000.0 / max(1, parts) if peer0 is not None and peer1 is not None else None
        ),
        "dropped_per_s": dropped / clock.wall_s,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "latency_samples": len(latencies),
        "deadline_missed": ladder_health["deadline_missed"],
        "within_deadline": within,
        "unresolved_provisional": unresolved,
        "deferred": ladder_health["deferred_escalations"],
        # Provisional verdicts closed unrefined because the backlog was full: tier-2 work not done.
        "unrefined": ladder_health["backlog_finalized"],
        "components": components,
        "rss": rss,
    }


def receipt_latencies(
    receipts: Path, window_ms: tuple[int, int], grabs: list[int] | None = None
) -> list[float]:
    """Capture-to-receipt latency (ms) of first verdicts captured in the window, from the
    subscriber's log; from each frame's grab time in `grabs` (ns, by grab number) when given,
    else from the payload's whole-ms `ts_capture_ms`."""
    latencies = []
    for line in receipts.read_text().splitlines():
        received, captured, revision, _, part_id = line.split(" ")
        if revision != "0" or not window_ms[0] <= int(captured) <= window_ms[1]:
            continue
        start_ms = float(captured)
        if grabs is not None and 0 < (number := grab_number(part_id)) <= len(grabs):
            start_ms = grabs[number - 1] / 1e6
        latencies.append(float(received) - start_ms)
    return latencies


def commit_latencies(db: Path, after_seq: int) -> list[float]:
    """Capture-to-commit latency of first verdicts committed after `after_seq` (ms)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT created_ms - ts_capture_ms FROM results WHERE seq > ? AND revision = 0", (after_seq,)
        ).fetchall()
    finally:
        conn.close()
    return [float(r[0]) for r in rows]


def deadline_record(db: Path, after_seq: int, deadline_ms: float) -> tuple[float | None, int]:
    """Share of first verdicts within the deadline, and parts whose latest verdict is provisional."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT part_id, revision, provisional, json_extract(payload, '$.latency_ms.total') "
            "FROM results WHERE seq > ? ORDER BY seq",
            (after_seq,),
        ).fetchall()
    finally:
        conn.close()
    first = [total for _, revision, _, total in rows if revision == 0]
    latest = {part: provisional for part, _, provisional, _ in rows}
    within = sum(total <= deadline_ms for total in first) / len(first) if first else None
    return within, sum(latest.values())


def naive_phase(ctx: BenchContext, publish: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The loop a user would write in one thread: read, preprocess, run, insert+commit, publish.

    It runs the same ladder as the pipeline (the next tier when a score is in the band), so
    both do the same inference work per part.
    """
    import onnxruntime as ort

    tiers = []
    for name in ctx.local_tiers():
        package = load_package(ctx.settings.models_dir / name)
        session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
        tiers.append((session, package.manifest.input, ctx.band(name, package.manifest.uncertain_band)))
    source = _open(ctx.source, fps=0)
    db_path = ctx.workdir / "naive.db"
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY, payload TEXT)")
    count = 0
    deadline = time.perf_counter() + ctx.seconds
    with CpuClock() as clock:
        while time.perf_counter() < deadline:
            source.grab()
            try:
                image = source.retrieve()
            except CorruptFrame:
                continue
            if image.ndim == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            for position, (session, spec, (lo, hi)) in enumerate(tiers):
                x = cv2.resize(image, (spec.width, spec.height)).astype(np.float32)[None, None]
                score = float(np.asarray(session.run(None, {spec.name: x})[0]).reshape(-1)[0])
                if not (position + 1 < len(tiers) and lo <= score < hi):
                    break
            payload = json.dumps({"n": count, "score": score, "ts": time.time()})
            conn.execute("INSERT INTO results (payload) VALUES (?)", (payload,))
            conn.commit()
            if publish is not None:
                publish(payload)
            count += 1
    conn.close()
    source.release()
    return {"naive_fps": count / clock.wall_s}


def store_phase(ctx: BenchContext, rows: int = 20000) -> dict[str, Any]:
    """Raw outbox write rate: verdicts through the writer thread with nobody draining."""
    from appliance.results import Verdict
    from appliance.store.writer import StoreWriter

    writer = StoreWriter(ctx.workdir / "store.db", "bench", ctx.settings.store)
    writer.start()
    template = Verdict(
        part_id="",
        revision=0,
        line="bench",
        camera="cam1",
        ts_capture_ms=0,
        verdict="pass",
        defect_class=None,
        confidence=0.9,
        score=0.1,
        tier=1,
        provisional=False,
        defects=(),
        inference_ms=0.5,
        total_ms=1.0,
        model=None,
    )
    from dataclasses import replace

    start = time.perf_counter()
    for n in range(rows):
        writer.put(replace(template, part_id=f"p{n}", ts_capture_ms=n))
    writer.stop()
    return {"store_rows_per_s": rows / (time.perf_counter() - start)}


def storage_phase(ctx: BenchContext, files: int = 2000, seconds: float = 2.0) -> dict[str, Any]:
    """CPU to create one kept-image-sized file (35 KB) where the bench's services keep theirs.

    The image keeper creates a file per kept frame; on some file systems that costs far more
    than writing the bytes (0.02-1 ms of kernel CPU per file on one VM's ext4, by folder).
    """
    folder = ctx.workdir / "storage"
    folder.mkdir()
    data = b"\0" * 35_000
    created = 0
    start, cpu0 = time.perf_counter(), time.thread_time()
    while created < files and time.perf_counter() - start < seconds:
        fd = os.open(folder / f"{created}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        created += 1
    cpu_s = time.thread_time() - cpu0
    shutil.rmtree(folder, ignore_errors=True)
    return {"kept_file_cpu_us": cpu_s * 1e6 / max(1, created)}
