"""Console sessions and their CSRF tokens.

The session cookie carries a random token; the database keeps only its sha256, the user, the
session's CSRF token and its deadlines (idle and absolute). The cookie is `HttpOnly`,
`SameSite=Strict`, and `Secure` with the `__Host-` prefix when the console serves HTTPS.
Every state-changing request made with a session must also carry the session's CSRF token
(form field `csrf_token` or header `X-CSRF-Token`); bearer-token clients do not need one,
since browsers never send bearer tokens on their own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.auth import Principal
from appliance.results import now_ms

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_TOUCH_EVERY_MS = 60_000  # refresh last_seen at most once a minute per session


@dataclass(frozen=True, slots=True)
class Session:
    """A live console session."""

    principal: Principal
    token_sha256: str
    user_id: int
    csrf: str
    last_seen_ms: int
    expires_ms: int


def digest(token: str) -> str:
    """sha256 of a session token (what the table stores)."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def csrf_matches(expected: str, given: object) -> bool:
    """Constant-time comparison of a submitted CSRF token."""
    return isinstance(given, str) and given.isascii() and hmac.compare_digest(expected, given)


class SessionStore:
    """Creates, finds and ends sessions; writes run on the store's writer thread."""

    def __init__(
        self,
        read: Callable[[], sqlite3.Connection],
        write: Callable[[Callable[[sqlite3.Connection], Any]], Any],
        *,
        idle_minutes: int,
        max_hours: int,
        tls: bool,
    ) -> None:
        self._read = read
        self._write = write
        self.idle_ms = idle_minutes * 60_000
        self.max_ms = max_hours * 3_600_000
        self.tls = tls
        self.cookie_name = "__Host-appliance_session" if tls else "appliance_session"

    def create_op(self, user_id: int, address: str | None) -> tuple[str, Callable[[sqlite3.Connection], str]]:
        """(token, op): run `op` in a write transaction to store the session; it returns the CSRF token."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = now_ms()

        def op(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO sessions (token_sha256, user_id, csrf, created_ms, last_seen_ms, expires_ms, "
                "address) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest(token), user_id, csrf, now, now, now + self.max_ms, address),
            )
            conn.execute(
                "DELETE FROM sessions WHERE expires_ms < ? OR last_seen_ms < ?", (now, now - self.idle_ms)
            )
            return csrf

        return token, op

    def lookup(self, token: str) -> Session | None:
        """The live session for a cookie value, or None (unknown, expired, idle, user disabled)."""
        if not token or len(token) > 100 or not token.isascii():
            return None
        row = (
            self._read()
            .execute(
                "SELECT s.token_sha256, s.user_id, s.csrf, s.last_seen_ms, s.expires_ms, u.name, u.role "
                "FROM sessions s JOIN users u ON u.id = s.user_id "
                "WHERE s.token_sha256 = ? AND u.disabled_ms IS NULL",
                (digest(token),),
            )
            .fetchone()
        )
        now = now_ms()
        if row is None or row["expires_ms"] <= now or row["last_seen_ms"] + self.idle_ms <= now:
            return None
        session = Session(
            principal=Principal(row["name"], row["role"], "user"),
            token_sha256=row["token_sha256"],
            user_id=row["user_id"],
            csrf=row["csrf"],
            last_seen_ms=row["last_seen_ms"],
            expires_ms=row["expires_ms"],
        )
        if now - session.last_seen_ms > _TOUCH_EVERY_MS:
            self._write(self._touch_op(session.token_sha256, now))
        return session

    @staticmethod
    def _touch_op(token_sha256: str, now: int) -> Callable[[sqlite3.Connection], None]:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE sessions SET last_seen_ms = ? WHERE token_sha256 = ?", (now, token_sha256))

        return op

    @staticmethod
    def end_op(token_sha256: str) -> Callable[[sqlite3.Connection], None]:
        """An op that deletes one session (logout)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (token_sha256,))

        return op

    def cookie_args(self) -> dict[str, Any]:
        """Arguments for Response.set_cookie (value and max_age added by the caller)."""
        return {
            "key": self.cookie_name,
            "httponly": True,
            "samesite": "strict",
            "secure": self.tls,
            "path": "/",
        }
