"""Roles, API bearer tokens (machines) and local user accounts (people).

Roles are ordered: viewer < operator < engineer < admin; a principal may do what its role and
every lower role may do. Passwords are stored as argon2id hashes (argon2-cffi's RFC 9106
low-memory profile); tokens as sha256 digests (they are long random strings, so a fast hash is
enough). Nothing here opens transactions except the helpers meant for the command line
(`create_token`, `in_transaction`, `run_in_transaction`): the console runs the same functions
on the store's writer thread, inside the writer's transaction.

A token works until its end: `api_tokens.revoked_ms` is the moment from which it is no longer
accepted, set in the future at creation for a token that expires (`--expires-days`) and to now
(or earlier than a later expiry) when it is revoked; NULL means no end. The audit log says
which of the two ended a token (`token.create` with `expires_ms`, `token.revoke`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance.results import now_ms

Role = Literal["viewer", "operator", "engineer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "engineer", "admin")
TOKEN_PREFIX = "apl_"  # noqa: S105 - a prefix, not a secret
USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
PASSWORD_MIN, PASSWORD_MAX = 8, 256
TOKEN_DAYS_MAX = 3650

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
# Verified against when the user does not exist, so that timing does not reveal names.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
T = TypeVar("T")


class AccountError(ValueError):
    """A user name, role or password is not acceptable; the message says why."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user or an API token, with a role."""

    name: str
    role: Role
    kind: Literal["token", "user"]

    def can(self, needed: Role) -> bool:
        """True when this principal's role is at least `needed`."""
        return ROLES.index(self.role) >= ROLES.index(needed)


@dataclass(frozen=True, slots=True)
class User:
    """A console account (never carries the hash out of this module)."""

    id: int
    name: str
    role: Role
    created_ms: int
    disabled: bool
    last_login_ms: int | None

    def to_json(self) -> dict[str, Any]:
        """For the users API."""
        return {
            "name": self.name,
            "role": self.role,
            "created_ms": self.created_ms,
            "disabled": self.disabled,
            "last_login_ms": self.last_login_ms,
        }


# --- API tokens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored API token (never its hash); `ends_ms`: when it stops being accepted, if ever."""

    id: int
    name: str
    role: Role
    created_ms: int
    ends_ms: int | None

    def active(self, now: int) -> bool:
        """Still accepted at `now`."""
        return self.ends_ms is None or self.ends_ms > now

    def to_json(self, now: int | None = None) -> dict[str, Any]:
        """For the tokens API: `expires_ms` while active, `ended_ms` once ended (expired or revoked)."""
        now = now_ms() if now is None else now
        active = self.active(now)
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_ms": self.created_ms,
            "state": "active" if active else "ended",
            "expires_ms": self.ends_ms if active else None,
            "ended_ms": None if active else self.ends_ms,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expiry_ms(days: float | None, now: int | None = None) -> int | None:
    """The end of a token valid for `days` (None: no end); AccountError out of 0 < days <= 3650."""
    if days is None:
        return None
    if not 0 < days <= TOKEN_DAYS_MAX:
        raise AccountError(f"expiry: more than 0 and at most {TOKEN_DAYS_MAX} days")
    return (now_ms() if now is None else now) + int(days * 86_400_000)


def add_token(
    conn: sqlite3.Connection, name: str, role: str, *, expires_ms: int | None = None
) -> tuple[ApiToken, str]:
    """Store a new token's hash (inside the caller's transaction); the token, shown once."""
    check_name(name)
    role = check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    created = now_ms()
    cursor = conn.execute(
        "INSERT INTO api_tokens (name, role, token_sha256, created_ms, revoked_ms) VALUES (?, ?, ?, ?, ?)",
        (name, role, _digest(token), created, expires_ms),
    )
    return ApiToken(int(cursor.lastrowid or 0), name, role, created, expires_ms), token


def create_token(conn: sqlite3.Connection, name: str, role: Role, *, expires_ms: int | None = None) -> str:
    """`add_token` in its own transaction; returns the token (never stored in clear)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return run_in_transaction(conn, lambda c: add_token(c, name, role, expires_ms=expires_ms))[1]


def verify_token(conn: sqlite3.Connection, token: str) -> Principal | None:
    """The principal a bearer token belongs to, or None (unknown, expired or revoked)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200 or not token.isascii():
        return None
    row = conn.execute(
        "SELECT name, role FROM api_tokens WHERE token_sha256 = ? AND (revoked_ms IS NULL OR revoked_ms > ?)",
        (_digest(token), now_ms()),
    ).fetchone()
    return Principal(row["name"], row["role"], "token") if row else None


def list_tokens(conn: sqlite3.Connection) -> list[ApiToken]:
    """Every token, oldest first (ended ones too: the list is also a record)."""
    rows = conn.execute(
        "SELECT id, name, role, created_ms, revoked_ms FROM api_tokens ORDER BY id"
    ).fetchall()
    return [_token(row) for row in rows]


def find_tokens(conn: sqlite3.Connection, ref: str) -> list[ApiToken]:
    """The tokens `ref` names: the one with that id when `ref` is one, else every one so named."""
    if ref.isdecimal() and len(ref) < 19:
        row = conn.execute(
            "SELECT id, name, role, created_ms, revoked_ms FROM api_tokens WHERE id = ?", (int(ref),)
        ).fetchone()
        if row is not None:
            return [_token(row)]
    rows = conn.execute(
        "SELECT id, name, role, created_ms, revoked_ms FROM api_tokens WHERE name = ? ORDER BY id",
        (ref,),
    ).fetchall()
    return [_token(row) for row in rows]


def revoke_tokens(conn: sqlite3.Connection, ref: str) -> list[ApiToken]:
    """End the active tokens `ref` names (an id, or a name: all its active tokens) now.

    Inside the caller's transaction; returns the tokens revoked. AccountError when `ref` names
    no token, or only tokens that have already ended.
    """
    found = find_tokens(conn, ref)
    if not found:
        raise AccountError(f"no token with id or name {ref!r}")
    now = now_ms()
    active = [t for t in found if t.active(now)]
    if not active:
        raise AccountError(f"token {ref!r} has already ended (expired or revoked)")
    conn.executemany("UPDATE api_tokens SET revoked_ms = ? WHERE id = ?", [(now, t.id) for t in active])
    return [ApiToken(t.id, t.name, t.role, t.created_ms, now) for t in active]


def _token(row: sqlite3.Row) -> ApiToken:
    return ApiToken(row["id"], row["name"], row["role"], row["created_ms"], row["revoked_ms"])


# --- passwords and users ------------------------------------------------------------------


def check_name(name: str) -> str:
    """The user name, or AccountError saying what is allowed."""
    if not isinstance(name, str) or not re.match(USER_PATTERN, name):
        raise AccountError(
            "user name: 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
        )
    return name


def check_role(role: str) -> Role:
    """The role, or AccountError listing the roles."""
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role  # narrowed to Role by the membership test


def check_password(password: str, name: str) -> str:
    """The password, or AccountError: PASSWORD_MIN..PASSWORD_MAX characters, not the name."""
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise AccountError(f"password: {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    if password.strip().lower() == name.lower():
        raise AccountError("password: must not be the user name")
    if not _encodable(password):
        raise AccountError("password: not valid text")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash (with its parameters and salt) for the users table."""
    return _hasher.hash(password)


def add_user(conn: sqlite3.Connection, name: str, role: str, password: str) -> User:
    """Create a user (inside the caller's transaction); AccountError when it exists or is invalid."""
    check_name(name)
    role = check_role(role)
    check_password(password, name)
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise AccountError(f"user {name!r} exists")
    now = now_ms()
    conn.execute(
        "INSERT INTO users (name, role, password_hash, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?)",
        (name, role, hash_password(password), now, now),
    )
    user = get_user(conn, name)
    assert user is not None
    return user


def update_user(
    conn: sqlite3.Connection,
    name: str,
    *,
    role: str | None = None,
    password: str | None = None,
    disabled: bool | None = None,
) -> User:
    """Change a user's role, password or disabled flag; ending its sessions unless only the role changed."""
    user = get_user(conn, name)
    if user is None:
        raise AccountError(f"no user {name!r}")
    now = now_ms()
    if role is not None:
        conn.execute(
            "UPDATE users SET role = ?, updated_ms = ? WHERE id = ?", (check_role(role), now, user.id)
        )
    if password is not None:
        check_password(password, user.name)
        conn.execute(
            "UPDATE users SET password_hash = ?, updated_ms = ? WHERE id = ?",
            (hash_password(password), now, user.id),
        )
        conn.execute("DELETE FROM login_failures WHERE subject = ?", (login_subject(user.name),))
    if disabled is not None:
        conn.execute(
            "UPDATE users SET disabled_ms = ?, updated_ms = ? WHERE id = ?",
            (now if disabled else None, now, user.id),
        )
    if password is not None or disabled:
        conn.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))
    updated = get_user(conn, name)
    assert updated is not None
    return updated


def get_user(conn: sqlite3.Connection, name: str) -> User | None:
    """The user called `name` (case-insensitive), or None."""
    if not _encodable(name):
        return None
    row = conn.execute(
        "SELECT id, name, role, created_ms, disabled_ms, last_login_ms FROM users WHERE name = ?", (name,)
    ).fetchone()
    return _user(row) if row else None


def list_users(conn: sqlite3.Connection) -> list[User]:
    """Every user, by name."""
    rows = conn.execute(
        "SELECT id, name, role, created_ms, disabled_ms, last_login_ms FROM users ORDER BY name"
    ).fetchall()
    return [_user(row) for row in rows]


def count_admins(conn: sqlite3.Connection) -> int:
    """Enabled admins (the console refuses to demote or disable the last one)."""
    row = conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_ms IS NULL").fetchone()
    return int(row[0])


def authenticate(conn: sqlite3.Connection, name: str, password: str) -> tuple[User | None, str | None]:
    """(user, new hash or None) when the password matches an enabled user; (None, None) otherwise.

    Always runs one argon2 verification, whether the user exists or not. A new hash is returned
    when the stored one uses weaker parameters than today's, for the caller to store.
    """
    row = None
    if isinstance(name, str) and re.match(USER_PATTERN, name) and _encodable(password):
        row = conn.execute(
            "SELECT id, name, role, created_ms, disabled_ms, last_login_ms, password_hash "
            "FROM users WHERE name = ?",
            (name,),
        ).fetchone()
    stored = row["password_hash"] if row else _DUMMY_HASH
    try:
        _hasher.verify(stored, password if _encodable(password) else "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None, None
    if row is None or row["disabled_ms"] is not None:
        return None, None
    rehash = hash_password(password) if _hasher.check_needs_rehash(stored) else None
    return _user(row), rehash


def login_subject(name: str) -> str:
    """Key of a user name in login_failures (case-folded like the users table)."""
    return "user:" + name.lower()[:64]


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        created_ms=row["created_ms"],
        disabled=row["disabled_ms"] is not None,
        last_login_ms=row["last_login_ms"],
    )


def _encodable(text: object) -> bool:
    """Text SQLite and argon2 can take (JSON allows lone surrogates; UTF-8 does not)."""
    if not isinstance(text, str):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextmanager
def in_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), for the command line's own connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def run_in_transaction(conn: sqlite3.Connection, op: Callable[[sqlite3.Connection], T]) -> T:
    """`op(conn)` inside one transaction."""
    with in_transaction(conn):
        return op(conn)
