"""Topic names of the contract and parsing of command topics."""

from __future__ import annotations

from appliance.mqtt.topics import CommandTopic, Topics


def test_topic_names():
    t = Topics("vision", "n1")
    assert t.availability == "vision/n1/availability"
    assert t.health == "vision/n1/health"
    assert t.event == "vision/n1/event"
    assert t.ack == "vision/n1/ack"
    assert t.result("l1") == "vision/n1/line/l1/result"
    assert t.state("l1") == "vision/n1/line/l1/state"
    assert t.command_filters() == ["vision/n1/cmd/+", "vision/n1/line/+/cmd/+"]


def test_parse_command_topics():
    t = Topics("plant/a", "n1")
    assert t.parse_command("plant/a/n1/cmd/republish") == CommandTopic("republish", None)
    assert t.parse_command("plant/a/n1/line/l1/cmd/stop") == CommandTopic("stop", "l1")
    for other in (
        "plant/a/n2/cmd/x",
        "plant/a/n1/cmd/",
        "plant/a/n1/line/l1/cmd",
        "plant/a/n1/health",
        "plant/a/n1/line//cmd/x",
        "plant/a/n1/cmd/x/y",
    ):
        assert t.parse_command(other) is None
