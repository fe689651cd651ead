"""Model packages: `models/<name>/model.onnx` plus `manifest.json`, verified at load.

A package is the unit that is trained, quantized, signed, shipped and rolled back. The manifest
says everything the runtime needs to feed the graph and read its answer, so that the appliance
never guesses: input size and channels, the decision threshold, the ladder's uncertain band.

Output conventions by kind (tensor names are fixed so that any trainer can target them):

- ``classification``: ``score`` [N] or [N,1], P(defect) in [0, 1]; optional ``class_probs``
  [N, C] over ``labels`` (``good_label`` among them).
- ``segmentation``: ``score`` as above and ``defect_map`` [N,1,h,w] in [0, 1].
- ``anomaly``: ``score`` [N] (calibrated to [0, 1] by the trainer), optional ``defect_map``.
- ``detection``: ``boxes`` [N,K,4] (x1, y1, x2, y2 normalised to [0, 1]) and ``scores``
  [N,K,C] per-class probabilities over ``labels``; the runtime applies per-class NMS.

Inputs are float32 NCHW pixel values in 0..255 unless ``input.scale``/``input.mean`` say
otherwise; normalisation belongs inside the graph.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MANIFEST_SCHEMA: Final = "vision.model/1"
MANIFEST_FILE = "manifest.json"


class ModelPackageError(Exception):
    """A model package is missing, corrupt or does not match its manifest."""


class InputSpec(BaseModel):
    """How frames are turned into the graph's input tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("image", description="Name of the graph input.")
    width: int = Field(ge=8, le=4096, description="Input width in pixels.")
    height: int = Field(ge=8, le=4096, description="Input height in pixels.")
    channels: Literal[1, 3] = Field(1, description="1 = grayscale, 3 = colour.")
    color: Literal["gray", "bgr", "rgb"] = Field("gray", description="Channel order.")
    scale: float = Field(1.0, gt=0, description="Multiplier applied to pixel values.")
    mean: float = Field(0.0, description="Subtracted from pixel values before scaling.")

    @model_validator(mode="after")
    def _channels_match_color(self) -> InputSpec:
        if (self.channels == 1) != (self.color == "gray"):
            raise ValueError("channels=1 requires color='gray' and channels=3 'bgr' or 'rgb'")
        return self


#: Scores are clipped to [SCORE_CLIP, 1 - SCORE_CLIP] before the logit (INT8 outputs saturate).
SCORE_CLIP: Final = 1e-4
_Z_LIMIT: Final = 50.0  # exp() stays finite


def score_logit(scores: np.ndarray) -> np.ndarray:
    """logit of clipped scores: the calibration's input scale (fitted on it by pipelines)."""
    s = np.clip(np.asarray(scores, np.float64), SCORE_CLIP, 1.0 - SCORE_CLIP)
    result: np.ndarray = np.log(s / (1.0 - s))
    return result


class Calibration(BaseModel):
    """Maps a model's score to P(defect): sigmoid(a * logit(clip(score)) + b).

    Fitted on held-out (out-of-fold) scores when the package is built, so that the ladder's
    tiers answer on one probability scale (`p_defect` in results); monotone, so it never changes
    a decision or a model's own ranking.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    method: Literal["platt-logit"] = "platt-logit"
    a: float = Field(gt=0.0, description="Slope on logit(score); > 0 keeps the score's order.")
    b: float
    fitted_on: str = Field("", description="Which held-out scores it was fitted on.")

    def p_defect(self, score: float) -> float:
        """Calibrated probability that the part is defective (per frame: plain floats)."""
        if not math.isfinite(score):
            return float("nan")
        s = min(max(score, SCORE_CLIP), 1.0 - SCORE_CLIP)
        z = self.a * math.log(s / (1.0 - s)) + self.b
        return 1.0 / (1.0 + math.exp(-min(max(z, -_Z_LIMIT), _Z_LIMIT)))

    def p_defect_array(self, scores: np.ndarray) -> np.ndarray:
        """`p_defect` over an array of scores (evaluation, band choice)."""
        z = np.clip(self.a * score_logit(scores) + self.b, -_Z_LIMIT, _Z_LIMIT)
        result: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return result


class Manifest(BaseModel):
    """The contract between a trained model and the appliance."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_: Literal["vision.model/1"] = Field(MANIFEST_SCHEMA, alias="schema")
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=32)
    kind: Literal["classification", "anomaly", "segmentation", "detection"]
    file: str = Field("model.onnx", description="ONNX file inside the package folder.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: InputSpec
    labels: list[str] = Field(min_length=1, description="Class labels, good label included.")
    good_label: str = Field("good", description="The label that means a good part.")
    threshold: float = Field(ge=0.0, le=1.0, description="Score at or above which a part fails.")
    uncertain_band: tuple[float, float] = Field(
        (0.0, 0.0), description="Scores in [lo, hi) escalate to the next tier of the ladder."
    )
    nms_iou: float = Field(0.5, gt=0, le=1, description="Detection only: NMS IoU threshold.")
    min_box_score: float = Field(0.25, ge=0, le=1, description="Detection only: box floor.")
    synthetic: bool = Field(False, description="Trained on synthetic data only (demo model).")
    calibration: Calibration | None = Field(
        None, description="Score -> P(defect) on a scale shared by the ladder's tiers."
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    score_reference: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        lo, hi = self.uncertain_band
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"uncertain_band {self.uncertain_band} must satisfy 0 <= lo <= hi <= 1")
        if self.kind != "detection" and self.good_label not in self.labels:
            raise ValueError(f"good_label {self.good_label!r} is not among labels {self.labels}")
        return self

    @property
    def defect_labels(self) -> list[str]:
        """Labels other than the good one, in manifest order."""
        return [label for label in self.labels if label != self.good_label]


class ModelPackage(BaseModel):
    """A verified package on disk."""

    model_config = ConfigDict(frozen=True)

    path: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        """The verified ONNX file."""
        return self.path / self.manifest.file

    @property
    def name(self) -> str:
        """Package name from the manifest."""
        return self.manifest.name


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_package(path: Path | str) -> ModelPackage:
    """Read and verify a package folder; raise ModelPackageError naming the file and mismatch."""
    folder = Path(path)
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ModelPackageError(f"model package {folder}: no such directory")
    if not manifest_path.is_file():
        raise ModelPackageError(f"model package {folder}: {MANIFEST_FILE} is missing")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(f"{manifest_path}: unreadable manifest: {exc}") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ModelPackageError(f"{manifest_path}: {where}: {first['msg']}") from exc
    onnx_path = folder / manifest.file
    if not onnx_path.is_file():
        raise ModelPackageError(f"{onnx_path}: model file named in the manifest is missing")
    actual = sha256_file(onnx_path)
    if actual != manifest.sha256:
        raise ModelPackageError(
            f"{onnx_path}: sha256 mismatch: manifest says {manifest.sha256[:12]}..., "
            f"file has {actual[:12]}... (corrupt or replaced model)"
        )
    return ModelPackage(path=folder, manifest=manifest)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Manifest:
    """Fill in the ONNX file's sha256, validate and write `manifest.json`; return it parsed."""
    data = dict(manifest)
    data.setdefault("schema", MANIFEST_SCHEMA)
    data["sha256"] = sha256_file(folder / data.get("file", "model.onnx"))
    parsed = Manifest.model_validate(data)
    (folder / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return parsed
