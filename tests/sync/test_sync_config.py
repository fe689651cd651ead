"""The sync section of the configuration: defaults, bounds, environment overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.config import ConfigError, Settings, SyncConfig, load_settings


def test_defaults_send_nothing_and_keep_fails_locally() -> None:
    config = SyncConfig()
    assert config.target == "" and config.policy == "none"
    assert config.images.retain == "fails" and config.backoff_max_s == 300
    assert config.hard_cases.classes.classes == []


def test_masks_must_name_known_cameras(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(sync={"masks": {"cam1": [[0, 0, 10, 10]]}}).sync.masks["cam1"] == [(0, 0, 10, 10)]
    with pytest.raises(ValidationError, match="unknown camera"):
        make_settings(sync={"masks": {"door-cam": [[0, 0, 10, 10]]}})
    with pytest.raises(ValidationError, match="x1 < x2"):
        make_settings(sync={"masks": {"cam1": [[10, 0, 5, 10]]}})


def test_nested_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        '[[lines]]\nid = "l1"\ntiers = [{ model = "m" }]\n'
        '[[lines.cameras]]\nid = "c1"\nsource = { kind = "simulator" }\n'
    )
    monkeypatch.setenv("APPLIANCE_SYNC__TARGET", "s3://bucket/prefix")
    monkeypatch.setenv("APPLIANCE_SYNC__IMAGES__BUDGET_MB", "500")
    monkeypatch.setenv("APPLIANCE_SYNC__HARD_CASES__SAMPLE__RATE", "0.5")
    monkeypatch.setenv("APPLIANCE_SYNC__WINDOWS", '["22:00-06:00"]')
    settings = load_settings(config)
    assert settings.sync.images.budget_mb == 500
    assert settings.sync.hard_cases.sample.rate == 0.5
    assert settings.sync.windows == ["22:00-06:00"]
    monkeypatch.setenv("APPLIANCE_SYNC__HARD_CASES__SAMPLE__RATE", "2")
    with pytest.raises(ConfigError, match="sync.hard_cases.sample.rate"):
        load_settings(config)


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("s3://vision-bucket/plant/a", True),
        ("s3://vision-bucket", True),
        ("file:///mnt/export", True),
        ("", True),
        ("s3://", False),
        ("s3://B_ad/x", False),
        ("file://relative/dir", False),
        ("http://bucket", False),
    ],
)
def test_target_forms(target: str, ok: bool) -> None:
    if ok:
        assert SyncConfig(target=target).target == target
    else:
        with pytest.raises(ValidationError, match="target"):
            SyncConfig(target=target)
