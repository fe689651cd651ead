"""Deferred escalations on disk: the raw frame (.npy) and a row, committed with the provisional verdict."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from appliance.inference.ladder import Escalation
from appliance.inference.runtime import Defect
from appliance.results import Frame, ModelRef, Verdict, now_ms

logger = logging.getLogger(__name__)


class PendingRefinements:
    """Saves and restores the ladder's backlog under `folder`.

    With `hold_ms` > 0 a deferred frame first waits in memory: most refinements follow within
    milliseconds, and a frame refined before `hold_ms` never touches the disk. Frames still
    waiting after `hold_ms` are written by a background thread (`start`), and `stop` writes
    every frame still held. A kill within `hold_ms` of a deferral leaves the row without its
    image, which the restart closes as `unrefined` (never left open).
    """

    def __init__(self, folder: Path, hold_ms: float = 0.0) -> None:
        self.folder = folder
        self.hold_s = max(0.0, hold_ms) / 1000.0
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Condition()
        self._held: dict[str, tuple[float, Escalation]] = {}  # insertion order = deferral order
        self._writing: set[str] = set()
        self._discarded_while_writing: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: Frames written to disk, and frames refined (or closed) before they had to be.
        self.written = 0
        self.never_written = 0
        self.write_failed = 0

    def _path(self, part_id: str) -> Path:
        # Raw .npy, not PNG: no compression on the inference thread (PNG cost ~10x more per
        # frame), and a frame is kept only until its refinement. Rows written by older
        # releases name .png files, which `load` still reads.
        return self.folder / f"{part_id}.npy"

    def save_op(self, escalation: Escalation) -> Callable[[sqlite3.Connection], None]:
        """The op that records the escalation in the provisional verdict's own transaction.

        Only the row: the image is kept after the verdict has gone out (`keep_image`), so the
        line never waits for the file. A crash before the file is written leaves a row without
        its image, which the restart closes as `unrefined`.
        """
        frame, last = escalation.frame, escalation.last
        name = self._path(frame.part_id).name

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO pending_refinements (part_id, line, camera, frame_index, "
                "ts_capture_ms, next_tier, revision, verdict, score, image_path, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    frame.part_id,
                    frame.line,
                    frame.camera,
                    frame.index,
                    frame.ts_capture_ms,
                    escalation.next_tier,
                    last.revision,
                    last.verdict,
                    last.score,
                    name,
                    now_ms(),
                ),
            )

        return op

    def keep_image(self, escalation: Escalation) -> None:
        """Keep the frame for a refinement after a restart: on disk at once without a hold,
        else in memory until `hold_ms` has passed."""
        with self._lock:
            # Decided under the lock: a frame handed in while `stop` runs is written, not held.
            hold = self.hold_s > 0 and self._thread is not None and not self._stopping
            if hold:
                first = not self._held
                self._held[escalation.frame.part_id] = (time.monotonic() + self.hold_s, escalation)
                if first:
                    self._lock.notify()
        if not hold:
            self._write(escalation)

    def _write(self, escalation: Escalation) -> None:
        """The frame as .npy (lossless: the later tier must see exactly what the first one saw)."""
        path = self._path(escalation.frame.part_id)
        if path.exists():
            return
        # Under a temporary name until complete: a full disk must not leave a short file under
        # the real name (which `exists` would then take for done).
        temp = path.with_name(f".{path.name}.tmp")
        try:
            with open(temp, "wb") as f:
                np.save(f, np.ascontiguousarray(escalation.frame.image), allow_pickle=False)
            os.replace(temp, path)
            with self._lock:
                self.written += 1
        except (OSError, ValueError) as exc:
            temp.unlink(missing_ok=True)
            with self._lock:
                self.write_failed += 1
            logger.error(
                "cannot keep the frame of part %s for its refinement: %s", escalation.frame.part_id, exc
            )

    def start(self) -> None:
        """Start the thread that writes frames held longer than `hold_ms` (no-op without a hold)."""
        self._stopping = False
        if self.hold_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pending-frames", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write every frame still held (their refinements happen after the next start)."""
        with self._lock:
            thread = self._thread
            self._stopping = True
            self._lock.notify()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # a hung disk: the frames still held close unrefined at restart
                logger.error("kept frames still being written after %.0f s at stop", timeout)
                return
        with self._lock:
            self._thread = None
            rest = [escalation for _, escalation in self._held.values()]
            self._held.clear()
        for escalation in rest:
            self._write(escalation)

    def _run(self) -> None:
        while True:
            with self._lock:
                due = self._due_or_wait()
                if due is None:
                    return
                self._writing.update(e.frame.part_id for e in due)
            for escalation in due:
                try:
                    self._write(escalation)
                except Exception:  # thread boundary: one frame must not stop the writing of others
                    logger.exception("writing a kept frame failed")
            with self._lock:
                resolved = [e.frame.part_id for e in due if e.frame.part_id in self._discarded_while_writing]
                self._writing.difference_update(e.frame.part_id for e in due)
                self._discarded_while_writing.difference_update(resolved)
            for part_id in resolved:  # refined while its frame was being written
                self._unlink(part_id)

    def _due_or_wait(self) -> list[Escalation] | None:
        """Under the lock: the held frames past their hold, waiting until there are some."""
        while not self._stopping:
            now = time.monotonic()
            due = []
            while self._held:
                part_id, (when, escalation) = next(iter(self._held.items()))
                if when > now:
                    break
                del self._held[part_id]
                due.append(escalation)
            if due:
                return due
            # Nothing due: sleep until the oldest held frame is (or until one is held).
            self._lock.wait(next(iter(self._held.values()))[0] - now if self._held else None)
        return None

    def delete_op(self, part_id: str) -> Callable[[sqlite3.Connection], None]:
        """The op that forgets a resolved escalation's row (`discard` removes its image)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM pending_refinements WHERE part_id = ?", (part_id,))

        return op

    def discard(self, part_id: str) -> None:
        """Forget a resolved escalation's frame (after its final verdict went out)."""
        with self._lock:
            if self._held.pop(part_id, None) is not None:
                self.never_written += 1
                return
            if part_id in self._writing:
                self._discarded_while_writing.add(part_id)
                return
        self._unlink(part_id)

    def _unlink(self, part_id: str) -> None:
        try:
            self._path(part_id).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("cannot remove the kept frame of part %s: %s", part_id, exc)

    def health(self) -> dict[str, int]:
        """Deferred frames held in memory, written to disk, and refined before they had to be."""
        return {
            "held": len(self._held),
            "written": self.written,
            "never_written": self.never_written,
            "write_failed": self.write_failed,
        }

    def sweep(self, conn: sqlite3.Connection) -> int:
        """Remove kept frames no escalation refers to any more (left by a crash); how many."""
        wanted = {row[0] for row in conn.execute("SELECT image_path FROM pending_refinements")}
        removed = 0
        for path in [*self.folder.glob("*.npy"), *self.folder.glob("*.png"), *self.folder.glob(".*.tmp")]:
            if path.name not in wanted:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def load(self, conn: sqlite3.Connection) -> tuple[list[Escalation], list[Verdict]]:
        """Escalations persisted before a restart, oldest first; and verdicts whose image is gone."""
        rows = conn.execute(
            "SELECT p.*, r.payload FROM pending_refinements p JOIN results r "
            "ON r.part_id = p.part_id AND r.revision = p.revision ORDER BY p.ts_capture_ms"
        ).fetchall()
        restored: list[Escalation] = []
        orphans: list[Verdict] = []
        for row in rows:
            last = verdict_from_payload(row["payload"])
            image = _read_frame(self.folder / row["image_path"])
            if image is None:
                logger.warning(
                    "pending image %s is missing; finalizing part %s as it stands",
                    row["image_path"],
                    row["part_id"],
                )
                orphans.append(last)
                continue
            frame = Frame(
                line=row["line"],
                camera=row["camera"],
                part_id=row["part_id"],
                index=row["frame_index"],
                ts_capture_ms=row["ts_capture_ms"],
                # Aged by wall clock so that latencies stay honest across the restart.
                t_capture=time.monotonic() - max(0, now_ms() - row["ts_capture_ms"]) / 1000.0,
                image=image,
            )
            restored.append(Escalation(frame, row["next_tier"], last))
        return restored, orphans


def _read_frame(path: Path) -> np.ndarray | None:
    """A kept frame, or None when it is missing or unreadable."""
    if path.suffix != ".npy":
        image: np.ndarray | None = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        return image
    try:
        loaded: np.ndarray = np.load(path, allow_pickle=False)
        return loaded
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file (power cut)
        logger.warning("pending image %s is unreadable: %s", path.name, exc)
        return None


def verdict_from_payload(payload: str) -> Verdict:
    """Rebuild a Verdict from its stored `vision.result/1` payload."""
    p = json.loads(payload)
    model = p.get("model")
    return Verdict(
        part_id=p["part_id"],
        revision=p["revision"],
        line=p["line"],
        camera=p["camera"],
        ts_capture_ms=p["ts_capture_ms"],
        verdict=p["verdict"],
        defect_class=p["defect_class"],
        confidence=p["confidence"],
        score=p.get("score", p["confidence"]),
        tier=p["tier"],
        provisional=p["provisional"],
        defects=tuple(Defect(d["class"], d["confidence"], tuple(d["bbox"])) for d in p["defects"]),
        inference_ms=p["latency_ms"]["inference"],
        total_ms=p["latency_ms"]["total"],
        model=ModelRef(**model) if model else None,
        p_defect=p.get("p_defect"),
    )
