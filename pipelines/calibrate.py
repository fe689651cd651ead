"""Fit a package's score -> P(defect) calibration on held-out scores and write it to its manifest.

    python -m pipelines.calibrate --model models/mt-tier2 \
        --scores models/mt-tier2/reference/oof_scores.json --data DIR [--version X.Y.Z]

`pipelines.crossval` does this for every package it builds (on the out-of-fold scores); this
command adds it to a package built before, without retraining. The scores must be held out
(never the images the package trained on): an in-sample fit would be over-confident. See
`appliance.inference.package.Calibration` for the form and why the ladder needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from appliance.inference.package import MANIFEST_FILE, load_package, write_manifest
from pipelines.metrics import CalibrationError, fit_platt


def calibration_record(defect: np.ndarray, scores: np.ndarray, fitted_on: str) -> dict | None:
    """The manifest's `calibration` entry, or None (said on stderr) when no fit is worth shipping."""
    try:
        a, b = fit_platt(defect, scores)
    except CalibrationError as exc:
        print(f"no calibration from {fitted_on}: {exc}", file=sys.stderr)
        return None
    return {"method": "platt-logit", "a": round(a, 6), "b": round(b, 6), "fitted_on": fitted_on}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    from pipelines.datasets import load_dataset, read_scores
    from pipelines.ladder import refuse_test_images

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="package folder")
    parser.add_argument("--scores", required=True, help="JSON {image path: held-out score}")
    parser.add_argument("--data", required=True, help="the dataset folder the paths refer to")
    parser.add_argument("--version", help="new manifest version (the package's outputs change)")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data)
    names, scores = read_scores(args.scores, None)
    defect = dataset.defect_flags(names, args.scores)
    folder = Path(args.model)
    refuse_test_images(load_package(folder), dataset, names, args.scores)
    record = calibration_record(defect, scores, f"held-out scores {args.scores} ({len(names)})")
    if record is None:
        raise SystemExit(f"{args.scores}: no usable calibration (see above)")
    raw = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["calibration"] = record
    if args.version:
        raw["version"] = args.version
    write_manifest(folder, raw)
    load_package(folder)
    print(json.dumps(record), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
