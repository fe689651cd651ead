"""A private mosquitto on a loopback port for the bench (anonymous, no persistence)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from hardware.fakes.ports import free_port


def mosquitto_path() -> str | None:
    """The broker binary, or None when Debian's mosquitto is not installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class PrivateBroker:
    """Starts and stops its own mosquitto on a fixed port (so that it can go down and come back)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = mosquitto_path()
        if binary is None:
            raise RuntimeError("mosquitto not found: install Debian package mosquitto")
        self.binary = binary
        self.port = port or free_port()
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 0\nmax_queued_messages 100000\nlog_type error\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it accepts connections."""
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port}")

    @property
    def pid(self) -> int | None:
        """The broker's process while it runs."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Stop it (idempotent)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None
