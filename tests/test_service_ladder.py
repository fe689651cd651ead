"""The ladder inside the running service: overload degrades to provisional verdicts that all
get resolved, and a provisional verdict persisted before a crash is refined after the restart."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from appliance.config import Settings
from appliance.service import Service
from hardware.fakes.source import FakeSource
from tests.test_cli_run import start


def results(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        return [json.loads(row[0]) for row in conn.execute("SELECT payload FROM results ORDER BY seq")]
    except sqlite3.OperationalError:  # the service has created the file but not migrated it yet
        return []
    finally:
        conn.close()


def unresolved(rows: list[dict[str, Any]]) -> set[str]:
    """Parts whose latest revision is still provisional."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row["part_id"]] = row
    return {part for part, row in latest.items() if row["provisional"]}


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_overload_degrades_to_provisional_verdicts_and_resolves_them_all(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(tiers=["bright1", "slow2"], deadline_ms=150, backlog=16)
    settings.web.enabled = False
    # Every frame is in tier 1's band (0.47) and tier 2 is slow: far more escalations than
    # tier 2 can take, so most parts must get an in-time provisional verdict instead.
    source = FakeSource(lambda n: np.full((32, 32), 120, np.uint8), fps=60)
    service = Service(settings, source_factory=lambda _config: source)
    service.start()
    try:
        time.sleep(4)
        for camera in service.cameras:
            camera.stop()
        ladder = service.ladders["line1"]
        assert service.settle_refinements(timeout=30)
        health = ladder.health()
    finally:
        service.stop()
    rows = results(settings.db_path)
    first = [r for r in rows if r["revision"] == 0]
    assert len(first) > 100
    on_time = sum(r["latency_ms"]["total"] <= settings.lines[0].deadline_ms for r in first)
    assert on_time / len(first) >= 0.95, f"{on_time}/{len(first)} first verdicts within the deadline"
    assert health["deferred_escalations"] > len(first) / 2
    assert unresolved(rows) == set(), "every provisional verdict is refined, confirmed or finalized"
    refinements = [r for r in rows if r["revision"] > 0]
    assert {r["refinement"] for r in refinements} <= {"confirmed", "changed", "unrefined"}
    assert any(r["refinement"] == "confirmed" for r in refinements)
    assert health["backlog_finalized"] == sum(r["refinement"] == "unrefined" for r in refinements)


@pytest.mark.slow
def test_a_provisional_verdict_persisted_before_a_crash_is_refined_after_restart(
    tmp_path: Path,
    models_dir: Path,
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for n in range(5):
        cv2.imwrite(str(frames / f"{n}.png"), np.full((32, 32), 118 + n, np.uint8))
    config = tmp_path / "appliance.toml"
    config.write_text(f"""
node_id = "crash-node"
state_dir = "{tmp_path / "state"}"
models_dir = "{models_dir}"
web = {{ enabled = false }}
mqtt = {{ enabled = false }}

[[lines]]
id = "line1"
deadline_ms = 5
backlog = 10000
tiers = [{{ model = "bright1" }}, {{ model = "slow2" }}]

[[lines.cameras]]
id = "cam1"
source = {{ kind = "folder", path = "{frames}", fps = 100 }}
""")
    db = tmp_path / "state" / "appliance.db"
    process = start(config)
    try:
        # Frames held in memory longer than store.pending_hold_ms (1 s) are on disk by now.
        kept = tmp_path / "state" / "pending"
        wait_for(
            lambda: db.exists() and len(unresolved(results(db))) >= 20 and len(list(kept.glob("*.npy"))) >= 5
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    before = results(db)
    open_before = unresolved(before)
    assert open_before, "the crash must leave provisional verdicts behind"
    pending = sqlite3.connect(db).execute("SELECT COUNT(*) FROM pending_refinements").fetchone()[0]
    assert pending >= len(open_before)

    process = start(config, "--duration", "4")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    after = results(db)
    assert [r["seq"] for r in after] == list(range(1, len(after) + 1))
    by_part: dict[str, list[dict[str, Any]]] = {}
    for row in after:
        by_part.setdefault(row["part_id"], []).append(row)
    for part in open_before:
        revisions = by_part[part]
        assert [r["revision"] for r in revisions] == list(range(len(revisions)))
        assert revisions[-1]["provisional"] is False, f"{part} was forgotten across the crash"
        assert revisions[-1]["refinement"] in {"confirmed", "changed", "unrefined"}
    assert any(by_part[p][-1]["refinement"] != "unrefined" for p in open_before)


def test_a_second_service_on_the_same_state_dir_is_refused(make_settings: Callable[..., Settings]) -> None:
    from appliance.service import ServiceError

    settings = make_settings()
    settings.web.enabled = False
    first = Service(settings)
    first.start()
    try:
        second = Service(settings)
        with pytest.raises(ServiceError, match="another appliance is already running"):
            second.start()
    finally:
        first.stop()
    again = Service(settings)  # the lock goes with the service that held it
    again.start()
    again.stop()


def test_workers_waiting_for_a_full_store_are_blocked_not_wedged(
    make_settings: Callable[..., Settings],
) -> None:
    import threading

    settings = make_settings(
        source={"kind": "simulator", "fps": 200, "width": 64, "height": 64},
        wedge_after_s=0.5,
        store={"queue_size": 16},
    )
    settings.web.enabled = False
    service = Service(settings)
    service.start()
    gate = threading.Event()
    try:
        service.writer.call(lambda conn: gate.wait(20))  # the disk "hangs": the writer waits
        wait_for(lambda: service.writer.backpressure_since is not None, timeout=10)
        time.sleep(1.0)  # longer than wedge_after_s: the workers are stuck in put()
        assert service.loops_alive()["inference"], "blocked on the store is not a wedge"
        gate.set()
        wait_for(lambda: service.writer.backpressure_since is None, timeout=10)
    finally:
        gate.set()
        service.stop()
    rows = results(settings.db_path)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
