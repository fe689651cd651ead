"""`appliance bench [--model NAME | --ladder A,B] [--source S] [--seconds S] [--json]`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.bench import delivery, phases
from appliance.bench.processes import parallel_processes_phase
from appliance.bench.retention import retention_figures
from appliance.bench.sampling import peak_rss_mb
from appliance.config import (
    ConfigError,
    FileSource,
    FolderSource,
    Settings,
    SimulatorSource,
    StreamSource,
    TierConfig,
    load_settings,
)
from hardware.profiles import usable_cores

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options on the `appliance bench` sub-parser."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="Bench one model package (a one-tier ladder).")
    which.add_argument("--ladder", help="Comma-separated packages, cheapest first (default: the config's).")
    parser.add_argument(
        "--source",
        default="simulator",
        help="simulator (default), a folder of images, a video file, or a stream URL.",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="Length of each measuring phase.")
    parser.add_argument("--config", type=Path, help="Config to take models and the ladder from.")
    parser.add_argument("--cameras", type=int, help="Capacity question: this many cameras...")
    parser.add_argument("--fps", type=float, help="...at this frame rate each.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    parser.add_argument("--no-mqtt", action="store_true", help="Skip the broker phases.")
    parser.add_argument("--no-sync", action="store_true", help="Skip the sync phases.")
    parser.add_argument(
        "--no-retention",
        action="store_true",
        help="Skip the paired windows with and without kept images (sync.images.retain).",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="Where each phase's service keeps its state (default: a temporary folder in the "
        "config's state dir, so that SQLite and kept images are measured on the storage the "
        "service writes to). Removed at the end.",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        help="Also run at 75%% load this long and report RSS drift (the target uses 10).",
    )


def _source(spec: str) -> Any:
    if spec == "simulator":
        return SimulatorSource(fps=0)
    if "://" in spec:
        return StreamSource(url=spec)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path=path, fps=0, loop=True)
    if path.is_file():
        return FileSource(path=path, fps=0, loop=True)
    raise SystemExit(f"--source {spec!r}: not 'simulator', a folder, a video file or a URL")


class Progress:
    """A single status line on stderr while phases run."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        """Overwrite the status line."""
        if not self.quiet:
            elapsed = time.monotonic() - self.start
            sys.stderr.write(f"\r\x1b[K[{elapsed:5.0f} s] {message}")
            sys.stderr.flush()

    def done(self) -> None:
        """End the status line."""
        if not self.quiet:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def main(args: argparse.Namespace) -> int:
    """Run every phase and print the figures."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    line = settings.lines[0]
    if args.model or args.ladder:
        names = [args.model] if args.model else [n.strip() for n in args.ladder.split(",") if n.strip()]
        line = line.model_copy(update={"tiers": [TierConfig(model=n) for n in names]})
    root = _work_root(args.workdir, settings)
    if args.workdir is not None and root is None:
        print(f"--workdir {args.workdir}: not a writable folder", file=sys.stderr)
        return 2
    progress = Progress(quiet=False)
    logging.getLogger().setLevel(logging.ERROR)  # the table is the output; warnings go to health
    # Stopped with SIGTERM (systemd, a timeout): unwind like Ctrl-C, so that the services,
    # the broker and the bench's folder in the state dir are cleaned up.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-", dir=root) as workdir:
            ctx = phases.BenchContext(
                settings=settings,
                line=line,
                source=_source(args.source),
                seconds=args.seconds,
                cores=usable_cores(),
                workdir=Path(workdir),
                progress=progress,
            )
            figures = run_all(
                ctx,
                progress,
                mqtt=not args.no_mqtt,
                sync=not args.no_sync,
                retention=not args.no_retention,
                soak_minutes=args.soak_minutes,
            )
            figures["workdir"] = workdir
    except (KeyboardInterrupt, _Terminated):
        progress.done()
        print("bench interrupted: no figures", file=sys.stderr)
        return 130
    progress.done()
    if args.cameras and args.fps:
        figures["capacity"] = capacity(figures, args.cameras, args.fps)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(render_table(figures))
    return 0


class _Terminated(BaseException):
    """SIGTERM, unwinding like KeyboardInterrupt (a BaseException: no `except Exception` stops it).

    Not KeyboardInterrupt itself: stopped as a service started, 3 of 10 runs exited killed by
    SIGINT after catching it and cleaning up (CPython can note one raised in code it runs on a
    library's behalf as unhandled); 0 of 16 with this.
    """


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise _Terminated(f"signal {signum}")


def _work_root(workdir: Path | None, settings: Settings) -> Path | None:
    """The folder the bench's temporary folder goes in: `--workdir`, else the state dir.

    Not the system's temp dir: it is often tmpfs (Debian 13), where creating a kept image
    costs nothing, or another disk. None (the system's temp dir) when the state dir cannot be
    written, e.g. the bench run by a user other than the service's.
    """
    root = workdir or settings.state_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK | os.X_OK):
            return root
    except OSError:
        pass
    logger.warning("%s is not writable: the bench measures in the system's temp dir", root)
    return None


def _processes(ctx: phases.BenchContext) -> dict[str, Any]:
    """The process-per-core loop, or None figures and why when processes cannot be spawned here."""
    try:
        return parallel_processes_phase(ctx)
    except (OSError, RuntimeError) as exc:
        logger.warning("process-per-core loop skipped: %s", exc)
        return {
            "parallel_processes_fps": None,
            "parallel_processes_cpu_ms": None,
            "parallel_processes_cpu_utilization": None,
            "parallel_processes_note": f"skipped: {exc}",
        }


def run_all(
    ctx: phases.BenchContext,
    progress: Progress,
    *,
    mqtt: bool = True,
    sync: bool = True,
    retention: bool = True,
    soak_minutes: float = 0.0,
) -> dict[str, Any]:
    """Every phase in order; the figures of the issue's contract, plus details."""
    progress("storage")
    storage = phases.storage_phase(ctx)
    progress("decode only")
    decode, frames = phases.decode_phase(ctx)
    progress("raw inference")
    infer = phases.infer_phase(ctx, frames)
    progress("int8 vs fp32")
    int8 = phases.int8_phase(ctx, frames)
    budget = ctx.cores * 1000.0 / (decode["decode_cpu_ms"] + infer["infer_cpu_ms"])
    progress("decode + inference on every core at once")
    parallel = phases.parallel_phase(ctx)
    progress("decode + inference, a process per core")
    processes = _processes(ctx)
    in_processes = processes["parallel_processes_fps"]
    progress("pipeline at maximum throughput")
    # The reference of most ratios: the median of three runs, so that one slow window on a
    # shared box does not skew them all.
    runs = [phases.max_window(ctx, f"max{n}") for n in range(3)]
    peak = phases.median_run(runs)
    pipeline_fps = peak["parts_per_s"]
    progress("naive single-thread loop")
    naive = phases.naive_phase(ctx)
    service_ms = decode["decode_wall_ms"] + (infer["infer_wall_ms_p50"] or 0.0)
    escalated_ms = (
        decode["decode_wall_ms"] + infer["infer_wall_ms_escalated_p50"]
        if infer.get("infer_wall_ms_escalated_p50")
        else None
    )
    skipped_retention: dict[str, Any] = {"retention_note": "skipped (--no-retention)"}
    kept = retention_figures(ctx) if retention else skipped_retention
    skipped_mqtt: dict[str, Any] = {"mqtt_note": "skipped (--no-mqtt)"}
    delivered = delivery.mqtt_figures(ctx, pipeline_fps) if mqtt else skipped_mqtt
    latency_to = "mqtt receipt (subscriber in another process)"
    if "p99_ms_at_50" not in delivered:
        latency_to = "commit (no broker)"
        for key, label, fps in delivery.latency_loads(pipeline_fps):
            progress(f"latency to commit, {label}")
            run = phases.pipeline_phase(
                ctx, f"load-{key}", streams=1, fps=fps, policy="latest", seconds=ctx.seconds
            )
            delivered.update(delivery.latency_figures(key, run))
    skipped_sync: dict[str, Any] = {"sync_note": "skipped (--no-sync)"}
    synced = delivery.sync_figures(ctx, pipeline_fps) if sync else skipped_sync
    progress("2x offered load")
    # Three windows, the median one reported like the maximum's: one window at 2x load on a
    # shared box spread 0.6-1.1 x the maximum across runs. Deadlines: the worst window.
    overloads = [
        phases.pipeline_phase(
            ctx,
            f"overload{n}",
            streams=ctx.cores,
            fps=2 * pipeline_fps / ctx.cores,
            policy="latest",
            seconds=ctx.seconds,
        )
        for n in range(3)
    ]
    overload = phases.median_run(overloads)
    progress("store write rate")
    store = phases.store_phase(ctx)
    soak = peak["rss"]
    if soak_minutes > 0:
        progress(f"soak at 75% load for {soak_minutes:g} min (RSS drift)")
        soak = phases.pipeline_phase(
            ctx, "soak", streams=1, fps=0.75 * pipeline_fps, policy="latest", seconds=soak_minutes * 60
        )["rss"]
    rss = [value for _, value in soak]
    return {
        "cores": ctx.cores,
        "model": infer["model"],
        "ladder": infer["ladder"],
        "source": type(ctx.source).__name__,
        "seconds_per_phase": ctx.seconds,
        **storage,
        "decode_fps": decode["decode_fps"],
        "decode_cpu_ms": decode["decode_cpu_ms"],
        "raw_infer_fps": infer["raw_infer_fps"],
        "infer_cpu_ms": infer["infer_cpu_ms"],
        "escalated_fraction": infer["escalated_fraction"],
        "sampled_frames": decode["sampled_frames"],
        "cpu_budget_fps": budget,
        "pipeline_fps": pipeline_fps,
        "pipeline_fps_runs": [run["parts_per_s"] for run in runs],
        "pipeline_vs_budget": pipeline_fps / budget,
        # Decode + ladder alone on every core at once (no queues, store or delivery): the box's
        # limit for this work with all cores busy, and the pipeline against it.
        **parallel,
        "parallel_loop_vs_budget": parallel["parallel_loop_fps"] / budget,
        "pipeline_vs_parallel_loop": pipeline_fps / parallel["parallel_loop_fps"],
        # The same loop in a process per core (no shared GIL): what the cores give this work.
        **processes,
        "parallel_processes_vs_budget": _ratio(in_processes, budget),
        "parallel_loop_vs_processes": _ratio(parallel["parallel_loop_fps"], in_processes),
        "pipeline_vs_parallel_processes": _ratio(pipeline_fps, in_processes),
        # Escalations the maximum windows closed unrefined (backlog full): work they skipped.
        "pipeline_unrefined": sum(run["unrefined"] for run in runs),
        # Share of the cores the pipeline actually got: well below 1, other processes took CPU
        # and pipeline_vs_budget understates what the pipeline does on a quiet box.
        "pipeline_cpu_utilization": peak["cpu_utilization"],
        "naive_fps": naive["naive_fps"],
        "pipeline_vs_naive": pipeline_fps / naive["naive_fps"],
        "overhead_cpu_ms": peak["cpu_ms_per_part"] - decode["decode_cpu_ms"] - infer["infer_cpu_ms"],
        # The same against decode + ladder as they run with every core busy (a process per
        # core): the pipeline's own CPU, without what the box adds to the work itself.
        "overhead_cpu_ms_vs_processes": (
            peak["cpu_ms_per_part"] - processes["parallel_processes_cpu_ms"]
            if processes["parallel_processes_cpu_ms"] is not None
            else None
        ),
        # Where the pipeline's CPU goes (capture = decode, inference = the ladder's threads).
        "cpu_ms_per_part_by_thread": peak["cpu_ms_per_part_by_thread"],
        "pipeline_kernel_cpu_ms": peak["kernel_cpu_ms_per_part"],
        "kernel_cpu_ms_per_part_by_thread": peak["kernel_cpu_ms_per_part_by_thread"],
        "pipeline_switches_per_part": peak["switches_per_part"],
        **kept,
        "service_ms": service_ms,
        "latency_measured_to": latency_to,
        **delivered,
        "p99_at_50_vs_service": (delivered.get("p99_ms_at_50") or 0) / service_ms,
        "p99_at_75_vs_service": (delivered.get("p99_ms_at_75") or 0) / service_ms,
        # A ladder's median frame stops at tier 1, its p99 frames went up: the same ratios
        # against the service time of an escalated frame (None for a one-tier ladder).
        "service_ms_escalated": escalated_ms,
        "p99_at_50_vs_escalated": _ratio(delivered.get("p99_ms_at_50"), escalated_ms),
        "p99_at_75_vs_escalated": _ratio(delivered.get("p99_ms_at_75"), escalated_ms),
        # The same path end to end (capture to receipt) for frames sent one at a time: what a
        # frame costs with nothing else in the pipeline, fsync'd commit and broker hop included.
        "p99_at_50_vs_single_frame": _ratio(delivered.get("p99_ms_at_50"), delivered.get("single_frame_ms")),
        "p99_at_75_vs_single_frame": _ratio(delivered.get("p99_ms_at_75"), delivered.get("single_frame_ms")),
        **synced,
        "overload_offered_fps": 2 * pipeline_fps,
        "overload_delivered_fps": overload["parts_per_s"],
        "overload_delivered_ratio": overload["parts_per_s"] / pipeline_fps,
        "overload_delivered_runs": [run["parts_per_s"] for run in overloads],
        "overload_within_deadline": _worst_within(overloads),
        "overload_deferred": sum(run["deferred"] for run in overloads),
        "overload_unresolved_provisional": sum(run["unresolved_provisional"] for run in overloads),
        "overload_unrefined": sum(run["unrefined"] for run in overloads),
        "int8_speedup": int8.get("int8_speedup"),
        "int8_model": int8.get("int8_model"),
        "int8_per_tier": int8.get("int8_per_tier"),
        "int8_note": int8.get("int8_note"),
        "store_rows_per_s_broker_down": store["store_rows_per_s"],
        "drain_rows_per_s": delivered.get("drain_rows_per_s"),
        "rss_mb": peak_rss_mb(),
        "rss_window_s": soak[-1][0] if soak else None,
        "rss_drift_ratio": (rss[-1] / rss[len(rss) // 5]) if len(rss) > 5 else None,
    }


def _worst_within(runs: list[dict[str, Any]]) -> float | None:
    """The lowest share of first verdicts within the deadline among the windows that had any."""
    shares = [run["within_deadline"] for run in runs if run["within_deadline"] is not None]
    return min(shares) if shares else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def capacity(figures: dict[str, Any], cameras: int, fps: float) -> dict[str, Any]:
    """Can this box take `cameras` x `fps` with this ladder, with what headroom and p99?"""
    need = cameras * fps
    top = figures["pipeline_fps"]
    # A box in a plant publishes every result: size it on the maximum doing so (the paired
    # windows' cost applied to the median maximum, so both come from the same windows).
    cost = figures.get("publish_cost")
    have = top * (1 - cost) if cost is not None else top
    load = need / have if have else float("inf")
    # p99 was measured at 50 % and 75 % of `top`; waiting time grows like 1 / (1 - load).
    at75 = min(0.95, 0.75 * top / have) if have else 0.75
    at50 = 0.5 * top / have if have else 0.5
    p99_75 = figures["p99_ms_at_75"] or figures["service_ms"]
    if load >= 1:
        expected = None
    elif load > at75:
        expected = p99_75 * (1 - at75) / (1 - load)
    else:
        expected = p99_75 if load > at50 else figures["p99_ms_at_50"]
    return {
        "cameras": cameras,
        "fps_each": fps,
        "required_fps": need,
        "fits": load <= 0.85,
        "load": load,
        "headroom": 1 - load,
        "expected_p99_ms": expected,
        "max_fps": have,
        "basis": "pipeline maximum publishing every result to MQTT (one message per result)"
        if cost is not None
        else "pipeline maximum (no broker measured)",
        "rule": "fits when the load stays at or below 85 % of the measured pipeline maximum",
    }


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def render_table(figures: dict[str, Any]) -> str:
    """The figures as a readable table with the targets beside them."""

    def fmt(value: Any, unit: str = "") -> str:
        if value is None:
            return "n/a"
        return f"{value:,.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    kernel_by_thread: dict[str, float] = figures["kernel_cpu_ms_per_part_by_thread"]
    rows = [
        ("model / ladder", " -> ".join(figures["ladder"]), ""),
        ("cores", fmt(figures["cores"]), ""),
        ("decode only", fmt(figures["decode_fps"], " fps"), f"{fmt(figures['decode_cpu_ms'])} CPU-ms/frame"),
        (
            "raw inference (threads=cores)",
            fmt(figures["raw_infer_fps"], " fps"),
            f"{fmt(figures['infer_cpu_ms'])} CPU-ms/frame incl. "
            f"{fmt(100 * figures['escalated_fraction'])}% escalated",
        ),
        ("CPU budget", fmt(figures["cpu_budget_fps"], " fps"), "cores x 1000 / (decode + inference CPU-ms)"),
        (
            "pipeline max",
            fmt(figures["pipeline_fps"], " fps"),
            f"{fmt(figures['pipeline_vs_budget'])} x budget (target >= 0.85); "
            f"{figures['pipeline_unrefined']} escalations closed unrefined",
        ),
        (
            "decode + inference, every core",
            fmt(figures["parallel_loop_fps"], " fps"),
            f"{fmt(figures['parallel_loop_vs_budget'])} x budget; pipeline = "
            f"{fmt(figures['pipeline_vs_parallel_loop'])} x this",
        ),
        (
            "the same, a process per core",
            fmt(figures["parallel_processes_fps"], " fps"),
            f"{fmt(figures['parallel_processes_vs_budget'])} x budget; threads = "
            f"{fmt(figures['parallel_loop_vs_processes'])} x this (one GIL)",
        ),
        (
            "naive loop",
            fmt(figures["naive_fps"], " fps"),
            f"pipeline = {fmt(figures['pipeline_vs_naive'])} x naive (target >= 1.3)",
        ),
        (
            "overhead",
            fmt(figures["overhead_cpu_ms"], " CPU-ms/frame"),
            f"target <= 1.0; {fmt(figures['overhead_cpu_ms_vs_processes'])} beyond the process-per-core loop",
        ),
        (
            "CPU per part, by thread",
            fmt(sum(figures["cpu_ms_per_part_by_thread"].values()), " CPU-ms"),
            ", ".join(f"{k} {v:.2f}" for k, v in list(figures["cpu_ms_per_part_by_thread"].items())[:6]),
        ),
        (
            "of which in the kernel",
            fmt(figures["pipeline_kernel_cpu_ms"], " CPU-ms"),
            ", ".join(f"{k} {v:.2f}" for k, v in list(kernel_by_thread.items())[:4])
            + f"; bare loop {fmt(figures['parallel_loop_kernel_cpu_ms'])}",
        ),
        (
            "context switches per part",
            fmt(figures["pipeline_switches_per_part"]),
            f"bare loop {fmt(figures['parallel_loop_switches_per_part'])} (GIL, locks, queues)",
        ),
        (
            "creating a kept image's file",
            fmt(figures["kept_file_cpu_us"], " CPU-us"),
            f"35 KB, in {figures.get('workdir', 'the bench folder')}",
        ),
        ("service time", fmt(figures["service_ms"], " ms"), "decode + inference, one frame"),
        (
            "service time, escalated",
            fmt(figures["service_ms_escalated"], " ms"),
            f"every tier; p99 = {fmt(figures['p99_at_50_vs_escalated'])} / "
            f"{fmt(figures['p99_at_75_vs_escalated'])} x this at 50% / 75%",
        ),
        (
            "single frame, end to end",
            fmt(figures.get("single_frame_ms"), " ms"),
            f"frames one at a time, to {figures['latency_measured_to']}",
        ),
        (
            "latency @50% p50 / p99",
            f"{fmt(figures['p50_ms_at_50'])} / {fmt(figures['p99_ms_at_50'])} ms",
            f"p99 = {fmt(figures['p99_at_50_vs_single_frame'])} x single frame (target <= 5); "
            f"{fmt(figures['p99_at_50_vs_service'])} x compute-only service time",
        ),
        (
            "latency @75% p99",
            fmt(figures["p99_ms_at_75"], " ms"),
            f"{fmt(figures['p99_at_75_vs_single_frame'])} x single frame (target <= 8); "
            f"{fmt(figures['p99_at_75_vs_service'])} x compute-only service time",
        ),
        (
            "2x offered load",
            fmt(figures["overload_delivered_fps"], " fps delivered"),
            f"{fmt(figures['overload_delivered_ratio'])} x pipeline max (target >= 0.9)",
        ),
        (
            "2x load, first verdicts in time",
            fmt(100 * (figures["overload_within_deadline"] or 0), " %"),
            f"target >= 99 %; {figures['overload_deferred']} deferred, "
            f"{figures['overload_unresolved_provisional']} provisional left open (target 0), "
            f"{figures['overload_unrefined']} closed unrefined",
        ),
        (
            "INT8 vs FP32",
            fmt(figures["int8_speedup"], " x"),
            f"{figures.get('int8_model') or ''} (target >= 1.5)",
        ),
        (
            f"kept images ({figures.get('retention', 'n/a')}): cost",
            fmt(_pct(figures.get("retention_cost")), " %"),
            f"pipeline max {fmt(figures.get('pipeline_fps_no_retention'))} fps keeping none; "
            f"{fmt(figures.get('retention_cpu_ms_per_part'))} CPU-ms per part more, "
            f"{fmt(figures.get('retention_kernel_cpu_ms_per_part'))} of it in the kernel; "
            f"{fmt(_pct(figures.get('retention_written_share')))} % of the frames due written",
        ),
        ("store, broker down", fmt(figures["store_rows_per_s_broker_down"], " rows/s"), ""),
        (
            "MQTT: publishing cost",
            fmt(_pct(figures.get("publish_cost")), " %"),
            f"pipeline max {fmt(figures.get('pipeline_fps_mqtt'))} fps publishing (target <= 5 %), "
            "one message per result; paired windows, broker on the same cores",
        ),
        (
            "MQTT: own CPU cost",
            fmt(_pct(figures.get("publish_cost_own_cpu")), " %"),
            f"{fmt(figures.get('publish_cpu_ms_per_part'))} CPU-ms per part more in the appliance; "
            f"publishing threads + broker: {fmt(_pct(figures.get('publish_cpu_share')))} % of the CPU",
        ),
        (
            "MQTT batched: publishing cost",
            fmt(_pct(figures.get("publish_cost_batched")), " %"),
            f"pipeline max {fmt(figures.get('pipeline_fps_mqtt_batched'))} fps (target <= 5 %), "
            f"results_per_message = {figures.get('batched_results_per_message')}, "
            f"{fmt(figures.get('batched_results_per_message_mean'))} per message on average",
        ),
        (
            "MQTT batched: own CPU cost",
            fmt(_pct(figures.get("publish_cost_own_cpu_batched")), " %"),
            f"{fmt(figures.get('publish_cpu_ms_per_part_batched'))} CPU-ms per part more in the appliance; "
            f"publishing threads + broker: {fmt(_pct(figures.get('publish_cpu_share_batched')))} % of CPU",
        ),
        (
            "MQTT: outbox drain",
            fmt(figures["drain_rows_per_s"], " rows/s"),
            f"{fmt(figures.get('drain_vs_production'))} x production (target >= 10)",
        ),
        (
            f"sync ({figures.get('sync_target', 'n/a')}): drain",
            f"{fmt(figures.get('sync_drain_rows_per_s'))} rows/s, "
            f"{fmt(figures.get('sync_drain_mb_per_s'))} MB/s",
            f"{fmt(figures.get('sync_drain_vs_production'))} x production (target >= 10)",
        ),
        (
            "sync: cost at maximum",
            fmt(_pct(figures.get("sync_cost")), " %"),
            f"pipeline max {fmt(figures.get('pipeline_fps_sync'))} fps syncing (target <= 5 %), "
            "paired windows, S3 server on the same cores",
        ),
        (
            "sync: own CPU cost",
            fmt(_pct(figures.get("sync_cost_own_cpu")), " %"),
            f"{fmt(figures.get('sync_cpu_ms_per_part'))} CPU-ms per part more in the appliance; "
            f"sync thread + S3 server: {fmt(_pct(figures.get('sync_cpu_share')))} % of the CPU",
        ),
        (
            "RSS peak / drift",
            f"{fmt(figures['rss_mb'])} MB / {fmt(figures['rss_drift_ratio'])}",
            f"over {fmt(figures.get('rss_window_s'))} s, from 20 % of the window to its end (target 0.9-1.1)",
        ),
    ]
    if "capacity" in figures:
        cap = figures["capacity"]
        verdict = "YES" if cap["fits"] else "NO"
        rows.append(
            (
                f"{cap['cameras']} cameras x {cap['fps_each']} fps",
                verdict,
                f"load {fmt(100 * cap['load'])}% of {fmt(cap['max_fps'])} fps ({cap['basis']}), "
                f"expected p99 {fmt(cap['expected_p99_ms'])} ms",
            )
        )
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>{value_width}}  {c}" for a, b, c in rows)
