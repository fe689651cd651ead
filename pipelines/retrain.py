"""Rebuild a shipped package with one command: train FP32, quantize to INT8, calibrate the ladder.

    python -m pipelines.retrain mt-tier1 | mt-tier2 | neu-det [--data DIR] [--version X.Y.Z]

1. `pipelines.train --recipe NAME` writes the FP32 package to build/fp32/NAME (git-ignored).
2. `pipelines.quantize` writes the INT8 package to models/NAME when its val-split drop is within
   the bound (0.01); otherwise the FP32 package is shipped and the refusal is recorded. The FP32
   graph goes along as models/NAME/reference/model-fp32.onnx (what `appliance bench` compares
   INT8 with) unless it is too large to keep in the repository (`ship_reference` False).
   A recipe with `crossval` replaces steps 1-2 by `pipelines.crossval`: K members, each holding
   out one fold of train+val, checked and quantized on their folds; the package is their merge
   (mt-tier2) or, with `refit`, one model trained on the whole pool (mt-tier1, which must stay
   small). Either way threshold, metrics and the P(defect) calibration come from the members'
   out-of-fold scores.
3. For the magnetic-tile tiers, once both packages exist, `pipelines.ladder` re-chooses tier 1's
   uncertain band (tier 2 changing moves the band too) on both tiers' out-of-fold scores of
   train+val (on the val split for a tier that was not cross-validated).

mt-tier1 distils mt-tier2 (its recipe's `teacher_scores` are tier 2's out-of-fold scores): retrain
tier 2 first. Bump the version (recipe or --version) whenever a retrained package is meant to ship.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from appliance.inference.package import MANIFEST_FILE, load_package, write_manifest
from pipelines.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
LADDER = ("mt-tier1", "mt-tier2")
REFERENCE = Path("reference") / "model-fp32.onnx"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--data", help="dataset folder (default: datasets root / recipe dataset)")
    parser.add_argument("--version", help="manifest version (default: the recipe's)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for training (1: the box is shared)"
    )
    parser.add_argument("--max-drop", type=float, default=0.01)
    args = parser.parse_args(argv)

    from pipelines import crossval, ladder, quantize, train
    from pipelines.datasets import datasets_root

    start = time.time()
    recipe = RECIPES[args.name]
    data = args.data or str(datasets_root() / recipe["dataset"])
    fp32 = ROOT / recipe["out"]
    ship = ROOT / "models" / args.name
    base = ["--recipe", args.name, "--data", data, "--threads", str(args.threads)]
    if args.version:
        base += ["--version", args.version]
    if recipe.get("crossval"):
        cv = ["--recipe", args.name, "--data", data, "--out", str(fp32), "--ship", str(ship)]
        crossval.main(
            [*cv, "--max-drop", str(args.max_drop)] + (["--version", args.version] if args.version else [])
        )
    else:
        train.main([*base, "--out", str(fp32)])
        record = quantize.quantize_package(fp32, ship, Path(data), max_drop=args.max_drop)
        if record.get("refused"):
            # Ship the FP32 reference rather than an INT8 model outside its bound.
            ship.mkdir(parents=True, exist_ok=True)
            for f in ("model.onnx", MANIFEST_FILE):
                shutil.copyfile(fp32 / f, ship / f)
            raw = json.loads((ship / MANIFEST_FILE).read_text(encoding="utf-8"))
            raw["training"]["int8_refused"] = record
            write_manifest(ship, raw)
        elif recipe.get("ship_reference", True):
            (ship / REFERENCE).parent.mkdir(exist_ok=True)
            shutil.copyfile(fp32 / "model.onnx", ship / REFERENCE)
    if args.name in LADDER and all((ROOT / "models" / n / MANIFEST_FILE).is_file() for n in LADDER):
        tiers = ",".join(str(ROOT / "models" / n) for n in LADDER)
        band = ["--ladder", tiers, "--data", data]
        tier2 = load_package(ROOT / "models" / LADDER[1]).manifest
        if tier2.training.get("crossval"):
            held = ROOT / "models" / LADDER[1] / "reference" / crossval.OOF_FILE
            if not held.is_file():
                raise SystemExit(f"{held} is missing: retrain {LADDER[1]} to re-create it")
            band += ["--tier2-scores", str(held)]
        own = ROOT / "models" / LADDER[0] / "reference" / crossval.OOF_FILE
        tier1 = load_package(ROOT / "models" / LADDER[0]).manifest
        if tier1.training.get("crossval") and tier2.training.get("crossval"):
            # Both tiers cross-validated: the band is chosen on the whole train+val pool.
            band += ["--tier1-scores", str(own)]
        before = tier1.uncertain_band
        ladder.main(band)
        if args.name != LADDER[0]:
            follow_tier2(ROOT / "models" / LADDER[0], before)
    minutes = (time.time() - start) / 60.0
    raw = json.loads((ship / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["training"]["retrain_wall_minutes"] = round(minutes, 1)
    write_manifest(ship, raw)
    load_package(ship)
    print(f"retrained {args.name} in {minutes:.1f} min -> {ship}", file=sys.stderr)
    return 0


def follow_tier2(tier1: Path, band_before: tuple[float, float]) -> None:
    """After tier 2 changed: bump tier 1's patch version if its band moved, and say when tier 1
    distils tier 2 (its teacher scores changed: only a retrain of tier 1 follows them)."""
    manifest = load_package(tier1).manifest
    if tuple(manifest.uncertain_band) != tuple(band_before):
        raw = json.loads((tier1 / MANIFEST_FILE).read_text(encoding="utf-8"))
        major, minor, patch = (raw["version"].split(".") + ["0", "0"])[:3]
        raw["version"] = f"{major}.{minor}.{int(patch) + 1 if patch.isdigit() else 1}"
        write_manifest(tier1, raw)
        print(f"{tier1.name}: band re-chosen -> version {raw['version']}", file=sys.stderr)
    if manifest.training.get("config", {}).get("teacher_scores"):
        print(
            f"note: {tier1.name} distils {LADDER[1]}'s out-of-fold scores, which just changed: "
            f"retrain it too (python -m pipelines.retrain {LADDER[0]})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    raise SystemExit(main())
