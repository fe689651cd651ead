"""Evaluate a model package (or a two-tier ladder) on a dataset folder, as the appliance runs it.

    python -m pipelines.evaluate --model models/mt-tier2 --data DIR [--split test] --json
    python -m pipelines.evaluate --ladder models/mt-tier1,models/mt-tier2 --data DIR \
        --split test --json

Runtime dependencies only (onnxruntime, numpy, OpenCV): every image goes through
`appliance.inference.runtime.ModelRunner` with one intra-op thread, i.e. exactly the code path
of the appliance, including its stretch-resize and (for detectors) its per-class NMS with the
manifest's `min_box_score` / `nms_iou`.

`--split train|val|test` re-creates the split recorded in the package manifest (seed and
fractions) on the folder given; `--split all` (default) uses every image, e.g. for an
independent held-out folder. One JSON object goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.package import ModelPackage, load_package
from appliance.inference.runtime import Inference, ModelRunner, SessionSettings
from pipelines.datasets import SPLITS, Dataset, load_dataset, read_image, split_from_manifest
from pipelines.metrics import box_f1_at, classification_report, detection_map

WARMUP = 3


@dataclass
class Scored:
    """Runtime answers for a list of samples."""

    indices: list[int]
    results: list[Inference]

    @property
    def scores(self) -> np.ndarray:
        """Image scores."""
        return np.array([r.score for r in self.results], np.float64)

    @property
    def compute_ms(self) -> np.ndarray:
        """Measured compute per image (blob + session.run), milliseconds."""
        return np.array([r.compute_ms for r in self.results], np.float64)


def split_indices(package: ModelPackage, dataset: Dataset, split: str) -> list[int]:
    """Indices of `split` as recorded in the package's manifest (or all)."""
    if split == "all":
        return list(range(len(dataset.samples)))
    training = package.manifest.training
    if not training.get("split"):
        raise SystemExit(f"{package.path}: manifest records no split; use --split all")
    # A cross-validation member's "val" is its held-out fold (see datasets.fold_split).
    return split_from_manifest(dataset, training)[split]


def run_package(
    runner: ModelRunner, dataset: Dataset, indices: list[int], label: str = "", quiet: bool = False
) -> Scored:
    """Run the appliance runtime on every indexed image (after a short warm-up)."""
    images = (read_image(dataset.samples[i].path) for i in indices)
    first = read_image(dataset.samples[indices[0]].path) if indices else None
    for _ in range(WARMUP if first is not None else 0):
        runner.infer(first)
    results = []
    for n, image in enumerate(images, 1):
        results.append(runner.infer(image))
        if not quiet and (n % 100 == 0 or n == len(indices)):
            print(f"  {label} {n}/{len(indices)} images", file=sys.stderr, flush=True)
    return Scored(list(indices), results)


def make_runner(path: str | Path) -> ModelRunner:
    """A one-thread runner of a verified package."""
    return ModelRunner(load_package(path), SessionSettings(intra_op_threads=1))


def classification_metrics(runner: ModelRunner, dataset: Dataset, scored: Scored) -> dict[str, Any]:
    """AUROC, accuracy at the manifest threshold, per-class recall, confusion, latency."""
    labels = [dataset.samples[i].label for i in scored.indices]
    report = classification_report(
        labels, scored.scores.tolist(), runner.manifest.threshold, runner.manifest.good_label
    )
    report["latency_ms_p50"] = round(float(np.median(scored.compute_ms)), 4)
    report["mean_compute_ms"] = round(float(np.mean(scored.compute_ms)), 4)
    return report


def detection_metrics(runner: ModelRunner, dataset: Dataset, scored: Scored) -> dict[str, Any]:
    """VOC mAP@0.5 over the six classes from the runtime's post-NMS detections, box precision /
    recall / F1 at the manifest threshold (the boxes the appliance lists), plus latency."""
    gts, dets = ground_truth_and_detections(dataset, scored)
    report = detection_map(gts, dets, list(dataset.labels))
    report["at_threshold"] = box_f1_at(gts, dets, runner.manifest.threshold)
    report["n_images"] = len(scored.indices)
    report["min_box_score"] = runner.manifest.min_box_score
    report["latency_ms_p50"] = round(float(np.median(scored.compute_ms)), 4)
    return report


def ground_truth_and_detections(dataset: Dataset, scored: Scored) -> tuple[list, list]:
    """Per image: (normalised GT boxes, labels) and [(class, confidence, normalised box)]."""
    gts, dets = [], []
    for i, result in zip(scored.indices, scored.results, strict=True):
        sample = dataset.samples[i]
        # Compare in normalised coordinates: the runtime returns frame-pixel boxes.
        h, w = read_image(sample.path).shape[:2]
        gts.append((sample.boxes, sample.box_labels))
        dets.append(
            [
                (d.cls, d.confidence, (d.bbox[0] / w, d.bbox[1] / h, d.bbox[2] / w, d.bbox[3] / h))
                for d in result.defects
            ]
        )
    return gts, dets


def evaluate_model(model: str | Path, data: str | Path, split: str = "all", quiet: bool = False) -> dict:
    """Metrics of one package on `split` of the folder `data`."""
    runner = make_runner(model)
    dataset = load_dataset(data)
    indices = split_indices(runner.package, dataset, split)
    scored = run_package(runner, dataset, indices, runner.manifest.name, quiet)
    if dataset.kind == "detection":
        report = detection_metrics(runner, dataset, scored)
    else:
        report = classification_metrics(runner, dataset, scored)
    return {
        "model": runner.manifest.name,
        "version": runner.manifest.version,
        "data": str(data),
        "split": split,
        **report,
    }


def evaluate_ladder(models: list[str], data: str | Path, split: str = "all", quiet: bool = False) -> dict:
    """Two-tier ladder figures and the last tier alone, with AUROC and compute ratios."""
    from pipelines.ladder import calibrations_of, ladder_figures

    if len(models) != 2:
        raise SystemExit("--ladder takes exactly two packages: tier1,tier2")
    r1, r2 = make_runner(models[0]), make_runner(models[1])
    dataset = load_dataset(data)
    indices = split_indices(r1.package, dataset, split)
    if split != "all" and split_indices(r2.package, dataset, split) != indices:
        raise SystemExit("the two tiers record different splits; retrain them with one split seed")
    t1 = run_package(r1, dataset, indices, "tier1", quiet)
    t2 = run_package(r2, dataset, indices, "tier2", quiet)
    y = np.array([not dataset.samples[i].is_good for i in indices])
    figures = ladder_figures(
        y,
        t1.scores,
        t2.scores,
        t1.compute_ms,
        t2.compute_ms,
        r1.manifest.threshold,
        tuple(r1.manifest.uncertain_band),
        r2.manifest.threshold,
        calibrations_of(r1.manifest, r2.manifest),
    )
    return {
        "ladder": [r1.manifest.name, r2.manifest.name],
        "data": str(data),
        "split": split,
        "n_images": len(indices),
        **figures,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="package folder, e.g. models/mt-tier2")
    which.add_argument("--ladder", help="comma-separated tier1,tier2 package folders")
    parser.add_argument("--data", required=True, help="dataset folder (either layout)")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="all",
        help="split recorded in the manifest to evaluate on (default: all images)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.model:
        report = evaluate_model(args.model, args.data, args.split, args.quiet)
    else:
        report = evaluate_ladder(args.ladder.split(","), args.data, args.split, args.quiet)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
