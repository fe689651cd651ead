"""Home Assistant discovery: retained configs for the node and each line, off by default."""

from __future__ import annotations

import json

PREFIX = "homeassistant"


def test_discovery_configs(mqtt_settings, run_service, listen):
    watcher = listen([f"{PREFIX}/#"])
    try:
        with run_service(mqtt_settings(homeassistant={"enabled": True})):
            watcher.wait_for(lambda ms: len(ms) >= 7)
        configs = {m.topic: json.loads(m.payload) for m in watcher.messages}
        late = listen([f"{PREFIX}/#"])  # retained: Home Assistant finds them whenever it starts
        late.wait_for(lambda ms: len(ms) == 7)
        assert all(m.retain for m in late.messages)
        verdict = configs[f"{PREFIX}/sensor/vision_test-node_line1_verdict/config"]
        assert verdict["state_topic"] == "vision/test-node/line/line1/state"
        assert verdict["availability_topic"] == "vision/test-node/availability"
        assert verdict["unique_id"] == "vision_test-node_line1_verdict"
        assert verdict["device"]["identifiers"] == ["vision-test-node"]
        problem = configs[f"{PREFIX}/binary_sensor/vision_test-node_problem/config"]
        assert problem["state_topic"] == "vision/test-node/health"
        assert len(configs) == 7
    finally:
        for topic in {m.topic for m in watcher.messages}:
            watcher.publish(topic, b"", retain=True)


def test_no_discovery_by_default(mqtt_settings, run_service, listen):
    watcher = listen([f"{PREFIX}/#", "vision/test-node/availability"])
    with run_service(mqtt_settings()):
        watcher.wait_for(lambda ms: any(m.payload == b"online" for m in ms))
    assert not [m for m in watcher.messages if m.topic.startswith(PREFIX)]
