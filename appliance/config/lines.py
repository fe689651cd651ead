"""Production lines and their placement ladders."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from appliance.config.base import ID_PATTERN, Section
from appliance.config.cameras import CameraConfig

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
