"""Video files, network streams (RTSP, HTTP/MJPEG) and V4L2 devices through OpenCV."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from hardware.sources.base import CorruptFrame, EndOfStream, FrameSource, SourceError

if TYPE_CHECKING:
    import cv2

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
# Query parameters whose values say which stream it is and are never secrets (Dahua, Hikvision,
# Axis, Xiongmai, generic MJPEG servers); every other value is masked.
SAFE_PARAMETERS = frozenset(
    {
        "channel", "ch", "chn", "subtype", "stream", "streamtype", "streamid", "profile",
        "resolution", "width", "height", "fps", "framerate", "videocodec", "codec", "compression",
        "quality", "transport", "rtsp_transport", "camera", "cam", "videoencoding", "unicast",
        "proto", "action", "format",
    }
)  # fmt: skip
# `user=admin&password=x_channel=1` in the path itself (Xiongmai-style stream URLs).
_PATH_SECRET = re.compile(
    r"(?i)((?:user(?:name)?|login|pass(?:word|wd)?|pwd|token|key|auth|secret|sig(?:nature)?|session)=)"
    r"[^&_/;?#]*"
)


def redact_url(url: str) -> str:
    """The URL for logs, health and the console: without credentials.

    `scheme://host:port/path` is rebuilt from its parts: the user:password@ part becomes
    `***@` (everything up to the last `@`, so a password containing `@` or `/` is dropped
    whole), query values are masked except those of `SAFE_PARAMETERS` (`?channel=1&token=***`),
    the fragment is dropped, and `password=...` style segments of the path are masked. A
    string without `scheme://` (a file path, a device) only gets the path masking; a URL that
    cannot be parsed becomes `scheme://***`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.match(scheme):
        return _PATH_SECRET.sub(r"\1***", url)
    userinfo = "@" in rest
    if userinfo:
        rest = rest.rpartition("@")[2]
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        return f"{scheme}://***"
    netloc = ("***@" if userinfo else "") + parts.netloc
    path = _PATH_SECRET.sub(r"\1***", parts.path)
    query = "&".join(_redact_parameter(p) for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _redact_parameter(pair: str) -> str:
    name, eq, value = pair.partition("=")
    if not eq or not _PARAM_NAME.match(name):
        return "***"
    return pair if name.lower() in SAFE_PARAMETERS else f"{name}=***"


class OpenCVSource(FrameSource):
    """A cv2.VideoCapture: grab() demuxes, retrieve() decodes and converts."""

    def __init__(
        self,
        target: str | int,
        *,
        live: bool,
        fps: float = 0.0,
        loop: bool = False,
        open_timeout_ms: int = 5000,
        read_timeout_ms: int = 5000,
    ) -> None:
        self.target = target
        self.live = live
        self.fps = fps
        self.loop = loop
        self.open_timeout_ms = open_timeout_ms
        self.read_timeout_ms = read_timeout_ms
        self._cap: cv2.VideoCapture | None = None

    def describe(self) -> str:
        """File path, redacted URL or device index."""
        return redact_url(self.target) if isinstance(self.target, str) else f"/dev/video{self.target}"

    def open(self) -> None:
        """Open the capture with timeouts so that a dead stream cannot hang the loop."""
        import cv2

        self.release()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self.open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self.read_timeout_ms,
        ]
        backend = cv2.CAP_V4L2 if isinstance(self.target, int) else cv2.CAP_FFMPEG
        cap = cv2.VideoCapture(self.target, backend, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.describe()}")
        if not self.live and not self.fps:
            native = cap.get(cv2.CAP_PROP_FPS)
            self.fps = float(native) if 0 < native < 1000 else 0.0
        self._cap = cap

    def grab(self) -> None:
        """Read the next packet; at the end of a file rewind (loop) or raise EndOfStream."""
        if self._cap is None:
            raise SourceError(f"{self.describe()} is not open")
        if self._cap.grab():
            return
        if self.live:
            raise SourceError(f"{self.describe()}: stream stopped delivering frames")
        if not self.loop:
            raise EndOfStream(self.describe())
        self.open()
        if not self._cap.grab():
            raise SourceError(f"{self.describe()}: no frames after rewinding")

    def retrieve(self) -> np.ndarray:
        """Decode the grabbed frame."""
        if self._cap is None:
            raise SourceError(f"{self.describe()} is not open")
        ok, image = self._cap.retrieve()
        if not ok or image is None or image.size == 0:
            raise CorruptFrame(f"{self.describe()}: frame could not be decoded")
        return image

    def release(self) -> None:
        """Close the capture."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
