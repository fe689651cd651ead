"""One onnxruntime session per model package, and the pre/post-processing its kind needs."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from appliance.inference.package import ModelPackage, ModelPackageError

logger = logging.getLogger(__name__)


class ModelOutputError(Exception):
    """The model answered something no verdict can be made of (NaN, infinity)."""


@dataclass(frozen=True, slots=True)
class Defect:
    """One defect region: class, confidence and box (x1, y1, x2, y2) in frame pixels."""

    cls: str
    confidence: float
    bbox: tuple[int, int, int, int]

    def to_json(self) -> dict[str, Any]:
        """The `defects[]` entry of the result payload."""
        confidence = round(self.confidence, 4) if math.isfinite(self.confidence) else None
        return {"class": self.cls, "confidence": confidence, "bbox": list(self.bbox)}


@dataclass(frozen=True, slots=True)
class Inference:
    """What one model said about one frame."""

    score: float
    defect_class: str | None
    defects: tuple[Defect, ...] = ()
    defect_map: np.ndarray | None = field(default=None, compare=False, repr=False)
    compute_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """onnxruntime knobs, chosen by the edge-box profile."""

    intra_op_threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    allow_spinning: bool = False
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)  # per provider name


def make_session(path: str, settings: SessionSettings) -> Any:
    """An onnxruntime InferenceSession with explicit threading (no oversubscription)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = "1" if settings.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    options.log_severity_level = 3
    available = set(ort.get_available_providers())
    providers = [p for p in settings.providers if p in available] or ["CPUExecutionProvider"]
    with_options = [(p, settings.provider_options.get(p, {})) for p in providers]
    return ort.InferenceSession(path, sess_options=options, providers=with_options)


class ModelRunner:
    """Runs one verified package on frames; thread-safe (onnxruntime sessions are)."""

    def __init__(self, package: ModelPackage, settings: SessionSettings | None = None) -> None:
        self.package = package
        self.manifest = package.manifest
        self.settings = settings or SessionSettings()
        try:
            self.session = make_session(str(package.onnx_path), self.settings)
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelPackageError(f"{package.onnx_path}: onnxruntime cannot load it: {exc}") from exc
        self._check_io()
        spec = self.manifest.input
        self._size = (spec.width, spec.height)
        self._swap_rb = spec.color == "rgb"
        self._output_names = [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """Execution providers actually in use."""
        return list(self.session.get_providers())

    def _check_io(self) -> None:
        spec = self.manifest.input
        inputs = {i.name: i for i in self.session.get_inputs()}
        where = self.package.onnx_path
        if spec.name not in inputs:
            raise ModelPackageError(
                f"{where}: manifest input {spec.name!r} not in graph inputs {sorted(inputs)}"
            )
        shape = inputs[spec.name].shape
        expected = [spec.channels, spec.height, spec.width]
        fixed = [d if isinstance(d, int) else None for d in shape[1:]]
        if len(shape) != 4 or any(f is not None and f != e for f, e in zip(fixed, expected, strict=True)):
            raise ModelPackageError(
                f"{where}: graph input shape {shape} does not match manifest "
                f"[N, {spec.channels}, {spec.height}, {spec.width}]"
            )
        outputs = {o.name for o in self.session.get_outputs()}
        needed = {"detection": {"boxes", "scores"}}.get(self.manifest.kind, {"score"})
        if self.manifest.kind == "segmentation":
            needed = needed | {"defect_map"}
        missing = needed - outputs
        if missing:
            raise ModelPackageError(
                f"{where}: {self.manifest.kind} model lacks outputs {sorted(missing)} (has {sorted(outputs)})"
            )

    def blob(self, image: np.ndarray) -> np.ndarray:
        """Frame (gray or BGR, any size) to the input tensor in one OpenCV call where possible."""
        spec = self.manifest.input
        if spec.channels == 1 and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif spec.channels == 3 and image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        mean = (spec.mean, spec.mean, spec.mean)
        return cv2.dnn.blobFromImage(
            image, scalefactor=spec.scale, size=self._size, mean=mean, swapRB=self._swap_rb
        )

    def infer(self, image: np.ndarray) -> Inference:
        """Score one frame."""
        start = time.perf_counter()
        outputs = self.session.run(None, {self.manifest.input.name: self.blob(image)})
        named = dict(zip(self._output_names, outputs, strict=True))
        compute_ms = (time.perf_counter() - start) * 1000.0
        height, width = image.shape[:2]
        if self.manifest.kind == "detection":
            return self._detections(named, width, height, compute_ms)
        return self._scored(named, width, height, compute_ms)

    def _scored(self, named: dict[str, np.ndarray], width: int, height: int, compute_ms: float) -> Inference:
        score = float(np.asarray(named["score"]).reshape(-1)[0])
        if not math.isfinite(score):
            # NaN compares false with every threshold: it would pass the part. Fail closed.
            raise ModelOutputError(f"{self.manifest.name} returned a non-finite score ({score})")
        defect_map = named.get("defect_map")
        small_map = (
            None
            if defect_map is None
            else np.asarray(defect_map)[0].reshape(defect_map.shape[-2], defect_map.shape[-1])
        )
        failing = score >= self.manifest.threshold
        defect_class = self._class_from_probs(named.get("class_probs")) if failing else None
        defects: tuple[Defect, ...] = ()
        if small_map is not None and failing:
            defects = regions_from_map(small_map, width, height, defect_class or "defect")
        if failing and defect_class is None:
            defect_class = defects[0].cls if defects else "defect"
        return Inference(score, defect_class, defects, small_map, compute_ms)

    def _class_from_probs(self, probs: np.ndarray | None) -> str | None:
        if probs is None:
            return None
        row = np.asarray(probs).reshape(-1)
        labels = self.manifest.labels
        order = np.argsort(-row)
        for index in map(int, order):
            if index < len(labels) and labels[index] != self.manifest.good_label:
                return labels[index]
        return None

    def _detections(
        self, named: dict[str, np.ndarray], width: int, height: int, compute_ms: float
    ) -> Inference:
        boxes = np.asarray(named["boxes"])[0]
        scores = np.asarray(named["scores"])[0]
        if not (np.isfinite(scores).all() and np.isfinite(boxes).all()):
            raise ModelOutputError(f"{self.manifest.name} returned non-finite boxes or scores")
        defects = nms_per_class(
            boxes,
            scores,
            self.manifest.labels,
            self.manifest.min_box_score,
            self.manifest.nms_iou,
            width,
            height,
        )
        score = max((d.confidence for d in defects), default=0.0)
        top = max(defects, key=lambda d: d.confidence).cls if defects else None
        defect_class = top if score >= self.manifest.threshold else None
        return Inference(score, defect_class, defects, None, compute_ms)


def regions_from_map(
    defect_map: np.ndarray, width: int, height: int, cls: str, level: float = 0.5
) -> tuple[Defect, ...]:
    """Connected regions of a defect map above `level`, boxed in frame pixels, largest first."""
    mask = (defect_map >= level).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sx = width / defect_map.shape[1]
    sy = height / defect_map.shape[0]
    regions = []
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        peak = float(defect_map[y : y + h, x : x + w].max())
        box = (int(x * sx), int(y * sy), int(np.ceil((x + w) * sx)), int(np.ceil((y + h) * sy)))
        regions.append((area, Defect(cls, peak, box)))
    regions.sort(key=lambda r: -r[0])
    return tuple(d for _, d in regions[:16])


def nms_per_class(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: list[str],
    min_score: float,
    iou: float,
    width: int,
    height: int,
) -> tuple[Defect, ...]:
    """Per-class non-maximum suppression over normalised xyxy boxes; returns frame-pixel boxes."""
    found: list[Defect] = []
    pixel = boxes * np.array([width, height, width, height], dtype=np.float32)
    xywh = np.column_stack([pixel[:, 0], pixel[:, 1], pixel[:, 2] - pixel[:, 0], pixel[:, 3] - pixel[:, 1]])
    for c, label in enumerate(labels):
        cls_scores = scores[:, c]
        keep = np.flatnonzero(cls_scores >= min_score)
        if keep.size == 0:
            continue
        picked = cv2.dnn.NMSBoxes(xywh[keep].tolist(), cls_scores[keep].tolist(), min_score, iou)
        for i in np.asarray(picked).reshape(-1):
            x1, y1, x2, y2 = pixel[keep[i]]
            box = (int(max(0, x1)), int(max(0, y1)), int(min(width, x2)), int(min(height, y2)))
            found.append(Defect(label, float(cls_scores[keep[i]]), box))
    found.sort(key=lambda d: -d.confidence)
    return tuple(found[:100])
