"""Cross-fit: members hold out their own fold, OOF scores cover the pool once, merged packages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from appliance.inference.package import load_package  # noqa: E402
from pipelines import crossval  # noqa: E402
from pipelines.datasets import load_dataset, split_dataset  # noqa: E402


@pytest.fixture(scope="module")
def crossfit(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    from tests.pipelines.conftest import make_tiles

    root = tmp_path_factory.mktemp("cv")
    data = make_tiles(root / "tiles", per_class=10)
    argv = [
        "--recipe",
        "mt-tier2",
        "--data",
        str(data),
        "--folds",
        "3",
        "--fold-seed",
        "5",
        "--size",
        "48",
        "48",
        "--epochs",
        "2",
        "--set",
        "batch=4",
        "--set",
        "crop=32",
        "--set",
        "eval_every=1",
        "--set",
        "channels_last=true",
        "--out",
        str(root / "out"),
        "--ship",
        str(root / "ship"),
        "--version",
        "9.9.9",
    ]
    return crossval.run(crossval.parse_args(argv)), root, data


def test_members_hold_out_their_fold_and_oof_covers_the_pool(crossfit: tuple[dict, Path, Path]):
    report, root, data = crossfit
    ds = load_dataset(data)
    split = split_dataset(ds, 20240, (0.6, 0.2, 0.2))
    pool = sorted(split["train"] + split["val"])
    oof = json.loads((root / "out" / "oof_scores.json").read_text())
    names = sorted(str(ds.samples[i].path.relative_to(ds.root)) for i in pool)
    assert sorted(oof) == names  # every pool image exactly once, no test image
    held = []
    for k in range(3):
        m = load_package(root / "out" / f"f{k}").manifest
        assert m.training["fold"]["k"] == k and m.training["fold"]["n"] == 3
        assert m.training["selection"]["rule"] == "last epoch (no selection)"
        assert m.training["selection"]["best_epoch"] == 2
        held.append(set(json.loads((root / "out" / f"f{k}" / "holdout_scores.json").read_text())["paths"]))
    assert not (held[0] & held[1] or held[0] & held[2] or held[1] & held[2])
    assert set().union(*held) == set(names)
    assert [f["k"] for f in report["per_fold"]] == [0, 1, 2]
    assert set(report["oof_auroc_curve"]) == {"1", "2"}
    assert report["shipped_precision"] in ("int8", "fp32")


def test_merged_package_averages_members_and_ships_a_reference(crossfit: tuple[dict, Path, Path]):
    import onnxruntime as ort

    report, root, _ = crossfit
    ship = load_package(root / "ship")
    m = ship.manifest
    assert m.version == "9.9.9" and m.kind == "segmentation"
    assert "fold" not in m.training
    assert m.training["crossval"]["folds"] == 3
    assert m.metrics["split"] == "out-of-fold (train+val)"
    assert m.metrics["n_images"] == 24 and m.threshold == m.metrics["threshold"]
    assert m.score_reference["n"] == 24
    reference = root / "ship" / "reference" / "model-fp32.onnx"
    assert reference.read_bytes() == (root / "out" / "fp32" / "model.onnx").read_bytes()
    members = "-int8" if report["shipped_precision"] == "int8" else ""
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 48, 48)).astype(np.float32)

    def score(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["score"], {"image": x})[0]

    parts = [score(root / "out" / f"f{k}{members}" / "model.onnx") for k in range(3)]
    assert np.allclose(score(ship.onnx_path), np.mean(parts, 0), atol=1e-5)


def test_random_crop_labels_follow_the_mask():
    import torch

    from pipelines.train import random_crop

    x = torch.rand(6, 1, 64, 64) * 255
    m = torch.zeros(6, 1, 64, 64)
    m[:3, :, 2:6, 2:6] = 1.0  # defects in the top-left corner
    y = torch.tensor([2, 2, 2, 0, 0, 0])
    gen = torch.Generator().manual_seed(0)
    for p in (0.0, 1.0):
        for _ in range(5):
            xc, mc, yc = random_crop(x, m, y, 32, gen, defect_p=p)
            assert xc.shape == (6, 1, 32, 32) and mc.shape == xc.shape
            has = (mc > 0.5).flatten(1).any(1)
            assert torch.equal(yc != 0, has)  # defect label iff the crop shows the defect
            if p == 1.0:
                assert has[:3].all()


def test_set_overrides_any_known_key_and_rejects_unknown(capsys: pytest.CaptureFixture):
    from pipelines.train import parse_args

    cfg = parse_args(
        ["--recipe", "mt-tier2", "--data", "x", "--set", "crop=192", "--set", "aspect_jitter=0.2"]
    )
    assert cfg["crop"] == 192 and cfg["aspect_jitter"] == 0.2 and "crossval" not in cfg
    with pytest.raises(SystemExit):
        parse_args(["--recipe", "mt-tier2", "--data", "x", "--set", "nonsense=1"])
    assert "known key" in capsys.readouterr().err


def test_ladder_band_uses_the_out_of_fold_scores_of_a_crossfit_tier2(
    crossfit: tuple[dict, Path, Path], tmp_path: Path
):
    from pipelines import ladder, train

    _, root, data = crossfit
    tier1 = tmp_path / "tier1"
    argv = ["--data", str(data), "--arch", "tiny", "--out", str(tier1), "--name", "t1"]
    argv += ["--size", "48", "48", "--epochs", "1", "--batch", "4", "--threads", "1"]
    assert train.main([*argv, "--split-seed", "20240"]) == 0
    tiers = f"{tier1},{root / 'ship'}"
    with pytest.raises(SystemExit, match="in-sample"):
        ladder.main(["--ladder", tiers, "--data", str(data)])
    held = root / "ship" / "reference" / "oof_scores.json"
    assert ladder.main(["--ladder", tiers, "--data", str(data), "--tier2-scores", str(held)]) == 0
    m1 = load_package(tier1).manifest
    assert m1.model_extra["ladder"]["tier2_scores"] == f"held-out scores from {held}"
    lo, hi = m1.uncertain_band
    assert lo <= m1.threshold <= hi


def test_refit_ships_one_model_on_the_pool_and_the_band_comes_from_both_oof_files(
    crossfit: tuple[dict, Path, Path], tmp_path: Path
):
    from pipelines import ladder
    from pipelines.datasets import split_from_manifest

    _, root, data = crossfit
    argv = ["--recipe", "mt-tier1", "--data", str(data), "--folds", "3", "--fold-seed", "5"]
    argv += ["--size", "48", "48", "--epochs", "2", "--set", "batch=4", "--no-quantize"]
    argv += ["--set", "teacher_scores=null"]  # the recipe's teacher scores the real tiles
    argv += ["--refit", "--refit-threads", "1", "--out", str(tmp_path / "cv")]
    argv += ["--ship", str(tmp_path / "t1")]
    report = crossval.run(crossval.parse_args(argv))
    shipped = load_package(tmp_path / "t1").manifest
    ds = load_dataset(data)
    split = split_dataset(ds, 20240, (0.6, 0.2, 0.2))
    pool = sorted(split["train"] + split["val"])
    # One tiny network (not the members' average), trained on the whole pool, test untouched.
    assert (
        shipped.training["parameters"] == load_package(tmp_path / "cv" / "f0").manifest.training["parameters"]
    )
    assert shipped.training["refit"]["pool"] == "train+val"
    refit = split_from_manifest(ds, shipped.training)
    assert refit["train"] == pool and refit["test"] == split["test"]
    # Its threshold and figures are the members' out-of-fold ones.
    oof = json.loads((tmp_path / "t1" / "reference" / "oof_scores.json").read_text())
    assert len(oof) == len(pool)
    assert shipped.threshold == report["oof_fp32"]["threshold"]
    assert shipped.metrics["split"] == "out-of-fold (train+val)"
    # Its calibration is the one the OOF scores give (None when a 2-epoch model's scores admit
    # no finite fit).
    from pipelines.calibrate import calibration_record

    names = sorted(oof)
    y = np.array([not n.startswith("free/") for n in names])
    expected = calibration_record(y, np.array([oof[n] for n in names]), "x")
    if expected is None:
        assert shipped.calibration is None
    else:
        assert shipped.calibration is not None and "out-of-fold" in shipped.calibration.fitted_on
        assert shipped.calibration.a == pytest.approx(expected["a"], abs=1e-5)
    tiers = f"{tmp_path / 't1'},{root / 'ship'}"
    t2 = root / "ship" / "reference" / "oof_scores.json"
    t1 = tmp_path / "t1" / "reference" / "oof_scores.json"
    with pytest.raises(SystemExit):  # tier-1 OOF scores alone do not say what tier 2 would do
        ladder.main(["--ladder", tiers, "--data", str(data), "--tier1-scores", str(t1)])
    argv = ["--ladder", tiers, "--data", str(data), "--tier1-scores", str(t1)]
    before = (tmp_path / "t1" / "manifest.json").read_bytes()
    assert ladder.main([*argv, "--tier2-scores", str(t2), "--dry-run"]) == 0
    assert (tmp_path / "t1" / "manifest.json").read_bytes() == before  # a dry run writes nothing
    assert ladder.main([*argv, "--tier2-scores", str(t2)]) == 0
    info = load_package(tmp_path / "t1").manifest.model_extra["ladder"]
    assert info["split"] == "out-of-fold (train+val)" and info["n"] == len(pool)
    # Calibrated P(defect) when both tiers carry a calibration (a 2-epoch tier 2 may rank too
    # badly to get one: then the zones).
    both = shipped.calibration and load_package(root / "ship").manifest.calibration
    assert info["ladder_score"].startswith("calibrated" if both else "zones")
    lo, hi = load_package(tmp_path / "t1").manifest.uncertain_band
    assert lo <= shipped.threshold <= hi


def test_calibrate_fits_a_package_on_held_out_scores(crossfit: tuple[dict, Path, Path], tmp_path):
    import shutil

    from pipelines import calibrate
    from pipelines.metrics import fit_platt

    _, root, data = crossfit
    pkg = tmp_path / "pkg"
    shutil.copytree(root / "ship", pkg)
    ds = load_dataset(data)
    split = split_dataset(ds, 20240, (0.6, 0.2, 0.2))
    pool = sorted(split["train"] + split["val"])
    rng = np.random.default_rng(0)
    names = [str(ds.samples[i].path.relative_to(ds.root)) for i in pool]
    y = np.array([not ds.samples[i].is_good for i in pool])
    scores = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, len(y)), 0, 1)
    held = tmp_path / "held.json"
    held.write_text(json.dumps(dict(zip(names, scores.tolist(), strict=True))))
    argv = ["--model", str(pkg), "--data", str(data)]
    assert calibrate.main([*argv, "--scores", str(held), "--version", "9.9.10"]) == 0
    m = load_package(pkg).manifest
    order = np.argsort(names)
    a, b = fit_platt(y[order], scores[order])
    assert m.version == "9.9.10"
    assert (m.calibration.a, m.calibration.b) == (pytest.approx(a, abs=1e-5), pytest.approx(b, abs=1e-5))
    inverted = tmp_path / "inverted.json"
    inverted.write_text(json.dumps(dict(zip(names, (1 - scores).tolist(), strict=True))))
    with pytest.raises(SystemExit, match="no usable calibration"):
        calibrate.main([*argv, "--scores", str(inverted)])
    test_image = str(ds.samples[split["test"][0]].path.relative_to(ds.root))
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps({**dict(zip(names, scores.tolist(), strict=True)), test_image: 0.5}))
    with pytest.raises(SystemExit, match="test split"):
        calibrate.main([*argv, "--scores", str(leaky)])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nope/x.jpg": 0.5}))
    with pytest.raises(SystemExit, match="not in"):
        calibrate.main([*argv, "--scores", str(bad)])
