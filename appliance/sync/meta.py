"""Small persistent sync state in the `meta` table (cursors, this store's id)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable

STORE_ID = "sync.store_id"


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """A meta value, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta_op(key: str, value: str) -> Callable[[sqlite3.Connection], None]:
    """Writer op: set a meta value."""

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    return op


def store_id_op(conn: sqlite3.Connection) -> str:
    """Writer op: this database's random id, created once (tells our objects from others')."""
    value = get_meta(conn, STORE_ID)
    if value is None:
        value = uuid.uuid4().hex
        set_meta_op(STORE_ID, value)(conn)
    return value
