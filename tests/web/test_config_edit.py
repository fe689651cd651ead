"""Validating and saving the config file from the console."""

from __future__ import annotations

import tomllib
from pathlib import Path

from appliance.config import Settings, load_settings
from appliance.web.config_edit import diff, save, to_toml, validate

GOOD = """
state_dir = "state"
models_dir = "{models}"
[[lines]]
id = "l1"
tiers = [{{ model = "bright1" }}]
[[lines.cameras]]
id = "c1"
source = {{ kind = "simulator" }}
"""


def test_validate(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "a.toml"
    good = GOOD.format(models=models_dir)
    assert validate(good, path) == []
    assert "not valid TOML" in validate("lines = [", path)[0]
    bad = validate(good.replace('id = "c1"', 'id = "c 1"'), path)
    assert len(bad) == 1 and "lines[0].cameras[0].id" in bad[0] and f"{path}:" in bad[0]
    assert "unknown key" in validate(good + "\ncolour = 1\n", path)[0]
    assert "no model package 'nope'" in validate(good.replace("bright1", "nope"), path)[0]
    assert "not valid UTF-8" in validate("node_id = '\ud800'", path)[0]


def test_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "a.toml"
    save("one = 1\n", path)
    save("two = 2\n", path)
    assert path.read_text() == "two = 2\n"
    assert path.with_name("a.toml.previous").read_text() == "one = 1\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.toml", "a.toml.previous"]
    assert "-one = 1\n+two = 2" in diff("one = 1\n", "two = 2\n", "a.toml")


def test_to_toml_round_trips_settings(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(GOOD.format(models=models_dir))
    settings = load_settings(path)
    text = to_toml(settings.model_dump(mode="json", exclude_none=True))
    again = Settings(**tomllib.loads(text))
    assert again.model_dump() == settings.model_dump()
