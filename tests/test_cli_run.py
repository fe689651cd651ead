"""`appliance run` as a process: results reach SQLite and the API; SIGTERM loses nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hardware.fakes.ports import free_port
from tests.conftest import REPO, SPAWNED


def write_config(
    tmp_path: Path, models_dir: Path, port: int, *, tiers: str = '{ model = "bright1" }', fps: int = 40
) -> Path:
    config = tmp_path / "appliance.toml"
    config.write_text(f"""
node_id = "cli-node"
state_dir = "{tmp_path / "state"}"
models_dir = "{models_dir}"

[web]
port = {port}

[mqtt]
enabled = false

[[lines]]
id = "line1"
tiers = [{tiers}]

[[lines.cameras]]
id = "cam1"
source = {{ kind = "simulator", fps = {fps}, width = 64, height = 64 }}
""")
    return config


def start(config: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("APPLIANCE_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    SPAWNED.append(process)
    return process


def wait_http(url: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def db_rows(state: Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(state / "appliance.db")
    try:
        return conn.execute("SELECT seq, revision FROM results ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # created but not migrated yet
        return []
    finally:
        conn.close()


def create_token(config: Path) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "token",
            "create",
            "mes",
            "--role",
            "viewer",
            "--config",
            str(config),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_run_for_a_duration_serves_results_and_exits_zero(tmp_path: Path, models_dir: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, models_dir, port)
    token = create_token(config)
    process = start(config, "--duration", "6")
    try:
        health = wait_http(f"http://127.0.0.1:{port}/api/health")
        assert health.status_code == 200
        assert health.json()["status"] in {"ok", "degraded"}
        time.sleep(1.5)
        assert httpx.get(f"http://127.0.0.1:{port}/api/results").status_code == 401
        results = httpx.get(
            f"http://127.0.0.1:{port}/api/results?limit=5", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert 1 <= len(results) <= 5
        assert [r["seq"] for r in results] == sorted((r["seq"] for r in results), reverse=True)
        assert {"schema", "msg_id", "part_id", "revision", "verdict", "latency_ms", "model"} <= set(
            results[0]
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "appliance_frames_in_total" in metrics
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    rows = db_rows(tmp_path / "state")
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))
    assert len(rows) > 50


@pytest.mark.slow
def test_sigterm_mid_run_exits_zero_quickly_with_every_result_committed(
    tmp_path: Path, models_dir: Path
) -> None:
    config = write_config(tmp_path, models_dir, free_port(), fps=200)
    process = start(config)
    deadline = time.monotonic() + 30
    while not (tmp_path / "state" / "appliance.db").exists() or len(db_rows(tmp_path / "state")) < 100:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert time.monotonic() - sent < 10
    assert process.returncode == 0, stderr
    judged = re.search(r"stopped: \S+ parts judged.* parts=(\d+) last_seq=(\d+)", stderr)
    assert judged, stderr
    rows = db_rows(tmp_path / "state")
    assert len([r for r in rows if r[1] == 0]) == int(judged.group(1))
    assert rows[-1][0] == int(judged.group(2))
    # and a restart continues the sequence without a gap
    process = start(config, "--duration", "1")
    process.communicate(timeout=30)
    assert process.returncode == 0
    rows = db_rows(tmp_path / "state")
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))


def test_a_corrupt_model_is_refused_at_start_with_a_clear_message(tmp_path: Path, models_dir: Path) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(models_dir / "bright1", models / "bright1")
    (models / "bright1" / "model.onnx").write_bytes(b"tampered")
    config = write_config(tmp_path, models, free_port())
    process = start(config, "--duration", "2")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "bright1/model.onnx: sha256 mismatch" in stderr


def test_a_taken_port_is_a_clear_startup_error(tmp_path: Path, models_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = write_config(tmp_path, models_dir, busy.getsockname()[1])
        process = start(config, "--duration", "2")
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "could not listen" in stderr


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, models_dir: Path) -> None:
    config = write_config(tmp_path, models_dir, free_port())
    config.write_text(config.read_text().replace("fps = 40", "fps = -1"))
    process = start(config)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "lines[0].cameras[0].source.fps" in stderr


def test_token_create_prints_the_token_alone_on_the_last_line(tmp_path: Path, models_dir: Path) -> None:
    config = write_config(tmp_path, models_dir, free_port())
    token = create_token(config)
    assert re.fullmatch(r"apl_[A-Za-z0-9_-]{40,}", token)
    json.dumps(token)
