"""sd_notify(3) in pure Python, and the systemd side of `appliance run`.

The protocol: newline-separated ``KEY=VALUE`` assignments in one datagram sent to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).
Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so the same code path runs on a
laptop and on the edge box.

What `appliance run` tells systemd (unit ``Type=notify``, ``NotifyAccess=main``):

- ``STATUS=`` and ``EXTEND_TIMEOUT_USEC=`` at every start-up step (store up, each model loaded
  and warmed up): a slow model load on a small box extends the start timeout one step at a
  time, while a load that hangs still times out one step later;
- ``READY=1`` once the store, the models and every loop are up;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, **only while every loop reports alive**
  (`Service.loops_alive()`: cameras, inference workers, store writer, consumers such as MQTT).
  A wedged loop stops the pings, and systemd kills and restarts the service after
  ``WatchdogSec=``. The watchdog thread itself never decides that things are fine on its own;
- ``STOPPING=1`` as soon as SIGTERM (or SIGINT, or the end of ``--duration``) arrives.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: Each start-up step may take this long before systemd gives up (EXTEND_TIMEOUT_USEC).
STARTUP_STEP_S = 180.0


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET`; a no-op when there is none."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        # Re-entrant: STOPPING=1 may be sent from a signal handler that interrupted a notify.
        self._lock = threading.RLock()
        self._warned = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as sd_watchdog_enabled(3) does."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        """Running under a service manager that listens."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of WATCHDOG_USEC (None when the watchdog is off)."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def notify(self, **fields: Any) -> bool:
        """Send one datagram of KEY=VALUE lines; True when it was sent.

        Never raises: a service manager that went away must not take inspection with it.
        """
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")  # a newline would start another assignment
            lines.append(f"{key}={text}")
        message = "\n".join(lines).encode("utf-8")
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.sendto(message, target)
        except OSError as exc:
            if not self._warned:  # once: a flood of identical warnings helps nobody
                logger.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by `systemctl status`."""
        return self.notify(STATUS=text)

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        """EXTEND_TIMEOUT_USEC=: the current start/stop step may take `seconds` more from now."""
        fields: dict[str, Any] = {"EXTEND_TIMEOUT_USEC": int(seconds * 1_000_000)}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def ready(self, status: str) -> bool:
        """READY=1: start-up is complete."""
        return self.notify(READY=1, STATUS=status)

    def watchdog(self) -> bool:
        """WATCHDOG=1: keep-alive ping."""
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str = "stopping") -> bool:
        """STOPPING=1: the service is shutting down (cleanly)."""
        return self.notify(STOPPING=1, STATUS=status)

    def close(self) -> None:
        """Close the socket (a later notify opens it again)."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


class Watchdog:
    """A thread pinging WATCHDOG=1 at half of WATCHDOG_USEC while every loop is alive."""

    def __init__(
        self, notifier: Notifier, loops_alive: Callable[[], dict[str, bool]], interval_s: float
    ) -> None:
        self.notifier = notifier
        self.loops_alive = loops_alive
        self.interval_s = interval_s
        self.pings = 0
        self.withheld = 0
        self.dead: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start pinging (the first ping goes out at once)."""
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Stop pinging without waiting (safe in a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop pinging and join."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval_s)

    def tick(self) -> bool:
        """Ping once if every loop is alive; True when it pinged."""
        try:
            alive = self.loops_alive()
            dead = sorted(name for name, ok in alive.items() if not ok)
            if not alive:
                dead = ["(no loops)"]
        except Exception:  # thread boundary: a broken health probe must stop the pings, not us
            logger.exception("watchdog: liveness check failed; withholding WATCHDOG=1")
            dead = ["(liveness check failed)"]
        if dead != self.dead:
            if dead:
                logger.error(
                    "watchdog: not alive: %s; withholding WATCHDOG=1 (systemd restarts us after "
                    "WatchdogSec unless they recover)",
                    ", ".join(dead),
                )
                self.notifier.status(f"not alive: {', '.join(dead)}; watchdog pings withheld")
            elif self.dead:
                logger.warning("watchdog: every loop alive again; pinging")
                self.notifier.status("inspecting")
            self.dead = dead
        if dead:
            self.withheld += 1
            return False
        self.pings += 1
        return self.notifier.watchdog()


class SystemdLink:
    """What `appliance run` tells systemd over its life: progress, ready, watchdog, stopping."""

    def __init__(self, notifier: Notifier | None = None, step_s: float = STARTUP_STEP_S) -> None:
        self.notifier = notifier or Notifier.from_environment()
        self.step_s = step_s
        self.watchdog: Watchdog | None = None
        self._stopping = False

    def progress(self, message: str) -> None:
        """A start-up step finished: show it and give the next step its own timeout."""
        logger.info("%s", message)
        self.notifier.extend_timeout(self.step_s, status=f"starting: {message}")

    def ready(self, status: str, loops_alive: Callable[[], dict[str, bool]]) -> None:
        """READY=1, then the watchdog thread when systemd asked for one."""
        self.notifier.ready(status)
        interval = self.notifier.watchdog_interval_s
        if interval is not None:
            self.watchdog = Watchdog(self.notifier, loops_alive, interval)
            self.watchdog.start()
            logger.info("systemd watchdog: pinging every %.1f s while every loop is alive", interval)

    def stopping(self, reason: str = "stopping") -> None:
        """STOPPING=1 (once) and no more pings; safe to call from a signal handler."""
        if self._stopping:
            return
        self._stopping = True
        if self.watchdog is not None:
            self.watchdog.halt()  # the join happens in close(), outside the signal handler
        self.notifier.stopping(reason)

    def failed(self, reason: str) -> None:
        """Leave the reason in `systemctl status` before a non-zero exit."""
        self.notifier.status(f"failed: {reason}")

    def close(self) -> None:
        """Join the watchdog thread and close the socket."""
        if self.watchdog is not None:
            self.watchdog.stop()
        self.notifier.close()
