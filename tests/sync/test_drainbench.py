"""The drain benchmark runs and reports what `appliance bench` needs."""

from __future__ import annotations

from pathlib import Path

from appliance.sync.drainbench import measure_drain


def test_measure_drain_to_a_directory(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    figures = measure_drain(
        tmp_path / "state", {"target": f"file://{export}", "drain_busy_fraction": 1}, 12_000
    )
    assert figures["rows"] == 12_000 and figures["batches"] == 3
    assert figures["rows_per_s"] > 0 and figures["mb_per_s"] > 0 and figures["cpu_ms_per_1k_rows"] > 0
    assert len(list(export.rglob("*.jsonl.gz"))) == 3
