"""The audit log: who did what, when, from where, and with what result.

Logins (good and bad), logouts and every change (configuration, users, labels, model actions,
commands) get one row. Rows are written inside the same transaction as the change they
describe (`record` runs on the caller's connection, normally on the store's writer thread), so
the log never claims a change that did not commit, nor misses one that did.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from appliance.results import now_ms

Result = Literal["ok", "denied", "invalid", "failed"]
ActorKind = Literal["user", "token", "cli", "system", "anonymous"]
_DETAILS_MAX = 20_000
KEEP_DAYS = 400  # over a year: audits ask about last year


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted and from where (an address, or 'cli'/'mqtt' for local channels)."""

    name: str
    kind: ActorKind
    address: str | None = None


def record(
    conn: sqlite3.Connection,
    actor: Actor,
    action: str,
    result: Result,
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry (inside the caller's transaction)."""
    text = None
    if details:
        text = json.dumps(details, default=str, ensure_ascii=True)
        if len(text) > _DETAILS_MAX:
            text = json.dumps({"truncated": text[:_DETAILS_MAX]}, ensure_ascii=True)
    conn.execute(
        "INSERT INTO audit (ts_ms, actor, actor_kind, action, target, result, address, details) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now_ms(),
            _clean(actor.name, 64),
            actor.kind,
            action,
            _clean(target, 200),
            result,
            _clean(actor.address, 64),
            text,
        ),
    )


def entries(
    conn: sqlite3.Connection,
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    result: str | None = None,
) -> list[dict[str, Any]]:
    """Entries newest first, filtered; `before_id` pages back."""
    where: list[str] = []
    params: list[str | int] = []
    for column, value in (("action", action), ("actor", actor), ("result", result)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    sql = "SELECT id, ts_ms, actor, actor_kind, action, target, result, address, details FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    out = []
    for row in conn.execute(sql, params):
        entry = dict(row)
        entry["details"] = json.loads(row["details"]) if row["details"] else None
        out.append(entry)
    return out


def prune(conn: sqlite3.Connection, keep_days: float = KEEP_DAYS) -> int:
    """Drop entries older than `keep_days` (inside the caller's transaction)."""
    cutoff = now_ms() - int(keep_days * 86_400_000)
    return conn.execute("DELETE FROM audit WHERE ts_ms < ?", (cutoff,)).rowcount


def _clean(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]
