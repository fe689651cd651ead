"""Package finishing steps shared by training and quantization (no torch).

`finalize_manifest` scores the validation split through the appliance runtime and writes the
decision threshold, the val metrics and the drift reference (score distribution) into the
manifest, so that what the manifest says is what the appliance will do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.package import write_manifest
from pipelines.datasets import Dataset
from pipelines.metrics import choose_box_threshold, choose_threshold


def finalize_manifest(out: Path, dataset: Dataset, val: list[int], kind: str) -> dict:
    """Score val through the runtime; set threshold, val metrics and drift reference."""
    from pipelines.evaluate import (
        classification_metrics,
        detection_metrics,
        ground_truth_and_detections,
        make_runner,
        run_package,
    )

    runner = make_runner(out)
    scored = run_package(runner, dataset, val, "val")
    raw = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    scores = scored.scores
    if kind == "detection":
        # Operating threshold: the box confidence with the best val F1 (IoU 0.5, all classes).
        # The appliance lists boxes at or above it, and a frame fails when its strongest box
        # reaches it; min_box_score stays low so that mAP sees the whole precision/recall curve.
        choice = choose_box_threshold(*ground_truth_and_detections(dataset, scored))
        raw["threshold"] = max(choice["threshold"], float(raw.get("min_box_score", 0.05)))
        runner = make_runner_with_threshold(out, raw)
        metrics = detection_metrics(runner, dataset, scored)
        metrics["threshold_rule"] = choice["rule"]
        metrics["threshold_choice"] = choice
    else:
        y = np.array([not dataset.samples[i].is_good for i in val])
        raw["threshold"] = round(choose_threshold(y, scores), 6)
        runner = make_runner_with_threshold(out, raw)
        metrics = classification_metrics(runner, dataset, scored)
        metrics["threshold_rule"] = "max balanced accuracy on val (Youden J)"
    metrics["split"] = "val"
    raw["metrics"] = metrics
    raw["score_reference"] = score_reference(scores)
    write_manifest(out, raw)
    return raw


def make_runner_with_threshold(out: Path, raw: dict) -> Any:
    """Rewrite the manifest with the chosen threshold and reload the runner."""
    from pipelines.evaluate import make_runner

    write_manifest(out, raw)
    return make_runner(out)


def score_reference(scores: np.ndarray) -> dict:
    """Drift reference: quantiles and a 20-bin histogram of val scores."""
    hist, edges = np.histogram(scores, bins=20, range=(0.0, 1.0))
    q = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
    return {
        "split": "val",
        "n": len(scores),
        "mean": round(float(np.mean(scores)), 6),
        "std": round(float(np.std(scores)), 6),
        "quantiles": {str(k): round(float(v), 6) for k, v in zip(q, np.quantile(scores, q), strict=True)},
        "histogram": {"edges": [round(float(e), 3) for e in edges], "counts": hist.tolist()},
    }


def main(argv: list[str] | None = None) -> int:
    """Re-choose a package's threshold, val metrics and drift reference (no retraining)."""
    from appliance.inference.package import load_package
    from pipelines.datasets import datasets_root, load_dataset
    from pipelines.evaluate import split_indices

    parser = argparse.ArgumentParser(
        description="Re-finalize a package on its recorded val split: threshold (by the kind's "
        "rule), val metrics and drift reference; optionally bump its version."
    )
    parser.add_argument("--model", required=True, help="package folder, e.g. models/neu-det")
    parser.add_argument("--data", help="dataset folder (default: the manifest's provenance)")
    parser.add_argument("--version", help="new manifest version")
    args = parser.parse_args(argv)
    package = load_package(args.model)
    data = args.data or str(datasets_root() / package.manifest.provenance["dataset"])
    dataset = load_dataset(data)
    val = split_indices(package, dataset, "val")
    if args.version:
        raw = json.loads((package.path / "manifest.json").read_text(encoding="utf-8"))
        raw["version"] = args.version
        write_manifest(package.path, raw)
    raw = finalize_manifest(package.path, dataset, val, package.manifest.kind)
    load_package(package.path)
    print(json.dumps({"threshold": raw["threshold"], "metrics": raw["metrics"]}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
