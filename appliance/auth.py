"""Roles, API bearer tokens (machines) and local user accounts (people).

Roles are ordered: viewer < operator < engineer < admin; a principal may do what its role and
every lower role may do. Passwords are stored as argon2id hashes (argon2-cffi's RFC 9106
low-memory profile); tokens as sha256 digests (they are long random strings, so a fast hash is
enough). Nothing here opens transactions except the two helpers meant for the command line
(`create_token`, `in_transaction`): the console runs the same functions on the store's writer
thread, inside the writer's transaction.
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
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200 or not token.isascii():
        return None
    row = conn.execute(
        "SELECT name, role FROM api_tokens WHERE token_sha256 = ? AND revoked_ms IS NULL",
        (_digest(token),),
    ).fetchone()
    return Principal(row["name"], row["role"], "token") if row else None


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
