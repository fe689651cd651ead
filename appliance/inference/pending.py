"""Deferred escalations on disk: the frame as PNG and a row, committed with the provisional verdict."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import cv2

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
        return self.folder / f"{part_id}.png"

    def save_op(self, escalation: Escalation) -> Callable[[sqlite3.Connection], None]:
        """Write the image now; return the op that records the row in the verdict's transaction."""
        frame, last = escalation.frame, escalation.last
        path = self._path(frame.part_id)
        if not path.exists():
            # Lossless and fast: the later tier must see exactly what the first one saw.
            cv2.imwrite(str(path), frame.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])

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
                    path.name,
                    now_ms(),
                ),
            )

        return op

    def delete_op(self, part_id: str) -> Callable[[sqlite3.Connection], None]:
        """The op that forgets a resolved escalation (row and image)."""
        path = self._path(part_id)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM pending_refinements WHERE part_id = ?", (part_id,))
            path.unlink(missing_ok=True)

        return op

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
            image = cv2.imread(str(self.folder / row["image_path"]), cv2.IMREAD_UNCHANGED)
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
    )
