"""The ladder's single score, its figures and the band chooser."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.ladder import choose_band, ladder_figures, ladder_scores
from pipelines.metrics import auroc


def test_ladder_score_zones_are_ordered():
    thr1, band = 0.5, (0.3, 0.7)
    s1 = np.array([0.1, 0.29, 0.3, 0.5, 0.69, 0.7, 0.95])
    s2 = np.array([0.9, 0.9, 0.0, 1.0, 0.5, 0.0, 0.0])
    score, esc = ladder_scores(s1, s2, thr1, band)
    assert esc.tolist() == [False, False, True, True, True, False, False]
    assert (score[:2] < 1 / 3).all()
    assert (score[2:5] >= 1 / 3).all() and (score[2:5] < 2 / 3).all()
    assert (score[5:] >= 2 / 3).all()
    # Escalated frames keep tier 2's order; tier-1 frames keep tier 1's.
    assert score[2] < score[4] < score[3]
    assert score[0] < score[1] and score[5] < score[6]


def test_ladder_decision_is_a_threshold_on_the_ladder_score():
    rng = np.random.default_rng(0)
    s1, s2 = rng.random(200), rng.random(200)
    y = rng.random(200) < 0.3
    thr1, thr2, band = 0.4, 0.6, (0.2, 0.7)
    figures = ladder_figures(y, s1, s2, np.full(200, 0.2), np.full(200, 10.0), thr1, band, thr2)
    score, esc = ladder_scores(s1, s2, thr1, band)
    pred = np.where(esc, s2 >= thr2, s1 >= thr1)
    assert np.array_equal(pred, score >= 1 / 3 + thr2 / 3 * (1 - 1e-6))
    assert figures["accuracy"] == pytest.approx(float((pred == y).mean()), abs=1e-4)
    assert figures["escalated_fraction"] == pytest.approx(float(esc.mean()), abs=1e-4)
    # compute: 0.2 ms always + 10 ms for escalated frames.
    assert figures["mean_compute_ms"] == pytest.approx(0.2 + 10 * esc.mean(), abs=1e-3)
    assert figures["compute_ratio"] == pytest.approx((0.2 + 10 * esc.mean()) / 10, abs=1e-3)
    assert figures["last_tier_alone"]["image_auroc"] == pytest.approx(auroc(y, s2), abs=1e-4)


def test_full_band_equals_tier2_and_empty_band_equals_tier1():
    rng = np.random.default_rng(1)
    y = rng.random(100) < 0.4
    s1 = np.clip(y * 0.3 + rng.random(100) * 0.7, 0, 1)
    s2 = np.clip(y * 0.6 + rng.random(100) * 0.4, 0, 1)
    full, _ = ladder_scores(s1, s2, 0.5, (0.0, 1.01))
    assert auroc(y, full) == pytest.approx(auroc(y, s2))
    empty, esc = ladder_scores(s1, s2, 0.5, (0.5, 0.5))
    assert not esc.any()
    assert auroc(y, empty) == pytest.approx(auroc(y, s1))


def test_choose_band_is_the_best_within_the_escalation_budget():
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.3
    s1 = np.clip(0.35 * y + 0.65 * rng.random(300), 0, 1)  # weak tier 1
    s2 = np.clip(0.7 * y + 0.3 * rng.random(300), 0, 1)  # strong tier 2
    thr1 = 0.5
    (lo, hi), info = choose_band(y, s1, s2, thr1, 0.3)
    assert lo <= thr1 <= hi
    score, esc = ladder_scores(s1, s2, thr1, (lo, hi))
    assert esc.mean() <= 0.3
    assert info["escalated_fraction"] == pytest.approx(float(esc.mean()), abs=1e-4)
    assert info["ladder_auroc"] == pytest.approx(auroc(y, score), abs=1e-4)
    # No band within the budget does better (brute force over a coarse grid).
    for a in np.linspace(0, thr1, 11):
        for b in np.linspace(thr1, 1, 11):
            other, e = ladder_scores(s1, s2, thr1, (a, b))
            if e.mean() <= 0.3:
                assert auroc(y, other) <= auroc(y, score) + 1e-9
    assert auroc(y, score) > auroc(y, s1)  # escalating bought something


def test_calibrated_ladder_score_is_the_deciding_tiers_probability():
    from appliance.inference.package import Calibration
    from pipelines.metrics import fit_platt

    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    s1 = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1)
    s2 = np.clip(0.4 * y + 0.6 * rng.random(400), 0, 1)
    cal1 = Calibration(a=fit_platt(y, s1)[0], b=fit_platt(y, s1)[1])
    cal2 = Calibration(a=fit_platt(y, s2)[0], b=fit_platt(y, s2)[1])
    score, esc = ladder_scores(s1, s2, 0.5, (0.3, 0.7), (cal1, cal2))
    assert np.allclose(score[esc], [cal2.p_defect(v) for v in s2[esc]])
    assert np.allclose(score[~esc], [cal1.p_defect(v) for v in s1[~esc]])
    # Monotone: a tier's own AUROC is unchanged; the fit is a probability (mean ~ prevalence).
    assert auroc(y, cal2.p_defect_array(s2)) == pytest.approx(auroc(y, s2))
    assert cal2.p_defect_array(s2).mean() == pytest.approx(y.mean(), abs=0.02)
    full, _ = ladder_scores(s1, s2, 0.5, (0.0, 1.01), (cal1, cal2))
    assert auroc(y, full) == pytest.approx(auroc(y, s2))


def test_retraining_tier2_bumps_tier1_when_its_band_moves(models_dir, tmp_path, capsys):
    import shutil

    from appliance.inference.package import load_package
    from pipelines.retrain import follow_tier2

    tier1 = tmp_path / "mt-tier1"
    shutil.copytree(models_dir / "bright1", tier1)
    version = load_package(tier1).manifest.version
    band = tuple(load_package(tier1).manifest.uncertain_band)
    follow_tier2(tier1, band)  # band unchanged: same version
    assert load_package(tier1).manifest.version == version
    follow_tier2(tier1, (0.0, 0.0))  # band moved
    bumped = load_package(tier1).manifest.version
    assert bumped != version and bumped.rsplit(".", 1)[0] == version.rsplit(".", 1)[0]
    assert "version" in capsys.readouterr().err
