"""Config loading, environment overrides and every class of config error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import ConfigError, load_settings

GOOD = """
node_id = "press-3"
state_dir = "state"

[mqtt]
host = "broker.plant"
port = 8883

[[lines]]
id = "l1"
tiers = [{ model = "mt-tier1" }, { model = "mt-tier2" }, { model = "cloud" }]

[[lines.cameras]]
id = "c1"
source = { kind = "folder", path = "/data/parts", fps = 2 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_good_file_loads_with_relative_paths_resolved_against_it(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.node_id == "press-3"
    assert settings.mqtt.port == 8883
    assert settings.state_dir == (tmp_path / "state").resolve()
    assert [t.model for t in settings.lines[0].tiers] == ["mt-tier1", "mt-tier2", "cloud"]


def test_embedded_default_is_the_simulated_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)
    settings = load_settings()
    assert settings.web.host == "127.0.0.1" and settings.web.port == 8080
    assert settings.mqtt.host == "127.0.0.1" and settings.mqtt.port == 1883
    assert settings.lines[0].cameras[0].source.kind == "simulator"
    assert [t.model for t in settings.lines[0].tiers] == ["mt-tier1", "mt-tier2"]
    assert settings.state_dir == tmp_path / "var"
    assert settings.sync.policy == "none"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APPLIANCE_NODE_ID", "from-env")
    monkeypatch.setenv("APPLIANCE_MQTT__PORT", "1999")
    monkeypatch.setenv("APPLIANCE_WEB__HOST", "0.0.0.0")
    monkeypatch.setenv("APPLIANCE_SYNC__POLICY", "crops")
    monkeypatch.setenv("APPLIANCE_SYNC__TARGET", "s3://bucket/prefix")
    monkeypatch.setenv("APPLIANCE_STATE_DIR", "elsewhere")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.node_id == "from-env"
    assert settings.mqtt.port == 1999
    assert settings.mqtt.host == "broker.plant"
    assert settings.web.host == "0.0.0.0"
    assert settings.sync.policy == "crops"
    assert settings.sync.target == "s3://bucket/prefix"
    assert settings.state_dir == tmp_path / "elsewhere"


def test_appliance_config_variable_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(write(tmp_path, GOOD)))
    assert load_settings().node_id == "press-3"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("[mqtt]", '[mqtt]\nhots = "x"'), ":6: mqtt.hots: unknown key"),
        (("port = 8883", "port = 70000"), ":7: mqtt.port: Input should be less than or equal to 65535"),
        (("port = 8883", 'port = "many"'), "mqtt.port: Input should be a valid integer"),
        (('id = "l1"', 'id = "l 1"'), "lines[0].id: String should match pattern"),
        (('kind = "folder"', 'kind = "webcam"'), "lines[0].cameras[0].source: Input tag 'webcam'"),
        (
            ('{ model = "cloud" }', '{ model = "cloud" }, { model = "x" }'),
            "'cloud' can only be the last tier",
        ),
        (('path = "/data/parts", ', ""), "lines[0].cameras[0].source.path: Field required"),
        (
            ('node_id = "press-3"', 'node_id = "press-3"\nsync = { policy = "everything" }'),
            "sync.policy: Input should be 'none', 'metadata', 'crops' or 'frames'",
        ),
    ],
    ids=[
        "unknown-key",
        "out-of-range",
        "wrong-type",
        "bad-pattern",
        "bad-kind",
        "cloud-not-last",
        "missing",
        "bad-enum",
    ],
)
def test_each_error_class_names_the_key_and_reason(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert expected in str(info.value)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 3"):
        load_settings(write(tmp_path, 'node_id = "a"\n\n[mqtt\nport = 1\n'))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml")


def test_bad_environment_override_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("APPLIANCE_WEB__PORT", "eighty")
    monkeypatch.setenv("APPLIANCE_MQTT__HOTS", "x")
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD))
    assert "environment APPLIANCE_WEB__PORT: web.port" in str(info.value)
    assert "environment APPLIANCE_MQTT__HOTS: mqtt.hots: unknown key" in str(info.value)


def test_check_config_command(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout
    bad = write(tmp_path, GOOD.replace("port = 8883", "port = -1"))
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"{bad}:7: mqtt.port: Input should be greater than or equal to 1 (got -1)" in result.stderr


def test_configuration_reference_is_generated_from_the_schema() -> None:
    from appliance.config_doc import render
    from tests.conftest import REPO

    current = (REPO / "docs" / "configuration.md").read_text()
    assert current == render(), (
        "docs/configuration.md is stale: python -m appliance.config_doc > docs/configuration.md"
    )


def test_the_reference_lists_nested_sections_with_the_defaults_they_really_get() -> None:
    from appliance.config import HardCasesConfig
    from appliance.config_doc import render

    text = render()
    assert "### [sync.images]" in text and "`sync.images.queue_size` | int | `64`" in text
    # Each hard-case strategy gets its own quotas, not the quota class's defaults.
    disputed = HardCasesConfig().disputed
    assert f"`sync.hard_cases.disputed.per_hour` | int | `{disputed.per_hour}`" in text
    assert disputed.per_hour != HardCasesConfig().uncertain.per_hour


def test_relative_paths_anywhere_in_the_file_are_relative_to_it(tmp_path: Path) -> None:
    text = GOOD.replace('path = "/data/parts"', 'path = "parts"').replace(
        'host = "broker.plant"', 'host = "broker.plant"\npassword_file = "secrets/mqtt"'
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.lines[0].cameras[0].source.path == (tmp_path / "parts").resolve()
    assert settings.mqtt.password_file == (tmp_path / "secrets" / "mqtt").resolve()


@pytest.mark.parametrize("key", ["_env_prefix", "_env_file", "_secrets_dir", "_cli_parse_args"])
def test_pydantic_settings_instructions_are_refused_as_unknown_keys(tmp_path: Path, key: str) -> None:
    text = f'{key} = "X_"\n' + GOOD
    with pytest.raises(ConfigError, match=f"{key}: unknown key"):
        load_settings(write(tmp_path, text))
