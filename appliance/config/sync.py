"""Store-and-forward to the cloud: targets, privacy, hard cases, image retention."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from appliance.config.base import Section


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
    jpeg_quality: int = Field(
        90,
        ge=50,
        le=100,
        description="JPEG quality of kept frames encoded on the box (frames read from JPEG files are kept as "
        "those files, without metadata, thumbnails or trailers).",
    )
    queue_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="Frames waiting to be written (then dropped; their hard cases are still recorded).",
    )


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
