"""Frames kept on disk at capture time, within a disk budget: the writer of the `images` table.

Frames are JPEG (a frame read from a JPEG file is kept as that file, less its metadata,
thumbnails and trailers: no second lossy encoding, no encoding cost) under
``<state_dir>/images/yyyy/mm/dd/<line>/`` (paths in the table are relative to
``<state_dir>/images``). A defect map is an 8-bit PNG in the frame's row (`map_png`): a few
hundred bytes that mean nothing without the row, committed with it, and one file fewer per
kept part (creating a file is most of the keeper's cost; rows kept before have a `map_path`
file).
When the budget or the age limit is exceeded, images go in this order, oldest first within
each class:

1. already synced (their pixels, as far as the policy allows, are in the cloud);
2. never due for sync (not a hard case or labelled, or the policy sends no pixels): counted;
3. due but not yet synced: counted **and alarmed** on the event bus; the case is still sent,
   without its image. Nothing is ever evicted silently.

Eviction deletes rows (through the writer) before files, so a row never points at a file that
is gone; a crash in between leaves at most an orphan file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.config import ImagesConfig
from appliance.events import EventBus
from appliance.results import Frame, Verdict, now_ms
from appliance.sync.privacy import encode_jpeg, encode_png
from hardware.sources.jpeg import without_metadata

logger = logging.getLogger(__name__)

ALARM_KEY = "sync:images_evicted_unsynced"
_EVICT_CHUNK = 500
_ALARM_QUIET_S = 3600.0


@dataclass(frozen=True, slots=True)
class SavedImage:
    """A frame written to disk, waiting for its row."""

    part_id: str
    line: str
    camera: str
    ts_capture_ms: int
    path: str
    map_png: bytes | None
    width: int
    height: int
    bytes: int
    reason: str
    created_ms: int


def safe_name(part_id: str) -> str:
    """A part id as a file/key name: anything outside [A-Za-z0-9_.-] becomes '_'."""
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in part_id)[:120]
    return cleaned.lstrip(".") or "part"


def day_path(ts_ms: int) -> str:
    """yyyy/mm/dd of a Unix-ms timestamp, UTC."""
    t = time.gmtime(ts_ms / 1000)
    return f"{t.tm_year:04d}/{t.tm_mon:02d}/{t.tm_mday:02d}"


def map_to_png(defect_map: np.ndarray) -> bytes:
    """A defect map in [0, 1] as an 8-bit PNG."""
    scaled = np.clip(np.asarray(defect_map, np.float32), 0.0, 1.0) * 255.0
    return encode_png(scaled.round().astype(np.uint8))


def png_to_map(data: bytes) -> np.ndarray | None:
    """The 8-bit map of `map_to_png` (None: not a PNG it can read)."""
    decoded: np.ndarray | None = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    return decoded


def kept_map(row: sqlite3.Row, root: Path) -> np.ndarray | None:
    """An `images` row's defect map as 8-bit grayscale: from the row, or from the file of a row
    kept before maps moved into the rows (None: no map, or unreadable)."""
    if row["map_png"]:
        return png_to_map(row["map_png"])
    if row["map_path"]:
        return cv2.imread(str(root / row["map_path"]), cv2.IMREAD_GRAYSCALE)
    return None


class ImageStore:
    """Writes frames and maps, accounts their bytes and evicts by budget and age."""

    def __init__(self, root: Path, config: ImagesConfig, events: EventBus) -> None:
        self.root = root
        self.config = config
        self.events = events
        self.bytes_total = 0
        self.count = 0
        self.saved = 0
        self.write_errors = 0
        self.already_kept = 0
        self.evicted_synced = 0
        self.evicted_local = 0
        self.evicted_unsynced = 0
        self.last_error: str | None = None
        self._last_unsynced_eviction = 0.0

    @property
    def budget_bytes(self) -> int:
        """The disk budget in bytes."""
        return self.config.budget_mb * 1_000_000

    def load(self, conn: sqlite3.Connection) -> None:
        """Start from what the table already holds."""
        self.root.mkdir(parents=True, exist_ok=True)
        count, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM images").fetchone()
        self.count, self.bytes_total = int(count), int(total)

    # --- saving ---------------------------------------------------------------------------

    def save(self, frame: Frame, verdict: Verdict, reason: str) -> SavedImage | None:
        """Encode and write the frame, encode the map for the row; None when the disk refuses
        (counted)."""
        rel = f"{day_path(frame.ts_capture_ms)}/{safe_name(frame.line)}/{safe_name(frame.part_id)}.jpg"
        try:
            map_png = map_to_png(verdict.defect_map) if verdict.defect_map is not None else None
            # A frame read from a JPEG file is kept as that file, less its metadata (None: it
            # holds something the allowlist does not know, so the pixels are encoded).
            data = without_metadata(frame.encoded) if frame.encoded else None
            data = data or encode_jpeg(frame.image, self.config.jpeg_quality)
            # The frame's file is created exclusively: a part kept before (e.g. before a
            # restart, then refined) keeps its file and row; this second copy is not written.
            written = self._create(rel, data)
        except FileExistsError:
            self.already_kept += 1
            return None
        except (OSError, ValueError) as exc:
            self.write_errors += 1
            self.last_error = f"{rel}: {exc}"
            logger.warning(
                "cannot keep image %s: %s", rel, exc, extra={"line": frame.line, "camera": frame.camera}
            )
            return None
        self.last_error = None
        height, width = frame.image.shape[:2]
        return SavedImage(
            part_id=frame.part_id,
            line=frame.line,
            camera=frame.camera,
            ts_capture_ms=frame.ts_capture_ms,
            path=rel,
            map_png=map_png,
            width=int(width),
            height=int(height),
            bytes=written + len(map_png or b""),
            reason=reason,
            created_ms=now_ms(),
        )

    def _create(self, rel: str, data: bytes) -> int:
        # One open/write/close: creating the file is most of the keeper's cost. No
        # temp-and-rename: the row that makes the file visible commits only after the write
        # returned (a failed write removes its file: none stays behind without a row), and
        # neither way survives a power cut without fsync.
        path = os.path.join(self.root, rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(path, flags, 0o640)
        except FileNotFoundError:  # the first image of a day or line
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            os.close(fd)
            self._unlink(rel)
            raise
        os.close(fd)
        return len(data)

    def insert_op(self, saved: SavedImage) -> Callable[[sqlite3.Connection], bool]:
        """The op recording `saved` (ignored when the part already has an image)."""

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO images (part_id, line, camera, ts_capture_ms, path, map_png, "
                "width, height, bytes, reason, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    saved.part_id,
                    saved.line,
                    saved.camera,
                    saved.ts_capture_ms,
                    saved.path,
                    saved.map_png,
                    saved.width,
                    saved.height,
                    saved.bytes,
                    saved.reason,
                    saved.created_ms,
                ),
            )
            return cursor.rowcount == 1

        return op

    def committed(self, saved: SavedImage, inserted: bool) -> None:
        """Account for a saved image once its row committed (or drop the duplicate files)."""
        if inserted:
            self.saved += 1
            self.count += 1
            self.bytes_total += saved.bytes
        else:
            self._unlink(saved.path)

    # --- eviction -------------------------------------------------------------------------

    def needs_eviction(self) -> bool:
        """Over budget?"""
        return self.bytes_total > self.budget_bytes

    def evict(
        self,
        conn: sqlite3.Connection,
        call: Callable[[Callable[[sqlite3.Connection], Any]], Future[Any]],
        *,
        pixels_leave: bool,
    ) -> int:
        """Evict what is too old, then what is over budget (down to 95%); returns the count.

        `pixels_leave`: whether the policy sends images at all (else no image is ever due).
        """
        cutoff = now_ms() - int(self.config.max_age_days * 86_400_000)
        doomed = _rows(conn, "old", pixels_leave, cutoff)
        target = int(self.budget_bytes * 0.95)
        excess = self.bytes_total - sum(r["bytes"] for r in doomed) - target
        if self.bytes_total > self.budget_bytes and excess > 0:
            chosen = {r["part_id"] for r in doomed}
            for row in _rows(conn, "all", pixels_leave):
                if excess <= 0:
                    break
                if row["part_id"] not in chosen:
                    doomed.append(row)
                    excess -= row["bytes"]
        if not doomed:
            return 0
        parts = [r["part_id"] for r in doomed]

        def op(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM images WHERE part_id = ?", [(p,) for p in parts])

        call(op).result(timeout=60)
        for row in doomed:
            self._unlink(row["path"], row["map_path"])
            self.bytes_total -= row["bytes"]
            self.count -= 1
        by_class = [sum(1 for r in doomed if r["class"] == k) for k in (0, 1, 2)]
        self.evicted_synced += by_class[0]
        self.evicted_local += by_class[1]
        self.evicted_unsynced += by_class[2]
        logger.info(
            "evicted %d image(s): %d synced, %d never due, %d NOT YET SYNCED",
            len(doomed),
            *by_class,
        )
        if by_class[2]:
            self._last_unsynced_eviction = time.monotonic()
            self.events.raise_alarm(
                ALARM_KEY,
                "images_evicted_unsynced",
                f"{by_class[2]} image(s) due for the cloud were evicted before upload "
                "(image budget or age limit reached while the uplink lagged)",
                count=by_class[2],
            )
        return len(doomed)

    def maybe_clear_alarm(self) -> None:
        """Clear the eviction alarm after an hour without unsynced evictions."""
        if self._last_unsynced_eviction and time.monotonic() - self._last_unsynced_eviction > _ALARM_QUIET_S:
            self._last_unsynced_eviction = 0.0
            self.events.clear_alarm(
                ALARM_KEY, "images_evicted_unsynced_cleared", "no more unsynced images evicted"
            )

    def _unlink(self, *rels: str | None) -> None:
        for rel in rels:
            if rel:
                try:
                    (self.root / rel).unlink(missing_ok=True)
                except OSError as exc:
                    logger.warning("cannot delete image %s: %s", rel, exc)

    def health(self) -> dict[str, Any]:
        """Image retention figures."""
        return {
            "count": self.count,
            "mb": round(self.bytes_total / 1e6, 2),
            "budget_mb": self.config.budget_mb,
            "saved": self.saved,
            "write_errors": self.write_errors,
            "already_kept": self.already_kept,
            "evicted_synced": self.evicted_synced,
            "evicted_never_due": self.evicted_local,
            "evicted_unsynced": self.evicted_unsynced,
        }


_CLASSED = """
    SELECT i.part_id, i.path, i.map_path, i.bytes, i.created_ms,
        CASE WHEN i.synced_ms IS NOT NULL THEN 0
             WHEN :leave AND (EXISTS (SELECT 1 FROM hard_cases h WHERE h.part_id = i.part_id)
                              OR EXISTS (SELECT 1 FROM labels l WHERE l.part_id = i.part_id)) THEN 2
             ELSE 1 END AS class
    FROM images i
"""
_QUERIES = {
    "old": f"{_CLASSED} WHERE i.created_ms < :cutoff ORDER BY i.created_ms LIMIT {_EVICT_CHUNK}",
    "all": f"{_CLASSED} ORDER BY class, i.created_ms LIMIT {_EVICT_CHUNK}",
}


def _rows(conn: sqlite3.Connection, which: str, pixels_leave: bool, cutoff: int = 0) -> list[dict[str, Any]]:
    """Image rows with their eviction class: 0 synced, 1 never due, 2 due but unsynced."""
    params = {"leave": int(pixels_leave), "cutoff": cutoff}
    return [dict(row) for row in conn.execute(_QUERIES[which], params)]
