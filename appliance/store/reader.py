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

    def recent_results(
        self,
        limit: int = 50,
        *,
        line: str | None = None,
        verdict: str | None = None,
        defect_class: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[dict[str, Any]]:
        """Result payloads, newest first, filtered."""
        where: list[str] = []
        params: list[str | int] = []
        for column, value in (("line", line), ("verdict", verdict), ("defect_class", defect_class)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since_ms is not None:
            where.append("ts_capture_ms >= ?")
            params.append(since_ms)
        if until_ms is not None:
            where.append("ts_capture_ms < ?")
            params.append(until_ms)
        sql = "SELECT payload, published_ms FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [_payload(row) for row in self.conn().execute(sql, params)]

    def part_history(self, part_id: str) -> list[dict[str, Any]]:
        """Every revision of one part, oldest first."""
        rows = self.conn().execute(
            "SELECT payload, published_ms FROM results WHERE part_id = ? ORDER BY revision", (part_id,)
        )
        return [_payload(row) for row in rows]

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


def _payload(row: sqlite3.Row) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(row["payload"])
    if payload.get("ts_publish_ms") is None and row["published_ms"] is not None:
        payload["ts_publish_ms"] = row["published_ms"]
    return payload
