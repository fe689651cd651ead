"""Availability: retained online, offline on a graceful stop, the Will offline on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.brokers import Broker

REPO = Path(__file__).resolve().parents[2]


def test_online_retained_and_offline_on_graceful_stop(mqtt_settings, listen, run_service):
    settings = mqtt_settings()
    topic = f"vision/{settings.node_id}/availability"
    with run_service(settings) as service:
        deadline = time.monotonic() + 10
        while not service.components["mqtt"].link.connected:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # `online` is the first thing published on the connection
        late = listen([topic])  # subscribes after the fact: sees the retained value
        late.wait_for(lambda ms: [m.payload for m in ms] == [b"online"])
        assert late.messages[0].retain
    late.wait_for(lambda ms: [m.payload for m in ms] == [b"online", b"offline"])
    after = listen([topic])
    after.wait_for(lambda ms: len(ms) == 1)
    assert after.messages[0].payload == b"offline" and after.messages[0].retain


def _config(tmp_path: Path, models_dir: Path, broker: Broker) -> Path:
    config = tmp_path / "appliance.toml"
    config.write_text(
        f"""
node_id = "killed-node"
state_dir = "{tmp_path / "state"}"
models_dir = "{models_dir}"

[web]
enabled = false

[mqtt]
host = "{broker.host}"
port = {broker.port}
username = "appliance"
password_file = "{broker.password_file("appliance")}"

[[lines]]
id = "line1"
tiers = [{{ model = "bright1" }}]

[[lines.cameras]]
id = "cam1"
source = {{ kind = "simulator", fps = 20 }}
"""
    )
    return config


@pytest.mark.slow
def test_will_goes_offline_when_the_process_is_killed(tmp_path, models_dir, broker, listen):
    """`appliance run` in a subprocess, killed with SIGKILL: the broker publishes the Will."""
    topic = "vision/killed-node/availability"
    watcher = listen([topic])
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(_config(tmp_path, models_dir, broker))],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        try:
            watcher.wait_for(lambda ms: any(m.payload == b"online" for m in ms), timeout=60)
        except TimeoutError:
            proc.kill()
            pytest.fail(f"appliance never came online: {proc.communicate(timeout=10)[1].decode()[-2000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        started = time.monotonic()
        watcher.wait_for(lambda ms: ms[-1].payload == b"offline", timeout=10)
        assert time.monotonic() - started < 5  # no Will delay
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    retained = listen([topic])
    retained.wait_for(lambda ms: len(ms) == 1)
    assert retained.messages[0].payload == b"offline"
