"""One supervised MQTT connection: TLS, credentials, Will, capped backoff, guarded callbacks.

`MqttLink` owns a supervisor thread that makes a *fresh* paho client for every connection
attempt. A new client per connection means paho never retransmits a message of an old
session on its own (it would, with the original payload, after a reconnect): what is resent
after an outage is decided by the outbox, which marks it `replayed`. It also lets a Will that
changes per connection (Sparkplug's NDEATH with its bdSeq) be set before every CONNECT.

paho's network thread (`loop_start`) runs the callbacks. Every callback is wrapped so that an
exception is logged and counted instead of killing that thread; the supervisor also watches the
thread, because a dead paho loop leaves `is_connected()` true: it tears such a connection down
and reconnects. A refused login is not retried in a tight loop: it waits `reconnect_max_s`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from appliance.config import MqttConfig
from appliance.mqtt.credentials import LinkConfigError, read_password, tls_context
from appliance.results import now_ms

logger = logging.getLogger(__name__)

# CONNACK reason codes (MQTT 5; paho maps 3.1.1 return codes 4 and 5 onto 0x86 and 0x87).
_AUTH_REFUSED = {0x86, 0x87, 0x8A, 0x8C}  # bad credentials, not authorized, banned, bad auth method
# 3.1.1 "unacceptable protocol version", 5 "unsupported protocol version"
_BAD_PROTOCOL = {0x01, 0x84}
_CONTROL_HEADROOM = 16  # QoS 1 messages beside results: acks, events, health, state


class LinkHandler(Protocol):
    """What the owner of a link is told; called on paho's thread, so only quick work."""

    def on_connected(self, session: Session) -> None: ...
    def on_disconnected(self, generation: int) -> None: ...
    def on_message(self, message: paho.MQTTMessage) -> None: ...
    def on_published(self, generation: int, mid: int, reason: ReasonCode) -> None: ...


@dataclass(frozen=True, slots=True)
class Will:
    """The Last Will set on a CONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Ticket:
    """A message handed to paho: its connection generation and message id."""

    generation: int
    mid: int
    info: paho.MQTTMessageInfo


class Session:
    """One connection (one paho client); `generation` tells connections apart."""

    def __init__(self, generation: int, client: paho.Client, protocol: str) -> None:
        self.generation = generation
        self.client = client
        self.protocol = protocol
        self.thread: threading.Thread | None = None
        self.up = False
        self.closed = False
        self.refused: ReasonCode | None = None
        self.receive_maximum = 65535
        self.maximum_packet_size: int | None = None  # MQTT 5 CONNACK: the broker's limit, if any
        self.started = time.monotonic()
        self.lock = threading.Lock()

    @property
    def v5(self) -> bool:
        """MQTT 5 (properties, reason codes, message expiry)."""
        return self.protocol == "5"

    def subscribe(self, filters: list[str], qos: int = 1) -> None:
        """Subscribe to topic filters (results arrive in on_message)."""
        if filters:
            self.client.subscribe([(f, qos) for f in filters])


class MqttLink:
    """A connection to the broker that keeps itself up; see the module docstring."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        handler: LinkHandler,
        *,
        will: Callable[[], Will | None] | None = None,
        name: str = "mqtt",
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.handler = handler
        self.name = name
        self._will = will or (lambda: None)
        self.protocol = config.protocol
        self._receive_hint = 65535
        self._session: Session | None = None
        self._generation = 0
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 0.5
        self._failing = False
        self._next_attempt = 0.0
        self.state = "starting"
        self.last_error: str | None = None
        self.connects = 0
        self.disconnects = 0
        self.attempts = 0
        self.connects_sent = 0
        self._drop_requested: int | None = None
        self.loop_deaths = 0
        self.callback_errors = 0
        self.auth_failures = 0
        self.connected_since_ms: int | None = None
        self.heartbeat = time.monotonic()
        self._log = {"component": name}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor; the first attempt happens at once (failures only get logged)."""
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-link", daemon=True)
        self._thread.start()

    def stop(self, farewell: list[tuple[str, bytes, bool]] | None = None, timeout: float = 3.0) -> None:
        """Publish `farewell` messages (topic, payload, retain; QoS 1, awaited), then disconnect.

        A clean DISCONNECT suppresses the Will, so whatever the Will would have said must be in
        `farewell` (availability `offline`, the NDEATH).
        """
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(self.config.connect_timeout_s + 2.0)
            if self._thread.is_alive():
                logger.warning("MQTT link supervisor did not stop in time", extra=self._log)
        session = self._session
        if session is None:
            self.state = "stopped"
            return
        if session.up and farewell:
            deadline = time.monotonic() + timeout
            infos = [session.client.publish(t, p, qos=1, retain=r) for t, p, r in farewell]
            for info in infos:
                try:
                    info.wait_for_publish(max(0.05, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:
                    logger.warning("farewell message not delivered: %s", exc, extra=self._log)
        self._close(session, graceful=True)
        self.state = "stopped"

    def end_session(self, farewell: list[tuple[str, bytes, bool]], reason: str) -> None:
        """Publish `farewell` (QoS 1, awaited), disconnect cleanly and reconnect after a backoff.

        For Sparkplug: an edge node whose primary host went offline sends its NDEATH and ends
        its session. Call from any thread but paho's.
        """
        session = self._session
        if session is None or not session.up:
            return
        for topic, payload, retain in farewell:
            try:
                session.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(3.0)
            except (RuntimeError, ValueError) as exc:
                logger.warning("farewell message not delivered: %s", exc, extra=self._log)
        self.last_error = reason
        self._drop_requested = session.generation
        self._kick.set()

    def kick(self) -> None:
        """Try to connect now instead of at the end of the backoff (after a config fix)."""
        self._next_attempt = 0.0
        self._kick.set()

    @property
    def alive(self) -> bool:
        """The supervisor thread runs and has looped recently (a connect may block it a while)."""
        limit = max(30.0, 2 * self.config.connect_timeout_s + 15.0)
        return bool(
            self._thread is not None and self._thread.is_alive() and time.monotonic() - self.heartbeat < limit
        )

    @property
    def connected(self) -> bool:
        """A connection is up (CONNACK accepted and its loop running)."""
        session = self._session
        return bool(session is not None and session.up)

    @property
    def session(self) -> Session | None:
        """The current connection, up or not."""
        return self._session

    # --- publishing -----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        generation: int | None = None,
    ) -> Ticket | None:
        """Hand a message to the current connection; None when there is none (nothing queued).

        With `generation`, publish only on that connection (the outbox tracks acks per
        connection). `expiry_s` sets the MQTT 5 Message Expiry Interval.
        """
        session = self._session
        if session is None or not session.up or (generation is not None and session.generation != generation):
            return None
        properties = None
        if expiry_s is not None and session.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped
            properties.MessageExpiryInterval = int(expiry_s)
        info = session.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return Ticket(session.generation, info.mid, info)

    # --- the supervisor -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                session = self._session
                if session is None:
                    wait = self._next_attempt - time.monotonic()
                    if wait > 0:
                        self._kick.wait(min(wait, 0.5))
                        self._kick.clear()
                        continue
                    self._attempt()
                    continue
                self._watch(session)
                self._kick.wait(0.2)
                self._kick.clear()
        except Exception:  # thread boundary: never die silently
            logger.exception("MQTT link supervisor failed", extra=self._log)
            self.state = "failed"

    def _watch(self, session: Session) -> None:
        """Tear down a connection whose loop ended (or died) or whose CONNACK never came."""
        thread = session.thread
        if self._drop_requested == session.generation:
            self._drop_requested = None
            self._close(session, graceful=True)
            self._session = None
            self.state = "disconnected"
            self._next_attempt = time.monotonic() + self._backoff_delay()
            return
        if thread is not None and thread.is_alive():
            if not session.up and time.monotonic() - session.started > self.config.connect_timeout_s:
                self.last_error = (
                    f"no CONNACK from {self._broker} within {self.config.connect_timeout_s:.0f} s"
                )
                self._drop(session, self._backoff_delay())
            return
        if not session.up and session.refused is None:
            self.last_error = (
                f"{self._broker} closed the connection before CONNACK "
                "(TLS client certificate required? TLS on a plain port?)"
            )
            self._log_failure()
        if session.up and session.client.is_connected():
            self.loop_deaths += 1
            self.last_error = "the MQTT network loop died while connected; reconnecting"
            logger.error("MQTT network loop died while connected; reconnecting", extra=self._log)
        if session.refused is not None and session.refused.value in _AUTH_REFUSED:
            self._drop(session, self.config.reconnect_max_s)
        elif session.refused is not None and session.refused.value in _BAD_PROTOCOL and self.protocol == "5":
            logger.warning("broker does not speak MQTT 5; falling back to 3.1.1", extra=self._log)
            self.protocol = "3.1.1"
            self._drop(session, 0.0)
        else:
            self._drop(session, self._backoff_delay())

    def _log_failure(self) -> None:
        """The first failure of a streak is a warning; the rest is in health (no log flood)."""
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        logger.log(level, "MQTT %s (retrying with backoff)", self.last_error, extra=self._log)

    def _drop(self, session: Session, delay: float) -> None:
        self._close(session, graceful=False)
        self._session = None
        self._next_attempt = time.monotonic() + delay
        if self.state not in {"auth_failed", "config_error", "unreachable"}:
            self.state = "disconnected"

    def _backoff_delay(self) -> float:
        delay = self._backoff * random.uniform(0.8, 1.2)  # jitter: a plant's boxes do not stampede
        self._backoff = min(self._backoff * 2, self.config.reconnect_max_s)
        return min(delay, self.config.reconnect_max_s)

    @property
    def _broker(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _attempt(self) -> None:
        self._generation += 1
        self.attempts += 1
        generation = self._generation
        try:
            client = self._make_client(generation)
        except LinkConfigError as exc:
            if self.state != "config_error":
                logger.error("MQTT: %s", exc, extra=self._log)
            self.state, self.last_error = "config_error", str(exc)
            self._next_attempt = time.monotonic() + self.config.reconnect_max_s
            return
        session = Session(generation, client, self.protocol)
        self.state = "connecting"
        try:
            # Clean session (3.1.1 default) / clean start (5): the outbox, not the broker's
            # session, decides what is resent; Sparkplug requires it too.
            # (3.1.1 always starts clean; paho refuses any clean_start but its default there.)
            clean_start: paho.CleanStartOption = True if session.v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
            client.connect(
                self.config.host, self.config.port, keepalive=self.config.keepalive_s, clean_start=clean_start
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"cannot connect to {self._broker}: {exc}"
            self._log_failure()
            self._close(session, graceful=False)
            self.state = "unreachable"
            self._next_attempt = time.monotonic() + self._backoff_delay()
            return
        self.connects_sent += 1  # a CONNECT went out (Sparkplug counts bdSeq per CONNECT)
        if self._stop.is_set():
            self._close(session, graceful=True)
            return
        self._session = session
        client.loop_start()
        # paho clears its own reference when the loop ends; keep ours to watch the thread.
        session.thread = client._thread

    def _make_client(self, generation: int) -> paho.Client:
        protocol = paho.MQTTv5 if self.protocol == "5" else paho.MQTTv311
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            reconnect_on_failure=False,
        )
        client.suppress_exceptions = True  # second line of defence behind our own guards
        client.max_queued_messages_set(0)
        # paho does not honour the broker's Receive Maximum by itself: cap its window with the
        # value the broker announced last time (QoS 1 beyond it waits inside paho).
        client.max_inflight_messages_set(
            max(1, min(self.config.inflight + _CONTROL_HEADROOM, self._receive_hint))
        )
        client.connect_timeout = self.config.connect_timeout_s
        if self.config.username:
            client.username_pw_set(self.config.username, read_password(self.config))
        context = tls_context(self.config)
        if context is not None:
            client.tls_set_context(context)
        will = self._will()
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._guard("on_connect", self._on_connect, generation)
        client.on_disconnect = self._guard("on_disconnect", self._on_disconnect, generation)
        client.on_message = self._guard("on_message", self._on_message, generation)
        client.on_publish = self._guard("on_publish", self._on_publish, generation)
        client.on_subscribe = self._guard("on_subscribe", self._on_subscribe, generation)
        return client

    def _close(self, session: Session, *, graceful: bool) -> None:
        with session.lock:
            if session.closed:
                return
            session.closed = True
            was_up = session.up
            session.up = False
        client = session.client
        try:
            if graceful:
                client.disconnect()
            client.loop_stop()
        except Exception as exc:  # a half-dead client must not stop the teardown
            logger.debug("closing MQTT client: %s", exc, extra=self._log)
        # paho leaves its socket and its wake-up socket pair to __del__, which a reference
        # cycle delays; close them now (paho's own helper for it).
        with contextlib.suppress(OSError, AttributeError):
            client._reset_sockets()
        if was_up:
            self.disconnects += 1
            self.connected_since_ms = None
            self._notify_down(session.generation)

    def _notify_down(self, generation: int) -> None:
        try:
            self.handler.on_disconnected(generation)
        except Exception:  # the owner's bug must not stop the link
            self.callback_errors += 1
            logger.exception("MQTT on_disconnected handler failed", extra=self._log)

    # --- callbacks (paho's thread) --------------------------------------------------------

    def _guard(self, name: str, callback: Callable[..., None], generation: int) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                callback(generation, *args)
            except Exception:  # never let a callback kill paho's network loop
                self.callback_errors += 1
                self.last_error = f"MQTT {name} callback failed"
                logger.exception("MQTT %s callback failed", name, extra=self._log)

        return guarded

    def _on_connect(
        self,
        generation: int,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        props: Any,
    ) -> None:
        session = self._session
        if session is None or session.generation != generation:
            return
        if reason.is_failure:
            session.refused = reason
            if reason.value in _AUTH_REFUSED:
                self.auth_failures += 1
                who = self.config.username or "(anonymous)"
                self.last_error = (
                    f"broker {self._broker} refused user {who}: {reason}; "
                    f"retrying every {self.config.reconnect_max_s:.0f} s"
                )
                if self.state != "auth_failed":
                    logger.error("MQTT %s", self.last_error, extra=self._log)
                self.state = "auth_failed"
            else:
                self.last_error = f"broker {self._broker} refused the connection: {reason}"
                logger.warning("MQTT %s", self.last_error, extra=self._log)
            return
        maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        session.receive_maximum = int(maximum) if maximum else 65535
        packet = getattr(props, "MaximumPacketSize", None) if props is not None else None
        session.maximum_packet_size = int(packet) if packet else None
        if session.receive_maximum != self._receive_hint:
            # paho cannot change its window on a live connection; the next client gets it.
            self._receive_hint = session.receive_maximum
        with session.lock:
            session.up = True
        self.state = "connected"
        self.last_error = None
        self.connects += 1
        self.connected_since_ms = now_ms()
        self._backoff = 0.5
        self._failing = False
        logger.info(
            "MQTT connected to %s (MQTT %s%s)",
            self._broker,
            session.protocol,
            ", TLS" if self.config.tls_ca else "",
            extra=self._log,
        )
        self.handler.on_connected(session)

    def _on_disconnect(
        self, generation: int, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        session = self._session
        if session is None or session.generation != generation:
            return
        with session.lock:
            was_up, session.up = session.up, False
        if was_up and not self._stop.is_set():
            self.last_error = f"disconnected from {self._broker}: {reason}"
            logger.warning("MQTT %s", self.last_error, extra=self._log)
        if was_up:
            self.disconnects += 1
            self.connected_since_ms = None
            self.state = "disconnected"
            self.handler.on_disconnected(generation)
        self._kick.set()

    def _on_message(self, _generation: int, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.handler.on_message(message)

    def _on_publish(
        self, generation: int, _client: Any, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        self.handler.on_published(generation, mid, reason)

    def _on_subscribe(
        self, _generation: int, _client: Any, _userdata: Any, _mid: int, codes: list[ReasonCode], _props: Any
    ) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            self.last_error = f"subscription refused by the broker: {', '.join(refused)}"
            logger.warning("MQTT %s", self.last_error, extra=self._log)

    # --- health ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Connection state for /api/health."""
        session = self._session
        loop_alive = bool(session and session.thread and session.thread.is_alive())
        if not self.alive or self.state in {"auth_failed", "config_error", "failed"}:
            state = "error"
        elif self.state == "connected" and loop_alive:
            state = "ok"
        else:
            state = "degraded"
        next_in = max(0.0, self._next_attempt - time.monotonic()) if session is None else 0.0
        return {
            "state": state,
            "connection": self.state,
            "broker": self._broker,
            "tls": self.config.tls_ca is not None,
            "protocol": session.protocol if session else self.protocol,
            "client_id": self.client_id,
            "connected_since_ms": self.connected_since_ms,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "attempts": self.attempts,
            "next_attempt_in_s": round(next_in, 1),
            "auth_failures": self.auth_failures,
            "loop_alive": loop_alive,
            "loop_deaths": self.loop_deaths,
            "callback_errors": self.callback_errors,
            "receive_maximum": session.receive_maximum if session else None,
            "last_error": self.last_error,
        }
