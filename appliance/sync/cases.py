"""Hard cases and labelled parts as cloud objects, within the privacy policy.

One folder per part, its date from the capture time (UTC)::

    {site}/{node}/hard-cases/{yyyy}/{mm}/{dd}/{part_id}/case.json     vision.case/1, written last
                                                      /frame.jpg     policy frames (masked)
                                                      /map.png       policy frames (masked)
                                                      /crop-0.jpg... policy crops (masked)

A part is sent when it has an unsynced `hard_cases` row (uncertain, disputed, sample, class) or
an unsynced operator label. `case.json` holds every revision of the part's result, the reasons
it was selected, the operators' labels (without their names) and the list of images sent with
it; it is rewritten when a new label or reason arrives. Images are immutable objects (same
pixels, masks and quality give the same bytes); `case.json` is written after them, so a
consumer that sees it finds its images.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.config import SyncConfig
from appliance.inference.runtime import Defect
from appliance.results import now_ms
from appliance.sync.images import day_path, kept_map, safe_name
from appliance.sync.privacy import Policy, apply_masks, crop_boxes, crop_defects, encode_jpeg, encode_png

logger = logging.getLogger(__name__)

CASE_SCHEMA = "vision.case/1"


@dataclass
class CaseUpload:
    """Everything to upload for one part, and what to mark synced once it is up."""

    part_id: str
    prefix: str
    objects: list[tuple[str, bytes, str]] = field(default_factory=list)  # images: key, bytes, type
    document: bytes = b""
    hard_case_ids: list[int] = field(default_factory=list)
    label_ids: list[int] = field(default_factory=list)
    image_sent: bool = False

    @property
    def document_key(self) -> str:
        """case.json's key."""
        return self.prefix + "case.json"

    @property
    def bytes(self) -> int:
        """Total bytes to upload."""
        return len(self.document) + sum(len(data) for _, data, _ in self.objects)


def pending_parts(conn: sqlite3.Connection, limit: int) -> list[str]:
    """Parts with an unsynced hard case or label, oldest first."""
    rows = conn.execute(
        "SELECT part_id, MIN(created_ms) AS since FROM ("
        " SELECT part_id, created_ms FROM hard_cases WHERE synced_ms IS NULL"
        " UNION ALL SELECT part_id, created_ms FROM labels WHERE synced_ms IS NULL"
        ") GROUP BY part_id ORDER BY since LIMIT ?",
        (limit,),
    ).fetchall()
    return [row["part_id"] for row in rows]


def build_case(
    conn: sqlite3.Connection, part_id: str, config: SyncConfig, site: str, node: str, images_root: Path
) -> CaseUpload:
    """Read a part's rows and image and build its objects under the policy."""
    policy = Policy(config.policy)
    results = [
        json.loads(row["payload"])
        for row in conn.execute("SELECT payload FROM results WHERE part_id = ? ORDER BY revision", (part_id,))
    ]
    cases = conn.execute(
        "SELECT id, reason, created_ms, line FROM hard_cases WHERE part_id = ? ORDER BY id", (part_id,)
    ).fetchall()
    labels = conn.execute(
        "SELECT id, verdict, defect_class, created_ms FROM labels WHERE part_id = ? ORDER BY id", (part_id,)
    ).fetchall()
    image = conn.execute("SELECT * FROM images WHERE part_id = ?", (part_id,)).fetchone()
    first = results[0] if results else {}
    ts_capture = int(first.get("ts_capture_ms") or (image["ts_capture_ms"] if image else now_ms()))
    camera = first.get("camera") or (image["camera"] if image else None)
    prefix = f"{site}/{node}/hard-cases/{day_path(ts_capture)}/{safe_name(part_id)}/"
    upload = CaseUpload(part_id, prefix)
    upload.hard_case_ids = [int(r["id"]) for r in cases]
    upload.label_ids = [int(r["id"]) for r in labels]
    listed: list[dict[str, Any]] = []
    status = "withheld by policy"
    if policy.images:
        if image is None:
            status = "not kept on the box (or evicted)"
        else:
            status = _add_images(upload, listed, image, results, config, images_root, camera)
    doc = {
        "schema": CASE_SCHEMA,
        "site": site,
        "node": node,
        "part_id": part_id,
        "line": first.get("line") or (cases[0]["line"] if cases else None),
        "camera": camera,
        "ts_capture_ms": ts_capture,
        "reasons": [{"reason": r["reason"], "created_ms": r["created_ms"]} for r in cases],
        "results": results,
        "labels": [
            {"verdict": r["verdict"], "defect_class": r["defect_class"], "created_ms": r["created_ms"]}
            for r in labels
        ],
        "policy": policy.name,
        "images": listed,
        "image_status": status,
        "frame_size": [image["width"], image["height"]] if image is not None else None,
        "masked": bool(config.masks.get(camera or "")) and policy.images,
    }
    upload.document = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode("utf-8")
    return upload


def _add_images(
    upload: CaseUpload,
    listed: list[dict[str, Any]],
    image: sqlite3.Row,
    results: list[dict[str, Any]],
    config: SyncConfig,
    root: Path,
    camera: str | None,
) -> str:
    frame = cv2.imread(str(root / image["path"]), cv2.IMREAD_UNCHANGED)
    if frame is None:
        return "image file missing on the box"
    rects = config.masks.get(camera or "", [])
    masked = apply_masks(frame, rects) if rects else frame
    quality = config.images.jpeg_quality
    defect_map = kept_map(image, root)
    if Policy(config.policy).frames:
        # Without masks the kept JPEG goes as it is (no second lossy encoding).
        data = encode_jpeg(masked, quality) if rects else (root / image["path"]).read_bytes()
        upload.objects.append((upload.prefix + "frame.jpg", data, "image/jpeg"))
        listed.append({"name": "frame.jpg", "kind": "frame", "box": [0, 0, frame.shape[1], frame.shape[0]]})
        if defect_map is not None:
            scale = (defect_map.shape[1] / frame.shape[1], defect_map.shape[0] / frame.shape[0])
            masked_map = apply_masks(defect_map, rects, scale=scale) if rects else defect_map
            upload.objects.append((upload.prefix + "map.png", encode_png(masked_map), "image/png"))
            listed.append(
                {"name": "map.png", "kind": "map", "size": [defect_map.shape[1], defect_map.shape[0]]}
            )
        upload.image_sent = True
        return "sent"
    defects = _defects(results)
    regions = crop_defects(
        defects, None if defect_map is None else defect_map.astype(np.float32) / 255.0, frame.shape
    )
    boxes = crop_boxes(
        frame.shape,
        regions,
        margin=config.crop_margin,
        min_px=config.crop_min_px,
        max_fraction=config.crop_max_fraction,
    )
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        name = f"crop-{index}.jpg"
        crop = np.ascontiguousarray(masked[y1:y2, x1:x2])
        upload.objects.append((upload.prefix + name, encode_jpeg(crop, quality), "image/jpeg"))
        listed.append({"name": name, "kind": "crop", "box": [x1, y1, x2, y2]})
    upload.image_sent = True
    return "sent" if boxes else "no defect region to crop"


def _defects(results: list[dict[str, Any]]) -> tuple[Defect, ...]:
    """Every region any revision flagged, strongest first, without repeats."""
    seen: dict[tuple[int, ...], Defect] = {}
    for payload in results:
        for d in payload.get("defects") or []:
            box = tuple(int(v) for v in d["bbox"])
            if len(box) == 4 and box not in seen:
                seen[box] = Defect(d["class"], float(d["confidence"]), (box[0], box[1], box[2], box[3]))
    return tuple(sorted(seen.values(), key=lambda d: -d.confidence))


def commit_op(upload: CaseUpload) -> Callable[[sqlite3.Connection], None]:
    """The writer op marking the rows read for this upload as synced (later ones stay pending)."""

    def op(conn: sqlite3.Connection) -> None:
        synced = now_ms()
        conn.executemany(
            "UPDATE hard_cases SET synced_ms = ? WHERE id = ? AND synced_ms IS NULL",
            [(synced, i) for i in upload.hard_case_ids],
        )
        conn.executemany(
            "UPDATE labels SET synced_ms = ? WHERE id = ? AND synced_ms IS NULL",
            [(synced, i) for i in upload.label_ids],
        )
        if upload.image_sent:
            conn.execute(
                "UPDATE images SET synced_ms = ? WHERE part_id = ? AND synced_ms IS NULL",
                (synced, upload.part_id),
            )

    return op
