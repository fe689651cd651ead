"""LoopGuard: counting, backoff, wedged, rate-limited tracebacks."""

from __future__ import annotations

import logging

import pytest

from appliance.guard import LoopGuard


def test_backoff_grows_resets_and_wedges(caplog: pytest.LogCaptureFixture) -> None:
    guard = LoopGuard("loop", logging.getLogger("test.guard"), backoff_initial_s=0.5, backoff_max_s=2.0)
    delays = [guard.failed(RuntimeError(f"boom {n}")) for n in range(4)]
    assert delays == [0.5, 1.0, 2.0, 2.0]
    assert guard.failing and guard.consecutive == 4 and guard.iteration_errors == 4
    assert guard.last_error == "RuntimeError: boom 3"
    assert not guard.wedged  # 10 minutes by default
    # one traceback, not four: the rest wait for the next minute
    assert sum(1 for r in caplog.records if r.exc_info and r.levelno == logging.ERROR) == 1
    guard.ok()
    assert not guard.failing and guard.consecutive == 0 and guard.failed(ValueError()) == 0.5
    guard.dead_after_s = 0.0
    assert guard.wedged
    guard.skipped(KeyError("x"), "message a/b")
    assert guard.health()["item_errors"] == 1 and "message a/b" in guard.health()["last_unexpected_error"]
    caplog.clear()  # logged on purpose


def test_run_pass_isolates_a_pass_and_lets_fatal_errors_through(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    guard = LoopGuard("loop", logging.getLogger("test.guard"), backoff_initial_s=0.01)
    stop = threading.Event()
    rewinds: list[int] = []

    def broken() -> None:
        raise RuntimeError("one bad pass")

    guard.run_pass(broken, stop, on_failure=lambda: rewinds.append(1))
    assert guard.iteration_errors == 1 and guard.failing and rewinds == [1]
    guard.run_pass(lambda: None, stop)
    assert not guard.failing

    class Fatal(Exception):
        pass

    def fatal() -> None:
        raise Fatal("the store is gone")

    with pytest.raises(Fatal):
        guard.run_pass(fatal, stop, fatal=(Fatal,), on_failure=lambda: rewinds.append(2))
    assert rewinds == [1] and guard.iteration_errors == 1
    caplog.clear()  # the isolated pass was logged on purpose
