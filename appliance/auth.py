"""Roles and API bearer tokens (machines); the console adds users and sessions on top."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Literal

from appliance.results import now_ms

Role = Literal["viewer", "operator", "engineer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "engineer", "admin")
TOKEN_PREFIX = "apl_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user or an API token, with a role."""

    name: str
    role: Role
    kind: Literal["token", "user"]

    def can(self, needed: Role) -> bool:
        """True when this principal's role is at least `needed`."""
        return ROLES.index(self.role) >= ROLES.index(needed)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: sqlite3.Connection, name: str, role: Role) -> str:
    """Store a new token's hash and return the token (shown once, never stored in clear)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO api_tokens (name, role, token_sha256, created_ms) VALUES (?, ?, ?, ?)",
        (name, role, _digest(token), now_ms()),
    )
    conn.execute("COMMIT")
    return token


def verify_token(conn: sqlite3.Connection, token: str) -> Principal | None:
    """The principal a bearer token belongs to, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(
        "SELECT name, role FROM api_tokens WHERE token_sha256 = ? AND revoked_ms IS NULL",
        (_digest(token),),
    ).fetchone()
    return Principal(row["name"], row["role"], "token") if row else None
