"""K-fold cross-fit: out-of-fold figures to choose a recipe on, and the fold members as the package.

    python -m pipelines.crossval --recipe mt-tier2 [--folds 4] [--jobs 2] [--out build/cv/NAME] \
        [--set KEY=JSON ...] [--epochs N] [--size W H] [--ship models/NAME] [--version X.Y.Z]

The pool is the package split's train+val (the test split is never read). It is cut into K
class-stratified folds (`datasets.kfold`); member k trains on the other K-1 folds for the
recipe's fixed number of epochs (no epoch selection: the final EMA weights) and is then scored
on fold k through the appliance runtime. Every pool image thus gets exactly one *out-of-fold*
(OOF) score from a model that never saw it; pooled over ~630 images (~170 defects) the OOF
AUROC ranks recipes where a 42-defect val split saturates near 1.0.

The K members, averaged in one ONNX graph (`ensemble.merge_onnx`), are the package: together
they have seen all of train+val. With `--refit` (a model that must stay small, mt-tier1) the
package is instead one model of the recipe trained on all of train+val; the members then only
give the figures below. Each member is quantized to INT8 on its own training images and
checked on its own held-out fold; the pooled OOF AUROC of the INT8 members must be within
`--max-drop` of the FP32 members', else FP32 ships. The decision threshold (max balanced
accuracy), the recorded metrics, the drift reference and the score -> P(defect) calibration
come from the OOF scores. An OOF score
is one held-out member; the package averages K members that all never saw a new image, so its
scores on new data are a little less spread than the OOF ones (same ranking rule, same scale).

Members run `jobs` at a time, one process and one torch thread each. Outputs in --out: f{k}/
(FP32 members), f{k}-int8/, fp32/ and int8/ (merged packages), oof_scores.json (per image, the
shipped precision's), report.json (per-fold and pooled figures, the pooled OOF AUROC at every
evaluated epoch). With --ship the chosen package is copied to that folder, the merged FP32
graph to its reference/model-fp32.onnx and the OOF scores to reference/oof_scores.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.package import MANIFEST_FILE, load_package, write_manifest
from pipelines.calibrate import calibration_record
from pipelines.datasets import Dataset, datasets_root, load_dataset
from pipelines.ensemble import merge_onnx
from pipelines.metrics import auroc, choose_threshold, classification_report
from pipelines.packaging import score_reference
from pipelines.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT_FILE = "holdout_scores.json"  # written by pipelines.train for each member
REFERENCE = Path("reference") / "model-fp32.onnx"
OOF_FILE = "oof_scores.json"


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def train_members(base: list[str], folds: int, jobs: int, out: Path, reuse: bool) -> list[Path]:
    """Train the K members, `jobs` processes at a time; each logs to out/f{k}.log."""
    members = [out / f"f{k}" for k in range(folds)]
    todo = [k for k, m in enumerate(members) if not (reuse and (m / MANIFEST_FILE).is_file())]
    running: list[tuple[int, subprocess.Popen, Any]] = []
    failed = []
    while todo or running:
        while todo and len(running) < jobs:
            k = todo.pop(0)
            argv = [*base, "--folds", str(folds), "--fold", str(k), "--out", str(members[k])]
            handle = (out / f"f{k}.log").open("w", encoding="utf-8")
            log(f"member {k}: python -m pipelines.train {' '.join(argv)}")
            proc = subprocess.Popen(  # noqa: S603 - our own module, argv list
                [sys.executable, "-m", "pipelines.train", *argv],
                cwd=ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
            running.append((k, proc, handle))
        time.sleep(2.0)
        for item in list(running):
            k, proc, handle = item
            if proc.poll() is not None:
                handle.close()
                running.remove(item)
                log(f"member {k} finished with status {proc.returncode}")
                if proc.returncode != 0:
                    failed.append(k)
    if failed:
        raise SystemExit(f"cross-validation members {failed} failed; see {out}/f*.log")
    return members


def holdout_scores(member: Path, dataset: Dataset) -> dict[int, float]:
    """A member's scores on its held-out fold through the runtime: {sample index: score}."""
    from pipelines.evaluate import make_runner, run_package, split_indices

    runner = make_runner(member)
    held = split_indices(runner.package, dataset, "val")
    return dict(zip(held, run_package(runner, dataset, held, quiet=True).scores.tolist(), strict=True))


def pooled_curve(members: list[Path]) -> dict[str, float]:
    """Pooled OOF AUROC at every epoch all members evaluated (torch scores, for diagnosis)."""
    held = [json.loads((m / HOLDOUT_FILE).read_text(encoding="utf-8")) for m in members]
    epochs = set.intersection(*(set(h["checkpoints"]) for h in held))
    y = np.concatenate([h["defect"] for h in held])
    curve = {}
    for e in sorted(epochs, key=int):
        s = np.concatenate([h["checkpoints"][e] for h in held])
        curve[e] = round(auroc(y, s), 4)
    return curve


def oof_report(dataset: Dataset, oof: dict[int, float], threshold: float | None = None) -> dict:
    """Classification figures of pooled OOF scores (threshold chosen on them unless given)."""
    idx = sorted(oof)
    scores = np.array([oof[i] for i in idx])
    y = np.array([not dataset.samples[i].is_good for i in idx])
    if threshold is None:
        threshold = round(choose_threshold(y, scores), 6)
    report = classification_report([dataset.samples[i].label for i in idx], scores, threshold, "good")
    report["split"] = "out-of-fold (train+val)"
    return report


def finish_package(
    folder: Path, dataset: Dataset, oof: dict[int, float], record: dict, version: str | None
) -> Path:
    """Threshold, metrics and drift reference of a cross-fit package from the OOF scores."""
    from pipelines.evaluate import classification_metrics, make_runner, run_package, split_indices

    raw = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["training"]["crossval"] = record
    raw["version"] = version or raw["version"]
    report = oof_report(dataset, oof)
    raw["threshold"] = report["threshold"]
    report["threshold_rule"] = "max balanced accuracy on the out-of-fold scores (Youden J)"
    raw["score_reference"] = score_reference(np.array(list(oof.values())))
    raw["score_reference"]["split"] = "out-of-fold (train+val)"
    idx = sorted(oof)
    raw["calibration"] = calibration_record(
        np.array([not dataset.samples[i].is_good for i in idx]),
        np.array([oof[i] for i in idx]),
        f"out-of-fold scores of train+val ({len(idx)} images)",
    )
    write_manifest(folder, raw)
    # Latency of the package, measured on the val images (their scores are not used).
    runner = make_runner(folder)
    val = split_indices(runner.package, dataset, "val")
    timing = classification_metrics(runner, dataset, run_package(runner, dataset, val, quiet=True))
    report["latency_ms_p50"] = timing["latency_ms_p50"]
    report["mean_compute_ms"] = timing["mean_compute_ms"]
    raw["metrics"] = report
    write_manifest(folder, raw)
    load_package(folder)
    return folder


def merge_members(
    members: list[Path],
    out: Path,
    dataset: Dataset,
    oof: dict[int, float],
    record: dict,
    version: str | None,
) -> Path:
    """Average members into one package; threshold, metrics and drift reference from OOF."""
    out.mkdir(parents=True, exist_ok=True)
    merge_onnx([m / "model.onnx" for m in members], out / "model.onnx")
    raw = json.loads((members[0] / MANIFEST_FILE).read_text(encoding="utf-8"))
    training = dict(raw["training"])
    training.pop("fold", None)
    training.pop("history", None)
    training.pop("selection", None)
    training["parameters"] = sum(load_package(m).manifest.training["parameters"] for m in members)
    raw["training"] = training
    write_manifest(out, raw)
    return finish_package(out, dataset, oof, record, version)


def train_refit(base: list[str], out: Path, threads: int) -> Path:
    """One model of the recipe on all of train+val (`pipelines.train --refit`), in-process log."""
    argv = list(base)
    for flag in ("--select", "--fold-seed"):  # a refit always takes the last weights, no folds
        i = argv.index(flag)
        del argv[i : i + 2]
    i = argv.index("--threads")
    argv[i + 1] = str(threads)
    argv += ["--refit", "--out", str(out)]
    log(f"refit: python -m pipelines.train {' '.join(argv)}")
    with (out.parent / "refit.log").open("w", encoding="utf-8") as handle:
        status = subprocess.call(  # noqa: S603 - our own module, argv list
            [sys.executable, "-m", "pipelines.train", *argv],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    if status != 0:
        raise SystemExit(f"refit failed with status {status}; see {out.parent}/refit.log")
    return out


def run(args: argparse.Namespace) -> dict:
    """The whole cross-fit; returns the report (also written to out/report.json)."""
    from pipelines.quantize import quantize_package

    start = time.time()
    recipe = RECIPES[args.recipe]
    cv = recipe.get("crossval", {})
    folds = args.folds or int(cv.get("folds", 4))
    if args.refit is None:
        args.refit = bool(cv.get("refit", False))
    out = Path(args.out or ROOT / "build" / "cv" / args.recipe)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data or datasets_root() / recipe["dataset"])
    base = ["--recipe", args.recipe, "--data", str(data), "--threads", "1", "--select", "last"]
    base += [
        "--fold-seed",
        str(args.fold_seed if args.fold_seed is not None else cv.get("seed", 0)),
    ]
    if args.epochs:
        base += ["--epochs", str(args.epochs)]
    if args.size:
        base += ["--size", *map(str, args.size)]
    for item in args.set:
        base += ["--set", item]
    members = train_members(base, folds, args.jobs, out, args.reuse)
    train_minutes = (time.time() - start) / 60.0
    dataset = load_dataset(data)
    per_fold, oof32, oof8 = [], {}, {}
    quant_members = []
    for k, m in enumerate(members):
        s32 = holdout_scores(m, dataset)
        oof32.update(s32)
        fold = {
            "k": k,
            "n": len(s32),
            "wall_minutes": load_package(m).manifest.training["wall_minutes"],
        }
        y = [not dataset.samples[i].is_good for i in s32]
        fold["n_defect"] = int(sum(y))
        fold["auroc_fp32"] = round(auroc(y, list(s32.values())), 4)
        if args.quantize:
            q = out / f"f{k}-int8"
            quantize_package(m, q, data, max_drop=1.0)  # the bound is checked pooled, below
            s8 = holdout_scores(q, dataset)
            oof8.update(s8)
            fold["auroc_int8"] = round(auroc(y, [s8[i] for i in s32]), 4)
            quant_members.append(q)
        per_fold.append(fold)
        log(f"fold {k}: {fold}")
    record: dict[str, Any] = {
        "folds": folds,
        "fold_seed": int(base[base.index("--fold-seed") + 1]),
        "pool": "train+val of the recorded split; test never read",
        "members": "one per fold, trained on the other folds, final EMA weights (no selection)",
        "per_fold": per_fold,
        "overrides": {"epochs": args.epochs, "size": args.size, "set": args.set},
    }
    fp32_report = oof_report(dataset, oof32)
    record["oof_auroc_fp32"] = fp32_report["image_auroc"]
    try:
        record["oof_auroc_curve"] = pooled_curve(members)
    except (OSError, KeyError, json.JSONDecodeError):
        record["oof_auroc_curve"] = {}
    shipped, oof = "fp32", oof32
    if args.quantize:
        int8_report = oof_report(dataset, oof8)
        drop = fp32_report["image_auroc"] - int8_report["image_auroc"]
        record["oof_auroc_int8"] = int8_report["image_auroc"]
        record["int8_drop"] = round(drop, 4)
        record["max_drop"] = args.max_drop
        if drop <= args.max_drop:
            shipped, oof = "int8", oof8
        else:
            log(f"INT8 loses {drop:.4f} OOF AUROC (> {args.max_drop}): FP32 ships")
    record["shipped_precision"] = shipped
    record["train_wall_minutes"] = round(train_minutes, 1)
    if args.refit:
        record["shipped_model"] = "one refit on all of train+val; the members give the OOF figures"
        fp32_pkg = finish_package(
            train_refit(base, out / "refit", args.refit_threads), dataset, oof32, record, args.version
        )
        package = fp32_pkg
        if shipped == "int8":
            quantize_package(fp32_pkg, out / "refit-int8", data, max_drop=1.0)
            package = finish_package(out / "refit-int8", dataset, oof, record, args.version)
    else:
        fp32_pkg = merge_members(members, out / "fp32", dataset, oof32, record, args.version)
        package = fp32_pkg
        if shipped == "int8":
            package = merge_members(quant_members, out / "int8", dataset, oof, record, args.version)
    if shipped == "int8":
        raw = json.loads((package / MANIFEST_FILE).read_text(encoding="utf-8"))
        raw["training"]["precision"] = "int8"
        own = raw["training"].get("quantization", {})
        if args.refit:
            # The members' OOF figures decide INT8; the refit's own FP32-vs-INT8 check can only
            # be in-sample (it trained on the whole pool), kept beside them.
            own["refit_check"] = {
                "split": "train+val (in-sample)",
                **{k: own.get(k) for k in ("fp32", "int8", "drop")},
            }
        raw["training"]["quantization"] = {
            **own,
            "split": "out-of-fold (each member on its own held-out fold)",
            "fp32": record["oof_auroc_fp32"],
            "int8": record["oof_auroc_int8"],
            "drop": record["int8_drop"],
            "max_drop": args.max_drop,
            "fp32_reference_sha256": load_package(fp32_pkg).manifest.sha256,
            "latency_ms_p50": {
                "fp32": load_package(fp32_pkg).manifest.metrics["latency_ms_p50"],
                "int8": raw["metrics"]["latency_ms_p50"],
            },
        }
        write_manifest(package, raw)
    paths = {dataset.name(i): s for i, s in oof.items()}
    (out / OOF_FILE).write_text(json.dumps(paths, indent=0), encoding="utf-8")
    report = {
        "recipe": args.recipe,
        **record,
        "oof_fp32": fp32_report,
        "oof_int8": oof_report(dataset, oof8) if oof8 else None,
        "package": str(package),
        "wall_minutes": round((time.time() - start) / 60.0, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.ship:
        ship(package, fp32_pkg, out / OOF_FILE, Path(args.ship))
    log(
        f"cross-fit {args.recipe}: OOF AUROC fp32 {record['oof_auroc_fp32']}"
        + (f" int8 {record.get('oof_auroc_int8')}" if args.quantize else "")
        + f", {report['wall_minutes']} min -> {package}"
    )
    return report


def ship(package: Path, fp32: Path, oof: Path, dest: Path) -> None:
    """Copy the package to `dest`; the merged FP32 graph and the OOF scores to dest/reference/.

    The OOF scores travel with the package because tier 1's ladder band is chosen on both
    tiers' held-out scores (`pipelines.ladder --tier1-scores/--tier2-scores`), and the package's
    own val scores are in-sample.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("model.onnx", MANIFEST_FILE):
        shutil.copyfile(package / f, dest / f)
    (dest / REFERENCE).parent.mkdir(exist_ok=True)
    shutil.copyfile(fp32 / "model.onnx", dest / REFERENCE)
    shutil.copyfile(oof, dest / REFERENCE.parent / OOF_FILE)
    load_package(dest)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    p.add_argument("--data", help="dataset folder (default: datasets root / recipe dataset)")
    p.add_argument("--folds", type=int, help="number of folds (default: the recipe's, else 4)")
    p.add_argument("--fold-seed", type=int, help="fold seed (default: the recipe's)")
    p.add_argument("--jobs", type=int, default=2, help="members trained at once (1 thread each)")
    p.add_argument("--out", help="work folder (default: build/cv/RECIPE)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    p.add_argument("--version", help="manifest version of the merged packages")
    p.add_argument("--no-quantize", dest="quantize", action="store_false")
    p.add_argument("--max-drop", type=float, default=0.01, help="max OOF AUROC drop for INT8")
    p.add_argument("--reuse", action="store_true", help="keep members already trained in --out")
    p.add_argument("--ship", help="copy the chosen package (and FP32 reference) to this folder")
    p.add_argument(
        "--refit",
        action="store_true",
        default=None,
        help="ship one model trained on all of train+val instead of the merged members "
        "(default: the recipe's crossval.refit)",
    )
    p.add_argument("--no-refit", dest="refit", action="store_false", help="ship the merged members")
    p.add_argument("--refit-threads", type=int, default=2, help="torch threads of the refit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    report = run(parse_args(argv))
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("oof_")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
