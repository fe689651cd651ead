"""What may leave the premises: the policy per data class, masked regions and defect crops.

Policies, from nothing to everything (each includes the ones before it):

- ``none``: nothing leaves; not results, not hard cases, not images. The default.
- ``metadata``: result JSON (batches of every result) and hard-case JSON; no pixels.
- ``crops``: plus crops around each defect with a margin; a crop side is never more than
  ``crop_max_fraction`` of the frame side, so no crop is ever the full frame.
- ``frames``: plus the whole frame and the model's defect map.

Masked regions (rectangles per camera) are blacked out of every image before it is encoded
for upload (crops are cut from the masked frame); the copy kept on the box is not masked.
Operator names never leave: labels are sent without the user who made them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from appliance.config import Rect, SyncConfig
from appliance.inference.runtime import Defect, regions_from_map

MAX_CROPS = 8
ORDER = ("none", "metadata", "crops", "frames")


@dataclass(frozen=True, slots=True)
class Policy:
    """The policy as answers to 'may X leave?'."""

    name: str

    @property
    def results(self) -> bool:
        """Result JSON (batches) and hard-case JSON."""
        return ORDER.index(self.name) >= 1

    @property
    def crops(self) -> bool:
        """Defect crops (masked)."""
        return ORDER.index(self.name) >= 2

    @property
    def frames(self) -> bool:
        """Whole frames and defect maps (masked)."""
        return self.name == "frames"

    @property
    def images(self) -> bool:
        """Any pixels at all."""
        return self.crops


def what_leaves(config: SyncConfig) -> list[str]:
    """Plain sentences for the console and health: exactly what this box sends, and where."""
    policy = Policy(config.policy)
    if not config.target:
        return ["Nothing leaves the premises: no sync target is configured."]
    if not policy.results:
        return ["Nothing leaves the premises (policy 'none'): no results, no hard cases, no images."]
    out = [
        f"Every result (verdict, defect classes and boxes, scores, model, timings) goes to {config.target} "
        "in batches (gzip JSON Lines).",
        "Hard cases (uncertain, disputed, sampled, chosen classes) and operator labels go as JSON; "
        "labels without the operator's name.",
    ]
    if policy.frames:
        out.append("Whole frames (JPEG) and defect maps (PNG) of hard cases and labelled parts go too.")
    elif policy.crops:
        out.append(
            "Crops around each defect of hard cases and labelled parts go too (JPEG, margin "
            f"{config.crop_margin:g} of the box, at most {config.crop_max_fraction:g} of the frame side): "
            "never a whole frame."
        )
    else:
        out.append("No images leave (policy 'metadata').")
    if policy.images:
        masked = {cam: len(rects) for cam, rects in config.masks.items() if rects}
        if masked:
            listed = ", ".join(f"{cam} ({n})" for cam, n in sorted(masked.items()))
            out.append(f"Masked regions are blacked out before upload on camera(s): {listed}.")
        else:
            out.append("No masked regions are configured.")
    return out


def apply_masks(
    image: np.ndarray, rects: list[Rect], *, scale: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """A copy of `image` with every rectangle (frame pixels, scaled by `scale`) set to black."""
    out = image.copy()
    height, width = out.shape[:2]
    sx, sy = scale
    for x1, y1, x2, y2 in rects:
        # Round outwards: a mask never shrinks when scaled to a smaller map.
        left, top = max(0, int(np.floor(x1 * sx))), max(0, int(np.floor(y1 * sy)))
        right, bottom = min(width, int(np.ceil(x2 * sx))), min(height, int(np.ceil(y2 * sy)))
        if left < right and top < bottom:
            out[top:bottom, left:right] = 0
    return out


def crop_boxes(
    shape: tuple[int, ...],
    defects: tuple[Defect, ...],
    *,
    margin: float,
    min_px: int,
    max_fraction: float,
) -> list[tuple[int, int, int, int]]:
    """Crop rectangles around defects: box plus margin, clamped so no side exceeds the fraction.

    A crop that would be larger is cut to `max_fraction` of the frame side, centred on the
    defect: the cloud gets the defect's neighbourhood, never the whole part.
    """
    height, width = shape[:2]
    max_w = max(1, int(width * max_fraction))
    max_h = max(1, int(height * max_fraction))
    boxes: list[tuple[int, int, int, int]] = []
    for defect in defects[:MAX_CROPS]:
        x1, y1, x2, y2 = defect.bbox
        bw, bh = max(1, x2 - x1), max(1, y2 - y1)
        want_w = min(max_w, max(min_px, int(round(bw * (1 + 2 * margin)))))
        want_h = min(max_h, max(min_px, int(round(bh * (1 + 2 * margin)))))
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        left = int(round(min(max(0.0, cx - want_w / 2.0), width - want_w)))
        top = int(round(min(max(0.0, cy - want_h / 2.0), height - want_h)))
        box = (max(0, left), max(0, top), max(0, left) + want_w, max(0, top) + want_h)
        if box not in boxes:
            boxes.append(box)
    return boxes


def crop_defects(
    verdict_defects: tuple[Defect, ...], defect_map: np.ndarray | None, shape: tuple[int, ...]
) -> tuple[Defect, ...]:
    """The regions to crop: the verdict's defects, else where the model's map points most.

    An uncertain pass has no defects but its map still shows where the model hesitated; that
    region is what the cloud expert needs to see.
    """
    if verdict_defects:
        return verdict_defects
    if defect_map is None or defect_map.size == 0:
        return ()
    peak = float(defect_map.max())
    if peak <= 0:
        return ()
    height, width = shape[:2]
    return regions_from_map(defect_map.astype(np.float32), width, height, "uncertain", level=peak * 0.5)[:3]


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes (deterministic for the same pixels and quality)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes."""
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()
