"""The unit file: `systemd-analyze verify` clean, exposure <= 2.5, the contract settings present."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "appliance.service"
INSTALLED_PYTHON = "/opt/appliance/current/venv/bin/python"


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not found: install Debian's systemd package")
    return path


def render(tmp_path: Path, text: str | None = None, dropin: Path | None = None) -> Path:
    """The unit with ExecStart pointing at an interpreter that exists here (verify checks it)."""
    unit = tmp_path / "appliance.service"
    unit.write_text((text or UNIT.read_text()).replace(INSTALLED_PYTHON, sys.executable))
    if dropin is not None:
        (tmp_path / "appliance.service.d").mkdir()
        shutil.copy(dropin, tmp_path / "appliance.service.d" / "accelerator.conf")
    return unit


def verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", f"./{unit.name}"], cwd=unit.parent, capture_output=True, text=True, timeout=60
    )


def test_verify_is_clean(analyze: str, tmp_path: Path) -> None:
    """verify exits 0 even on unknown keys, so stderr must be empty."""
    result = verify(analyze, render(tmp_path))
    assert result.returncode == 0
    assert result.stderr == "", result.stderr
    assert result.stdout == "", result.stdout


@pytest.mark.parametrize("dropin", sorted((SYSTEMD / "accelerators").glob("*.conf")), ids=lambda p: p.stem)
def test_accelerator_dropins_verify_clean(analyze: str, tmp_path: Path, dropin: Path) -> None:
    result = verify(analyze, render(tmp_path, dropin=dropin))
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_catches_a_misspelt_key(analyze: str, tmp_path: Path) -> None:
    """The check above can fail: a typo shows on stderr although the exit status is 0."""
    text = UNIT.read_text().replace("WatchdogSec=30s", "WatchdogSecs=30s")
    result = verify(analyze, render(tmp_path, text))
    assert "Unknown key 'WatchdogSecs'" in result.stderr


def test_security_exposure_at_most_2_5(analyze: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(render(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for appliance\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5, result.stdout


def settings(text: str) -> dict[str, list[str]]:
    """Key -> values (in order) of a unit file; sections flattened, comments dropped."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_unit_keeps_the_contract() -> None:
    """DESIGN.md's systemd contract and the issue's hardening decisions, setting by setting."""
    unit = settings(UNIT.read_text())
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "Restart": ["on-failure"],
        "RestartPreventExitStatus": ["2"],
        "StateDirectory": ["appliance"],
        "CacheDirectory": ["appliance"],
        "ConfigurationDirectory": ["appliance"],
        "SupplementaryGroups": ["video"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "DevicePolicy": ["closed"],
        "DeviceAllow": ["char-video4linux rw"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
    }
    for key, values in expected.items():
        assert unit.get(key) == values, key
    assert unit["SystemCallFilter"][0] == "@system-service"
    assert "APPLIANCE_CONFIG=/etc/appliance/appliance.toml" in unit["Environment"]
    assert "APPLIANCE_STATE_DIR=/var/lib/appliance" in unit["Environment"]
    assert unit["ExecStart"] == [f"{INSTALLED_PYTHON} -m appliance run"]
    assert {"WatchdogSec", "StartLimitIntervalSec", "StartLimitBurst", "User"} <= unit.keys()
    assert sorted(unit["LoadCredentialEncrypted"]) == ["appliance.mqtt-password", "appliance.s3-credentials"]
    # Options that would break cameras or the runtime stay off (the unit says why).
    for key in ("PrivateDevices", "MemoryDenyWriteExecute", "PrivateUsers", "ProcSubset"):
        assert key not in unit, key
