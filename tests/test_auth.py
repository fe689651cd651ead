"""Users, argon2id hashes, tokens and roles on a real SQLite store."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.auth import (
    ROLES,
    AccountError,
    Principal,
    add_user,
    authenticate,
    count_admins,
    create_token,
    expiry_ms,
    find_tokens,
    get_user,
    in_transaction,
    list_tokens,
    list_users,
    revoke_tokens,
    run_in_transaction,
    update_user,
    verify_token,
)
from appliance.store.db import open_store


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_store(tmp_path / "a.db")
    yield connection
    connection.close()


def test_roles_are_ordered() -> None:
    operator = Principal("o", "operator", "user")
    assert operator.can("viewer") and operator.can("operator")
    assert not operator.can("engineer") and not operator.can("admin")
    assert ROLES == ("viewer", "operator", "engineer", "admin")


def test_passwords_are_argon2id_and_verify(conn: sqlite3.Connection) -> None:
    with in_transaction(conn):
        add_user(conn, "Anna", "operator", "a good password")
    stored = conn.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and "a good password" not in stored
    user, rehash = authenticate(conn, "anna", "a good password")  # names are case-insensitive
    assert user is not None and user.name == "Anna" and user.role == "operator" and rehash is None
    assert authenticate(conn, "Anna", "a bad password") == (None, None)
    assert authenticate(conn, "nobody", "a good password") == (None, None)
    assert authenticate(conn, "Anna", "\ud800 not text") == (None, None)


@pytest.mark.parametrize(
    ("name", "role", "password", "reason"),
    [
        ("", "viewer", "long enough", "user name"),
        ("bad name", "viewer", "long enough", "user name"),
        ("ok", "boss", "long enough", "unknown role"),
        ("ok", "viewer", "short", "8 to 256"),
        ("longername", "viewer", "LongerName", "must not be the user name"),
    ],
)
def test_bad_accounts_are_refused(
    conn: sqlite3.Connection, name: str, role: str, password: str, reason: str
) -> None:
    with pytest.raises(AccountError, match=reason), in_transaction(conn):
        add_user(conn, name, role, password)
    assert list_users(conn) == []


def test_duplicate_names_are_refused_case_insensitively(conn: sqlite3.Connection) -> None:
    with in_transaction(conn):
        add_user(conn, "ops", "operator", "password one")
    with pytest.raises(AccountError, match="exists"), in_transaction(conn):
        add_user(conn, "OPS", "viewer", "password two")


def test_update_disable_and_password_reset_end_sessions(conn: sqlite3.Connection) -> None:
    with in_transaction(conn):
        user = add_user(conn, "ops", "admin", "password one")
        conn.execute(
            "INSERT INTO sessions (token_sha256, user_id, csrf, created_ms, last_seen_ms, expires_ms) "
            "VALUES ('x', ?, 'c', 0, 0, 0)",
            (user.id,),
        )
        conn.execute("INSERT INTO login_failures (subject, failures, last_ms) VALUES ('user:ops', 3, 0)")
    assert count_admins(conn) == 1
    with in_transaction(conn):
        update_user(conn, "ops", role="engineer")
    assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1  # a role change keeps them
    with in_transaction(conn):
        update_user(conn, "ops", password="password two")
    assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM login_failures").fetchone()[0] == 0
    assert authenticate(conn, "ops", "password two")[0] is not None
    with in_transaction(conn):
        update_user(conn, "ops", disabled=True)
    assert get_user(conn, "ops").disabled  # type: ignore[union-attr]
    assert authenticate(conn, "ops", "password two") == (None, None)
    assert count_admins(conn) == 0


def test_tokens(conn: sqlite3.Connection) -> None:
    token = create_token(conn, "mes", "viewer")
    assert verify_token(conn, token) == Principal("mes", "viewer", "token")
    assert verify_token(conn, token + "x") is None
    assert verify_token(conn, "apl_\u00e9") is None
    stored = conn.execute("SELECT token_sha256 FROM api_tokens").fetchone()[0]
    assert token not in stored


def test_token_expiry_and_revocation(conn: sqlite3.Connection) -> None:
    lasting = create_token(conn, "mes", "viewer")
    soon = create_token(conn, "scada", "operator", expires_ms=expiry_ms(0.5 / 86_400))  # 0.5 s
    past = create_token(conn, "old", "viewer", expires_ms=1)  # long expired
    assert verify_token(conn, soon) == Principal("scada", "operator", "token")
    assert verify_token(conn, past) is None
    time.sleep(0.6)
    assert verify_token(conn, soon) is None  # expired by now
    assert verify_token(conn, lasting) is not None
    states = {t.name: t.to_json()["state"] for t in list_tokens(conn)}
    assert states == {"mes": "active", "scada": "ended", "old": "ended"}
    revoked = run_in_transaction(conn, lambda c: revoke_tokens(c, "mes"))
    assert [t.name for t in revoked] == ["mes"] and verify_token(conn, lasting) is None
    assert revoked[0].to_json()["ended_ms"] is not None
    with pytest.raises(AccountError, match="already ended"):
        run_in_transaction(conn, lambda c: revoke_tokens(c, "1"))
    with pytest.raises(AccountError, match="no token"):
        run_in_transaction(conn, lambda c: revoke_tokens(c, "99"))
    assert [t.id for t in find_tokens(conn, "2")] == [2] and find_tokens(conn, "nobody") == []
    for days in (0, -1, 3651):
        with pytest.raises(AccountError):
            expiry_ms(days)
    with pytest.raises(AccountError):
        create_token(conn, "bad name!", "viewer")
