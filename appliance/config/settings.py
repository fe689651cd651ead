"""The whole tree, and reading it from a file and the environment."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from appliance.config.base import DEFAULT_CONFIG, ID_PATTERN, ConfigError, default_models_dir
from appliance.config.errors import describe_errors
from appliance.config.lines import LineConfig
from appliance.config.mqtt import MqttConfig
from appliance.config.services import StoreConfig, WebConfig
from appliance.config.sync import SyncConfig


class Settings(BaseSettings):
    """The whole appliance configuration."""

    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        env_nested_delimiter="__",
        extra="forbid",
        title="Vision appliance configuration",
    )

    node_id: str = Field("demo-node", pattern=ID_PATTERN, description="This appliance's id.")
    site: str = Field("demo-site", pattern=ID_PATTERN, description="Plant/site id for sync keys.")
    state_dir: Path = Field(Path("var"), description="SQLite, images and caches live here.")
    models_dir: Path = Field(default_factory=default_models_dir, description="Where model packages live.")
    profile: str = Field("auto", description="Edge-box profile (threads, execution providers).")
    wedge_after_s: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="An inference worker busy on one frame longer than this is wedged: health "
        "error, and the systemd watchdog pings stop so that systemd restarts the service.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    lines: list[LineConfig] = Field(min_length=1, max_length=16, description="Production lines.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="SQLite outbox.")
    web: WebConfig = Field(default_factory=WebConfig, description="Console and API.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Plant MQTT broker.")
    sync: SyncConfig = Field(default_factory=SyncConfig, description="Cloud sync.")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        from hardware.profiles import PROFILES

        if name != "auto" and name not in PROFILES:
            raise ValueError(f"unknown edge-box profile; known: auto, {', '.join(sorted(PROFILES))}")
        return name

    @model_validator(mode="after")
    def _unique_ids(self) -> Settings:
        lines = [line.id for line in self.lines]
        if len(lines) != len(set(lines)):
            raise ValueError(f"line ids repeat: {lines}")
        cameras = [c.id for line in self.lines for c in line.cameras]
        if len(cameras) != len(set(cameras)):
            raise ValueError(f"camera ids repeat across lines: {cameras}")
        unknown = sorted(set(self.sync.masks) - set(cameras))
        if unknown:
            raise ValueError(f"sync.masks names unknown camera(s) {unknown}; cameras: {cameras}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment wins over the file (passed as init values)."""
        return (env_settings, init_settings)

    @property
    def db_path(self) -> Path:
        """The SQLite outbox file."""
        return self.state_dir / "appliance.db"


class PrivateKeyError(ValueError):
    """A key pydantic-settings would take as an instruction (`_env_prefix`, `_env_file`...)."""


def settings_from(data: dict[str, Any]) -> Settings:
    """Validate a parsed config file (the only way a config tree becomes Settings).

    `BaseSettings` takes keyword arguments starting with `_` as instructions to itself: a file
    saying `_env_prefix = "X_"` would switch every environment override off, `_env_file` would
    read another file. Such keys are refused like any unknown key.
    """
    private = sorted(key for key in data if key.startswith("_"))
    if private:
        raise PrivateKeyError(f"{', '.join(private)}: unknown key (not allowed here; check the spelling)")
    return Settings(**data)


def load_settings(path: Path | None = None) -> Settings:
    """Read `path` (or $APPLIANCE_CONFIG, or the embedded default) and apply env overrides.

    Relative paths in a config file are relative to that file; relative paths from the
    environment or the embedded default are relative to the working directory.
    """
    if path is None and os.environ.get("APPLIANCE_CONFIG"):
        path = Path(os.environ["APPLIANCE_CONFIG"])
    source = path or DEFAULT_CONFIG
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        settings = settings_from(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(source, text, exc)) from exc
    except PrivateKeyError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    file_base = Path.cwd() if path is None else source.resolve().parent
    _resolve_paths(settings, file_base, ())
    return settings


def _resolve_paths(model: BaseModel, file_base: Path, loc: tuple[str, ...]) -> None:
    """Make every relative Path in the tree absolute: against the config file's folder, or the
    working directory when the value came from the environment (APPLIANCE_..._...)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        here = (*loc, name)
        if isinstance(value, Path) and not value.is_absolute():
            from_env = "APPLIANCE_" + "__".join(here).upper() in os.environ
            object.__setattr__(model, name, ((Path.cwd() if from_env else file_base) / value).resolve())
        elif isinstance(value, BaseModel):
            _resolve_paths(value, file_base, here)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    _resolve_paths(item, file_base, here)
