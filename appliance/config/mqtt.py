"""The plant's MQTT broker, Sparkplug B and Home Assistant discovery."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from appliance.config.base import Section


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
    inflight: int = Field(64, ge=1, le=65535, description="Unacknowledged result messages at once.")
    results_per_message: int = Field(
        1,
        ge=1,
        le=1000,
        description="1: one message per result on `line/{line}/result`. More: results go as "
        "batches of up to this many of one line's results on `line/{line}/results` instead "
        "(for lines of hundreds of parts per second).",
    )
    batch_linger_ms: int = Field(
        100,
        ge=0,
        le=10_000,
        description="With results_per_message above 1: how long the first waiting result may wait "
        "for its batch to fill before what is there is published (fewer, fuller messages at high "
        "rates; a full batch or a backlog goes at once). 0: publish what is waiting at once.",
    )
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
