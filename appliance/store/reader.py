"""Read-side queries for the API and console: one read-only connection per thread."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from appliance.store.db import connect


class Reader:
    """Thread-local read connections to the outbox (WAL: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
        return conn

    def recent_results(self, limit: int = 50, **filters: Any) -> list[dict[str, Any]]:
        """Result payloads, newest first, filtered (see `results`)."""
        return results(self.conn(), limit=limit, **filters)

    def part_history(self, part_id: str) -> list[dict[str, Any]]:
        """Every revision of one part, oldest first."""
        rows = self.conn().execute(
            "SELECT payload, published_ms FROM results WHERE part_id = ? ORDER BY revision", (part_id,)
        )
        return [payload(row) for row in rows]

    def seq_range(self) -> tuple[int, int] | None:
        """(lowest, highest) seq held."""
        low, high = self.conn().execute("SELECT MIN(seq), MAX(seq) FROM results").fetchone()
        return None if low is None else (low, high)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def results(
    conn: sqlite3.Connection,
    *,
    limit: int = 50,
    before_seq: int | None = None,
    line: str | None = None,
    verdict: str | None = None,
    defect_class: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Result payloads, newest first, filtered; `before_seq` pages back."""
    where: list[str] = []
    params: list[str | int] = []
    for column, value in (("line", line), ("verdict", verdict), ("defect_class", defect_class)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    for clause, bound in (
        ("seq < ?", before_seq),
        ("ts_capture_ms >= ?", since_ms),
        ("ts_capture_ms < ?", until_ms),
    ):
        if bound is not None:
            where.append(clause)
            params.append(bound)
    sql = "SELECT payload, published_ms FROM results"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    params.append(limit)
    return [payload(row) for row in conn.execute(sql, params)]


def payload(row: sqlite3.Row) -> dict[str, Any]:
    """The stored result payload with the publish time filled in once known."""
    data: dict[str, Any] = json.loads(row["payload"])
    if data.get("ts_publish_ms") is None and row["published_ms"] is not None:
        data["ts_publish_ms"] = row["published_ms"]
    return data
