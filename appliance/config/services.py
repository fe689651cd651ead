"""The SQLite outbox and the web console."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from appliance.config.base import Section

# --- services -------------------------------------------------------------------------------


class StoreConfig(Section):
    """The SQLite outbox every result goes through."""

    batch_max_rows: int = Field(64, ge=1, le=10000, description="Rows per write transaction.")
    batch_max_ms: int = Field(
        3,
        ge=0,
        le=5000,
        description="Under load (the last write transaction held several results), how long to wait to "
        "fill the next one; an idle writer commits each result at once. 0 = never wait.",
    )
    pending_hold_ms: int = Field(
        1000,
        ge=0,
        le=60000,
        description="How long the frame of a deferred escalation waits in memory before it is "
        "written to disk for a refinement after a restart; refined sooner (the usual case), it "
        "never touches the disk. A crash within this time closes those provisional verdicts as "
        "`unrefined` at the restart. 0 = write each one at once.",
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
