"""The publish benchmark runs and reports the publisher's CPU per message."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.bench.broker import mosquitto_path
from appliance.mqtt.publishbench import measure_publish


def test_measure_publish(tmp_path: Path) -> None:
    if mosquitto_path() is None:
        pytest.skip("install Debian package mosquitto")
    figures = measure_publish(tmp_path, 500)
    assert figures["rows"] == 500 and figures["rows_per_s"] > 0
    assert figures["publisher_cpu_us_per_row"] > 0
    assert figures["splice_us"] > 0 and figures["reserialise_us"] > 0
