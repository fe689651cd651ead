"""Training settings of the shipped packages: `python -m pipelines.train --recipe NAME`.

`dataset` is a folder name under the datasets root (env APPLIANCE_DATASETS, default
<repo>/../shared/datasets). FP32 references go to build/fp32/NAME (git-ignored); the shipped INT8
package is made from it by `python -m pipelines.quantize` (see `pipelines.retrain`).
"""

from __future__ import annotations

from typing import Any

# Same split seed for both magnetic-tile tiers, so the ladder is calibrated and tested on one split.
MT_SPLIT_SEED = 20240

RECIPES: dict[str, dict[str, Any]] = {
    "mt-tier1": {
        "dataset": "magnetic-tile",
        "arch": "tiny",
        "size": [128, 128],
        "epochs": 300,
        "batch": 32,
        "lr": 3e-3,
        "budget_minutes": 40.0,
        "split_seed": MT_SPLIT_SEED,
        "out": "build/fp32/mt-tier1",
        "version": "1.1.0",
        # The classifier reads its own small-defect map, and learns tier 2's held-out P(defect)
        # besides the labels: confident where tier 2 is, unsure where tier 2 hesitates.
        "mask_in_head": True,
        "teacher_scores": "models/mt-tier2/reference/oof_scores.json",
        # Four members give out-of-fold scores (recipe choice, threshold, calibration, band);
        # the package is one refit on all of train+val (tier 1 must stay <= 100k parameters).
        "crossval": {"folds": 4, "seed": 7, "refit": True},
    },
    "mt-tier2": {
        "dataset": "magnetic-tile",
        "arch": "segdec",
        "size": [256, 256],
        "epochs": 150,
        "batch": 16,
        "lr": 3e-3,
        "budget_minutes": 40.0,
        "split_seed": MT_SPLIT_SEED,
        "out": "build/fp32/mt-tier2",
        "version": "2.0.1",
        # Four members, each holding out one fold of train+val (pipelines.crossval).
        "crossval": {"folds": 4, "seed": 7},
    },
    "neu-det": {
        "dataset": "neu-det",
        "arch": "fcos",
        "size": [224, 224],
        "epochs": 50,
        "batch": 16,
        "lr": 2e-3,
        "budget_minutes": 40.0,
        "split_seed": 20240,
        "out": "build/fp32/neu-det",
        "version": "1.1.0",
        "min_box_score": 0.05,
        "zoom_p": 0.6,
    },
}
