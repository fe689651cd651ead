"""One closed, validated configuration tree.

Read from a TOML file (or the embedded default) and then overridden from the environment as
``APPLIANCE_<SECTION>__<KEY>`` (pydantic-settings' nested delimiter): the environment wins over
the file. Every field has a description and bounds; unknown keys are errors. Secrets never live
in the tree: fields ending in ``_file`` point at files (or systemd credentials).

One module per part of the tree; everything is importable from here.
"""

from appliance.config.base import (
    DEFAULT_CONFIG,
    ID_PATTERN,
    REPO_ROOT,
    ConfigError,
    DropPolicy,
    Section,
    default_models_dir,
)
from appliance.config.cameras import (
    CameraConfig,
    DefectKind,
    DeviceSource,
    FileSource,
    FolderSource,
    SimulatorSource,
    SourceConfig,
    StreamSource,
)
from appliance.config.errors import describe_errors
from appliance.config.lines import LineConfig, TierConfig
from appliance.config.mqtt import HomeAssistantConfig, MqttConfig, SparkplugConfig
from appliance.config.services import StoreConfig, WebConfig
from appliance.config.settings import PrivateKeyError, Settings, load_settings, settings_from
from appliance.config.sync import (
    ClassesConfig,
    HardCasesConfig,
    ImagesConfig,
    QuotaConfig,
    Rect,
    SampleConfig,
    SyncConfig,
)

__all__ = [
    "DEFAULT_CONFIG",
    "PrivateKeyError",
    "settings_from",
    "ID_PATTERN",
    "REPO_ROOT",
    "CameraConfig",
    "ClassesConfig",
    "ConfigError",
    "DefectKind",
    "DeviceSource",
    "DropPolicy",
    "FileSource",
    "FolderSource",
    "HardCasesConfig",
    "HomeAssistantConfig",
    "ImagesConfig",
    "LineConfig",
    "MqttConfig",
    "QuotaConfig",
    "Rect",
    "SampleConfig",
    "Section",
    "Settings",
    "SimulatorSource",
    "SourceConfig",
    "SparkplugConfig",
    "StoreConfig",
    "StreamSource",
    "SyncConfig",
    "TierConfig",
    "WebConfig",
    "default_models_dir",
    "describe_errors",
    "load_settings",
]
