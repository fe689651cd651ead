"""The MQTT component of the service: one connection, the outbox, health/state/events, commands.

Threads, each with an owner, a stop event and a join: the link supervisor and paho's network
loop (`client.py`), the outbox publisher (`publisher.py`), the state publisher (`state.py`) and
the command runner (`commands.py`). paho's callbacks only enqueue or publish.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from appliance.control import Controller, Outcome
from appliance.mqtt.client import MqttLink, Session, Will
from appliance.mqtt.commands import CommandHandler
from appliance.mqtt.homeassistant import discovery_messages
from appliance.mqtt.publisher import OutboxPublisher
from appliance.mqtt.state import StatePublisher, StoreAlarms
from appliance.mqtt.topics import Topics

if TYPE_CHECKING:
    from appliance.service import Service

logger = logging.getLogger(__name__)

ONLINE, OFFLINE = b"online", b"offline"


class MqttComponent:
    """Publishes the appliance's results and state to the plant broker and takes its commands."""

    def __init__(self, service: Service, controller: Controller | None = None) -> None:
        settings = service.settings
        self.service = service
        self.config = settings.mqtt
        self.topics = Topics(self.config.prefix, settings.node_id)
        self.controller = controller or Controller(service)
        self.link = MqttLink(
            self.config,
            client_id=f"vision-{settings.node_id}",
            handler=self,
            will=lambda: Will(self.topics.availability, OFFLINE, qos=1, retain=True),
        )
        self.outbox: OutboxPublisher | None = None
        self.commands = CommandHandler(
            self.link, self.topics, service.writer, self.controller, max_age_s=self.config.command_max_age_s
        )
        self.alarms = StoreAlarms(service, self._backlog)
        self.state = StatePublisher(
            service, self.controller, self.link, self.topics, self.alarms, on_connected=self._announce
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start publishing (the broker may be away: results wait in the outbox)."""
        self.outbox = OutboxPublisher(
            self.link,
            self.topics,
            self.service.writer,
            self.service.settings.db_path,
            inflight=self.config.inflight,
            boot_seq=self.service.writer.last_seq,
            on_rejected=self._rejected,
            on_accepted_again=self._accepted_again,
            max_republish=self.config.republish_max_rows,
            results_per_message=self.config.results_per_message,
            batch_linger_s=self.config.batch_linger_ms / 1000,
        )
        self.outbox.start()
        self.commands.start()
        self.state.start()
        self.link.start()

    def stop(self) -> None:
        """Publish `offline` (a clean disconnect suppresses the Will), disconnect, stop threads."""
        if self.outbox is not None:
            if self.link.connected:  # the last verdicts of the stop go out now, not as replays later
                self.outbox.settle(2.0)
            self.outbox.quiesce()
        self.commands.stop()
        self.state.stop()
        self.link.stop(farewell=[(self.topics.availability, OFFLINE, True)])
        if self.outbox is not None:
            self.outbox.stop()

    @property
    def alive(self) -> bool:
        """Every thread of the component loops (for the systemd watchdog)."""
        return bool(
            self.link.alive
            and self.outbox is not None
            and self.outbox.alive
            and self.commands.alive
            and self.state.alive
        )

    # --- LinkHandler (paho's thread) ------------------------------------------------------

    def on_connected(self, session: Session) -> None:
        """Availability first, then subscriptions; the outbox resumes."""
        session.client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        session.subscribe(self.topics.command_filters(), qos=1)
        if self.outbox is not None:
            self.outbox.link_up(session.generation, session.receive_maximum, session.maximum_packet_size)
        self.state.poke()

    def on_disconnected(self, generation: int) -> None:
        """The outbox forgets that connection's in-flight messages (they will be resent)."""
        if self.outbox is not None:
            self.outbox.link_down(generation)

    def on_message(self, message: paho.MQTTMessage) -> None:
        """A command: queued for the command thread."""
        expiry = getattr(message.properties, "MessageExpiryInterval", None) if message.properties else None
        # paho types the payload bytes | bytearray; the command queue keeps immutable bytes
        self.commands.offer(message.topic, bytes(message.payload), bool(message.retain), expiry)

    def on_published(self, generation: int, mid: int, reason: ReasonCode) -> None:
        """A PUBACK (or the write of a QoS 0 message): the outbox sorts out which."""
        if self.outbox is not None:
            self.outbox.acked(generation, mid, reason)

    # --- operations -----------------------------------------------------------------------

    def republish(self, from_seq: int, to_seq: int | None) -> Outcome:
        """Queue stored results to be published again (the `republish` command)."""
        if self.outbox is None:
            return Outcome(False, "MQTT is not started")
        return self.outbox.republish(from_seq, to_seq)

    def _announce(self) -> None:
        """On every new connection, from the state thread: Home Assistant discovery."""
        if self.config.homeassistant.enabled:
            for topic, payload in discovery_messages(
                self.service, self.topics, self.config.homeassistant.prefix
            ):
                self.link.publish(topic, payload, qos=1, retain=True)

    def _rejected(self, reason: str) -> None:
        logger.error("MQTT %s", reason)
        self.service.events.raise_alarm("mqtt_denied", "mqtt_denied", f"MQTT publish refused: {reason}")

    def _accepted_again(self) -> None:
        self.service.events.clear_alarm(
            "mqtt_denied", "mqtt_denied_cleared", "the broker accepts the results refused before"
        )

    def _backlog(self) -> tuple[int, int | None]:
        if self.outbox is None:
            return 0, None
        return self.outbox.backlog, self.outbox.oldest_unpublished_ms

    def health(self) -> dict[str, Any]:
        """Connection, outbox, commands and state publisher, with the worst of their states."""
        parts = {
            "link": self.link.health(),
            "outbox": self.outbox.health() if self.outbox else {"state": "error"},
            "commands": self.commands.health(),
            "publisher": self.state.health(),
        }
        states = [p["state"] for p in parts.values()]
        state = "error" if "error" in states else "degraded" if "degraded" in states else "ok"
        if state == "ok" and self.outbox is not None and self.outbox.rejected:
            state = "degraded"
        return {"state": state, **parts}
