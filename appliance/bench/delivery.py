"""Bench phases that involve the consumers: a loopback broker with a subscriber in another
process (latency to the OT side, publishing cost, outbox drain) and a sync target (drain)."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.bench.broker import PrivateBroker, mosquitto_path
from appliance.bench.phases import BenchContext, Delivery, max_window, median_run, pipeline_phase
from appliance.service import Service


@contextlib.contextmanager
def subscriber(port: int, prefix: str, outfile: Path) -> Iterator[Path]:
    """A subscriber process logging every result's arrival; yields its log file."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance.bench.subscriber",
            "127.0.0.1",
            str(port),
            f"{prefix}/+/line/+/result",
            str(outfile),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = outfile.with_suffix(".ready")
    deadline = time.monotonic() + 15
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the bench's MQTT subscriber did not start")
        time.sleep(0.05)
    try:
        yield outfile
    finally:
        process.terminate()
        process.wait(10)


BATCHED_RESULTS = 50  # mqtt.results_per_message of the batched maximum
MQTT_THREADS = ("mqtt-outbox", "paho-mqtt", "mqtt-state", "mqtt-commands")


def own_cost(base_cpu_ms: float, with_cpu_ms: float) -> float:
    """Throughput lost to the appliance process's extra CPU per part, CPU-bound.

    Unlike the throughput-based cost it leaves out the loopback broker, subscriber or S3 server
    taking the same cores (a plant's run elsewhere); it still includes the contention the extra
    threads add to the others, so it is an upper bound of what those threads cost themselves.
    """
    return 1.0 - base_cpu_ms / with_cpu_ms if with_cpu_ms > 0 else 0.0


def cpu_share(run: dict[str, Any], roles: tuple[str, ...]) -> float:
    """The share of a window's CPU (the service's and its loopback peer's) that the delivering
    threads and the peer used: what delivering costs a CPU-bound box, less the contention it
    adds to the other threads. Steadier than a throughput ratio, and a lower bound of it."""
    peer = run.get("peer_cpu_ms_per_part") or 0.0
    own = sum(ms for role, ms in run["cpu_ms_per_part_by_thread"].items() if role in roles)
    total = run["cpu_ms_per_part"] + peer
    return (own + peer) / total if total > 0 else 0.0


def paired_costs(
    ctx: BenchContext,
    label: str,
    modes: dict[str, Delivery],
    roles: tuple[str, ...],
    rounds: int = 3,
    base_delivery: Delivery | None = None,
) -> dict[str, Any]:
    """What a duty costs at the pipeline's maximum, per mode, from paired windows.

    Each round runs a window without the duty (`base_delivery`: none by default) and then one
    window per mode: the box's other tenants move throughput by several per cent from one
    minute to the next, and a ratio of neighbouring windows cancels most of that. Per mode: the
    median over rounds of the throughput cost (1 - fps / paired fps), of the own-CPU cost, of
    the extra CPU (and kernel CPU) per part and of the CPU share of the duty's threads (`roles`)
    and the peer; the median window's fps and CPU per part by thread, and the median base
    window's.
    """
    pairs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {mode: [] for mode in modes}
    for n in range(rounds):
        ctx.progress(f"pipeline maximum, {label}: round {n + 1} of {rounds}")
        base = max_window(ctx, f"{label}-none{n}", base_delivery)
        for mode, delivery in modes.items():
            pairs[mode].append((base, max_window(ctx, f"{label}-{mode}{n}", delivery)))
    out: dict[str, Any] = {}
    for mode, runs in pairs.items():
        costs = [1.0 - run["parts_per_s"] / base["parts_per_s"] for base, run in runs]
        own = [own_cost(base["cpu_ms_per_part"], run["cpu_ms_per_part"]) for base, run in runs]
        extra = [run["cpu_ms_per_part"] - base["cpu_ms_per_part"] for base, run in runs]
        kernel = [run["kernel_cpu_ms_per_part"] - base["kernel_cpu_ms_per_part"] for base, run in runs]
        shares = [cpu_share(run, roles) for _, run in runs]
        typical = median_run([run for _, run in runs])
        typical_base = median_run([base for base, _ in runs])
        out[mode] = {
            "fps": typical["parts_per_s"],
            "base_fps": typical_base["parts_per_s"],
            "cost": statistics.median(costs),
            "costs": [round(cost, 4) for cost in costs],
            "own_cost": statistics.median(own),
            "cpu_ms_per_part": statistics.median(extra),
            "kernel_cpu_ms_per_part": statistics.median(kernel),
            "cpu_share": statistics.median(shares),
            "cpu_shares": [round(share, 4) for share in shares],
            "by_thread": typical["cpu_ms_per_part_by_thread"],
            "base_by_thread": typical_base["cpu_ms_per_part_by_thread"],
            "components": typical["components"],
        }
    return out


# One frame at a time: far enough apart that a frame never meets another in the pipeline.
SINGLE_FRAME_FPS = 20.0


def latency_loads(pipeline_fps: float) -> list[tuple[str, str, float]]:
    """The paced windows of the latency figures (key, label, fps): single frames, 50 %, 75 % load."""
    return [
        ("single", "single frames", min(SINGLE_FRAME_FPS, pipeline_fps / 20)),
        ("50", "50% load", pipeline_fps * 0.5),
        ("75", "75% load", pipeline_fps * 0.75),
    ]


def latency_figures(key: str, run: dict[str, Any]) -> dict[str, Any]:
    """One latency window's figures: `single_frame_ms` (its median) or p50/p99 at a load."""
    if key == "single":
        return {
            "single_frame_ms": run["latency_ms_p50"],
            "single_frame_p99_ms": run["latency_ms_p99"],
            "single_frame_samples": run["latency_samples"],
        }
    return {
        f"p50_ms_at_{key}": run["latency_ms_p50"],
        f"p99_ms_at_{key}": run["latency_ms_p99"],
        f"latency_samples_at_{key}": run["latency_samples"],
    }


def mqtt_figures(ctx: BenchContext, pipeline_fps: float) -> dict[str, Any]:
    """Latency to MQTT receipt at 50/75 % load, the cost of publishing, and the outbox drain."""
    if mosquitto_path() is None:
        return {"mqtt_note": "mosquitto not installed (Debian package mosquitto): MQTT figures skipped"}
    prefix = ctx.settings.mqtt.prefix
    broker = PrivateBroker(ctx.workdir)
    figures: dict[str, Any] = {}
    try:
        broker.start()
        for key, label, fps in latency_loads(pipeline_fps):
            ctx.progress(f"latency to MQTT receipt, {label}")
            with subscriber(broker.port, prefix, ctx.workdir / f"receipts-{key}.log") as log:
                run = pipeline_phase(
                    ctx,
                    f"mqtt-{key}",
                    streams=1,
                    fps=fps,
                    policy="latest",
                    seconds=ctx.seconds,
                    delivery=Delivery(mqtt_port=broker.port, receipts=log),
                )
            figures.update(latency_figures(key, run))
        # The broker on the same cores, no subscriber: the OT side runs elsewhere.
        costs = paired_costs(
            ctx,
            "publishing every result",
            {
                "": Delivery(mqtt_port=broker.port, peer_pid=broker.pid),
                "_batched": Delivery(
                    mqtt_port=broker.port, results_per_message=BATCHED_RESULTS, peer_pid=broker.pid
                ),
            },
            MQTT_THREADS,
        )
        for suffix, cost in costs.items():
            figures[f"pipeline_fps_mqtt{suffix}"] = cost["fps"]
            figures[f"publish_cost{suffix}"] = cost["cost"]
            figures[f"publish_cost{suffix}_rounds"] = cost["costs"]
            figures[f"publish_cpu_ms_per_part{suffix}"] = cost["cpu_ms_per_part"]
            figures[f"publish_cost_own_cpu{suffix}"] = cost["own_cost"]
            figures[f"publish_cpu_share{suffix}"] = cost["cpu_share"]
            figures[f"publish_cpu_share{suffix}_rounds"] = cost["cpu_shares"]
            figures[f"cpu_ms_per_part_by_thread_mqtt{suffix}"] = cost["by_thread"]
        outbox = (costs["_batched"]["components"].get("mqtt") or {}).get("outbox", {})
        figures["batched_results_per_message"] = BATCHED_RESULTS
        figures["batched_linger_ms"] = ctx.settings.mqtt.batch_linger_ms
        figures["batched_results_per_message_mean"] = (
            outbox["published"] / outbox["messages"] if outbox.get("messages") else None
        )

        ctx.progress("outbox drain after a broker outage, production going on")
        broker.stop()
        production = pipeline_fps / 4  # a steady line well below capacity

        def end_outage(_service: Service, elapsed: float) -> None:
            if elapsed >= ctx.seconds and broker._process is None:
                broker.start()

        run = pipeline_phase(
            ctx,
            "mqtt-drain",
            streams=1,
            fps=production,
            policy="latest",
            seconds=2.5 * ctx.seconds,
            delivery=Delivery(mqtt_port=broker.port),
            during=end_outage,
            until=lambda service: bool(
                service.health()["components"].get("mqtt", {}).get("outbox", {}).get("last_drain")
            ),
        )
        drain = (run["components"].get("mqtt") or {}).get("outbox", {}).get("last_drain") or {}
        figures["drain_rows_per_s"] = drain.get("rows_s")
        figures["drain_backlog_rows"] = drain.get("backlog_at_reconnect")
        figures["drain_vs_production"] = (
            (drain["rows_s"] / run["parts_per_s"]) if drain.get("rows_s") else None
        )
        figures["production_fps_during_drain"] = run["parts_per_s"]
    finally:
        broker.stop()
    return figures


class LateTarget:
    """A sync target that comes up when told: a moto S3 server (dev extra) or a file:// folder."""

    def __init__(self, workdir: Path) -> None:
        try:
            import moto  # noqa: F401

            self.kind = "s3"
        except ImportError:
            self.kind = "file"
        from hardware.fakes.ports import free_port

        self.port = free_port()
        self.folder = workdir / "export"
        self._process: subprocess.Popen[bytes] | None = None
        if self.kind == "s3":  # moto takes any key; the worker's client reads them at start
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

    @property
    def overrides(self) -> dict[str, Any]:
        """SyncConfig fields pointing at this target."""
        if self.kind == "s3":
            return {"target": "s3://bench/appliance", "endpoint_url": f"http://127.0.0.1:{self.port}"}
        return {"target": f"file://{self.folder}"}

    def start(self) -> None:
        """Bring the target up (the outage ends)."""
        if self.kind == "file":
            self.folder.mkdir(parents=True, exist_ok=True)
            return
        import boto3

        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = boto3.client("s3", endpoint_url=self.overrides["endpoint_url"], region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="bench")
                return
            except Exception:  # still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        """The S3 server's process (None for a folder, or while it is down)."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Take it down."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


def sync_figures(ctx: BenchContext, pipeline_fps: float) -> dict[str, Any]:
    """Sync drain rate after an outage of the target, production going on; its cost at maximum."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    target = LateTarget(ctx.workdir)
    base = {
        **target.overrides,
        "policy": "metadata",
        "batch_max_rows": 200,  # small batches: a short outage leaves a backlog of many
        "drain_busy_fraction": 1.0,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
    }
    figures: dict[str, Any] = {"sync_target": target.kind}
    try:
        ctx.progress("sync drain after a target outage, production going on")

        def end_outage(service: Service, elapsed: float) -> None:
            if elapsed >= ctx.seconds and not (target.folder.exists() or target._process):
                target.start()
                worker = service.components.get("sync")
                if worker is not None:
                    worker.kick()  # type: ignore[attr-defined]

        run = pipeline_phase(
            ctx,
            "sync-drain",
            streams=1,
            fps=pipeline_fps / 4,
            policy="latest",
            seconds=2.5 * ctx.seconds,
            delivery=Delivery(sync=base),
            during=end_outage,
            until=lambda service: bool(service.health()["components"].get("sync", {}).get("last_drain")),
        )
        drain = (run["components"].get("sync") or {}).get("last_drain") or {}
        figures["sync_drain_rows_per_s"] = drain.get("rows_per_s")
        figures["sync_drain_mb_per_s"] = drain.get("mb_per_s")
        figures["sync_drain_vs_production"] = (
            drain["rows_per_s"] / run["parts_per_s"] if drain.get("rows_per_s") else None
        )
        # The cost as the box runs: the configured batch size and busy fraction (the drain's
        # small batches would upload 25 times as many objects per result); rounds every 0.5 s
        # instead of 30 s, so that each window syncs several times.
        steady = {k: v for k, v in base.items() if k not in ("batch_max_rows", "drain_busy_fraction")}
        modes = {"sync": Delivery(sync=steady, peer_pid=target.pid)}
        cost = paired_costs(ctx, "syncing every result", modes, ("sync-worker",))["sync"]
        figures["pipeline_fps_sync"] = cost["fps"]
        figures["sync_cost"] = cost["cost"]
        figures["sync_cost_rounds"] = cost["costs"]
        figures["sync_cpu_ms_per_part"] = cost["cpu_ms_per_part"]
        figures["sync_cost_own_cpu"] = cost["own_cost"]
        figures["sync_cpu_share"] = cost["cpu_share"]
        figures["sync_cpu_share_rounds"] = cost["cpu_shares"]
    finally:
        target.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return figures
