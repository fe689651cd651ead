"""The topic tree of the MQTT contract (DESIGN.md), built and parsed in one place.

`{prefix}/{node}/availability`, `/health`, `/event`, `/ack`, `/cmd/{name}`,
`/line/{line}/result` (or `/results`, batched), `/line/{line}/state`, `/line/{line}/cmd/{name}`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CommandTopic:
    """Where a command arrived: its name and, for line commands, the line."""

    name: str
    line: str | None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one node under one prefix."""

    prefix: str
    node: str

    @property
    def base(self) -> str:
        """`{prefix}/{node}`."""
        return f"{self.prefix}/{self.node}"

    @property
    def availability(self) -> str:
        """Retained `online` / `offline`; the Last Will is `offline`."""
        return f"{self.base}/availability"

    @property
    def health(self) -> str:
        """Retained health document (with an MQTT 5 message expiry)."""
        return f"{self.base}/health"

    @property
    def event(self) -> str:
        """Events and alarms."""
        return f"{self.base}/event"

    @property
    def ack(self) -> str:
        """Command acknowledgements."""
        return f"{self.base}/ack"

    def result(self, line: str) -> str:
        """Results of one line (QoS 1, not retained)."""
        return f"{self.base}/line/{line}/result"

    def results(self, line: str) -> str:
        """Batches of one line's results, when `mqtt.results_per_message` > 1 (QoS 1)."""
        return f"{self.base}/line/{line}/results"

    def state(self, line: str) -> str:
        """Retained state of one line."""
        return f"{self.base}/line/{line}/state"

    def command_filters(self) -> list[str]:
        """Subscriptions for node and line commands."""
        return [f"{self.base}/cmd/+", f"{self.base}/line/+/cmd/+"]

    def parse_command(self, topic: str) -> CommandTopic | None:
        """The command a topic addresses, or None when it is not a command topic of this node."""
        head = self.base + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) == 2 and parts[0] == "cmd" and parts[1]:
            return CommandTopic(parts[1], None)
        if len(parts) == 4 and parts[0] == "line" and parts[2] == "cmd" and parts[1] and parts[3]:
            return CommandTopic(parts[3], parts[1])
        return None
