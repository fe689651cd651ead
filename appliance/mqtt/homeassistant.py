"""Home Assistant MQTT discovery (off by default): read-only entities for the node and each line.

Published retained on every connection under `{prefix}/{component}/{object_id}/config`. The
entities read the retained `health` and line `state` documents, and use the `availability`
topic, so Home Assistant shows them unavailable when the appliance is offline. Commands are not
exposed: they need a `cmd_id` and belong to the plant's control systems.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from typing import TYPE_CHECKING, Any

from appliance.mqtt.topics import Topics

if TYPE_CHECKING:
    from appliance.service import Service


def _object_id(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(parts))


def _version() -> str:
    try:
        return metadata.version("vision-appliance")
    except metadata.PackageNotFoundError:
        return "dev"


def discovery_messages(service: Service, topics: Topics, prefix: str) -> list[tuple[str, str]]:
    """(topic, payload) of every discovery config for this node."""
    node = service.settings.node_id
    device = {
        "identifiers": [f"vision-{node}"],
        "name": f"Vision appliance {node}",
        "manufacturer": "vision-appliance",
        "model": "on-premise vision appliance",
        "sw_version": _version(),
    }
    common = {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    messages: list[tuple[str, str]] = []

    def add(component: str, object_id: str, config: dict[str, Any]) -> None:
        body = {**common, **config, "unique_id": object_id, "object_id": object_id}
        messages.append((f"{prefix}/{component}/{object_id}/config", json.dumps(body)))

    add(
        "binary_sensor",
        _object_id("vision", node, "problem"),
        {
            "name": "Problem",
            "device_class": "problem",
            "state_topic": topics.health,
            "value_template": "{{ 'OFF' if value_json.status == 'ok' else 'ON' }}",
        },
    )
    for line in (line.id for line in service.settings.lines):
        state = topics.state(line)
        last = "value_json.last_verdict"
        add(
            "sensor",
            _object_id("vision", node, line, "verdict"),
            {
                "name": f"{line} last verdict",
                "state_topic": state,
                "value_template": f"{{{{ {last}.verdict if {last} else 'none' }}}}",
                "icon": "mdi:check-decagram",
            },
        )
        add(
            "sensor",
            _object_id("vision", node, line, "defect"),
            {
                "name": f"{line} last defect",
                "state_topic": state,
                "value_template": f"{{{{ ({last}.defect_class or 'none') if {last} else 'none' }}}}",
            },
        )
        for key, name in (("total", "parts"), ("fail", "failed parts")):
            add(
                "sensor",
                _object_id("vision", node, line, key),
                {
                    "name": f"{line} {name}",
                    "state_topic": state,
                    "value_template": f"{{{{ value_json.counters.{key} }}}}",
                    "state_class": "total_increasing",
                    "unit_of_measurement": "parts",
                },
            )
        add(
            "sensor",
            _object_id("vision", node, line, "yield"),
            {
                "name": f"{line} yield",
                "state_topic": state,
                "value_template": "{{ (value_json.counters.yield * 100) | round(1) "
                "if value_json.counters.yield is not none else None }}",
                "unit_of_measurement": "%",
                "state_class": "measurement",
            },
        )
        add(
            "binary_sensor",
            _object_id("vision", node, line, "running"),
            {
                "name": f"{line} running",
                "device_class": "running",
                "state_topic": state,
                "value_template": "{{ 'ON' if value_json.running else 'OFF' }}",
            },
        )
    return messages
