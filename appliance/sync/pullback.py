"""Pull back the cloud expert's verdicts and publish them as refinements of the part.

The cloud writes one object per re-analysed part (format `vision.cloud-verdict/1`)::

    {site}/{node}/verdicts/{yyyy}/{mm}/{dd}/{part_id}.json     (the date it was written, UTC)

    {"schema": "vision.cloud-verdict/1", "part_id": "cam1-1764300000000-42",
     "verdict": "fail", "defect_class": "crack", "confidence": 0.97,
     "defects": [{"class": "crack", "confidence": 0.97, "bbox": [10, 20, 60, 90]}],
     "model": {"name": "expert", "version": "3.1", "sha256": "..."}, "ts_ms": 1764300100000}

Each new object (by key and ETag) becomes a new revision of the part: same `part_id`,
`revision` = latest + 1, `tier` = the position of the line's `cloud` tier (or one past the local
tiers), `refinement` = `confirmed` or `changed`, published through the outbox like any result.
The check that the part's latest verdict is final (no local refinement can follow) runs on the
writer thread; the insert carries, in the same transaction, the record that the object was
applied, so a crash never applies it twice and a refused insert is retried at the next pull.
Objects that are malformed or name an unknown part are recorded as rejected and not read again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.config import Settings
from appliance.inference.runtime import Defect
from appliance.results import ModelRef, Verdict, now_ms
from appliance.store.writer import StoreWriter
from appliance.sync.images import day_path
from appliance.sync.meta import get_meta, set_meta_op
from appliance.sync.targets import Target

logger = logging.getLogger(__name__)

VERDICT_SCHEMA = "vision.cloud-verdict/1"
_LOOKBACK_MS = 86_400_000
SINCE_KEY = "sync.verdicts_since_ms"


class CloudDefect(BaseModel):
    """One region the cloud expert found."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    cls: str = Field(alias="class", min_length=1, max_length=64)
    confidence: float = Field(ge=0, le=1)
    bbox: tuple[int, int, int, int]


class CloudModel(BaseModel):
    """The expert model that decided."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=32)
    sha256: str = Field("", max_length=64)


class CloudVerdict(BaseModel):
    """`vision.cloud-verdict/1`: what the cloud writes under verdicts/ (unknown keys ignored)."""

    model_config = ConfigDict(extra="ignore")

    schema_: Literal["vision.cloud-verdict/1"] = Field(alias="schema")
    part_id: str = Field(min_length=1, max_length=200)
    verdict: Literal["pass", "fail"]
    defect_class: str | None = Field(None, max_length=64)
    confidence: float = Field(ge=0, le=1)
    defects: list[CloudDefect] = Field(default_factory=list, max_length=100)
    model: CloudModel
    ts_ms: int | None = None


def verdicts_prefix(site: str, node: str) -> str:
    """Where the cloud writes this node's verdicts."""
    return f"{site}/{node}/verdicts/"


def cloud_tier(settings: Settings, line: str) -> int:
    """The position of the line's cloud tier (1-based), or one past its local tiers."""
    for config in settings.lines:
        if config.id == line:
            names = [t.model for t in config.tiers]
            return names.index("cloud") + 1 if "cloud" in names else len(names) + 1
    return 3


class Puller:
    """Lists new verdict objects, validates them and hands them to the writer as refinements."""

    def __init__(self, settings: Settings, writer: StoreWriter, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.writer = writer
        self.conn = conn
        self.applied = 0
        self.confirmed = 0
        self.changed = 0
        self.rejected = 0
        self.waiting = 0

    def pull(self, target: Target, should_stop: Callable[[], bool]) -> int:
        """One pass over new objects; returns how many were applied."""
        prefix = verdicts_prefix(self.settings.site, self.settings.node_id)
        started = now_ms()
        since = int(get_meta(self.conn, SINCE_KEY) or 0)
        # Day folders sort by date: list from the day before the last complete pass.
        start_after = prefix + day_path(since - _LOOKBACK_MS) if since else ""
        applied = 0
        self.waiting = 0
        for obj in target.list(prefix, start_after):
            if should_stop():
                return applied
            known = self.conn.execute("SELECT etag FROM cloud_verdicts WHERE key = ?", (obj.key,)).fetchone()
            if known is not None and known["etag"] == obj.etag:
                continue
            applied += self._one(target, obj.key, obj.etag)
        self.writer.call(set_meta_op(SINCE_KEY, str(started))).result(timeout=60)
        return applied

    def _one(self, target: Target, key: str, etag: str) -> int:
        body = target.get(key)
        try:
            verdict = CloudVerdict.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            self._reject(key, etag, None, f"malformed: {str(exc)[:300]}")
            return 0
        latest = self.writer.call(_latest_op(verdict.part_id)).result(timeout=60)
        if latest is None:
            self._reject(
                key, etag, verdict.part_id, "unknown part (not from this node, or deleted by retention)"
            )
            return 0
        if latest == "provisional":
            self.waiting += 1  # the ladder still refines it; try again at the next pull
            return 0
        refinement = refinement_verdict(verdict, latest, cloud_tier(self.settings, latest["line"]))
        self.writer.put(refinement, also=_applied_op(key, etag, verdict.part_id, refinement.revision))
        # The put is queued; this call runs after it and tells whether it landed.
        landed = self.writer.call(_status_op(key, etag)).result(timeout=60)
        if landed != "applied":
            return 0
        self.applied += 1
        if refinement.refinement == "changed":
            self.changed += 1
        else:
            self.confirmed += 1
        logger.info(
            "cloud verdict for %s: %s (%s), revision %d",
            verdict.part_id,
            verdict.verdict,
            refinement.refinement,
            refinement.revision,
            extra={"line": refinement.line, "camera": refinement.camera},
        )
        return 1

    def _reject(self, key: str, etag: str, part_id: str | None, why: str) -> None:
        self.rejected += 1
        logger.warning("cloud verdict %s rejected: %s", key, why)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO cloud_verdicts (key, etag, part_id, status, detail, created_ms) "
                "VALUES (?, ?, ?, 'rejected', ?, ?)",
                (key, etag, part_id, why, now_ms()),
            )

        self.writer.call(op).result(timeout=60)

    def health(self) -> dict[str, Any]:
        """Pull-back figures."""
        return {
            "applied": self.applied,
            "confirmed": self.confirmed,
            "changed": self.changed,
            "rejected": self.rejected,
            "waiting_for_local_refinement": self.waiting,
        }


def refinement_verdict(cloud: CloudVerdict, latest: dict[str, Any], tier: int) -> Verdict:
    """The new revision of the part carrying the cloud's answer."""
    failing = cloud.verdict == "fail"
    return Verdict(
        part_id=cloud.part_id,
        revision=int(latest["revision"]) + 1,
        line=latest["line"],
        camera=latest["camera"],
        ts_capture_ms=int(latest["ts_capture_ms"]),
        verdict=cloud.verdict,
        defect_class=(cloud.defect_class or (cloud.defects[0].cls if cloud.defects else "defect"))
        if failing
        else None,
        confidence=cloud.confidence,
        score=cloud.confidence if failing else 1.0 - cloud.confidence,
        tier=tier,
        provisional=False,
        defects=tuple(Defect(d.cls, d.confidence, d.bbox) for d in cloud.defects) if failing else (),
        inference_ms=0.0,
        total_ms=float(max(0, now_ms() - int(latest["ts_capture_ms"]))),
        model=ModelRef(cloud.model.name, cloud.model.version, cloud.model.sha256),
        refinement="confirmed" if cloud.verdict == latest["verdict"] else "changed",
    )


def _latest_op(part_id: str) -> Callable[[sqlite3.Connection], Any]:
    """Writer op: the part's latest row, 'provisional' while the ladder may still refine it."""

    def op(conn: sqlite3.Connection) -> Any:
        row = conn.execute(
            "SELECT revision, line, camera, ts_capture_ms, verdict, provisional FROM results "
            "WHERE part_id = ? ORDER BY revision DESC LIMIT 1",
            (part_id,),
        ).fetchone()
        if row is None:
            return None
        pending = conn.execute("SELECT 1 FROM pending_refinements WHERE part_id = ?", (part_id,)).fetchone()
        if row["provisional"] or pending is not None:
            return "provisional"
        return dict(row)

    return op


def _applied_op(key: str, etag: str, part_id: str, revision: int) -> Callable[[sqlite3.Connection], None]:
    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO cloud_verdicts (key, etag, part_id, status, revision, created_ms) "
            "VALUES (?, ?, ?, 'applied', ?, ?)",
            (key, etag, part_id, revision, now_ms()),
        )

    return op


def _status_op(key: str, etag: str) -> Callable[[sqlite3.Connection], str | None]:
    def op(conn: sqlite3.Connection) -> str | None:
        row = conn.execute(
            "SELECT status FROM cloud_verdicts WHERE key = ? AND etag = ?", (key, etag)
        ).fetchone()
        return None if row is None else str(row["status"])

    return op
