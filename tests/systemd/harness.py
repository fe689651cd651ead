"""A stand-in for systemd's notify socket: collects sd_notify datagrams with their arrival time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import SPAWNED

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Message:
    """One datagram: when it arrived (monotonic) and its KEY=VALUE fields."""

    t: float
    fields: dict[str, str]


class NotifySocket:
    """An abstract-namespace AF_UNIX datagram socket, as systemd passes in $NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self.address = f"@appliance-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.1)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(Message(time.monotonic(), fields))

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def snapshot(self) -> list[Message]:
        """The messages so far."""
        with self._lock:
            return list(self.messages)

    def with_key(self, key: str, value: str | None = None) -> list[Message]:
        """Messages carrying `key` (with `value` when given)."""
        return [m for m in self.snapshot() if key in m.fields and (value is None or m.fields[key] == value)]

    def wait_for(self, key: str, value: str | None = None, timeout: float = 60.0) -> Message:
        """The first message carrying `key`(=`value`), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.with_key(key, value)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.snapshot()}")


def run_appliance(
    config: Path, notify: NotifySocket, watchdog_usec: int, python: str = sys.executable, cwd: Path = REPO
) -> subprocess.Popen[bytes]:
    """`python -m appliance run --config CONFIG` as systemd would start it (Type=notify)."""
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("APPLIANCE_"):
            del env[name]
    env.update(NOTIFY_SOCKET=notify.address, WATCHDOG_USEC=str(watchdog_usec), PYTHONUNBUFFERED="1")
    if cwd == REPO:
        env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(
        [python, "-m", "appliance", "run", "--config", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    SPAWNED.append(process)  # type: ignore[arg-type]  # killed after the test if still running
    return process


def write_config(path: Path, models_dir: Path, state_dir: Path, model: str, **top: object) -> Path:
    """A one-line, one-camera config on the simulator; console on a free port; no broker."""
    lines = ['node_id = "notify-test"', f"state_dir = {json.dumps(str(state_dir))}"]
    lines += [f"models_dir = {json.dumps(str(models_dir))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in top.items()]
    lines += [
        "[web]",
        "port = 0",
        "[mqtt]",
        "enabled = false",
        "[[lines]]",
        'id = "line1"',
        "deadline_ms = 500",
        f'tiers = [{{ model = "{model}" }}]',
        "[[lines.cameras]]",
        'id = "cam1"',
        'source = { kind = "simulator", fps = 20 }',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
