"""`appliance bench --json` reports every figure of its contract (values are not judged here)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.bench.cli import render_table
from tests.conftest import REPO

CONTRACT = {
    "cpu_budget_fps",
    "raw_infer_fps",
    "decode_fps",
    "pipeline_fps",
    "naive_fps",
    "overhead_cpu_ms",
    "service_ms",
    "p50_ms_at_50",
    "p99_ms_at_50",
    "p99_ms_at_75",
    "overload_delivered_ratio",
    "int8_speedup",
    "store_rows_per_s_broker_down",
    "drain_rows_per_s",
    "rss_mb",
    "rss_drift_ratio",
}


def _bench_config(tmp_path: Path, models_dir: Path) -> tuple[Path, Path]:
    """A one-tier, one-camera config on small simulated parts, state under tmp_path: (config, state)."""
    config, state = tmp_path / "bench.toml", tmp_path / "state"
    config.write_text(f"""
models_dir = "{models_dir}"
state_dir = "{state}"
[[lines]]
id = "line1"
tiers = [{{ model = "bright1" }}]
[[lines.cameras]]
id = "cam1"
source = {{ kind = "simulator", width = 64, height = 64 }}
""")
    return config, state


@pytest.mark.slow
def test_bench_json_has_every_contract_key(tmp_path: Path, models_dir: Path) -> None:
    config, state = _bench_config(tmp_path, models_dir)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "bench",
            "--config",
            str(config),
            "--seconds",
            "0.6",
            "--json",
            "--cameras",
            "2",
            "--fps",
            "10",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert set(figures) >= CONTRACT
    # measured on the state dir's storage, and nothing of it left there
    assert Path(figures["workdir"]).parent == state and not Path(figures["workdir"]).exists()
    assert figures["kept_file_cpu_us"] > 0
    assert figures["pipeline_fps"] > 0 and figures["decode_fps"] > 0 and figures["naive_fps"] > 0
    assert figures["cpu_budget_fps"] > 0
    assert figures["parallel_loop_fps"] > 0 and 0 < figures["parallel_loop_cpu_utilization"] <= 1.05
    assert figures["parallel_processes_fps"] > 0 and 0 < figures["parallel_processes_cpu_utilization"] <= 1.05
    assert figures["overhead_cpu_ms_vs_processes"] is not None
    # the kernel's part of the pipeline's CPU per part (overhead + decode + inference)
    pipeline_cpu_ms = figures["overhead_cpu_ms"] + figures["decode_cpu_ms"] + figures["infer_cpu_ms"]
    assert 0 <= figures["pipeline_kernel_cpu_ms"] <= pipeline_cpu_ms + 0.01
    assert set(figures["kernel_cpu_ms_per_part_by_thread"]) <= set(figures["cpu_ms_per_part_by_thread"])
    # capture hands every frame to an inference thread: at least one wait per part somewhere
    assert figures["pipeline_switches_per_part"] > 0.5 and figures["parallel_loop_switches_per_part"] >= 0
    assert figures["capacity"]["required_fps"] == 20
    assert isinstance(figures["capacity"]["fits"], bool)
    assert figures["pipeline_unrefined"] >= 0 and figures["overload_unrefined"] >= 0
    # kept images, as configured (the default keeps fails) against none, in paired windows
    assert figures["retention"] == "fails" and figures["pipeline_fps_no_retention"] > 0
    assert "sync-keeper" not in figures["cpu_ms_per_part_by_thread_no_retention"]
    assert "sync-keeper" in figures["cpu_ms_per_part_by_thread_retention"]
    assert 0 < figures["retention_written_share"] <= 1
    from appliance.bench.broker import mosquitto_path

    if mosquitto_path() is not None:  # the OT side really received results, and a backlog drained
        assert figures["latency_measured_to"].startswith("mqtt receipt")
        assert figures["latency_samples_at_50"] > 0
        assert figures["single_frame_samples"] > 0 and figures["single_frame_ms"] is not None
        assert figures["drain_rows_per_s"] and figures["drain_rows_per_s"] > 0
        assert figures["pipeline_fps_mqtt"] > 0 and figures["pipeline_fps_mqtt_batched"] > 0
        assert figures["batched_results_per_message_mean"] >= 1  # the batched windows delivered
        # the broker's CPU was read: publishing threads + broker are a share of the CPU
        assert 0 < figures["publish_cpu_share"] < 1 and 0 < figures["publish_cpu_share_batched"] < 1
        # sized on the maximum publishing every result, as the box runs in a plant
        expected = figures["pipeline_fps"] * (1 - figures["publish_cost"])
        assert figures["capacity"]["max_fps"] == pytest.approx(expected)
    assert figures["sync_drain_rows_per_s"] and figures["sync_drain_rows_per_s"] > 0
    table = render_table(figures)  # what `appliance bench` prints without --json
    assert "x single frame (target <= 5)" in table and "every core" in table
    assert "a process per core" in table and "in the kernel" in table
    assert "kept images (fails): cost" in table


def test_bench_refuses_a_workdir_it_cannot_write(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--workdir", str(not_a_folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert f"--workdir {not_a_folder}: not a writable folder" in out.stderr


@pytest.mark.slow
def test_a_bench_stopped_with_sigterm_cleans_up_after_itself(tmp_path: Path, models_dir: Path) -> None:
    config, state = _bench_config(tmp_path, models_dir)
    bench = subprocess.Popen(
        [sys.executable, "-m", "appliance", "bench", "--config", str(config), "--seconds", "1", "--no-mqtt"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(state.glob("bench-*/max0")):  # stopped in the middle of a service window
            assert bench.poll() is None and time.monotonic() < deadline, "the bench never got going"
            time.sleep(0.1)
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130, stderr
    assert "bench interrupted" in stderr
    assert list(state.glob("bench-*")) == []
