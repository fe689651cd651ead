"""Evaluation metrics in plain numpy: AUROC, threshold choice, confusion, VOC mAP@0.5."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from appliance.inference.package import score_logit


def auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count 1/2). labels: 1 = defect."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


class CalibrationError(ValueError):
    """The scores admit no useful finite calibration (no signal, or perfectly separated)."""


#: A steeper slope means the scores are (nearly) separated: no finite fit worth shipping.
MAX_PLATT_SLOPE = 20.0


def fit_platt(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """(a, b) of P(defect) = sigmoid(a * logit(score) + b), by maximum likelihood.

    Monotone in the score (a > 0 for any useful model), so a model's own AUROC is unchanged;
    what it adds is a common scale: calibrated on held-out scores, two tiers' answers become
    comparable probabilities. Scores go through `score_logit` (clipped: INT8 outputs saturate),
    as `appliance.inference.package.Calibration` applies them.
    Newton steps halved until the likelihood improves (plain Newton diverges on scores bunched
    at the clip edges). Raises CalibrationError when the fit does not converge to a slope in
    (0, MAX_PLATT_SLOPE]: scores without signal, or so separated that the optimum is infinite.
    """
    y = np.asarray(labels, dtype=np.float64)
    x = score_logit(np.asarray(scores, dtype=np.float64))

    def nll(a: float, b: float) -> float:
        z = a * x + b
        return float((np.logaddexp(0.0, z) - y * z).sum())

    a, b = 1.0, 0.0
    loss = nll(a, b)
    for _ in range(200):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * x + b, -50.0, 50.0)))
        w = p * (1.0 - p) + 1e-9
        grad = np.array([((p - y) * x).sum(), (p - y).sum()])
        hess = np.array([[(w * x * x).sum(), (w * x).sum()], [(w * x).sum(), w.sum()]])
        step = np.linalg.solve(hess + 1e-6 * np.eye(2), grad)
        scale = 1.0
        while scale > 1e-6 and nll(a - scale * step[0], b - scale * step[1]) > loss + 1e-12:
            scale /= 2.0
        a, b = a - scale * step[0], b - scale * step[1]
        loss = nll(a, b)
        if np.abs(scale * step).max() < 1e-9:
            break
    else:
        raise CalibrationError(f"no convergence (slope {a:.3g}): scores (nearly) separated?")
    if not 0.0 < a <= MAX_PLATT_SLOPE or not np.isfinite(b):
        raise CalibrationError(f"slope {a:.3g} outside (0, {MAX_PLATT_SLOPE}]")
    return float(a), float(b)


def choose_threshold(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Threshold maximising balanced accuracy (Youden's J), centred on its best plateau.

    Used on the validation split only. Balanced accuracy rather than plain accuracy because good
    parts outnumber defects about 3:1 and a missed defect costs more than a false reject. When a
    whole range of cuts reaches the best J (e.g. val separates perfectly), the threshold is the
    middle of that range (largest margin to both classes) rather than its lower edge.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    cuts = np.unique(s)
    candidates = np.concatenate([[cuts[0]], (cuts[:-1] + cuts[1:]) / 2.0, [cuts[-1] + 1e-6]])
    js = []
    for t in candidates:
        pred = s >= t
        tpr = pred[y].mean() if y.any() else 0.0
        tnr = (~pred[~y]).mean() if (~y).any() else 0.0
        js.append((tpr + tnr) / 2.0)
    js_arr = np.asarray(js)
    best = np.flatnonzero(js_arr >= js_arr.max() - 1e-12)
    start = end = int(best[0])
    while end + 1 < len(js_arr) and js_arr[end + 1] >= js_arr.max() - 1e-12:
        end += 1
    # Plateau edges are the outermost score values with the same decisions on val.
    lo = cuts[start - 1] if start > 0 else candidates[start]
    hi = cuts[end] if end < len(cuts) else candidates[end]
    return float(min(max((lo + hi) / 2.0, 0.0), 1.0))


def classification_report(
    labels: Sequence[str], scores: Sequence[float], threshold: float, good_label: str
) -> dict:
    """AUROC, accuracy at `threshold`, per-class recall and confusion counts."""
    lab = list(labels)
    s = np.asarray(scores, np.float64)
    y = np.array([label != good_label for label in lab])
    pred = s >= threshold
    tp, fn = int((pred & y).sum()), int((~pred & y).sum())
    fp, tn = int((pred & ~y).sum()), int((~pred & ~y).sum())
    per_class = {}
    for c in sorted(set(lab)):
        m = np.array([label == c for label in lab])
        # For the good class "recall" is the fraction correctly passed.
        hit = ~pred[m] if c == good_label else pred[m]
        per_class[c] = {"n": int(m.sum()), "recall": round(float(hit.mean()), 4)}
    return {
        "image_auroc": round(auroc(y, s), 4),
        "accuracy": round(float((pred == y).mean()), 4),
        "balanced_accuracy": round(float((pred[y].mean() + (~pred[~y]).mean()) / 2.0), 4)
        if y.any() and (~y).any()
        else None,
        "threshold": threshold,
        "per_class_recall": per_class,
        "confusion": {"tp": tp, "fn": fn, "fp": fp, "tn": tn},
        "n_images": len(lab),
        "n_defect": int(y.sum()),
        "n_good": int((~y).sum()),
    }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of xyxy boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP: area under the precision envelope (all points, no 11-point sampling)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def detection_map(
    gts: Sequence[tuple[np.ndarray, Sequence[str]]],
    dets: Sequence[Sequence[tuple[str, float, Sequence[float]]]],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict:
    """VOC-style mAP: per image GT (boxes, labels) and detections (label, score, box).

    Greedy matching by descending score; a detection is a true positive when its best-IoU
    same-class ground truth (IoU >= threshold) is not yet matched. mAP averages AP over `classes`
    (a class with no ground truth gets AP 0 if detected, and is left out of the mean otherwise).
    """
    per_class: dict[str, float] = {}
    for c in classes:
        records = []
        n_gt = 0
        gt_c = []
        for boxes, labels in gts:
            mask = np.array([label == c for label in labels], dtype=bool)
            bx = np.asarray(boxes, np.float64).reshape(-1, 4)[mask] if mask.size else np.zeros((0, 4))
            gt_c.append(bx)
            n_gt += len(bx)
        for i, image_dets in enumerate(dets):
            records += [(score, i, box) for label, score, box in image_dets if label == c]
        if n_gt == 0:
            if records:
                per_class[c] = 0.0
            continue
        records.sort(key=lambda r: -r[0])
        matched = [np.zeros(len(g), bool) for g in gt_c]
        tp = np.zeros(len(records))
        for k, (_, i, box) in enumerate(records):
            if len(gt_c[i]) == 0:
                continue
            ious = box_iou(np.asarray(box)[None], gt_c[i])[0]
            j = int(np.argmax(ious))
            if ious[j] >= iou_threshold and not matched[i][j]:
                matched[i][j] = True
                tp[k] = 1
        ctp = np.cumsum(tp)
        recall = ctp / n_gt
        precision = ctp / np.arange(1, len(records) + 1)
        per_class[c] = voc_ap(recall, precision) if records else 0.0
    values = list(per_class.values())
    return {
        "map50": round(float(np.mean(values)), 4) if values else float("nan"),
        "ap50_per_class": {c: round(v, 4) for c, v in per_class.items()},
    }


def match_detections(
    gts: Sequence[tuple[np.ndarray, Sequence[str]]],
    dets: Sequence[Sequence[tuple[str, float, Sequence[float]]]],
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(confidence, true-positive flag) of every detection, and the number of ground-truth boxes.

    VOC matching per class: detections by descending confidence, each takes its best-IoU unmatched
    same-class ground truth at IoU >= `iou_threshold`. Dropping the detections below any cut
    leaves the flags of the others unchanged, so one matching serves every threshold.
    """
    conf, flags = [], []
    n_gt = 0
    for (boxes, labels), image_dets in zip(gts, dets, strict=True):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        n_gt += len(boxes)
        matched = np.zeros(len(boxes), bool)
        for label, score, box in sorted(image_dets, key=lambda d: -d[1]):
            same = np.array([lab == label for lab in labels], bool)
            hit = False
            if same.any():
                ious = np.where(same & ~matched, box_iou(np.asarray(box)[None], boxes)[0], -1.0)
                j = int(np.argmax(ious))
                if ious[j] >= iou_threshold:
                    matched[j] = hit = True
            conf.append(float(score))
            flags.append(hit)
    return np.asarray(conf, np.float64), np.asarray(flags, bool), n_gt


def choose_box_threshold(
    gts: Sequence[tuple[np.ndarray, Sequence[str]]],
    dets: Sequence[Sequence[tuple[str, float, Sequence[float]]]],
    iou_threshold: float = 0.5,
) -> dict:
    """Box confidence maximising F1 at IoU `iou_threshold`, pooled over all classes.

    F1 = 2 TP / (2 TP + FP + FN) counts every detection at or above the cut. The threshold is
    the midpoint between the lowest kept confidence and the next lower one (the same decisions
    on these images, with a margin either side). Used on the validation split only.
    """
    conf, tp, n_gt = match_detections(gts, dets, iou_threshold)
    if len(conf) == 0 or n_gt == 0:
        return {"threshold": 0.5, "f1": 0.0, "precision": 0.0, "recall": 0.0, "n_gt": n_gt}
    order = np.argsort(-conf, kind="mergesort")
    conf, tp = conf[order], tp[order]
    ctp = np.cumsum(tp)
    kept = np.arange(1, len(conf) + 1)
    # Only cut between distinct confidences: ties go in or out together.
    last = np.flatnonzero(np.r_[conf[1:] < conf[:-1], True])
    f1 = 2 * ctp[last] / (kept[last] + n_gt)
    best = int(last[int(np.argmax(f1))])
    below = conf[best + 1] if best + 1 < len(conf) else 0.0
    return {
        "threshold": round(float((conf[best] + below) / 2.0), 6),
        "f1": round(float(f1.max()), 4),
        "precision": round(float(ctp[best] / kept[best]), 4),
        "recall": round(float(ctp[best] / n_gt), 4),
        "n_gt": n_gt,
        "n_kept": int(kept[best]),
        "iou": iou_threshold,
        "rule": "max F1 of boxes at or above the threshold, IoU 0.5, pooled over classes (val)",
    }


def box_f1_at(
    gts: Sequence[tuple[np.ndarray, Sequence[str]]],
    dets: Sequence[Sequence[tuple[str, float, Sequence[float]]]],
    threshold: float,
    iou_threshold: float = 0.5,
) -> dict:
    """Precision, recall and F1 of the boxes at or above `threshold` (IoU match, all classes)."""
    conf, tp, n_gt = match_detections(gts, dets, iou_threshold)
    keep = conf >= threshold
    n_tp, n_kept = int(tp[keep].sum()), int(keep.sum())
    return {
        "threshold": threshold,
        "precision": round(n_tp / n_kept, 4) if n_kept else 0.0,
        "recall": round(n_tp / n_gt, 4) if n_gt else 0.0,
        "f1": round(2 * n_tp / (n_kept + n_gt), 4) if n_kept + n_gt else 0.0,
        "tp": n_tp,
        "fp": n_kept - n_tp,
        "fn": n_gt - n_tp,
    }
