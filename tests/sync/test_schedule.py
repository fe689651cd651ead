"""Schedule windows and backoff."""

from __future__ import annotations

import random

import pytest

from appliance.config import SyncConfig
from appliance.sync.schedule import Backoff, Schedule, Window


def test_windows_within_a_day_and_across_midnight() -> None:
    day = Window.parse("08:00-17:30")
    assert day.contains(8 * 60) and day.contains(17 * 60 + 29) and not day.contains(17 * 60 + 30)
    assert day.minutes_until_open(7 * 60) == 60
    night = Window.parse("22:00-06:00")
    assert night.contains(23 * 60) and night.contains(0) and night.contains(5 * 60 + 59)
    assert not night.contains(6 * 60) and not night.contains(12 * 60)
    assert night.minutes_until_open(21 * 60) == 60
    assert Window.parse("20:00-24:00").contains(23 * 60 + 59)


def test_schedule_without_windows_is_always_open() -> None:
    assert Schedule([]).is_open() and Schedule([]).seconds_until_open() == 0.0
    schedule = Schedule(["01:00-02:00", "13:00-14:00"])
    assert schedule.is_open(60) and schedule.is_open(13 * 60 + 5) and not schedule.is_open(12 * 60)


@pytest.mark.parametrize("bad", ["8:00-17:00", "08:00-08:00", "25:00-01:00", "08:00", "08:00-17:60"])
def test_bad_windows_are_config_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        SyncConfig(windows=[bad])


def test_backoff_doubles_with_jitter_and_caps() -> None:
    backoff = Backoff(1.0, 300.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(300.0, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 300.0 and delays[-1] >= 150.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_backoff_cap_is_at_most_five_minutes() -> None:
    with pytest.raises(ValueError, match="less than or equal to 300"):
        SyncConfig(backoff_max_s=301)
