"""Shared fixtures: synthetic model packages, settings builders, dataset location."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.config import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic packages with controlled scores: score = mean brightness / 255."""
    pytest.importorskip("onnx", reason="synthetic test models need onnx: pip install -e '.[dev]'")
    from pipelines.synthetic import build_package

    root = tmp_path_factory.mktemp("models")
    build_package(root / "bright1", "brightness", size=32, band=(0.3, 0.7))
    build_package(root / "bright2", "brightness", size=64, band=(0.45, 0.55))
    build_package(root / "slow2", "slow", size=32, band=(0.45, 0.55), work=768)
    build_package(root / "inverse2", "darkness", size=32, band=(0.45, 0.55))
    build_package(root / "dark", "darkspot", size=64)
    build_package(root / "boxes", "boxes", size=32)
    return root


@pytest.fixture
def make_settings(tmp_path: Path, models_dir: Path) -> Callable[..., Settings]:
    """Settings for one line and camera, state under tmp_path, web on a free port."""

    def build(
        source: dict[str, Any] | None = None, tiers: list[str] | None = None, **overrides: Any
    ) -> Settings:
        line = {
            "id": "line1",
            "deadline_ms": overrides.pop("deadline_ms", 500),
            "backlog": overrides.pop("backlog", 64),
            "tiers": [{"model": m} for m in (tiers or ["bright1"])],
            "cameras": overrides.pop("cameras", None)
            or [
                {
                    "id": "cam1",
                    "source": source or {"kind": "simulator", "fps": 50},
                    "drop_policy": overrides.pop("drop_policy", "latest"),
                }
            ],
        }
        data: dict[str, Any] = {
            "node_id": "test-node",
            "state_dir": tmp_path / "state",
            "models_dir": models_dir,
            "lines": [line],
            "web": {"port": 0},
            "mqtt": {"enabled": False},
        }
        for key, value in overrides.items():
            data[key] = value
        return Settings(**data)

    return build


def datasets_root() -> Path:
    """Where the shared datasets live (APPLIANCE_DATASETS or ../shared/datasets)."""
    return Path(os.environ.get("APPLIANCE_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture
def datasets() -> Path:
    """The shared datasets folder, or skip."""
    root = datasets_root()
    if not root.is_dir():
        pytest.skip(f"datasets not found at {root} (set APPLIANCE_DATASETS)")
    return root


def grey(value: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A flat grey frame: with the brightness models its score is value / 255."""
    return np.full(size, value, np.uint8)


#: Processes started by tests; any still running after a test is killed (a failed assertion
#: must never leave an appliance running and eating the CPU of the tests after it).
SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def kill_leftover_processes() -> Iterator[None]:
    """Kill what a test started and left running."""
    yield
    while SPAWNED:
        process = SPAWNED.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(autouse=True)
def fail_on_logged_exception(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Any exception logged with a traceback fails the test (as Home Assistant does)."""
    yield
    for record in caplog.get_records("call"):
        if record.exc_info and record.levelno >= logging.ERROR and not getattr(record, "expected", False):
            pytest.fail(f"exception logged: {record.getMessage()}")
