"""One closed, validated configuration tree.

Read from a TOML file (or the embedded default) and then overridden from the environment as
``APPLIANCE_<SECTION>__<KEY>`` (pydantic-settings' nested delimiter): the environment wins over
the file. Every field has a description and bounds; unknown keys are errors. Secrets never live
in the tree: fields ending in ``_file`` point at files (or systemd credentials).
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default.toml"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # safe in MQTT topics, S3 keys and file names


def default_models_dir() -> Path:
    """The shipped model packages: `models/` of a source checkout, else beside the virtualenv.

    A non-editable install (the systemd installer's /opt/appliance/releases/<version>/venv) puts
    the package in site-packages, away from the checkout; the installer copies `models/` next to
    the virtualenv, so it is found at `<venv>/../models`.
    """
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "models"
    return Path(sys.prefix).parent / "models"


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the reason."""


DropPolicy = Literal["latest", "queue", "block"]


class Section(BaseModel):
    """Base for every config section: closed (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")


# --- camera sources -------------------------------------------------------------------------


# The kinds hardware.sources.simulator draws (its DEFECT_KINDS).
DefectKind = Literal["blowhole", "crack", "break", "fray", "uneven"]


class SimulatorSource(Section):
    """The built-in line simulator: synthetic magnetic-tile parts, some defective."""

    kind: Literal["simulator"] = "simulator"
    fps: float = Field(
        10.0, ge=0, le=1000, description="Parts per second passing the camera; 0 = as fast as inference."
    )
    defect_rate: float = Field(0.2, ge=0, le=1, description="Probability that a part is defective.")
    defect_kinds: list[DefectKind] = Field(
        default_factory=lambda: list(get_args(DefectKind)),
        description="Defect kinds the simulator draws.",
    )
    width: int = Field(320, ge=32, le=4096, description="Frame width in pixels.")
    height: int = Field(320, ge=32, le=4096, description="Frame height in pixels.")
    seed: int = Field(0, ge=0, description="Random seed (same seed, same parts).")


class FolderSource(Section):
    """A folder of images replayed as a camera (sub-folder names are the ground truth)."""

    kind: Literal["folder"] = "folder"
    path: Path = Field(description="Folder to replay (searched recursively).")
    fps: float = Field(5.0, ge=0, le=1000, description="Replay rate; 0 = as fast as inference.")
    loop: bool = Field(True, description="Start again at the end.")
    shuffle: bool = Field(False, description="Shuffle the order (seeded).")
    seed: int = Field(0, ge=0, description="Shuffle seed.")


class FileSource(Section):
    """A video file replayed as a camera."""

    kind: Literal["file"] = "file"
    path: Path = Field(description="Video file (anything FFmpeg reads).")
    fps: float = Field(0.0, ge=0, le=1000, description="Replay rate; 0 = the file's own rate.")
    loop: bool = Field(True, description="Start again at the end.")


class StreamSource(Section):
    """A network camera: RTSP, HTTP MJPEG or anything FFmpeg opens by URL."""

    kind: Literal["stream"] = "stream"
    url: str | None = Field(
        None,
        pattern=r"^(rtsp|rtsps|http|https|rtmp|udp|tcp)://",
        description="Stream URL without secrets (use url_file when it carries a password).",
    )
    url_file: Path | None = Field(
        None, description="File (or systemd credential) holding the full URL, credentials included."
    )
    open_timeout_ms: int = Field(5000, ge=100, le=60000, description="Open timeout.")
    read_timeout_ms: int = Field(5000, ge=100, le=60000, description="Read timeout.")

    @model_validator(mode="after")
    def _one_url(self) -> StreamSource:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("give exactly one of url and url_file")
        return self

    def resolved_url(self) -> str:
        """The URL, read from url_file when given (never logged: sources redact credentials)."""
        if self.url is not None:
            return self.url
        assert self.url_file is not None
        return self.url_file.read_text(encoding="utf-8").strip()


class DeviceSource(Section):
    """A V4L2 camera (/dev/videoN)."""

    kind: Literal["v4l2"] = "v4l2"
    device: int = Field(0, ge=0, le=63, description="N in /dev/videoN.")


SourceConfig = Annotated[
    SimulatorSource | FolderSource | FileSource | StreamSource | DeviceSource,
    Field(discriminator="kind"),
]


class CameraConfig(Section):
    """One camera on a line."""

    id: str = Field(pattern=ID_PATTERN, description="Camera id, unique on the node.")
    source: SourceConfig = Field(description="Where frames come from.")
    drop_policy: DropPolicy = Field(
        "latest",
        description=(
            "latest: one frame waits for inference, newer frames are skipped before decoding "
            "while it waits (counted); queue: up to queue_depth frames wait (newer ones skipped, "
            "counted); block: the source waits for inference (replay only, nothing dropped)."
        ),
    )
    queue_depth: int = Field(4, ge=1, le=256, description="Frames that may wait with 'queue'.")
    reconnect_max_s: float = Field(30.0, ge=0.1, le=3600, description="Backoff cap on reconnect.")


# --- ladder ---------------------------------------------------------------------------------


class TierConfig(Section):
    """One decider on a line's ladder: a local model package or the cloud expert."""

    model: str = Field(
        pattern=r"^(cloud|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$",
        description="Model package name under models_dir, or 'cloud' for the cloud expert.",
    )
    band: tuple[float, float] | None = Field(
        None,
        description="Uncertain band [lo, hi): escalate when the score falls in it; "
        "default from the model's manifest.",
    )

    @field_validator("band")
    @classmethod
    def _ordered(cls, band: tuple[float, float] | None) -> tuple[float, float] | None:
        if band is not None and not 0.0 <= band[0] <= band[1] <= 1.0:
            raise ValueError("band must satisfy 0 <= lo <= hi <= 1")
        return band


class LineConfig(Section):
    """A production line (station): its cameras and the ladder that judges its parts."""

    id: str = Field(pattern=ID_PATTERN, description="Line id, used in MQTT topics.")
    cameras: list[CameraConfig] = Field(min_length=1, max_length=32, description="Cameras.")
    tiers: list[TierConfig] = Field(
        min_length=1, max_length=4, description="Ladder, cheapest first; 'cloud' only last."
    )
    deadline_ms: int = Field(
        250, ge=5, le=60000, description="Time from capture to verdict the line can wait."
    )
    backlog: int = Field(64, ge=1, le=10000, description="Frames that may wait for a later tier.")

    @model_validator(mode="after")
    def _cloud_last(self) -> LineConfig:
        names = [t.model for t in self.tiers]
        if "cloud" in names[:-1]:
            raise ValueError("'cloud' can only be the last tier")
        if names[0] == "cloud":
            raise ValueError("the first tier must be a local model")
        ids = [c.id for c in self.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids repeat on line {self.id}: {ids}")
        return self


# --- services -------------------------------------------------------------------------------


class StoreConfig(Section):
    """The SQLite outbox every result goes through."""

    batch_max_rows: int = Field(64, ge=1, le=10000, description="Rows per write transaction.")
    batch_max_ms: int = Field(
        0,
        ge=0,
        le=5000,
        description="Longest wait to fill a batch; 0 = commit what is queued at once (group commit).",
    )
    queue_size: int = Field(1024, ge=16, le=100000, description="Results waiting for the writer.")
    busy_timeout_ms: int = Field(5000, ge=100, le=600000, description="SQLite busy timeout.")
    max_age_days: float = Field(30.0, gt=0, le=3650, description="Oldest result kept.")
    max_rows: int = Field(5_000_000, ge=1000, description="Most result rows kept.")
    min_free_mb: int = Field(200, ge=0, description="Below this free disk space, alarm.")


class WebConfig(Section):
    """The local console and HTTP API."""

    enabled: bool = Field(True, description="Serve the console and API.")
    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8080, ge=0, le=65535, description="Listen port (0 = any free port).")
    tls_cert: Path | None = Field(None, description="PEM certificate; enables HTTPS.")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.")
    max_body_bytes: int = Field(1_000_000, ge=1024, le=100_000_000, description="Request cap.")
    session_idle_minutes: int = Field(
        480, ge=5, le=43200, description="Console sessions end after this long without a request."
    )
    session_max_hours: int = Field(24, ge=1, le=720, description="Console sessions end after this long.")
    login_max_failures: int = Field(
        5, ge=1, le=100, description="Consecutive failed logins that lock a user name."
    )
    login_lockout_minutes: float = Field(15.0, ge=0.1, le=1440, description="How long a lockout lasts.")
    login_backoff_s: float = Field(
        1.0, ge=0, le=60, description="Wait after a failed login, doubling with each further failure."
    )
    login_rate_per_minute: int = Field(
        20, ge=1, le=10000, description="Login attempts allowed per client address and minute."
    )
    shift_starts: list[str] = Field(
        default_factory=lambda: ["06:00", "14:00", "22:00"],
        min_length=1,
        max_length=24,
        description="Local times (HH:MM) at which shifts start; the console counts per shift.",
    )

    @field_validator("shift_starts")
    @classmethod
    def _times(cls, starts: list[str]) -> list[str]:
        for start in starts:
            if not re.match(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", start):
                raise ValueError(f"shift start {start!r} is not HH:MM (00:00 to 23:59)")
        if len(set(starts)) != len(starts):
            raise ValueError("shift starts repeat")
        return sorted(starts)

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class SparkplugConfig(Section):
    """Sparkplug B 3.0 edge node (a second MQTT session whose Will is the NDEATH)."""

    enabled: bool = Field(False, description="Publish as a Sparkplug B edge node.")
    group_id: str = Field("vision", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Sparkplug group id.")
    edge_node_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Edge node id (default: node_id)."
    )
    primary_host_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Wait for this primary host's STATE online before the births; "
        "results produced while it is offline are sent later as historical data.",
    )


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery (read-only sensors per line)."""

    enabled: bool = Field(False, description="Publish Home Assistant discovery configs.")
    prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_/-]{1,64}$", description="Discovery prefix.")


class MqttConfig(Section):
    """The plant's MQTT broker.

    The password is never part of the tree: it is read from `password_file`, or else from
    `$CREDENTIALS_DIRECTORY/mqtt-password` (systemd `LoadCredential=mqtt-password:...`).
    """

    enabled: bool = Field(True, description="Publish to the broker.")
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    prefix: str = Field("vision", pattern=r"^[A-Za-z0-9_/-]{1,64}$", description="Topic prefix.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT version (falls back to 3.1.1).")
    username: str | None = Field(None, description="Username.")
    password_file: Path | None = Field(None, description="File holding the password.")
    tls_ca: Path | None = Field(None, description="CA bundle; enables TLS.")
    tls_cert: Path | None = Field(None, description="Client certificate (mutual TLS).")
    tls_key: Path | None = Field(None, description="Client key (mutual TLS).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="Keepalive interval.")
    inflight: int = Field(64, ge=1, le=65535, description="Unacknowledged results at once.")
    reconnect_max_s: float = Field(30.0, ge=1, le=3600, description="Reconnect backoff cap.")
    health_interval_s: float = Field(10.0, ge=1, le=3600, description="Health publish period.")
    connect_timeout_s: float = Field(10.0, ge=1, le=120, description="TCP/TLS connect timeout.")
    command_max_age_s: float = Field(
        30.0, ge=1, le=3600, description="Commands whose ts_ms is older than this are refused as stale."
    )
    republish_max_rows: int = Field(
        100_000, ge=1, le=10_000_000, description="Most rows one republish command may resend."
    )
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig, description="Sparkplug B.")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="Home Assistant discovery."
    )

    @model_validator(mode="after")
    def _client_pair(self) -> MqttConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ValueError("a client certificate needs tls_ca (TLS) as well")
        return self


class QuotaConfig(Section):
    """One hard-case selection strategy and its quotas (UTC hours and days)."""

    enabled: bool = Field(True, description="Select hard cases with this strategy.")
    per_hour: int = Field(60, ge=0, le=100_000, description="Most cases selected per hour.")
    per_day: int = Field(500, ge=0, le=1_000_000, description="Most cases selected per day.")


class SampleConfig(QuotaConfig):
    """A random sample of passes, so that drift stays visible."""

    rate: float = Field(0.01, ge=0, le=1, description="Fraction of final pass verdicts sampled.")


class ClassesConfig(QuotaConfig):
    """Every fail of the chosen defect classes (until the quota is used up)."""

    classes: list[str] = Field(
        default_factory=list, max_length=64, description="Defect classes to select; empty = off."
    )


class HardCasesConfig(Section):
    """Which parts become hard cases (review queue locally; re-analysis and retraining in the cloud)."""

    uncertain: QuotaConfig = Field(
        default_factory=lambda: QuotaConfig(per_hour=60, per_day=500),
        description="Still in the uncertain band after the last local tier.",
    )
    disputed: QuotaConfig = Field(
        default_factory=lambda: QuotaConfig(per_hour=200, per_day=2000),
        description="An operator's label disagrees with the latest verdict.",
    )
    sample: SampleConfig = Field(
        default_factory=lambda: SampleConfig(per_hour=10, per_day=100),
        description="A random sample of passes.",
    )
    classes: ClassesConfig = Field(
        default_factory=lambda: ClassesConfig(per_hour=30, per_day=300),
        description="Fails of chosen defect classes.",
    )


class ImagesConfig(Section):
    """Frames kept on disk at capture time (for hard cases, the console and the cloud)."""

    retain: Literal["none", "hard_cases", "fails", "all"] = Field(
        "fails",
        description="Which frames are kept: none; hard cases only; hard cases, fails and errors; all.",
    )
    budget_mb: int = Field(2000, ge=1, le=10_000_000, description="Disk budget for kept images.")
    max_age_days: float = Field(30.0, gt=0, le=3650, description="Oldest image kept.")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality of kept frames.")
    queue_size: int = Field(64, ge=1, le=4096, description="Frames waiting to be written (then dropped).")


Rect = tuple[int, int, int, int]


class SyncConfig(Section):
    """Store-and-forward to the cloud."""

    target: str = Field(
        "", pattern=r"^$|^(file|s3)://", description="file:///dir or s3://bucket/prefix; empty = off."
    )
    endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, Ceph...).")
    policy: Literal["none", "metadata", "crops", "frames"] = Field(
        "none", description="What may leave the premises (default: nothing)."
    )
    interval_s: float = Field(30.0, ge=0.1, le=86400, description="Time between sync rounds.")
    batch_max_rows: int = Field(5000, ge=1, le=1_000_000, description="Results per batch object.")
    bandwidth_bytes_s: int = Field(0, ge=0, description="Upload cap in bytes/s; 0 = none.")
    region: str = Field("us-east-1", max_length=64, description="S3 region (signing).")
    addressing_style: Literal["path", "virtual", "auto"] = Field(
        "path", description="S3 addressing; path-style suits MinIO and Ceph."
    )
    checksums: Literal["when_required", "when_supported"] = Field(
        "when_required",
        description="botocore request checksums; when_required suits non-AWS stores.",
    )
    conditional_put: bool = Field(
        True,
        description="Write immutable objects with If-None-Match: * (else HEAD before each put, "
        "for stores that ignore the header).",
    )
    credentials_file: Path | None = Field(
        None,
        description="AWS-style credentials file (INI); a relative name is looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential). Unset: the environment "
        "(AWS_ACCESS_KEY_ID...) or boto3's default chain.",
    )
    credentials_profile: str = Field("default", max_length=64, description="Section of credentials_file.")
    ca_bundle: Path | None = Field(None, description="CA bundle for the endpoint's TLS certificate.")
    timeout_s: float = Field(20.0, ge=1, le=600, description="Connect and read timeout per request.")
    windows: list[str] = Field(
        default_factory=list,
        max_length=24,
        description="Local-time windows when uploads may run, e.g. ['22:00-06:00']; empty = always.",
    )
    backoff_initial_s: float = Field(1.0, ge=0.05, le=60, description="First retry delay after a failure.")
    backoff_max_s: float = Field(300.0, ge=0.1, le=300, description="Retry delay cap (jittered).")
    pull_interval_s: float = Field(60.0, ge=0.1, le=86400, description="Time between verdict pulls.")
    cases_per_round: int = Field(50, ge=1, le=10000, description="Hard cases uploaded per round.")
    drain_busy_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description="While a backlog drains, the share of wall time the worker may spend building "
        "and sending batches; it rests the remainder so inspection keeps the CPU (1 = flat out).",
    )
    stale_after_s: float = Field(
        3600.0, ge=1, le=30 * 86400, description="Alarm when the oldest unsynced result is older."
    )
    crop_margin: float = Field(
        0.25, ge=0, le=4, description="Margin around a defect, as a fraction of its box."
    )
    crop_min_px: int = Field(32, ge=4, le=4096, description="Smallest crop side.")
    crop_max_fraction: float = Field(
        0.5, gt=0, le=0.9, description="Largest crop side as a fraction of the frame side (never the frame)."
    )
    masks: dict[str, list[Rect]] = Field(
        default_factory=dict,
        description="Per camera id, pixel rectangles [x1, y1, x2, y2] blacked out before anything leaves.",
    )
    images: ImagesConfig = Field(default_factory=ImagesConfig, description="Local image retention.")
    hard_cases: HardCasesConfig = Field(default_factory=HardCasesConfig, description="Hard-case selection.")

    @field_validator("target")
    @classmethod
    def _target(cls, target: str) -> str:
        if target.startswith("s3://") and not re.fullmatch(
            r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?", target
        ):
            raise ValueError("expected s3://bucket/optional/prefix (bucket: 3-63 of a-z, 0-9, '.', '-')")
        if target.startswith("file://") and not target.startswith("file:///"):
            raise ValueError("expected file:///absolute/directory")
        return target

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: list[str]) -> list[str]:
        for window in windows:
            match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)", window)
            if not match or window.split("-")[0] == window.split("-")[1]:
                raise ValueError(f"window {window!r} must be HH:MM-HH:MM (local time, start != end)")
        return windows

    @field_validator("masks")
    @classmethod
    def _masks(cls, masks: dict[str, list[Rect]]) -> dict[str, list[Rect]]:
        for camera, rects in masks.items():
            for x1, y1, x2, y2 in rects:
                if not (0 <= x1 < x2 and 0 <= y1 < y2):
                    raise ValueError(
                        f"mask of camera {camera}: [{x1}, {y1}, {x2}, {y2}] needs 0 <= x1 < x2, 0 <= y1 < y2"
                    )
        return masks


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
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(source, text, exc)) from exc
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


def describe_errors(source: Path, text: str, exc: ValidationError) -> str:
    """One line per problem: file:line: dotted.key: reason (got value)."""
    lines = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not str(p).startswith("function-after")]
        loc = [p for p in loc if p not in _UNION_TAGS]
        key = _dotted(loc) or "(top level)"
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = "unknown key (not allowed here; check the spelling)"
        got = error.get("input")
        shown = (
            ""
            if error["type"] in {"missing", "extra_forbidden"} or isinstance(got, dict)
            else f" (got {got!r})"
        )
        env_name = "APPLIANCE_" + "__".join(p for p in loc if not p.isdigit()).upper()
        where = _line_of(text, loc)
        if env_name in os.environ:
            prefix = f"environment {env_name}"
        else:
            prefix = f"{source}:{where}" if where else f"{source}"
        lines.append(f"{prefix}: {key}: {reason}{shown}")
    return "\n".join(lines)


_UNION_TAGS = {"simulator", "folder", "file", "stream", "v4l2"}


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _line_of(text: str, loc: list[str]) -> int | None:
    """Line of `loc` (e.g. lines.0.cameras.1.source.path) in the TOML text, best effort.

    Walks the table headers, counting array-of-tables entries so that indices match, and looks
    inside inline tables; falls back to the line of the longest matching prefix.
    """
    target = tuple(loc)
    best: tuple[int, int] | None = None  # (matched length, line number)
    table: tuple[str, ...] = ()
    counters: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        header = re.match(r"^\[\[\s*([\w.-]+)\s*\]\]$|^\[\s*([\w.-]+)\s*\]$", line)
        if header:
            names = (header.group(1) or header.group(2)).split(".")
            path: tuple[str, ...] = ()
            for name in names[:-1]:
                path += (name,)
                if path in counters:
                    path += (str(counters[path]),)
            path += (names[-1],)
            if header.group(1):
                counters[path] = counters.get(path, -1) + 1
                # A new parent entry restarts the count of its children.
                for child in [k for k in counters if len(k) > len(path) and k[: len(path)] == path]:
                    del counters[child]
                path += (str(counters[path]),)
            table = path
            candidates = [table]
        else:
            key = re.match(r"^([\w-]+)\s*=", line)
            if not key:
                continue
            candidates = [table + (key.group(1),)]
            candidates += [table + (key.group(1), inner) for inner in re.findall(r"([\w-]+)\s*=", line)[1:]]
        for candidate in candidates:
            size = _common_prefix(candidate, target)
            if size == len(candidate) and (best is None or size > best[0]):
                best = (size, number)
    return best[1] if best else None


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return size
