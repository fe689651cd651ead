"""Events and alarms: fan-out, raise once, clear, details that clash with log record fields."""

from __future__ import annotations

import logging

import pytest

from appliance.events import EventBus


def test_alarm_is_raised_once_and_cleared_with_a_recovery_event() -> None:
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    bus.raise_alarm("disk", "disk_low", "disk low")
    bus.raise_alarm("disk", "disk_low", "disk low")
    assert [a.kind for a in bus.alarms()] == ["disk_low"]
    bus.clear_alarm("disk", "disk_ok", "disk fine again")
    assert bus.alarms() == []
    assert [e.kind for e in seen] == ["disk_low", "disk_ok"]


def test_details_named_like_log_record_fields_do_not_break_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bus = EventBus()
    event = bus.emit("model_switched", "switched", module="tier2", name="mt-tier2", args="x")
    assert event.details == {"module": "tier2", "name": "mt-tier2", "args": "x"}
    record = caplog.records[-1]
    assert record.detail_module == "tier2" and record.detail_name == "mt-tier2"  # type: ignore[attr-defined]


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen = []

    def broken(_event: object) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    bus.emit("camera_lost", "lost")
    assert len(seen) == 1
    for record in caplog.records:
        record.expected = True  # the logged traceback is the point of this test
