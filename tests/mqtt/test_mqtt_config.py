"""The [mqtt] section: TLS pairs, no inline password, Sparkplug and Home Assistant from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_settings

BASE = """
[[lines]]
id = "l1"
tiers = [{ model = "m" }]

[[lines.cameras]]
id = "c1"
source = { kind = "simulator" }
"""


def load(tmp_path: Path, mqtt: str):
    path = tmp_path / "a.toml"
    path.write_text(f"[mqtt]\n{mqtt}\n{BASE}")
    return load_settings(path)


def test_defaults_sparkplug_and_discovery_off(tmp_path):
    settings = load(tmp_path, "")
    assert settings.mqtt.enabled and settings.mqtt.host == "127.0.0.1" and settings.mqtt.port == 1883
    assert not settings.mqtt.sparkplug.enabled and not settings.mqtt.homeassistant.enabled
    assert settings.mqtt.command_max_age_s == 30


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ('tls_ca = "/ca.pem"\ntls_cert = "/c.pem"', "tls_cert and tls_key go together"),
        ('tls_cert = "/c.pem"\ntls_key = "/k.pem"', "needs tls_ca"),
        ('password = "hunter2"', "mqtt.password: unknown key"),
        ('sparkplug = { enabled = true, group_id = "a/b" }', "mqtt.sparkplug.group_id"),
    ],
)
def test_bad_mqtt_settings_are_named(tmp_path, mqtt, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, mqtt)
    assert message in str(err.value)


def test_environment_overrides_nested_sections(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_MQTT__PORT", "8883")
    monkeypatch.setenv("APPLIANCE_MQTT__PASSWORD_FILE", "/run/credentials/x/mqtt-password")
    monkeypatch.setenv("APPLIANCE_MQTT__SPARKPLUG__ENABLED", "true")
    monkeypatch.setenv("APPLIANCE_MQTT__SPARKPLUG__PRIMARY_HOST_ID", "scada-1")
    monkeypatch.setenv("APPLIANCE_MQTT__HOMEASSISTANT__ENABLED", "1")
    settings = load(tmp_path, 'host = "broker.plant"')
    assert settings.mqtt.host == "broker.plant" and settings.mqtt.port == 8883
    assert settings.mqtt.password_file == Path("/run/credentials/x/mqtt-password")
    assert settings.mqtt.sparkplug.enabled and settings.mqtt.sparkplug.primary_host_id == "scada-1"
    assert settings.mqtt.homeassistant.enabled
