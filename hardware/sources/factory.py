"""Build a FrameSource from its config section; vendor SDKs would be imported lazily here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hardware.sources.base import FrameSource

if TYPE_CHECKING:
    from appliance.config import SourceConfig


def make_source(config: SourceConfig) -> FrameSource:
    """The source a camera's config describes."""
    # `kind` is the union's discriminator: testing `config.kind` (not a copy of it) narrows the
    # config's type, without a run-time import of appliance.config into hardware.
    if config.kind == "simulator":
        from hardware.sources.simulator import LineSimulator

        return LineSimulator(
            fps=config.fps,
            defect_rate=config.defect_rate,
            kinds=tuple(config.defect_kinds),
            width=config.width,
            height=config.height,
            seed=config.seed,
        )
    if config.kind == "folder":
        from hardware.sources.folder import FolderSource

        return FolderSource(
            config.path, fps=config.fps, loop=config.loop, shuffle=config.shuffle, seed=config.seed
        )
    from hardware.sources.opencv import OpenCVSource

    if config.kind == "file":
        return OpenCVSource(str(config.path), live=False, fps=config.fps, loop=config.loop)
    if config.kind == "stream":
        try:
            url = config.resolved_url()
        except OSError as exc:
            raise ValueError(f"url_file {config.url_file}: {exc.strerror or exc}") from exc
        return OpenCVSource(
            url,
            live=True,
            open_timeout_ms=config.open_timeout_ms,
            read_timeout_ms=config.read_timeout_ms,
        )
    if config.kind == "v4l2":
        return OpenCVSource(config.device, live=True)
    raise ValueError(f"unknown source kind {config.kind!r}")
