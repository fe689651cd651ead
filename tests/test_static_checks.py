"""The code stays lint-clean (ruff) and type-clean (mypy --strict, configured in pyproject.toml).

Both tools run from the repository root in this interpreter's environment, so they read the
project's own configuration; mypy keeps its incremental cache in `.mypy_cache` (gitignored),
which makes a second run take well under a second.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(tool: str, *args: str, timeout: float) -> None:
    """Run `python -m tool args` in the repository; skip when missing, fail with its output."""
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed: pip install -e '.[dev]'")
    try:
        done = subprocess.run(
            [sys.executable, "-m", tool, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{tool} did not finish in {timeout:g} s:\n{exc.stdout or ''}{exc.stderr or ''}")
    if done.returncode != 0:
        command = " ".join((tool, *args))
        pytest.fail(f"{command} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def test_ruff_is_clean() -> None:
    _run("ruff", "check", "--no-fix", "appliance", "hardware", "pipelines", "tests", timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mypy_strict_is_clean() -> None:
    # Files, strictness, plugins and exclusions come from [tool.mypy] in pyproject.toml.
    _run("mypy", timeout=280)
