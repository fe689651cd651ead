"""`appliance run` as systemd sees it: a real notify socket, a real process, real signals.

The harness plays systemd's part: it passes a datagram socket in $NOTIFY_SOCKET and a watchdog
period in $WATCHDOG_USEC, and checks what a Type=notify unit with WatchdogSec= relies on.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.harness import NotifySocket, run_appliance, write_config
from tests.systemd.wedge_model import build_wedge_package

pytestmark = pytest.mark.slow


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"no exit {timeout} s after signal {sig}:\n{err.decode()[-3000:]}") from None
    return proc.returncode, err.decode()


def test_ready_watchdog_and_clean_stop(tmp_path: Path, models_dir: Path, notify: NotifySocket) -> None:
    """READY=1 after the start-up steps, WATCHDOG=1 every half period, STOPPING=1 and exit 0."""
    config = write_config(
        tmp_path / "a.toml", models_dir, tmp_path / "state", "bright1", profile="single-core"
    )
    watchdog_usec = 2_000_000
    proc = run_appliance(config, notify, watchdog_usec)
    try:
        ready = notify.wait_for("READY", "1", timeout=60)
        time.sleep(4.5)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        code, err = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    messages = notify.snapshot()
    before = [m for m in messages if m.t < ready.t]
    # Start-up steps extend the start timeout and say what they did.
    assert any(int(m.fields.get("EXTEND_TIMEOUT_USEC", "0")) > 0 for m in before), messages
    statuses = [m.fields["STATUS"] for m in before if "STATUS" in m.fields]
    assert "starting: store ready" in statuses
    assert any("model bright1 loaded" in s for s in statuses), statuses
    assert ready.fields["STATUS"].startswith("inspecting: 1 line(s), 1 camera(s)")
    assert not any("WATCHDOG" in m.fields for m in before), "pinged before READY"
    # Pings at half the period: never a gap systemd would punish.
    stopping = notify.wait_for("STOPPING", "1", timeout=1)
    pings = [m.t for m in messages if m.fields.get("WATCHDOG") == "1" and m.t < stopping.t]
    assert len(pings) >= 4, f"{len(pings)} pings in 4.5 s at a {watchdog_usec / 2e6} s interval"
    gaps = [b - a for a, b in zip([ready.t, *pings], pings, strict=False)]
    assert max(gaps) < watchdog_usec / 1e6, f"a gap of {max(gaps):.2f} s would trip WatchdogSec"
    # Clean stop: every verdict committed, exit status 0.
    assert code == 0, err[-3000:]
    assert "parts judged, last seq" in err
    assert stopping.fields["STATUS"] == "stopping"


def test_pings_stop_when_inference_wedges(tmp_path: Path, notify: NotifySocket) -> None:
    """A worker stuck on one frame past wedge_after_s: STATUS says so and WATCHDOG=1 stops."""
    pytest.importorskip("onnx", reason="the wedge model needs onnx: pip install -e '.[dev]'")
    models = tmp_path / "models"
    build_wedge_package(models / "wedge")
    config = write_config(
        tmp_path / "w.toml", models, tmp_path / "state", "wedge", profile="single-core", wedge_after_s=1.0
    )
    watchdog_usec = 1_000_000
    proc = run_appliance(config, notify, watchdog_usec)
    try:
        ready = notify.wait_for("READY", "1", timeout=60)  # warm-up frames are flat: no wedge yet
        wedged = notify.wait_for("STATUS", "not alive: inference; watchdog pings withheld", timeout=20)
        # Three watchdog periods with the process running and not one ping: systemd would have
        # killed and restarted it after one.
        time.sleep(3 * watchdog_usec / 1e6)
        assert proc.poll() is None, "the appliance exited instead of wedging"
        late = [m for m in notify.with_key("WATCHDOG") if m.t > wedged.t]
        assert late == [], f"{len(late)} ping(s) after the wedge"
    finally:
        # What systemd does after WatchdogSec (SIGABRT, then SIGKILL): the worker is mid-frame.
        proc.kill()
        proc.communicate()
    assert ready.t < wedged.t


def test_start_failure_exits_non_zero_without_ready(
    tmp_path: Path, models_dir: Path, notify: NotifySocket
) -> None:
    """A model that is not there: no READY, the reason in STATUS, exit 1 (Restart=on-failure)."""
    config = write_config(tmp_path / "m.toml", models_dir, tmp_path / "state", "no-such-model")
    proc = run_appliance(config, notify, 1_000_000)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err.decode()[-2000:]
    assert notify.with_key("READY") == []
    failed = [
        m.fields["STATUS"] for m in notify.with_key("STATUS") if m.fields["STATUS"].startswith("failed")
    ]
    assert failed and "no-such-model" in failed[-1], failed


def test_config_error_exits_2(tmp_path: Path, models_dir: Path, notify: NotifySocket) -> None:
    """A bad config exits 2, which the unit's RestartPreventExitStatus=2 does not restart."""
    config = write_config(tmp_path / "c.toml", models_dir, tmp_path / "state", "bright1", profile="no-such")
    proc = run_appliance(config, notify, 1_000_000)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err.decode()[-2000:]
    assert "profile" in err.decode()
    assert notify.with_key("READY") == []
    assert notify.wait_for("STATUS", timeout=1).fields["STATUS"].startswith("failed: configuration error")
