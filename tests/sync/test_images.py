"""Image retention: saving at capture time, the disk budget, the eviction order and its alarm."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.config import ImagesConfig
from appliance.events import EventBus
from appliance.results import Frame, now_ms
from appliance.store.db import connect
from appliance.store.writer import StoreWriter
from appliance.sync import images
from appliance.sync.images import ALARM_KEY, ImageStore, SavedImage, kept_map, map_to_png
from hardware.sources.jpeg import without_metadata
from tests.hardware.jpegs import SECRET, after_jfif, jpeg_with_metadata, segment
from tests.sync.support import flush, make_verdict, mark_hard_case


def keep(
    store: ImageStore, writer: StoreWriter, part: str, *, seed: int = 0, with_map: bool = False
) -> SavedImage:
    image = np.random.default_rng(seed).integers(0, 255, (240, 320), dtype=np.uint8)
    verdict = make_verdict(part, verdict="fail", score=0.9)
    if with_map:
        verdict = verdict.__class__(**{**_fields(verdict), "defect_map": np.linspace(0, 1, 64).reshape(8, 8)})
    writer.put(verdict)
    frame = Frame("line1", "cam1", part, 0, verdict.ts_capture_ms, time.monotonic(), image)
    saved = store.save(frame, verdict, "fail")
    assert saved is not None
    store.committed(saved, writer.call(store.insert_op(saved)).result())
    return saved


def _fields(verdict: object) -> dict[str, object]:
    return {name: getattr(verdict, name) for name in verdict.__slots__}  # type: ignore[attr-defined]


def sql(writer: StoreWriter, statement: str, *params: object) -> None:
    writer.call(lambda c: c.execute(statement, params)).result()


def test_saves_a_jpeg_file_and_a_row_holding_the_map(tmp_path: Path, writer: StoreWriter) -> None:
    store = ImageStore(tmp_path / "images", ImagesConfig(), EventBus())
    saved = keep(store, writer, "part-1", with_map=True)
    assert saved.path.endswith("/line1/part-1.jpg")
    frame = cv2.imread(str(tmp_path / "images" / saved.path), cv2.IMREAD_UNCHANGED)
    assert frame.shape == (240, 320)
    # one file per kept part: the map is in the row
    assert [f.name for f in (tmp_path / "images" / saved.path).parent.iterdir()] == ["part-1.jpg"]
    conn = connect(writer.path, readonly=True)
    row = conn.execute("SELECT * FROM images").fetchone()
    assert (row["part_id"], row["width"], row["height"], row["bytes"]) == ("part-1", 320, 240, saved.bytes)
    stored = kept_map(row, tmp_path / "images")
    assert stored is not None and stored.shape == (8, 8)
    assert np.array_equal(stored, np.round(np.linspace(0, 1, 64).reshape(8, 8) * 255).astype(np.uint8))
    assert saved.bytes == (tmp_path / "images" / saved.path).stat().st_size + len(row["map_png"])
    # A second save of the same part keeps the first and removes the duplicate files' bytes.
    again = store.save(Frame("line1", "cam1", "part-1", 0, 0, 0.0, frame), make_verdict("part-1"), "x")
    assert again is not None
    store.committed(again, writer.call(store.insert_op(again)).result())
    assert store.count == 1 and store.bytes_total == saved.bytes
    conn.close()


def test_a_part_kept_again_keeps_its_first_files(tmp_path: Path, writer: StoreWriter) -> None:
    """E.g. kept before a restart, then refined after it: same part, same path, same row."""
    store = ImageStore(tmp_path / "images", ImagesConfig(), EventBus())
    saved = keep(store, writer, "part-1", seed=1)
    first = (tmp_path / "images" / saved.path).read_bytes()
    verdict = make_verdict("part-1", verdict="fail", score=0.9)
    other = np.zeros((240, 320), np.uint8)
    frame = Frame("line1", "cam1", "part-1", 0, verdict.ts_capture_ms, time.monotonic(), other)
    assert store.save(frame, verdict, "fail") is None
    assert (tmp_path / "images" / saved.path).read_bytes() == first
    assert store.already_kept == 1 and store.write_errors == 0


def test_a_failed_write_leaves_no_file_behind(
    tmp_path: Path, writer: StoreWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(tmp_path / "images", ImagesConfig(), EventBus())
    saved = keep(store, writer, "part-1")  # creates the day folder
    folder = (tmp_path / "images" / saved.path).parent

    def disk_full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images.os, "write", disk_full)  # the file is created, its bytes refused
    frame = Frame("line1", "cam1", "part-2", 0, now_ms(), time.monotonic(), np.zeros((8, 8), np.uint8))
    assert store.save(frame, make_verdict("part-2", verdict="fail", score=0.9), "fail") is None
    assert store.write_errors == 1 and "No space left" in (store.last_error or "")
    assert not (folder / "part-2.jpg").exists()


def test_a_map_kept_in_a_file_before_schema_5_is_read_and_evicted_with_its_frame(
    tmp_path: Path, writer: StoreWriter
) -> None:
    store = ImageStore(tmp_path / "images", ImagesConfig(budget_mb=1), EventBus())
    saved = keep(store, writer, "old-part")
    map_rel = saved.path.replace(".jpg", ".map.png")
    (tmp_path / "images" / map_rel).write_bytes(map_to_png(np.eye(8)))
    sql(writer, "UPDATE images SET map_path = ?, created_ms = 0 WHERE part_id = 'old-part'", map_rel)
    conn = connect(writer.path, readonly=True)
    row = conn.execute("SELECT * FROM images WHERE part_id = 'old-part'").fetchone()
    stored = kept_map(row, tmp_path / "images")
    assert stored is not None and np.array_equal(stored, (np.eye(8) * 255).astype(np.uint8))
    assert store.evict(conn, writer.call, pixels_leave=False) == 1  # older than max_age_days
    assert not (tmp_path / "images" / map_rel).exists() and not (tmp_path / "images" / saved.path).exists()
    conn.close()


def test_eviction_order_synced_then_never_due_then_unsynced_with_alarm(
    tmp_path: Path, writer: StoreWriter
) -> None:
    events = EventBus()
    store = ImageStore(tmp_path / "images", ImagesConfig(budget_mb=1), events)
    kept = {}
    for i, kind in enumerate(["due"] * 4 + ["synced"] * 4 + ["local"] * 4 + ["due"] * 6):
        part = f"{kind}-{i:02d}"
        kept[part] = keep(store, writer, part, seed=i)
        if kind == "synced":
            sql(writer, "UPDATE images SET synced_ms = 1 WHERE part_id = ?", part)
        if kind == "due":
            mark_hard_case(writer, part)
    flush(writer)
    assert store.bytes_total > store.budget_bytes  # ~18 x 64 kB
    conn = connect(writer.path, readonly=True)
    store.evict(conn, writer.call, pixels_leave=True)
    left = {r[0] for r in conn.execute("SELECT part_id FROM images")}
    gone = set(kept) - left
    # Synced first, oldest first; the due-but-unsynced ones (even the oldest) stay.
    assert gone and all(p.startswith("synced") for p in gone)
    assert all(not (tmp_path / "images" / kept[p].path).exists() for p in gone)
    assert store.bytes_total <= store.budget_bytes
    assert events.alarms() == []

    # More due images than the budget holds: the rest of the synced and every never-due one
    # go, then the oldest due ones, counted and alarmed.
    for i in range(18, 30):
        part = f"due-{i:02d}"
        kept[part] = keep(store, writer, part, seed=i)
        mark_hard_case(writer, part)
    flush(writer)
    store.evict(conn, writer.call, pixels_leave=True)
    assert store.evicted_synced == 4 and store.evicted_local == 4 and store.evicted_unsynced > 0
    assert [a.kind for a in events.alarms()] == ["images_evicted_unsynced"]
    oldest_due = [p for p in kept if p.startswith("due")][: store.evicted_unsynced]
    left = {r[0] for r in conn.execute("SELECT part_id FROM images")}
    assert not set(oldest_due) & left
    conn.close()


def test_age_limit_and_no_alarm_when_pixels_never_leave(tmp_path: Path, writer: StoreWriter) -> None:
    events = EventBus()
    store = ImageStore(tmp_path / "images", ImagesConfig(max_age_days=0.00001), events)  # < 1 s
    for i in range(3):
        part = f"p{i}"
        keep(store, writer, part, seed=i)
        mark_hard_case(writer, part)
    flush(writer)
    time.sleep(1.0)
    conn = connect(writer.path, readonly=True)
    assert store.evict(conn, writer.call, pixels_leave=False) == 3
    assert store.evicted_local == 3 and store.evicted_unsynced == 0 and events.alarms() == []
    assert store.count == 0 and store.bytes_total == 0
    conn.close()
    assert ALARM_KEY not in [a.kind for a in events.alarms()]


def test_a_frame_read_from_a_jpeg_is_kept_as_that_file(tmp_path: Path, writer: StoreWriter) -> None:
    store = ImageStore(tmp_path / "images", ImagesConfig(jpeg_quality=50), EventBus())
    image = np.random.default_rng(3).integers(0, 255, (240, 320), dtype=np.uint8)
    original = jpeg_with_metadata(image)
    kept = []
    for part, encoded in (("part-j", original), ("part-d", after_jfif(original, segment(0xDC, b"?")))):
        verdict = make_verdict(part, verdict="fail", score=0.9)
        writer.put(verdict)
        frame = Frame(
            "line1", "cam1", part, 0, verdict.ts_capture_ms, time.monotonic(), image, encoded=encoded
        )
        saved = store.save(frame, verdict, "fail")
        assert saved is not None and (saved.width, saved.height) == (320, 240)
        kept.append((tmp_path / "images" / saved.path).read_bytes())
    # The file less its metadata, not encoded again at quality 50.
    assert kept[0] == without_metadata(original) and SECRET not in kept[0]
    # A file with a segment the allowlist does not know: the pixels are encoded instead.
    assert SECRET not in kept[1] and len(kept[1]) < len(kept[0])
