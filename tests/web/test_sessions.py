"""Sessions on a real SQLite store: lookup, idle and absolute expiry, disabled users, logout."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.auth import add_user, in_transaction, update_user
from appliance.store.db import open_store
from appliance.web.sessions import SessionStore, csrf_matches


def store(conn: sqlite3.Connection, *, tls: bool = False) -> SessionStore:
    def write(op: Callable[[sqlite3.Connection], Any]) -> Any:
        with in_transaction(conn):
            return op(conn)

    return SessionStore(lambda: conn, write, idle_minutes=10, max_hours=1, tls=tls)


def test_session_life(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "a.db")
    with in_transaction(conn):
        user = add_user(conn, "ann", "operator", "a long password")
    sessions = store(conn)
    token, op = sessions.create_op(user.id, "10.0.0.9")
    with in_transaction(conn):
        csrf = op(conn)
    found = sessions.lookup(token)
    assert found is not None and found.principal.name == "ann" and found.principal.role == "operator"
    assert (
        found.csrf == csrf
        and csrf_matches(csrf, csrf)
        and not csrf_matches(csrf, "x")
        and not csrf_matches(csrf, None)
    )
    assert token not in str(
        conn.execute("SELECT * FROM sessions").fetchall()[0][:]
    )  # only the digest is stored
    assert (
        sessions.lookup(token + "x") is None and sessions.lookup("") is None and sessions.lookup("é") is None
    )
    conn.execute("UPDATE sessions SET last_seen_ms = last_seen_ms - 660000")  # idle too long
    assert sessions.lookup(token) is None
    conn.execute("UPDATE sessions SET last_seen_ms = last_seen_ms + 660000, expires_ms = 0")  # too old
    assert sessions.lookup(token) is None
    conn.execute("UPDATE sessions SET expires_ms = 1e15")
    assert sessions.lookup(token) is not None
    with in_transaction(conn):
        update_user(conn, "ann", role="viewer")
    assert sessions.lookup(token).principal.role == "viewer"  # type: ignore[union-attr]
    with in_transaction(conn):
        sessions.end_op(found.token_sha256)(conn)
    assert sessions.lookup(token) is None
    conn.close()


def test_cookie_flags() -> None:
    plain = SessionStore(lambda: None, lambda op: None, idle_minutes=10, max_hours=1, tls=False)  # type: ignore[arg-type,return-value]
    secure = SessionStore(lambda: None, lambda op: None, idle_minutes=10, max_hours=1, tls=True)  # type: ignore[arg-type,return-value]
    assert plain.cookie_args() == {
        "key": "appliance_session",
        "httponly": True,
        "samesite": "strict",
        "secure": False,
        "path": "/",
    }
    assert secure.cookie_args()["key"] == "__Host-appliance_session" and secure.cookie_args()["secure"]
