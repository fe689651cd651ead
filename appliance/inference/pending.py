"""Deferred escalations on disk: the raw frame (.npy) and a row, committed with the provisional verdict."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
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
    """Saves and restores the ladder's backlog under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, part_id: str) -> Path:
        # Raw .npy, not PNG: no compression on the inference thread (PNG cost ~10x more per
        # frame), and a frame is kept only until its refinement. Rows written by older
        # releases name .png files, which `load` still reads.
        return self.folder / f"{part_id}.npy"

    def save_op(self, escalation: Escalation) -> Callable[[sqlite3.Connection], None]:
        """The op that records the escalation in the provisional verdict's own transaction.

        Only the row: the image is written after the verdict has gone out (`write_image`), so the
        line never waits for the file. A crash in between leaves a row without its image, which the
        restart closes as `unrefined`.
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

    def write_image(self, escalation: Escalation) -> None:
        """Keep the frame for a refinement after a restart (lossless: the later tier must see
        exactly what the first one saw)."""
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
        except (OSError, ValueError) as exc:
            temp.unlink(missing_ok=True)
            logger.error(
                "cannot keep the frame of part %s for its refinement: %s", escalation.frame.part_id, exc
            )

    def delete_op(self, part_id: str) -> Callable[[sqlite3.Connection], None]:
        """The op that forgets a resolved escalation's row (`discard` removes its image)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM pending_refinements WHERE part_id = ?", (part_id,))

        return op

    def discard(self, part_id: str) -> None:
        """Remove a resolved escalation's image (after its final verdict went out)."""
        try:
            self._path(part_id).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("cannot remove the kept frame of part %s: %s", part_id, exc)

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
