"""The bench measures the ladder on frames drawn from the whole source, not its first files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from appliance.bench.phases import BenchContext, decode_phase
from appliance.config import FolderSource, Settings


def test_the_sample_spans_a_folder_sorted_by_class(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    # In name order the first 40 files are one class: a sample of the first frames sees only it.
    for label, level in (("a-dark", 20), ("b-bright", 230)):
        (tmp_path / label).mkdir()
        for i in range(40):
            cv2.imwrite(str(tmp_path / label / f"{i:03d}.png"), np.full((8, 8), level, np.uint8))
    settings = make_settings()
    ctx = BenchContext(
        settings=settings,
        line=settings.lines[0],
        source=FolderSource(path=tmp_path),
        seconds=0.5,
        cores=1,
        workdir=tmp_path,
        progress=lambda _: None,
    )
    figures, frames = decode_phase(ctx, keep=20)
    assert len(frames) == figures["sampled_frames"] == 20
    bright = sum(int(frame.mean() > 128) for frame in frames)
    assert 4 <= bright <= 16, f"{bright} of 20 sampled frames from the second half of the folder"
