"""Helpers for the console tests: a running service from a config file, users, seeded hard cases."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from appliance.config import load_settings
from appliance.service import Service
from appliance.store.db import connect
from appliance.sync.images import map_to_png
from appliance.wiring import add_components

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORDS = {
    "admin": "admin-pass-1",
    "operator": "operator-pass-1",
    "viewer": "viewer-pass-1",
    "engineer": "engineer-pass-1",
}
CONFIG = """
node_id = "test-node"
state_dir = "{state}"
models_dir = "{models}"

[web]
port = 0
login_backoff_s = 0.05
login_rate_per_minute = 1000
login_max_failures = 4

[mqtt]
enabled = false

# The review queue holds only the cases the tests put there (no automatic selection racing them).
[sync.hard_cases.uncertain]
enabled = false
[sync.hard_cases.sample]
enabled = false
[sync.hard_cases.classes]
enabled = false

[[lines]]
id = "line1"
deadline_ms = 500
tiers = [{{ model = "bright1" }}, {{ model = "dark" }}]

[[lines.cameras]]
id = "cam1"
source = {{ kind = "simulator", fps = 20, seed = 3 }}
"""


@dataclass
class Console:
    """A running service with users and tokens, and helpers to reach it."""

    service: Service
    url: str
    config_path: Path
    tokens: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def api(self, role: str = "admin") -> httpx.Client:
        """An HTTP client authenticated with a bearer token of `role`."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=10
        )

    def db(self) -> sqlite3.Connection:
        """A read-only connection to the service's database."""
        return connect(self.service.settings.db_path, readonly=True)

    def write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `op` on the service's writer thread (the single-writer rule holds in tests too)."""
        return self.service.writer.call(op).result(timeout=10)

    def wait_results(self, count: int, timeout: float = 15.0) -> None:
        """Block until at least `count` results are committed."""
        import time

        deadline = time.monotonic() + timeout
        while self.service.writer.last_seq < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.service.writer.last_seq} results after {timeout} s")
            time.sleep(0.05)

    def failing_part(self, *, with_boxes: bool = True, exclude: set[str] | None = None) -> dict[str, Any]:
        """The payload of a recent failing part (with defect boxes), not labelled yet, whose frame
        is still in the live view's ring (so that `retain` stores its real image and map)."""
        import json
        import time

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            conn = self.db()
            try:
                rows = conn.execute(
                    "SELECT payload FROM results r WHERE verdict = 'fail' AND NOT EXISTS "
                    "(SELECT 1 FROM labels l WHERE l.part_id = r.part_id) ORDER BY seq DESC LIMIT 200"
                ).fetchall()
            finally:
                conn.close()
            for row in rows:
                payload = json.loads(row["payload"])
                if (
                    (payload["defects"] or not with_boxes)
                    and payload["part_id"] not in (exclude or set())
                    and self.service.live.recent(payload["part_id"]) is not None
                ):
                    return dict(payload)
            time.sleep(0.2)
        raise AssertionError("no failing part with defect boxes")

    def retain(self, part: dict[str, Any], reason: str = "uncertain", *, map_file: bool = False) -> None:
        """Store `part` as the sync work would: an image on disk, its map in the `images` row
        (`map_file`: in a file beside the image, as boxes kept them before schema version 5),
        `images` and `hard_cases` rows."""
        snap = self.service.live.recent(part["part_id"])
        image = snap.frame.image if snap is not None else np.full((320, 320), 128, np.uint8)
        folder = self.service.state_dir / "images" / part["line"]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{part['part_id']}.png"
        cv2.imwrite(str(path), image)
        map_rel, map_png = None, None
        if snap is not None and snap.verdict.defect_map is not None:
            map_png = map_to_png(snap.verdict.defect_map)
            if map_file:
                (folder / f"{part['part_id']}.map.png").write_bytes(map_png)
                map_rel, map_png = f"{part['line']}/{part['part_id']}.map.png", None
        height, width = image.shape[:2]

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO images (part_id, line, camera, ts_capture_ms, path, map_path, "
                "map_png, width, height, bytes, reason, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    part["part_id"],
                    part["line"],
                    part["camera"],
                    part["ts_capture_ms"],
                    f"{part['line']}/{part['part_id']}.png",
                    map_rel,
                    map_png,
                    width,
                    height,
                    path.stat().st_size,
                    reason,
                    part["ts_capture_ms"],
                ),
            )
            conn.execute(
                "INSERT OR IGNORE INTO hard_cases (part_id, line, reason, created_ms) VALUES (?, ?, ?, ?)",
                (part["part_id"], part["line"], reason, part["ts_capture_ms"]),
            )

        self.write(op)


def start_console(root: Path, models_dir: Path, **web: Any) -> tuple[Service, Path]:
    """Write a config file, start a service from it with the console on a free port."""
    config_path = root / "appliance.toml"
    text = CONFIG.format(state=root / "state", models=models_dir)
    for key, value in web.items():
        text = text.replace("[web]\n", f"[web]\n{key} = {value!r}\n".replace("'", '"'))
    config_path.write_text(text, encoding="utf-8")
    settings = load_settings(config_path)
    service = Service(settings, config_path=config_path)
    add_components(service)
    service.start()
    return service, config_path
