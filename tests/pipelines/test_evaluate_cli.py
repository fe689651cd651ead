"""pipelines.evaluate stays on runtime dependencies (no torch in its import chain)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_evaluate_does_not_import_torch():
    code = (
        "import sys, pipelines.evaluate, pipelines.ladder, pipelines.quantize; "
        "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_evaluate_cli_help_runs():
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.evaluate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "--split" in done.stdout
