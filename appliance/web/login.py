"""Login throttling: a rate limit per client address, backoff and lockout per user name.

- Per address (in memory): at most `login_rate_per_minute` attempts in any minute, so that one
  client cannot spray passwords over many names.
- Per user name (in SQLite, so a restart does not reset it): after a failure the next attempt
  must wait `login_backoff_s` * 2^(failures - 1) seconds; after `login_max_failures`
  consecutive failures the name is locked for `login_lockout_minutes`. A success clears it.
  Names that do not exist are tracked the same way, so the answers reveal nothing.

Attempts refused by the throttle never reach the password check.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from appliance.auth import login_subject
from appliance.config import WebConfig
from appliance.results import now_ms

_MAX_ADDRESSES = 10_000
_FORGET_MS = 86_400_000  # failure rows untouched for a day are dropped


class LoginGuard:
    """Decides whether a login attempt may proceed and records its outcome."""

    def __init__(self, config: WebConfig) -> None:
        self.rate = config.login_rate_per_minute
        self.max_failures = config.login_max_failures
        self.lockout_ms = int(config.login_lockout_minutes * 60_000)
        self.backoff_ms = int(config.login_backoff_s * 1000)
        self._lock = threading.Lock()
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    def address_wait_s(self, address: str) -> float:
        """Seconds until `address` may try again (0: go ahead; the attempt is counted)."""
        now = time.monotonic()
        with self._lock:
            marks = self._attempts.pop(address, None) or deque()
            while marks and now - marks[0] > 60.0:
                marks.popleft()
            self._attempts[address] = marks  # most recently used last
            while len(self._attempts) > _MAX_ADDRESSES:
                self._attempts.popitem(last=False)
            if len(marks) >= self.rate:
                return max(0.1, 60.0 - (now - marks[0]))
            marks.append(now)
            return 0.0

    def name_wait_s(self, conn: sqlite3.Connection, name: str) -> tuple[float, bool]:
        """(seconds until `name` may try again, locked?) from its failure record."""
        row = conn.execute(
            "SELECT failures, last_ms, locked_until_ms FROM login_failures WHERE subject = ?",
            (login_subject(name),),
        ).fetchone()
        if row is None:
            return 0.0, False
        now = now_ms()
        if row["locked_until_ms"] is not None:
            if row["locked_until_ms"] > now:
                return (row["locked_until_ms"] - now) / 1000.0, True
            return 0.0, False  # the lockout has run out: a fresh start
        wait_until = row["last_ms"] + self.backoff_ms * 2 ** max(0, row["failures"] - 1)
        return max(0.0, (wait_until - now) / 1000.0), False

    def failure_op(self, name: str) -> Callable[[sqlite3.Connection], bool]:
        """An op recording one failed attempt; it returns True when the name is now locked."""
        subject = login_subject(name)

        def op(conn: sqlite3.Connection) -> bool:
            now = now_ms()
            row = conn.execute(
                "SELECT failures, locked_until_ms FROM login_failures WHERE subject = ?", (subject,)
            ).fetchone()
            failures = 1
            if row is not None and row["locked_until_ms"] is None:
                failures = row["failures"] + 1
            locked_until = now + self.lockout_ms if failures >= self.max_failures else None
            conn.execute(
                "INSERT INTO login_failures (subject, failures, last_ms, locked_until_ms) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (subject) DO UPDATE SET failures = excluded.failures, "
                "last_ms = excluded.last_ms, locked_until_ms = excluded.locked_until_ms",
                (subject, failures, now, locked_until),
            )
            conn.execute(
                "DELETE FROM login_failures "
                "WHERE last_ms < ? AND (locked_until_ms IS NULL OR locked_until_ms < ?)",
                (now - _FORGET_MS, now),
            )
            return locked_until is not None

        return op

    @staticmethod
    def success_op(name: str) -> Callable[[sqlite3.Connection], None]:
        """An op clearing the failure record of `name`."""
        subject = login_subject(name)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM login_failures WHERE subject = ?", (subject,))

        return op
