"""Login throttling: per-address rate, per-name backoff and lockout, on a real SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.auth import in_transaction
from appliance.config import WebConfig
from appliance.store.db import open_store
from appliance.web.login import LoginGuard


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_store(tmp_path / "a.db")
    yield connection
    connection.close()


def fail(guard: LoginGuard, conn: sqlite3.Connection, name: str) -> bool:
    with in_transaction(conn):
        return guard.failure_op(name)(conn)


def test_backoff_doubles_then_locks_then_clears(conn: sqlite3.Connection) -> None:
    guard = LoginGuard(WebConfig(login_max_failures=3, login_backoff_s=10, login_lockout_minutes=1))
    assert guard.name_wait_s(conn, "ann") == (0.0, False)
    assert fail(guard, conn, "ann") is False
    wait, locked = guard.name_wait_s(conn, "ANN")  # the same name, whatever the case
    assert 9 < wait <= 10 and not locked
    assert fail(guard, conn, "ann") is False
    assert 19 < guard.name_wait_s(conn, "ann")[0] <= 20
    assert fail(guard, conn, "ann") is True
    wait, locked = guard.name_wait_s(conn, "ann")
    assert locked and 59 < wait <= 60
    conn.execute("UPDATE login_failures SET locked_until_ms = 1")  # the lockout has run out
    assert guard.name_wait_s(conn, "ann") == (0.0, False)
    assert fail(guard, conn, "ann") is False  # and counting starts again
    with in_transaction(conn):
        guard.success_op("ann")(conn)
    assert guard.name_wait_s(conn, "ann") == (0.0, False)


def test_unknown_names_are_tracked_like_real_ones(conn: sqlite3.Connection) -> None:
    guard = LoginGuard(WebConfig(login_max_failures=1))
    assert fail(guard, conn, "nobody-at-all") is True
    assert guard.name_wait_s(conn, "nobody-at-all")[1] is True


def test_address_rate_limit() -> None:
    guard = LoginGuard(WebConfig(login_rate_per_minute=3))
    assert [guard.address_wait_s("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert guard.address_wait_s("10.0.0.1") > 50
    assert guard.address_wait_s("10.0.0.2") == 0.0
