"""The whole appliance with sync on: outages, crashes of the uplink, privacy of what lands.

The issue asks for a 60 s outage; these tests cut the store for 3 s with the retry delay capped
at 1 s, which exercises the same path (failed rounds, backoff, resume from the recorded batch)
in a fraction of the time. The CLI test keeps the full production path: environment
configuration, wiring, a clean stop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from appliance.config import Settings
from appliance.service import Service
from appliance.wiring import add_components
from hardware.sources.jpeg import without_metadata
from tests.conftest import SPAWNED
from tests.hardware.jpegs import SECRET, jpeg_with_metadata

REPO = Path(__file__).resolve().parents[2]


def parts_folder(root: Path, count: int, *, size: tuple[int, int] = (240, 320), seed: int = 1) -> Path:
    """`count` grey parts, every other one with dark spots (fails for the darkspot model)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full(size, 150, np.uint8) + rng.integers(0, 12, size, dtype=np.uint8)
        if i % 2:
            for _ in range(2):
                x, y = int(rng.integers(20, size[1] - 20)), int(rng.integers(20, size[0] - 20))
                cv2.circle(image, (x, y), int(rng.integers(4, 9)), 40, -1)
        cv2.imwrite(str(root / f"part{i:04d}.png"), image)
    return root


@contextmanager
def running(settings: Settings) -> Iterator[Service]:
    """A started service with the wired components; stopped afterwards."""
    service = Service(settings)
    add_components(service)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def production_done(service: Service, expected: int) -> bool:
    return service.writer.last_seq >= expected and all(c.state == "ended" for c in service.cameras)


def service_settings(
    make_settings: Callable[..., Settings],
    folder: Path,
    sync: dict[str, Any],
    *,
    tiers: list[str] | None = None,
) -> Settings:
    return make_settings(
        source={"kind": "folder", "path": str(folder), "fps": 30, "loop": False},
        drop_policy="block",
        tiers=tiers or ["dark"],
        web={"enabled": False},
        sync={"interval_s": 0.2, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, **sync},
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_outage_during_production_every_seq_once_in_order(
    make_settings: Callable[..., Settings], tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    parts = 120
    folder = parts_folder(tmp_path / "parts", parts)
    export = tmp_path / "export"
    export.mkdir()
    if kind == "s3":
        proxy, bucket = request.getfixturevalue("proxy"), request.getfixturevalue("bucket")
        sync = {"target": f"s3://{bucket.name}/cloud", "endpoint_url": proxy.endpoint, "timeout_s": 2}

        def cut() -> None:
            proxy.down()

        def restore() -> None:
            proxy.up()
    else:
        sync = {"target": f"file://{export}"}

        def cut() -> None:
            export.rename(tmp_path / "unmounted")

        def restore() -> None:
            (tmp_path / "unmounted").rename(export)

    settings = service_settings(make_settings, folder, {**sync, "policy": "metadata", "batch_max_rows": 16})
    with running(settings) as service:
        worker = service.components["sync"]
        wait_for(lambda: worker.synced_cursor > 0, 20, "the first batch")
        cut()
        time.sleep(3.0)
        assert worker.health()["state"] == "degraded"
        restore()
        wait_for(lambda: production_done(service, parts), 60, "production to end")
        wait_for(lambda: worker.synced_cursor == service.writer.last_seq, 30, "the backlog to drain")
        wait_for(lambda: worker.health()["state"] == "ok", 10, "a clean round")
        health = worker.health()
    assert worker.failures >= 1, "the outage was not noticed"
    assert health["backlog"]["results"] == 0 and health["last_success_age_s"] < 5
    if kind == "s3":
        batches = bucket.result_seqs("cloud/")
    else:
        batches = [
            [json.loads(line)["seq"] for line in _gunzip(path).splitlines()]
            for path in sorted(export.rglob("*.jsonl.gz"))
        ]
    flat = [seq for batch in batches for seq in batch]
    assert flat == list(range(1, parts + 1)), "every seq exactly once, in order"
    assert all(len(b) <= 16 for b in batches)


def _gunzip(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


def test_policy_none_sends_nothing_at_all(
    make_settings: Callable[..., Settings], tmp_path: Path, bucket: Any
) -> None:
    folder = parts_folder(tmp_path / "parts", 30)
    settings = service_settings(
        make_settings,
        folder,
        {
            "target": f"s3://{bucket.name}",
            "endpoint_url": bucket.endpoint,
            "policy": "none",
            "hard_cases": {"sample": {"rate": 1.0}, "classes": {"classes": ["defect"]}},
        },
    )
    with running(settings) as service:
        wait_for(lambda: production_done(service, 30), 30, "production to end")
        time.sleep(1.0)  # several sync rounds
        health = service.health()["components"]
    assert bucket.list_keys() == []
    assert health["sync"]["what_leaves"][0].startswith("Nothing leaves the premises")
    assert health["sync"]["backlog"]["results"] == 0  # nothing is due
    # Locally everything still happens: images kept and hard cases selected for review.
    assert health["images"]["count"] > 0
    assert health["images"]["hard_cases"]["class"]["selected"] > 0


def _jpegs(bucket: Any) -> dict[str, np.ndarray]:
    out = {}
    for key in bucket.list_keys():
        if key.endswith(".jpg"):
            image = cv2.imdecode(np.frombuffer(bucket.get(key), np.uint8), cv2.IMREAD_UNCHANGED)
            out[key] = image
    return out


MASK = [0, 0, 160, 120]  # the top-left quarter of a 320x240 frame


def test_crops_never_send_a_full_frame_and_masks_are_black(
    make_settings: Callable[..., Settings], tmp_path: Path, bucket: Any
) -> None:
    folder = parts_folder(tmp_path / "parts", 24)
    settings = service_settings(
        make_settings,
        folder,
        {
            "target": f"s3://{bucket.name}",
            "endpoint_url": bucket.endpoint,
            "policy": "crops",
            "masks": {"cam1": [MASK]},
            "hard_cases": {"classes": {"classes": ["defect"]}},
        },
    )
    with running(settings) as service:
        wait_for(lambda: production_done(service, 24), 30, "production to end")
        worker = service.components["sync"]
        wait_for(lambda: worker.health()["backlog"]["cases"] == 0 and worker.cases > 0, 30, "cases to sync")
    images = _jpegs(bucket)
    assert images, "crops were expected"
    assert not [k for k in bucket.list_keys() if k.endswith(("frame.jpg", "map.png"))]
    for key, image in images.items():
        h, w = image.shape[:2]
        assert w <= 160 and h <= 120, f"{key} is {w}x{h}: more than half the 320x240 frame"
    masked_seen = 0
    for key in [k for k in bucket.list_keys() if k.endswith("case.json")]:
        case = json.loads(bucket.get(key))
        assert case["masked"] is True
        for entry in case["images"]:
            x1, y1, x2, y2 = entry["box"]
            crop = images[key.replace("case.json", entry["name"])]
            # The part of the crop inside the mask, away from JPEG block edges.
            ix1, iy1, ix2, iy2 = max(x1, MASK[0]), max(y1, MASK[1]), min(x2, MASK[2]), min(y2, MASK[3])
            if ix2 - ix1 > 16 and iy2 - iy1 > 16:
                inner = crop[iy1 - y1 + 8 : iy2 - y1 - 8, ix1 - x1 + 8 : ix2 - x1 - 8]
                if inner.size:
                    masked_seen += 1
                    assert inner.max() <= 10, f"masked region not black in {key}"
    assert masked_seen > 0, "no crop overlapped the mask; the test proves nothing"


def sync_whole_frames(make_settings: Callable[..., Settings], folder: Path, bucket: Any, **sync: Any) -> None:
    """Ten parts from `folder` through a service whose policy sends whole frames, until synced."""
    settings = service_settings(
        make_settings,
        folder,
        {
            "target": f"s3://{bucket.name}",
            "endpoint_url": bucket.endpoint,
            "policy": "frames",
            "hard_cases": {"classes": {"classes": ["defect"]}},
            **sync,
        },
    )
    with running(settings) as service:
        wait_for(lambda: production_done(service, 10), 30, "production to end")
        worker = service.components["sync"]
        wait_for(lambda: worker.health()["backlog"]["cases"] == 0 and worker.cases > 0, 30, "cases to sync")


def test_frames_policy_sends_masked_whole_frames(
    make_settings: Callable[..., Settings], tmp_path: Path, bucket: Any
) -> None:
    sync_whole_frames(make_settings, parts_folder(tmp_path / "parts", 10), bucket, masks={"cam1": [MASK]})
    frames = {k: v for k, v in _jpegs(bucket).items() if k.endswith("frame.jpg")}
    assert frames
    for key, image in frames.items():
        assert image.shape[:2] == (240, 320)
        assert image[8:112, 8:152].max() <= 10, f"masked region not black in {key}"
        assert image[130:, 170:].mean() > 100, "the rest of the frame is intact"
    assert [k for k in bucket.list_keys() if k.endswith("map.png")]


def test_frames_from_jpeg_files_leave_as_they_came_without_metadata(
    make_settings: Callable[..., Settings], tmp_path: Path, bucket: Any
) -> None:
    """A folder of camera JPEGs: the frame that lands is the file itself, less EXIF and the rest."""
    folder = parts_folder(tmp_path / "parts", 10)
    originals = []
    for png in sorted(folder.glob("*.png")):
        originals.append(jpeg_with_metadata(cv2.imread(str(png), cv2.IMREAD_UNCHANGED)))
        png.with_suffix(".jpg").write_bytes(originals[-1])
        png.unlink()
    sync_whole_frames(make_settings, folder, bucket)
    stripped = {without_metadata(data) for data in originals}
    frames = [bucket.get(k) for k in bucket.list_keys() if k.endswith("frame.jpg")]
    assert frames
    for data in frames:
        assert SECRET not in data
        assert data in stripped, "the frame was encoded again instead of kept as its file"


@pytest.mark.slow
def test_cli_run_with_store_outage_and_crops(
    models_dir: Path, tmp_path: Path, proxy: Any, bucket: Any
) -> None:
    """Done-when: env-configured S3 target, store cut mid-run, every seq once, crops only."""
    parts = 90
    folder = parts_folder(tmp_path / "parts", parts)
    config = tmp_path / "appliance.toml"
    config.write_text(
        f"""
node_id = "press-1"
site = "plant-a"
state_dir = "{tmp_path / "state"}"
models_dir = "{models_dir}"
[web]
enabled = false
[mqtt]
enabled = false
[sync]
interval_s = 0.2
backoff_initial_s = 0.2
backoff_max_s = 1.0
batch_max_rows = 20
timeout_s = 2
[sync.hard_cases.classes]
classes = ["defect"]
[[lines]]
id = "line1"
tiers = [{{ model = "dark" }}]
[[lines.cameras]]
id = "cam1"
drop_policy = "block"
source = {{ kind = "folder", path = "{folder}", fps = 20, loop = false }}
"""
    )
    env = {
        **os.environ,
        "APPLIANCE_SYNC__TARGET": f"s3://{bucket.name}/vision",
        "APPLIANCE_SYNC__ENDPOINT_URL": proxy.endpoint,
        "APPLIANCE_SYNC__POLICY": "crops",
        "PYTHONPATH": str(REPO),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config), "--duration", "12"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    SPAWNED.append(process)
    outage = threading.Timer(1.5, proxy.down)
    back = threading.Timer(4.5, proxy.up)
    outage.start()
    back.start()
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        outage.cancel()
        back.cancel()
    assert process.returncode == 0, stderr[-3000:]
    assert "sync failed" in stderr, "the outage was not noticed"
    flat = [seq for batch in bucket.result_seqs("vision/") for seq in batch]
    assert flat == list(range(1, parts + 1))
    assert all(k.startswith("vision/plant-a/press-1/") for k in bucket.list_keys())
    crops = [k for k in bucket.list_keys() if k.endswith(".jpg")]
    assert crops and all("/crop-" in k for k in crops)
    for key in crops:
        h, w = cv2.imdecode(np.frombuffer(bucket.get(key), np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
        assert w <= 160 and h <= 120
