"""Isolating the iterations of a long-running loop: one bad message or round is counted, not fatal.

A consumer thread (MQTT outbox, state publisher, Sparkplug node, sync worker) catches broadly
around *one iteration* and around *one item* (a message, an event): that is its thread
boundary in the sense of STYLE.md. Catching only around the whole loop would let one
unexpected exception end the loop for good; the systemd watchdog would then restart the
service, and a retained MQTT message that caused it would kill it again after every restart.

`LoopGuard` does the bookkeeping the loops share:

- `skipped(exc, what)`: an item was dropped because handling it raised; counted and logged;
- `failed(exc)`: a whole iteration raised; counted, logged, and the returned delay (to wait
  before the next iteration) grows exponentially while the failures go on, capped;
- `ok()`: an iteration went through; ends a streak of failures;
- `wedged`: iterations have failed back to back for `dead_after_s`. The owner then reports
  itself not alive, so that the watchdog restarts the service: a restart may clear what
  retrying did not (a dead connection, a stuck file handle), while a single bad input never
  gets that far because the loop moves past it.

A traceback is logged at the first failure and then at most once a minute (the counts and the
last error are in health), so a failure that repeats every iteration, or a flood of bad
messages, cannot flood the journal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

_LOG_EVERY_S = 60.0


class LoopGuard:
    """Counts, logs (rate-limited) and paces the failures of one loop; see the module docstring."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        dead_after_s: float = 600.0,
    ) -> None:
        self.name = name
        self._logger = logger
        self._initial = backoff_initial_s
        self._max = backoff_max_s
        self._delay = backoff_initial_s
        self.dead_after_s = dead_after_s
        self.iteration_errors = 0
        self.item_errors = 0
        self.consecutive = 0
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._next_log = 0.0

    def skipped(self, exc: BaseException, what: str) -> None:
        """An item (message, event, row) raised while being handled; it is dropped."""
        self.item_errors += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"[:500]
        self._log(
            exc, "%s: %s dropped after an unexpected error (%d so far)", self.name, what, self.item_errors
        )

    def run_pass(
        self,
        iteration: Callable[[], None],
        stop: threading.Event,
        *,
        fatal: tuple[type[BaseException], ...] = (),
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """Run one iteration isolated: a failure is counted and its backoff waited out (or the
        stop). `fatal` exceptions end the loop (raised on); `on_failure` runs before the wait."""
        try:
            iteration()
        except fatal:
            raise
        except Exception as exc:  # thread boundary: one pass; back off and go on
            if on_failure is not None:
                on_failure()
            stop.wait(self.failed(exc))
        else:
            self.ok()

    def failed(self, exc: BaseException) -> float:
        """An iteration raised: count and log it; the seconds to wait before the next one."""
        self.iteration_errors += 1
        self.consecutive += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        delay = self._delay
        self._delay = min(self._delay * 2, self._max)
        self._log(
            exc,
            "%s: iteration failed (%d in a row), next one in %.1f s",
            self.name,
            self.consecutive,
            delay,
        )
        return delay

    def ok(self) -> None:
        """An iteration went through: the streak (and its backoff) ends."""
        if self.failing_since is not None:
            self._logger.info("%s: recovered after %d failed iteration(s)", self.name, self.consecutive)
        self.consecutive = 0
        self.failing_since = None
        self._delay = self._initial

    @property
    def failing(self) -> bool:
        """The last iteration failed."""
        return self.failing_since is not None

    @property
    def wedged(self) -> bool:
        """Every iteration has failed for `dead_after_s`: the loop is as good as dead."""
        since = self.failing_since
        return since is not None and time.monotonic() - since >= self.dead_after_s

    def health(self) -> dict[str, Any]:
        """Figures for the owner's health."""
        return {
            "iteration_errors": self.iteration_errors,
            "item_errors": self.item_errors,
            "failing_iterations": self.consecutive,
            "last_unexpected_error": self.last_error,
        }

    def _log(self, exc: BaseException, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + _LOG_EVERY_S
            self._logger.error(message, *args, exc_info=exc)
        else:
            self._logger.debug(message, *args)
