"""Drain benchmark: fill a fresh outbox with results, then time one sync round against a target.

For `appliance bench` and by hand::

    python -m appliance.sync.drainbench --rows 50000 --moto            # S3 API on loopback
    python -m appliance.sync.drainbench --rows 50000 --target file:///tmp/export --busy 1

`--moto` starts `python -m moto.server` (the dev extra) on a free loopback port for the run.
Prints one JSON object: rows/s and MB/s (effective, including the duty-cycle rests), the
worker thread's CPU per 1000 rows, and the sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.events import EventBus
from appliance.inference.runtime import Defect
from appliance.results import ModelRef, Verdict, now_ms
from appliance.store.writer import StoreWriter
from appliance.sync.worker import SyncWorker


def fill(writer: StoreWriter, rows: int) -> None:
    """`rows` results like a line's: one in five a fail with a defect box."""
    model = ModelRef("mt-tier1", "1.0.0", "a" * 64)
    for i in range(rows):
        fail = i % 5 == 0
        writer.put(
            Verdict(
                part_id=f"cam1-{now_ms()}-{i}",
                revision=0,
                line="line1",
                camera="cam1",
                ts_capture_ms=now_ms(),
                verdict="fail" if fail else "pass",
                defect_class="crack" if fail else None,
                confidence=0.9,
                score=0.9 if fail else 0.1,
                tier=1,
                provisional=False,
                defects=(Defect("crack", 0.9, (10, 20, 60, 90)),) if fail else (),
                inference_ms=3.2,
                total_ms=5.1,
                model=model,
            )
        )
    writer.call(lambda conn: None).result(timeout=600)


def measure_drain(state_dir: Path, sync: dict[str, Any], rows: int) -> dict[str, Any]:
    """Fill `rows` results under `state_dir`, drain them in one round; the figures."""
    line = {
        "id": "line1",
        "tiers": [{"model": "none"}],
        "cameras": [{"id": "cam1", "source": {"kind": "simulator"}}],
    }
    settings = Settings.model_validate(
        {
            "node_id": "bench",
            "state_dir": state_dir,
            "lines": [line],
            "sync": {"policy": "metadata", "batch_max_rows": 5000, **sync},
        }
    )
    writer = StoreWriter(settings.db_path, settings.node_id, settings.store)
    writer.start()
    try:
        fill(writer, rows)
        worker = SyncWorker(settings, writer, EventBus())
        worker.prepare()
        started = time.monotonic()
        worker.run_round()
        elapsed = time.monotonic() - started
        health = worker.health()
        worker.stop()
    finally:
        writer.stop()
    return {
        "rows": rows,
        "round_s": round(elapsed, 3),
        "drain_busy_fraction": settings.sync.drain_busy_fraction,
        **health["last_drain"],
        "target": health["target"],
    }


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port, with a bucket 'bench'."""
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        deadline = time.monotonic() + 20
        while True:
            try:
                client.create_bucket(Bucket="bench")
                break
            except Exception:  # the server is still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description="Time the drain of a results backlog.")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--target", default="", help="file:///dir or s3://bucket/prefix")
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--moto", action="store_true", help="start a moto S3 server on loopback")
    parser.add_argument("--busy", type=float, default=None, help="drain_busy_fraction (default: config)")
    args = parser.parse_args(argv)
    sync: dict[str, Any] = {}
    if args.busy is not None:
        sync["drain_busy_fraction"] = args.busy
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.moto:
            sync.update(target="s3://bench/drain", endpoint_url=stack.enter_context(moto_server()))
        elif args.target:
            sync.update(target=args.target, endpoint_url=args.endpoint_url)
        else:
            export = Path(tmp) / "export"
            export.mkdir()
            sync["target"] = f"file://{export}"
        print(json.dumps(measure_drain(Path(tmp) / "state", sync, args.rows)))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
