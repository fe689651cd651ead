"""Camera sources and cameras."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from appliance.config.base import ID_PATTERN, DropPolicy, Section

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
            "latest: at most two frames wait for inference (one taken next, one decoded behind "
            "it), newer frames are skipped before decoding while they wait (counted); queue: up "
            "to queue_depth frames wait (newer ones skipped, "
            "counted); block: the source waits for inference (replay only, nothing dropped)."
        ),
    )
    queue_depth: int = Field(4, ge=1, le=256, description="Frames that may wait with 'queue'.")
    reconnect_max_s: float = Field(30.0, ge=0.1, le=3600, description="Backoff cap on reconnect.")
