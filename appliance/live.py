"""The latest frame and verdict of every camera, and the shift's counters, for the console.

Frames are kept as they are; the annotated JPEG is drawn only when someone asks for it, so an
unwatched console costs nothing on the per-frame path.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from appliance.results import Frame, Verdict


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One camera's latest judged frame."""

    frame: Frame
    verdict: Verdict
    version: int


class LiveView:
    """Thread-safe latest-per-camera store plus per-line verdict counters.

    It also keeps a small ring of the most recent judged frames by part (at most `keep_frames`
    frames and `keep_bytes` of pixels), so that the console can show the image and defect map
    of a part judged moments ago even when no image was retained on disk.
    """

    def __init__(self, keep: int = 50, keep_frames: int = 64, keep_bytes: int = 64_000_000) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Snapshot] = {}
        self._frames: OrderedDict[str, Snapshot] = OrderedDict()
        self._frames_bytes = 0
        self._keep_frames = keep_frames
        self._keep_bytes = keep_bytes
        self._version = 0
        self._counts: dict[str, Counter[str]] = {}
        self._recent: deque[Verdict] = deque(maxlen=keep)
        self._changed = threading.Condition(self._lock)

    def observe(self, frame: Frame, verdict: Verdict) -> None:
        """Called by the ladder for every verdict; first answers count towards the shift."""
        with self._lock:
            self._version += 1
            snap = Snapshot(frame, verdict, self._version)
            current = self._latest.get(frame.camera)
            # A deferred refinement of an older part must not send the live image back in time.
            if current is None or frame.t_capture >= current.frame.t_capture:
                self._latest[frame.camera] = snap
            if verdict.revision == 0:
                self._counts.setdefault(verdict.line, Counter())[verdict.verdict] += 1
            self._recent.append(verdict)
            self._remember(snap)
            self._changed.notify_all()

    def _remember(self, snap: Snapshot) -> None:
        """Keep `snap` in the recent-frames ring (the latest revision of a part replaces older ones)."""
        old = self._frames.pop(snap.frame.part_id, None)
        if old is not None:
            self._frames_bytes -= _held_bytes(old)
        self._frames[snap.frame.part_id] = snap
        self._frames_bytes += _held_bytes(snap)
        while self._frames and (
            len(self._frames) > self._keep_frames or self._frames_bytes > self._keep_bytes
        ):
            _, dropped = self._frames.popitem(last=False)
            self._frames_bytes -= _held_bytes(dropped)

    def recent(self, part_id: str) -> Snapshot | None:
        """The frame and latest verdict of a recently judged part, if still in the ring."""
        with self._lock:
            return self._frames.get(part_id)

    def latest(self, camera: str) -> Snapshot | None:
        """The camera's last judged frame."""
        with self._lock:
            return self._latest.get(camera)

    def wait_newer(self, camera: str, version: int, timeout: float) -> Snapshot | None:
        """Block until the camera has a frame newer than `version` (or time out)."""
        with self._changed:
            self._changed.wait_for(
                lambda: (s := self._latest.get(camera)) is not None and s.version > version, timeout
            )
            return self._latest.get(camera)

    def counts(self) -> dict[str, dict[str, Any]]:
        """Pass/fail/error counts and yield per line since start."""
        with self._lock:
            out = {}
            for line, c in self._counts.items():
                total = sum(c.values())
                out[line] = {
                    "pass": c["pass"],
                    "fail": c["fail"],
                    "error": c["error"],
                    "total": total,
                    "yield": round(c["pass"] / total, 4) if total else None,
                }
            return out


def annotate(frame: Frame, verdict: Verdict, *, quality: int = 80) -> bytes:
    """The frame as JPEG with the defect map tinted red, boxes drawn and the verdict written."""
    image = frame.image
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    h, w = canvas.shape[:2]
    if verdict.defect_map is not None and verdict.verdict == "fail":
        heat = cv2.resize(verdict.defect_map.astype(np.float32), (w, h))
        red = np.zeros_like(canvas)
        red[..., 2] = 255
        alpha = np.clip(heat, 0, 1)[..., None] * 0.5
        canvas = (canvas * (1 - alpha) + red * alpha).astype(np.uint8)
    for defect in verdict.defects:
        x1, y1, x2, y2 = defect.bbox
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 0, 255), 2)
        cv2.putText(
            canvas,
            f"{defect.cls} {defect.confidence:.2f}",
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 255),
            1,
            cv2.LINE_AA,
        )
    colour = {"pass": (0, 170, 0), "fail": (0, 0, 230), "error": (0, 165, 255)}[verdict.verdict]
    label = verdict.verdict.upper() + (f" {verdict.defect_class}" if verdict.defect_class else "")
    if verdict.provisional:
        label += " (provisional)"
    cv2.rectangle(canvas, (0, 0), (w, 22), colour, -1)
    cv2.putText(canvas, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else b""


def _held_bytes(snap: Snapshot) -> int:
    """What a snapshot's frame holds in memory: its pixels and the source's own JPEG, if any."""
    return snap.frame.image.nbytes + len(snap.frame.encoded or b"")
