"""The console's reads (results pages, review queue, labels, outbox) and its label write."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from appliance import audit
from appliance.results import now_ms
from appliance.store.reader import payload as payload  # re-exported: the API builds on the store's
from appliance.store.reader import results as results

_OUTBOX_COUNT_CAP = 100_000  # counting more would cost a scrape too much; reported as ">="


def latest(conn: sqlite3.Connection, part_id: str) -> dict[str, Any] | None:
    """The part's latest revision, or None."""
    row = conn.execute(
        "SELECT payload, published_ms FROM results WHERE part_id = ? ORDER BY revision DESC LIMIT 1",
        (part_id,),
    ).fetchone()
    return payload(row) if row else None


def review_queue(
    conn: sqlite3.Connection, *, limit: int = 20, line: str | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """Hard cases nobody has labelled yet, newest first, one entry per part."""
    rows = conn.execute(
        "SELECT MIN(h.id) AS id, h.part_id, h.line, GROUP_CONCAT(h.reason, ',') AS reasons, "
        "MAX(h.created_ms) AS created_ms FROM hard_cases h "
        "WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.part_id = h.part_id) AND (? IS NULL OR h.line = ?) "
        "GROUP BY h.part_id ORDER BY created_ms DESC, id DESC LIMIT ? OFFSET ?",
        (line, line, limit, offset),
    ).fetchall()
    return [
        {
            "id": row["id"],
            "part_id": row["part_id"],
            "line": row["line"],
            "reasons": sorted(set(row["reasons"].split(","))),
            "created_ms": row["created_ms"],
            "result": latest(conn, row["part_id"]),
        }
        for row in rows
    ]


def review_pending(conn: sqlite3.Connection, line: str | None = None) -> int:
    """Parts waiting in the review queue."""
    row = conn.execute(
        "SELECT COUNT(DISTINCT part_id) FROM hard_cases h "
        "WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.part_id = h.part_id) AND (? IS NULL OR h.line = ?)",
        (line, line),
    ).fetchone()
    return int(row[0])


def labels_of(conn: sqlite3.Connection, part_id: str) -> list[dict[str, Any]]:
    """Operator labels of a part, oldest first."""
    rows = conn.execute(
        "SELECT id, part_id, verdict, defect_class, user, created_ms, synced_ms FROM labels "
        "WHERE part_id = ? ORDER BY id",
        (part_id,),
    )
    return [dict(row) for row in rows]


def label_op(
    part_id: str, verdict: str, defect_class: str | None, actor: audit.Actor
) -> Callable[[sqlite3.Connection], dict[str, Any]]:
    """An op storing an operator's label; a label that disagrees with the machine is a dispute.

    A dispute also enters `hard_cases` (reason `disputed`), so that the part is synced as
    training data and re-checked in the cloud. Raises LookupError for an unknown part.
    """

    def op(conn: sqlite3.Connection) -> dict[str, Any]:
        machine = conn.execute(
            "SELECT line, verdict, defect_class FROM results WHERE part_id = ? "
            "ORDER BY revision DESC LIMIT 1",
            (part_id,),
        ).fetchone()
        if machine is None:
            raise LookupError(f"no result for part {part_id}")
        now = now_ms()
        cursor = conn.execute(
            "INSERT INTO labels (part_id, verdict, defect_class, user, created_ms) VALUES (?, ?, ?, ?, ?)",
            (part_id, verdict, defect_class, actor.name, now),
        )
        disputed = machine["verdict"] != verdict or (
            verdict == "fail"
            and defect_class is not None
            and machine["defect_class"] not in (None, "defect", defect_class)
        )
        if disputed:
            conn.execute(
                "INSERT OR IGNORE INTO hard_cases (part_id, line, reason, created_ms) "
                "VALUES (?, ?, 'disputed', ?)",
                (part_id, machine["line"], now),
            )
        details = {
            "verdict": verdict,
            "defect_class": defect_class,
            "machine_verdict": machine["verdict"],
            "machine_class": machine["defect_class"],
            "disputed": disputed,
        }
        audit.record(conn, actor, "label", "ok", target=part_id, details=details)
        return {
            "id": cursor.lastrowid,
            "part_id": part_id,
            "verdict": verdict,
            "defect_class": defect_class,
            "user": actor.name,
            "created_ms": now,
            "disputed": disputed,
            "machine_verdict": machine["verdict"],
        }

    return op


def outbox(conn: sqlite3.Connection) -> dict[str, Any]:
    """Results not yet acknowledged by the broker: count (capped) and the oldest one's age."""
    count = conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM results WHERE published_ms IS NULL LIMIT ?)",
        (_OUTBOX_COUNT_CAP,),
    ).fetchone()[0]
    oldest = conn.execute(
        "SELECT created_ms FROM results WHERE published_ms IS NULL ORDER BY seq LIMIT 1"
    ).fetchone()
    return {
        "unpublished": int(count),
        "unpublished_capped": count >= _OUTBOX_COUNT_CAP,
        "oldest_unpublished_age_s": round((now_ms() - oldest[0]) / 1000, 1) if oldest else None,
    }
