"""The local two-tier ladder: its single score, its figures, and the choice of tier 1's band.

Ladder rule (as on the appliance): every frame goes to tier 1; when tier 1's score s1 is in its
manifest `uncertain_band` [lo, hi) the frame goes to tier 2, whose answer replaces tier 1's.

Ladder score (for AUROC): the ladder's single answer per image, from which its AUROC is taken.

- When both packages carry a `calibration` (fitted on their out-of-fold scores by
  `pipelines.crossval`, or by `pipelines.calibrate`), L is the deciding tier's calibrated
  P(defect): tier 2's for an escalated frame, tier 1's otherwise. This is the `p_defect` the
  appliance publishes with every verdict, one probability scale whichever tier answered, so the
  AUROC of L is that of what an OT consumer ranking parts by `p_defect` gets.
- Without calibrations, zones: every frame tier 1 confidently passed (s1 < lo) ranks below
  every escalated frame (ordered by s2), which ranks below every frame tier 1 confidently failed
  (s1 >= hi); within a zone, the deciding tier's order. Raw scores of two models are not
  comparable, so this is the only order the decisions alone justify (it needs lo <= thr1 <= hi).

The decisions are the same either way (fail iff the deciding tier's score >= its threshold);
only the ranking across tiers differs. Tier 2 alone has the same AUROC on both scales
(the calibration is monotone).

Band choice (`python -m pipelines.ladder`): on held-out scores of both tiers (the out-of-fold
scores of the train+val pool when both tiers are cross-validated, else the val split), the band
[lo, hi) containing thr1 with the best ladder AUROC among those escalating at most
`--max-escalation` of the images (the compute budget). The band and how it was chosen go into
tier 1's manifest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from appliance.inference.package import (
    MANIFEST_FILE,
    Calibration,
    Manifest,
    ModelPackage,
    load_package,
    write_manifest,
)
from pipelines.datasets import Dataset, read_scores
from pipelines.metrics import auroc

EPS = 1e-6


Calibrations = tuple[Calibration, Calibration] | None


def calibrations_of(tier1: Manifest, tier2: Manifest) -> Calibrations:
    """Both tiers' calibrations, or None unless both carry one (then the zones rank)."""
    if tier1.calibration and tier2.calibration:
        return tier1.calibration, tier2.calibration
    return None


def score_name(calibrations: Calibrations) -> str:
    """What the ladder's single score is, for the records."""
    if calibrations is None:
        return "zones: tier-1 pass < escalated < tier-1 fail"
    return "calibrated P(defect) of the deciding tier"


def ladder_scores(
    s1: np.ndarray,
    s2: np.ndarray,
    thr1: float,
    band: tuple[float, float],
    calibrations: Calibrations = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ladder score L per image, escalated mask) for tier scores s1, s2 (see module doc)."""
    s1 = np.asarray(s1, np.float64)
    s2 = np.asarray(s2, np.float64)
    lo, hi = band
    escalated = (s1 >= lo) & (s1 < hi)
    if calibrations is not None:
        cal1, cal2 = calibrations
        return np.where(escalated, cal2.p_defect_array(s2), cal1.p_defect_array(s1)), escalated
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
    calibrations: Calibrations = None,
) -> dict:
    """Ladder AUROC / accuracy / escalated fraction / measured mean compute vs tier 2 alone."""
    y = np.asarray(y, bool)
    score, escalated = ladder_scores(s1, s2, thr1, band, calibrations)
    pred = np.where(escalated, s2 >= thr2, s1 >= thr1)
    compute = ms1 + np.where(escalated, ms2, 0.0)
    ladder_auc = auroc(y, score)
    t2_auc = auroc(y, s2)
    zones = {}
    if calibrations is not None:  # the uncalibrated ranking too, for comparison
        zones = {"image_auroc_zones": round(auroc(y, ladder_scores(s1, s2, thr1, band)[0]), 4)}
    ladder = {
        "image_auroc": round(ladder_auc, 4),
        "accuracy": round(float((pred == y).mean()), 4),
        "escalated_fraction": round(float(escalated.mean()), 4),
        "mean_compute_ms": round(float(compute.mean()), 4),
        "ladder_score": score_name(calibrations),
        **zones,
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


def band_edges(s1: np.ndarray, thr1: float, most: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Candidate (lo, hi) edges: midpoints between sorted scores (at most `most` per side)."""
    cuts = np.unique(s1)
    mids = (cuts[:-1] + cuts[1:]) / 2.0
    if len(mids) > 2 * most:
        mids = np.unique(np.quantile(mids, np.linspace(0.0, 1.0, 2 * most)))
    los = np.unique(np.concatenate([[0.0, thr1], mids[mids <= thr1]]))
    his = np.unique(np.concatenate([[thr1, 1.0], mids[mids >= thr1]]))
    return los, his


def choose_band(
    y: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    thr1: float,
    max_escalation: float,
    calibrations: Calibrations = None,
    thr2: float | None = None,
) -> tuple[tuple[float, float], dict]:
    """Band [lo, hi) containing thr1 with the best ladder AUROC escalating <= max_escalation.

    The escalation budget is the compute target (tier 2 on at most ~30 % of frames); within it
    the band goes where it buys the most ranking quality. Ties: fewer escalations, then the
    narrower band. Chosen on held-out scores of both tiers (the out-of-fold scores of the
    train+val pool, or the val split). With calibrations and tier 2's threshold `thr2`, only
    bands where tier 1 decides alone below and above tier 2's decision point on the P(defect)
    scale (cal1(lo) <= cal2(thr2) <= cal1(hi)): a part tier 1 confidently passes then never
    shows a higher `p_defect` than tier 2's pass/fail boundary, and vice versa.
    """
    y = np.asarray(y, bool)
    s1 = np.asarray(s1, np.float64)
    los, his = band_edges(s1, thr1)
    if calibrations is not None and thr2 is not None:
        cal1, cal2 = calibrations
        boundary = cal2.p_defect(thr2)
        los = los[cal1.p_defect_array(los) <= boundary]
        his = his[cal1.p_defect_array(his) >= boundary]
        if not len(los) or not len(his):
            raise ValueError("tier 1's calibration never reaches tier 2's decision point")
    best: tuple[float, float, float, float, float] | None = None  # (-auroc, esc, width, lo, hi)
    for lo in los:
        for hi in his:
            score, esc = ladder_scores(s1, s2, thr1, (lo, hi), calibrations)
            fraction = float(esc.mean())
            if fraction > max_escalation + 1e-12:
                continue
            key = (-auroc(y, score), fraction, float(hi - lo), float(lo), float(hi))
            if best is None or key < best:
                best = key
    if best is None:  # cannot happen: [thr1, thr1) escalates nothing
        raise ValueError("no band within the escalation budget")
    neg_auc, fraction, _, lo, hi = best
    t2 = auroc(y, s2)
    info = {
        "method": "best ladder AUROC with escalation <= max_escalation (ties: fewer escalated)",
        "max_escalation": max_escalation,
        "ladder_score": score_name(calibrations),
        "tier2_auroc": round(t2, 4),
        "ladder_auroc": round(-neg_auc, 4),
        "auroc_ratio": round(-neg_auc / t2, 4) if t2 else None,
        "escalated_fraction": round(fraction, 4),
        "n": len(y),
    }
    return (round(lo, 6), round(hi, 6)), info


def refuse_test_images(package: ModelPackage, dataset: Dataset, names: list[str], source: str) -> None:
    """Exit when a held-out score file covers images of the package's test split."""
    from pipelines.evaluate import split_indices

    if not package.manifest.training.get("split"):
        return
    test = split_indices(package, dataset, "test")
    names_of_test = {dataset.name(i) for i in test}
    leaked = [n for n in names if n in names_of_test]
    if leaked:
        raise SystemExit(
            f"{source}: scores {len(leaked)} images of the test split (e.g. {leaked[0]}); "
            "held-out scores for fitting must come from train+val"
        )


def main(argv: list[str] | None = None) -> int:
    """Choose tier 1's uncertain band on held-out scores and write it into tier 1's manifest."""
    from pipelines.datasets import load_dataset
    from pipelines.evaluate import make_runner, run_package, split_indices

    parser = argparse.ArgumentParser(
        description="Choose tier 1's uncertain band on held-out scores (OOF pool or val split)."
    )
    parser.add_argument("--ladder", required=True, help="tier1,tier2 package folders")
    parser.add_argument("--data", required=True, help="the dataset folder both tiers trained on")
    parser.add_argument(
        "--max-escalation",
        type=float,
        default=0.27,
        help="escalation budget (the compute target is <= 35%% of tier 2's; tier 1 itself "
        "costs ~5%%, and 0.27 leaves ~3 points for held-out/new-data noise)",
    )
    parser.add_argument(
        "--tier2-scores",
        help="JSON {image path relative to --data: score} of tier 2 on held-out images, e.g. the "
        "out-of-fold scores of a cross-fit tier 2 (pipelines.crossval writes oof_scores.json); "
        "required when tier 2 was trained on the val split",
    )
    parser.add_argument(
        "--tier1-scores",
        help="JSON {image path: score} of tier 1 on held-out images (the out-of-fold scores of "
        "a cross-validated tier 1): the band is then chosen on every image both files score, "
        "the whole train+val pool, instead of the val split; needs --tier2-scores",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the band and its figures, leave the manifest alone (e.g. to compare recipes)",
    )
    args = parser.parse_args(argv)
    tier1, tier2 = args.ladder.split(",")
    r1, r2 = make_runner(tier1), make_runner(tier2)
    dataset = load_dataset(args.data)
    if args.tier1_scores:
        if not args.tier2_scores:
            parser.error("--tier1-scores needs --tier2-scores")
        names, s1 = read_scores(args.tier1_scores, None)
        _, s2 = read_scores(args.tier2_scores, names)
        y = dataset.defect_flags(names, args.tier1_scores)
        refuse_test_images(r1.package, dataset, names, args.tier1_scores)
        split = "out-of-fold (train+val)"
        source = f"held-out scores from {args.tier2_scores}"
    else:
        if r1.manifest.training.get("refit"):
            raise SystemExit(
                f"{tier1} was refit on train+val: its val scores are in-sample; "
                "pass its members' out-of-fold scores with --tier1-scores"
            )
        val = split_indices(r1.package, dataset, "val")
        if split_indices(r2.package, dataset, "val") != val:
            raise SystemExit("tiers were trained on different splits")
        s1 = run_package(r1, dataset, val, "tier1").scores
        names = [dataset.name(i) for i in val]
        if args.tier2_scores:
            _, s2 = read_scores(args.tier2_scores, names)
            refuse_test_images(r2.package, dataset, names, args.tier2_scores)
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
        split = "val"
    calibrations = calibrations_of(r1.manifest, r2.manifest)
    band, info = choose_band(
        y, s1, s2, r1.manifest.threshold, args.max_escalation, calibrations, r2.manifest.threshold
    )
    info["split"] = split
    info["tier1_scores"] = (
        f"held-out scores from {args.tier1_scores}" if args.tier1_scores else "tier 1 on val"
    )
    info["tier2"] = f"{r2.manifest.name} {r2.manifest.version}"
    info["tier2_scores"] = source
    print(json.dumps({"band": band, **info}), file=sys.stderr)
    if args.dry_run:
        return 0
    folder = Path(tier1)
    raw = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["uncertain_band"] = list(band)
    raw["ladder"] = info
    write_manifest(folder, raw)
    load_package(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
