"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.metrics import (
    auroc,
    box_f1_at,
    box_iou,
    choose_box_threshold,
    choose_threshold,
    classification_report,
    detection_map,
    match_detections,
    voc_ap,
)


def test_auroc_perfect_reversed_and_ties():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5


def test_auroc_hand_case():
    # Pairs (pos, neg): (0.35 vs 0.1) win, (0.35 vs 0.4) loss, (0.8 vs both) win -> 3/4.
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # One tie among 2x2 pairs: (1 + 1 + 0.5 + 1) / 4.
    assert auroc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_auroc_single_class_is_nan():
    assert math.isnan(auroc([1, 1], [0.2, 0.3]))


def test_choose_threshold_separates_when_possible():
    t = choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert 0.2 < t <= 0.7


def test_classification_report_counts():
    r = classification_report(["good", "good", "crack", "blowhole"], [0.1, 0.6, 0.7, 0.3], 0.5, "good")
    assert r["confusion"] == {"tp": 1, "fn": 1, "fp": 1, "tn": 1}
    assert r["accuracy"] == 0.5
    assert r["per_class_recall"]["crack"]["recall"] == 1.0
    assert r["per_class_recall"]["blowhole"]["recall"] == 0.0
    assert r["per_class_recall"]["good"]["recall"] == 0.5


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]))
    assert iou[0] == pytest.approx([1 / 7, 1.0, 0.0])


def test_voc_ap_hand_case():
    # Detections: TP, FP, TP over 2 GT -> recall .5,.5,1; precision 1,.5,.667.
    # Envelope: 1 on (0, .5], .667 on (.5, 1] -> AP = .5 + .5 * 2/3.
    ap = voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_detection_map_tiny_boxes():
    gts = [
        (np.array([[0.1, 0.1, 0.3, 0.3]]), ("crazing",)),
        (np.array([[0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.2, 0.2]]), ("crazing", "patches")),
    ]
    dets = [
        [("crazing", 0.9, (0.1, 0.1, 0.3, 0.3)), ("crazing", 0.8, (0.6, 0.6, 0.7, 0.7))],
        [("crazing", 0.7, (0.5, 0.5, 0.9, 0.88)), ("patches", 0.6, (0.5, 0.5, 0.6, 0.6))],
    ]
    r = detection_map(gts, dets, ["crazing", "patches"])
    # crazing: TP(.9), FP(.8), TP(.7) over 2 GT -> AP = .5 + .5 * 2/3; patches: one FP -> 0.
    assert r["ap50_per_class"]["crazing"] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-4)
    assert r["ap50_per_class"]["patches"] == 0.0
    assert r["map50"] == pytest.approx((0.5 + 0.5 * 2 / 3) / 2, abs=1e-4)


def test_detection_map_duplicate_is_false_positive():
    gts = [(np.array([[0.1, 0.1, 0.5, 0.5]]), ("scratches",))]
    dets = [[("scratches", 0.9, (0.1, 0.1, 0.5, 0.5)), ("scratches", 0.8, (0.1, 0.1, 0.5, 0.5))]]
    assert detection_map(gts, dets, ["scratches"])["map50"] == pytest.approx(1.0)


def test_box_threshold_maximises_pooled_f1():
    gts = [
        (np.array([[0.1, 0.1, 0.3, 0.3]]), ("crazing",)),
        (np.array([[0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.2, 0.2]]), ("crazing", "patches")),
    ]
    dets = [
        [("crazing", 0.9, (0.1, 0.1, 0.3, 0.3)), ("crazing", 0.3, (0.6, 0.6, 0.7, 0.7))],
        [
            ("crazing", 0.7, (0.5, 0.5, 0.9, 0.88)),
            ("patches", 0.5, (0.0, 0.0, 0.2, 0.2)),
            ("patches", 0.1, (0.6, 0.0, 0.8, 0.2)),
        ],
    ]
    # Cuts: >=.9 F1 2/4, >=.7 4/5, >=.5 6/6 = 1, >=.3 6/7, >=.1 6/8: best keeps the top three TPs.
    choice = choose_box_threshold(gts, dets)
    assert choice["f1"] == pytest.approx(1.0)
    assert choice["threshold"] == pytest.approx((0.5 + 0.3) / 2)
    assert (choice["precision"], choice["recall"], choice["n_kept"]) == (1.0, 1.0, 3)
    at = box_f1_at(gts, dets, choice["threshold"])
    assert (at["tp"], at["fp"], at["fn"]) == (3, 0, 0)
    low = box_f1_at(gts, dets, 0.05)
    assert (low["tp"], low["fp"], low["fn"]) == (3, 2, 0)
    assert low["f1"] == pytest.approx(6 / 8)


def test_box_threshold_counts_wrong_class_and_duplicates_as_false_positives():
    gts = [(np.array([[0.1, 0.1, 0.5, 0.5]]), ("scratches",))]
    dets = [
        [
            ("scratches", 0.9, (0.1, 0.1, 0.5, 0.5)),
            ("scratches", 0.8, (0.1, 0.1, 0.5, 0.5)),
            ("patches", 0.7, (0.1, 0.1, 0.5, 0.5)),
        ]
    ]
    conf, tp, n_gt = match_detections(gts, dets)
    assert tp.tolist() == [True, False, False] and n_gt == 1
    assert choose_box_threshold(gts, dets)["threshold"] == pytest.approx(0.85)


def test_platt_fit_recovers_a_known_calibration_and_refuses_separated_scores():
    from appliance.inference.package import score_logit
    from pipelines.metrics import CalibrationError, fit_platt

    rng = np.random.default_rng(0)
    s = rng.uniform(0.01, 0.99, 20000)
    p = 1.0 / (1.0 + np.exp(-(0.7 * score_logit(s) - 0.4)))
    y = rng.random(20000) < p
    a, b = fit_platt(y, s)
    assert (a, b) == (pytest.approx(0.7, abs=0.05), pytest.approx(-0.4, abs=0.05))
    # Confidently wrong images at the clip edges (INT8 saturation) must not make it diverge.
    y2 = np.concatenate([y, np.zeros(50, bool), np.ones(50, bool)])
    s2 = np.concatenate([s, np.ones(50), np.zeros(50)])
    a2, _ = fit_platt(y2, s2)
    assert 0 < a2 < a
    with pytest.raises(CalibrationError):
        fit_platt(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))  # separated: no finite fit
    with pytest.raises(CalibrationError):
        fit_platt(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9]))  # inverted: slope < 0
