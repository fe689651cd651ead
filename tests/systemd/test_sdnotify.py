"""sd_notify over a real datagram socket: the protocol, the watchdog gate, the no-op outside systemd."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from appliance.sdnotify import Notifier, SystemdLink, Watchdog
from tests.systemd.harness import NotifySocket


@pytest.fixture
def sock() -> Iterator[NotifySocket]:
    listener = NotifySocket()
    yield listener
    listener.close()


def test_environment_parsing() -> None:
    n = Notifier.from_environment({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"})
    assert n.enabled and n.watchdog_interval_s == 15.0
    other_pid = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(other_pid).watchdog_interval_s is None  # meant for another process
    own_pid = dict(other_pid, WATCHDOG_PID=str(os.getpid()))
    assert Notifier.from_environment(own_pid).watchdog_interval_s == 15.0
    assert (
        Notifier.from_environment({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "junk"}).watchdog_usec is None
    )
    outside = Notifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert not outside.enabled and outside.watchdog_interval_s is None
    assert outside.notify(READY=1) is False  # no socket: nothing happens


def test_messages_reach_the_socket(sock: NotifySocket) -> None:
    n = Notifier(sock.address)
    assert n.extend_timeout(90, status="starting: store ready")
    assert n.ready("inspecting")
    assert n.status("two\nlines")  # a newline would start a second assignment
    assert n.stopping()
    sock.wait_for("STOPPING", "1", timeout=5)
    fields = [m.fields for m in sock.snapshot()]
    assert fields[0] == {"EXTEND_TIMEOUT_USEC": "90000000", "STATUS": "starting: store ready"}
    assert fields[1] == {"READY": "1", "STATUS": "inspecting"}
    assert fields[2] == {"STATUS": "two lines"}
    assert fields[3] == {"STOPPING": "1", "STATUS": "stopping"}
    n.close()


def test_a_vanished_manager_does_not_raise() -> None:
    n = Notifier("/nonexistent/notify.sock")
    assert n.notify(WATCHDOG=1) is False
    assert n.notify(WATCHDOG=1) is False
    n.close()


def test_watchdog_pings_only_while_every_loop_is_alive(sock: NotifySocket) -> None:
    loops = {"camera/cam1": True, "inference": True, "store": True, "mqtt": True}
    notifier = Notifier(sock.address)
    dog = Watchdog(notifier, lambda: dict(loops), interval_s=10)
    assert dog.tick()
    loops["mqtt"] = False
    assert not dog.tick()
    assert not dog.tick()
    loops["mqtt"] = True
    assert dog.tick()
    sock.wait_for("STATUS", "inspecting", timeout=5)
    sent = [m.fields for m in sock.snapshot()]
    assert sent == [
        {"WATCHDOG": "1"},
        {"STATUS": "not alive: mqtt; watchdog pings withheld"},
        {"STATUS": "inspecting"},
        {"WATCHDOG": "1"},
    ]
    assert (dog.pings, dog.withheld) == (2, 2)
    notifier.close()


def test_watchdog_withholds_when_the_probe_fails_or_is_empty(
    sock: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("probe bug")

    notifier = Notifier(sock.address)
    assert not Watchdog(notifier, broken, interval_s=10).tick()
    for record in caplog.records:
        record.expected = True  # logged on purpose: the autouse fixture must not fail the test
    assert not Watchdog(notifier, dict, interval_s=10).tick()
    sock.wait_for("STATUS", "not alive: (no loops); watchdog pings withheld", timeout=5)
    assert sock.with_key("WATCHDOG") == []
    notifier.close()


def test_link_stopping_is_sent_once_and_halts_pings(sock: NotifySocket) -> None:
    link = SystemdLink(Notifier(sock.address, watchdog_usec=200_000))
    link.ready("inspecting", lambda: {"inference": True})
    sock.wait_for("WATCHDOG", "1", timeout=5)
    link.stopping()
    link.stopping()
    link.close()
    sock.wait_for("STOPPING", "1", timeout=5)  # datagrams arrive asynchronously
    time.sleep(0.2)
    assert len(sock.with_key("STOPPING")) == 1
    assert link.watchdog is not None and not link.watchdog._thread.is_alive()  # type: ignore[union-attr]
