"""Rebuild a shipped package with one command: train FP32, quantize to INT8, calibrate the ladder.

    python -m pipelines.retrain mt-tier1 | mt-tier2 | neu-det [--data DIR] [--version X.Y.Z]

1. `pipelines.train --recipe NAME` writes the FP32 reference to build/fp32/NAME (git-ignored).
2. `pipelines.quantize` writes the INT8 package to models/NAME when its val-split drop is within
   the bound (0.01); otherwise the FP32 package is shipped and the refusal is recorded.
3. For the magnetic-tile tiers, once both packages exist, `pipelines.ladder` re-chooses tier 1's
   uncertain band on the val split (tier 2 changing moves the band too).

Bump the version (recipe or --version) whenever a retrained package is meant to ship.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from appliance.inference.package import MANIFEST_FILE, load_package, write_manifest
from pipelines.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
LADDER = ("mt-tier1", "mt-tier2")


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

    from pipelines import ensemble, ladder, quantize, train
    from pipelines.datasets import datasets_root

    start = time.time()
    recipe = RECIPES[args.name]
    data = args.data or str(datasets_root() / recipe["dataset"])
    fp32 = ROOT / recipe["out"]
    ship = ROOT / "models" / args.name
    base = ["--recipe", args.name, "--data", data, "--threads", str(args.threads)]
    if args.version:
        base += ["--version", args.version]
    seeds = recipe.get("ensemble_seeds")
    if seeds:
        # Seed ensemble: members train in parallel (one process and thread each), then merge.
        members = [fp32.with_name(f"{fp32.name}-s{s}") for s in seeds]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pipelines.train", *base, "--out", str(m), "--seed", str(s)],
                cwd=ROOT,
            )
            for s, m in zip(seeds, members, strict=True)
        ]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("an ensemble member failed to train")
        ensemble.ensemble_package(members, fp32, Path(data))
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
    if args.name in LADDER and all((ROOT / "models" / n / MANIFEST_FILE).is_file() for n in LADDER):
        tiers = ",".join(str(ROOT / "models" / n) for n in LADDER)
        ladder.main(["--ladder", tiers, "--data", data])
    minutes = (time.time() - start) / 60.0
    raw = json.loads((ship / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["training"]["retrain_wall_minutes"] = round(minutes, 1)
    write_manifest(ship, raw)
    load_package(ship)
    print(f"retrained {args.name} in {minutes:.1f} min -> {ship}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
