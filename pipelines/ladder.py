"""The local two-tier ladder: its single score, its figures, and the choice of tier 1's band.

Ladder rule (as on the appliance): every frame goes to tier 1; when tier 1's score s1 is in its
manifest `uncertain_band` [lo, hi) the frame goes to tier 2, whose answer replaces tier 1's.

Ladder score (for AUROC). The ladder makes three kinds of decision, and its single score must
order images the way those decisions do, without inventing information:

- tier 1 says "good" (not escalated, s1 < thr1):   L = (s1 / thr1) / 3          in [0, 1/3)
- escalated, tier 2 decides:                       L = 1/3 + s2 / 3 * (1 - eps)  in [1/3, 2/3)
- tier 1 says "defect" (not escalated, s1 >= thr1): L = 2/3 + (s1 - thr1) / (1 - thr1) / 3
                                                                                 in [2/3, 1]

Within each zone the order is the deciding tier's own order; across zones, every frame that
tier 1 confidently passed ranks below every escalated frame, which ranks below every frame tier 1
confidently failed. This is exactly the ordering the ladder commits to (its decisions are
monotone in L: the ladder fails a frame iff L >= 1/3 + thr2/3), so the AUROC of L is an honest
ranking measure of the ladder, not of either tier alone. It requires lo <= thr1 <= hi, which the
band chooser guarantees.

Band choice (`python -m pipelines.ladder`): on the validation split only, among bands whose edges
are midpoints between tier 1's sorted validation scores (plus thr1 itself), take the one that
escalates the fewest validation frames while the ladder's validation AUROC stays >= `ratio` x
tier 2's validation AUROC; then, within a validation escalation budget, lower `lo` as a safety
margin (see `choose_band`). The band and how it was chosen go into tier 1's manifest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from appliance.inference.package import MANIFEST_FILE, load_package, write_manifest
from pipelines.metrics import auroc

EPS = 1e-6


def ladder_scores(
    s1: np.ndarray, s2: np.ndarray, thr1: float, band: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(ladder score L per image, escalated mask) for tier scores s1, s2 (see module doc)."""
    s1 = np.asarray(s1, np.float64)
    s2 = np.asarray(s2, np.float64)
    lo, hi = band
    escalated = (s1 >= lo) & (s1 < hi)
    low = s1 / max(thr1, EPS) / 3.0
    high = 2.0 / 3.0 + (s1 - thr1) / max(1.0 - thr1, EPS) / 3.0
    mid = 1.0 / 3.0 + s2 * (1.0 - EPS) / 3.0
    score = np.where(escalated, mid, np.where(s1 < thr1, np.minimum(low, 1 / 3 - EPS), high))
    return np.clip(score, 0.0, 1.0), escalated


def ladder_figures(
    y: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    ms1: np.ndarray,
    ms2: np.ndarray,
    thr1: float,
    band: tuple[float, float],
    thr2: float,
) -> dict:
    """Ladder AUROC / accuracy / escalated fraction / measured mean compute vs tier 2 alone."""
    y = np.asarray(y, bool)
    score, escalated = ladder_scores(s1, s2, thr1, band)
    pred = np.where(escalated, s2 >= thr2, s1 >= thr1)
    compute = ms1 + np.where(escalated, ms2, 0.0)
    ladder_auc = auroc(y, score)
    t2_auc = auroc(y, s2)
    ladder = {
        "image_auroc": round(ladder_auc, 4),
        "accuracy": round(float((pred == y).mean()), 4),
        "escalated_fraction": round(float(escalated.mean()), 4),
        "mean_compute_ms": round(float(compute.mean()), 4),
    }
    alone = {
        "image_auroc": round(t2_auc, 4),
        "accuracy": round(float(((s2 >= thr2) == y).mean()), 4),
        "escalated_fraction": 1.0,
        "mean_compute_ms": round(float(np.mean(ms2)), 4),
    }
    return {
        **ladder,
        "band": list(band),
        "last_tier_alone": alone,
        "first_tier_alone": {
            "image_auroc": round(auroc(y, s1), 4),
            "accuracy": round(float(((s1 >= thr1) == y).mean()), 4),
            "mean_compute_ms": round(float(np.mean(ms1)), 4),
        },
        "auroc_ratio": round(ladder_auc / t2_auc, 4) if t2_auc else None,
        "compute_ratio": round(float(compute.mean() / np.mean(ms2)), 4),
    }


def choose_band(
    y: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    thr1: float,
    ratio: float,
    max_escalation: float = 0.0,
) -> tuple[tuple[float, float], dict]:
    """Band [lo, hi) containing thr1: narrowest meeting the AUROC ratio, then a safety margin.

    Step 1: among candidate bands, the one escalating the fewest val frames while the val ladder
    AUROC stays >= `ratio` x tier 2's val AUROC. Step 2 (margin): while the val escalated
    fraction stays <= `max_escalation`, lower `lo` further. A small val split cannot resolve a
    1% AUROC difference (tier 2 saturates near 1.0 there), and below thr1 is where a ladder error
    costs most: a defect that tier 1 confidently passes drops below every escalated good frame
    (about 1/n_defect of AUROC per miss, vs 1/n_good for a good frame confidently failed above
    hi). The spare compute budget is therefore spent there.
    """
    y = np.asarray(y, bool)
    s1 = np.asarray(s1, np.float64)
    target = ratio * auroc(y, s2)
    cuts = np.unique(s1)
    mids = (cuts[:-1] + cuts[1:]) / 2.0
    los = np.unique(np.concatenate([[0.0, thr1], mids[mids <= thr1]]))
    his = np.unique(np.concatenate([[thr1, 1.0], mids[mids >= thr1]]))
    best: tuple[float, float, float, float] | None = None  # (escalated, -auroc, lo, hi)
    for lo in los:
        for hi in his:
            score, esc = ladder_scores(s1, s2, thr1, (lo, hi))
            a = auroc(y, score)
            if a + 1e-12 < target:
                continue
            key = (float(esc.mean()), -a, float(lo), float(hi))
            if best is None or key < best:
                best = key
    if best is None:  # cannot happen: [0, 1] escalates everything and equals tier 2
        best = (1.0, -auroc(y, s2), 0.0, 1.0)
    esc0, neg_auc0, lo0, hi = best
    lo = lo0
    for cand in sorted(los[los < lo0], reverse=True):
        _, esc = ladder_scores(s1, s2, thr1, (cand, hi))
        if esc.mean() > max_escalation:
            break
        lo = float(cand)
    score, esc = ladder_scores(s1, s2, thr1, (lo, hi))
    info = {
        "method": "narrowest band with val ladder AUROC >= ratio x val tier-2 AUROC, then lo "
        "lowered while val escalation <= max_escalation",
        "split": "val",
        "ratio": ratio,
        "max_escalation": max_escalation,
        "narrowest_band": [round(lo0, 6), round(hi, 6)],
        "narrowest_val_escalated_fraction": round(esc0, 4),
        "val_tier2_auroc": round(auroc(y, s2), 4),
        "val_ladder_auroc": round(auroc(y, score), 4),
        "val_escalated_fraction": round(float(esc.mean()), 4),
        "n_val": len(y),
    }
    return (round(lo, 6), round(hi, 6)), info


def main(argv: list[str] | None = None) -> int:
    """Choose tier 1's uncertain band on the val split and write it into tier 1's manifest."""
    from pipelines.datasets import load_dataset
    from pipelines.evaluate import make_runner, run_package, split_indices

    parser = argparse.ArgumentParser(description="Calibrate the ladder band on the val split.")
    parser.add_argument("--ladder", required=True, help="tier1,tier2 package folders")
    parser.add_argument("--data", required=True, help="the dataset folder both tiers trained on")
    parser.add_argument(
        "--max-escalation",
        type=float,
        default=0.25,
        help="val escalation budget for the safety margin below thr1 (the compute target is "
        "<= 35%% of tier 2; 0.25 leaves room for tier 1's own cost and val/test noise)",
    )
    parser.add_argument(
        "--ratio",
        type=float,
        default=0.995,
        help="keep val ladder AUROC >= RATIO x tier-2 val AUROC (target 0.99, "
        "0.995 leaves a margin for val/test noise)",
    )
    parser.add_argument(
        "--tier2-scores",
        help="JSON {image path relative to --data: score} of tier 2 on held-out images, e.g. the "
        "out-of-fold scores of a cross-fit tier 2 (pipelines.crossval writes oof_scores.json); "
        "required when tier 2 was trained on the val split",
    )
    args = parser.parse_args(argv)
    tier1, tier2 = args.ladder.split(",")
    r1, r2 = make_runner(tier1), make_runner(tier2)
    dataset = load_dataset(args.data)
    val = split_indices(r1.package, dataset, "val")
    if split_indices(r2.package, dataset, "val") != val:
        raise SystemExit("tiers were trained on different splits")
    s1 = run_package(r1, dataset, val, "tier1").scores
    if args.tier2_scores:
        held = json.loads(Path(args.tier2_scores).read_text(encoding="utf-8"))
        names = [str(dataset.samples[i].path.relative_to(dataset.root)) for i in val]
        missing = [n for n in names if n not in held]
        if missing:
            raise SystemExit(f"{args.tier2_scores}: no score for {len(missing)} val images")
        s2 = np.array([held[n] for n in names], np.float64)
        source = f"held-out scores from {args.tier2_scores}"
    elif r2.manifest.training.get("crossval"):
        raise SystemExit(
            f"{tier2} was cross-fit on train+val: its val scores are in-sample; "
            "pass its out-of-fold scores with --tier2-scores"
        )
    else:
        s2 = run_package(r2, dataset, val, "tier2").scores
        source = "tier 2 run on val through the runtime"
    y = np.array([not dataset.samples[i].is_good for i in val])
    band, info = choose_band(y, s1, s2, r1.manifest.threshold, args.ratio, args.max_escalation)
    info["tier2"] = f"{r2.manifest.name} {r2.manifest.version}"
    info["tier2_scores"] = source
    folder = Path(tier1)
    raw = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["uncertain_band"] = list(band)
    raw["ladder"] = info
    write_manifest(folder, raw)
    load_package(folder)
    print(json.dumps({"band": band, **info}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
