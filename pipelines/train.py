"""Train a model from a dataset folder and export it as a model package (FP32 ONNX + manifest).

    python -m pipelines.train --data DIR --arch {tiny,segdec,fcos} --out build/fp32/NAME \
        --name NAME [--epochs N] [--budget-minutes M] [--seed S] [--split-seed S]

or with a named recipe (the shipped packages' settings, see `pipelines.recipes`):

    python -m pipelines.train --recipe mt-tier2 [--data DIR] [--out DIR]

The folder is split three ways, seeded and stratified by class (`pipelines.datasets`): the
network learns on *train*; model selection (best epoch of an EMA of the weights), the decision
threshold and the drift reference use *val* only; *test* is never loaded here. Metrics written to
the manifest are computed on val through the appliance runtime on the exported ONNX.

Determinism: given the seeds and an epoch budget, runs are repeatable on the same machine and
thread count (data order, augmentation and init are all seeded). The wall-clock budget is a
safety cap: on a machine too slow for the epoch budget, the learning-rate schedule follows the
clock instead (so it still anneals) and training stops before the budget; the manifest then
records the epochs actually run, and the result depends on the machine's speed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from appliance.inference.package import write_manifest
from appliance.inference.runtime import nms_per_class
from pipelines.architectures import (
    build,
    count_parameters,
    decode_boxes,
    exportable,
    fcos_points,
)
from pipelines.crossval import HOLDOUT_FILE
from pipelines.datasets import (
    DEFAULT_FRACTIONS,
    Dataset,
    DatasetError,
    datasets_root,
    fold_split,
    load_arrays,
    load_dataset,
    read_scores,
    refit_split,
    split_dataset,
    validate_files,
)
from pipelines.export import export_onnx, onnx_matches_torch
from pipelines.metrics import auroc, detection_map
from pipelines.packaging import finalize_manifest


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- augmentation


def augment_images(
    x: torch.Tensor,
    m: torch.Tensor | None,
    gen: torch.Generator,
    geometric: bool = True,
    scale_jitter: float = 0.1,
    aspect_jitter: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flips, affine jitter (image and mask together) and brightness/contrast/gamma.

    Zoom is 1 +- `scale_jitter`, shift +-5%; `aspect_jitter` > 0 additionally scales x and y
    independently by up to +-that fraction (the runtime stretch-resizes tiles of any aspect, so
    a defect's on-input shape varies with the tile's). At 0 no extra random draws are made, so
    older recipes keep their random stream.
    """
    n = x.shape[0]
    if geometric:
        flip_h = torch.rand(n, generator=gen) < 0.5
        flip_v = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
        x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
        if m is not None:
            m = torch.where(flip_h[:, None, None, None], m.flip(3), m)
            m = torch.where(flip_v[:, None, None, None], m.flip(2), m)
        scale = 1.0 + (torch.rand(n, generator=gen) - 0.5) * 2.0 * scale_jitter
        shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.1
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = scale
        theta[:, 1, 1] = scale
        if aspect_jitter > 0:
            aspect = 1.0 + (torch.rand(n, generator=gen) - 0.5) * 2.0 * aspect_jitter
            theta[:, 0, 0] = scale * aspect
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if m is not None:
            m = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = photometric(x, gen)
    return x, m


def photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-image contrast (x0.75-1.25), brightness (+-20) and gamma (0.8-1.25) jitter."""
    n = x.shape[0]
    contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)
    bright = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 40.0
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.45)
    mean = x.mean((2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + bright
    x = 255.0 * (x.clamp(0, 255) / 255.0) ** gamma
    return x


def random_crop(
    x: torch.Tensor,
    m: torch.Tensor,
    y: torch.Tensor,
    size: int,
    gen: torch.Generator,
    defect_p: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square crops of `size` px (training a fully convolutional net faster on large inputs).

    For a defect image, with probability `defect_p` the crop is placed around a random defect
    pixel, otherwise uniformly. The crop's label follows its mask: a defect image whose defect
    falls outside the crop becomes a good example (class 0).
    """
    n, _, h, w = x.shape
    size = min(size, h, w)
    xs, ms = [], []
    labels = y.clone()
    for i in range(n):
        r = torch.rand(3, generator=gen)
        on = torch.nonzero(m[i, 0] > 0.5)
        if len(on) and float(r[0]) < defect_p:
            py, px = on[int(float(r[1]) * len(on)) % len(on)].tolist()
            # The defect pixel lands uniformly inside the crop (then clamped to the image).
            y0 = min(max(py - int(float(r[2]) * size), 0), h - size)
            x0 = min(max(px - int(float(torch.rand(1, generator=gen)) * size), 0), w - size)
        else:
            y0 = int(float(r[1]) * (h - size + 1))
            x0 = int(float(r[2]) * (w - size + 1))
        xs.append(x[i, :, y0 : y0 + size, x0 : x0 + size])
        ms.append(m[i, :, y0 : y0 + size, x0 : x0 + size])
        if len(on) and not bool((ms[-1] > 0.5).any()):
            labels[i] = 0  # (a defect whose mask vanished at this size keeps its label)
    return torch.stack(xs), torch.stack(ms), labels


def flip_boxes(boxes: list[np.ndarray], flip_h: np.ndarray, flip_v: np.ndarray) -> list[np.ndarray]:
    """Mirror normalised xyxy boxes to follow image flips."""
    out = []
    for b, fh, fv in zip(boxes, flip_h, flip_v, strict=True):
        b = b.copy()
        if fh:
            b[:, [0, 2]] = 1.0 - b[:, [2, 0]]
        if fv:
            b[:, [1, 3]] = 1.0 - b[:, [3, 1]]
        out.append(b)
    return out


# --------------------------------------------------------------------------- losses


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss, summed."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    w = alpha * target + (1 - alpha) * (1 - target)
    return (w * (1 - pt) ** gamma * ce).sum()


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU per box pair (xyxy)."""
    ix1 = torch.maximum(pred[:, 0], target[:, 0])
    iy1 = torch.maximum(pred[:, 1], target[:, 1])
    ix2 = torch.minimum(pred[:, 2], target[:, 2])
    iy2 = torch.minimum(pred[:, 3], target[:, 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    ap = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    at = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = ap + at - inter + 1e-6
    iou = inter / union
    cx1 = torch.minimum(pred[:, 0], target[:, 0])
    cy1 = torch.minimum(pred[:, 1], target[:, 1])
    cx2 = torch.maximum(pred[:, 2], target[:, 2])
    cy2 = torch.maximum(pred[:, 3], target[:, 3])
    hull = (cx2 - cx1) * (cy2 - cy1) + 1e-6
    return 1.0 - (iou - (hull - union) / hull)


def fcos_targets(
    points: torch.Tensor,
    boxes: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    ranges: tuple[float, ...] = (0.0, 64.0, 128.0, 1e8),
    radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS assignment for one image: (class target [K,C], box target [K,4] px, centerness [K]).

    A location is positive for a box when it lies inside the box and within `radius` strides of
    its centre, and the box's largest side distance falls in the location's level range; among
    several boxes the smallest wins. Negatives have centerness -1.
    """
    k = points.shape[0]
    cls_t = torch.zeros(k, n_classes)
    box_t = torch.zeros(k, 4)
    ctr_t = torch.full((k,), -1.0)
    if len(boxes) == 0:
        return cls_t, box_t, ctr_t
    b = torch.from_numpy(boxes).float()
    px, py, st = points[:, 0:1], points[:, 1:2], points[:, 2:3]
    left, top = px - b[:, 0], py - b[:, 1]
    right, bottom = b[:, 2] - px, b[:, 3] - py
    ltrb = torch.stack([left, top, right, bottom], -1)  # [K,G,4]
    inside = ltrb.min(-1).values > 0
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    near = ((px - cx).abs() < radius * st) & ((py - cy).abs() < radius * st)
    reach = ltrb.max(-1).values
    level = torch.zeros_like(reach, dtype=torch.bool)
    strides = sorted(set(points[:, 2].tolist()))
    for i, s in enumerate(strides):
        on = points[:, 2:3] == s
        level |= on & (reach >= ranges[i]) & (reach <= ranges[i + 1])
    ok = inside & near & level
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None].expand(k, -1).clone()
    area[~ok] = float("inf")
    best_area, best = area.min(1)
    pos = torch.isfinite(best_area)
    idx = torch.nonzero(pos).squeeze(1)
    g = best[idx]
    cls_t[idx, torch.from_numpy(labels).long()[g]] = 1.0
    box_t[idx] = b[g]
    d = ltrb[idx, g]
    lr = d[:, [0, 2]]
    tb = d[:, [1, 3]]
    ctr_t[idx] = torch.sqrt(
        (lr.min(1).values / lr.max(1).values).clamp(min=0)
        * (tb.min(1).values / tb.max(1).values).clamp(min=0)
    )
    return cls_t, box_t, ctr_t


# --------------------------------------------------------------------------- training


class EMA:
    """Exponential moving average of all float tensors of a model's state (weights and BN)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Blend the current weights in (warm-up: faster blending early on)."""
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        src = model.state_dict()
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(src[name].detach(), alpha=1 - d)
            else:
                value.copy_(src[name])


def lr_at(step: int, total: int, base: float, warmup: int, time_frac: float = 0.0) -> float:
    """Linear warm-up then cosine decay to 2% of base.

    Progress is the larger of the step fraction and `time_frac` (elapsed / wall-clock budget), so
    that on a slow or busy machine the schedule still anneals before the budget cuts it short.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    t = max((step - warmup) / max(1, total - warmup), time_frac)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def batches(n: int, batch: int, rng: np.random.Generator, weights: np.ndarray | None) -> list[np.ndarray]:
    """One epoch of index batches (weighted sampling with replacement when weights are given)."""
    if weights is None:
        order = rng.permutation(n)
    else:
        order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    return [order[i : i + batch] for i in range(0, n - batch + 1, batch)] or [order]


@torch.no_grad()
def predict_scores(net: torch.nn.Module, arch: str, images: np.ndarray, bs: int = 64) -> np.ndarray:
    """P(defect) per image with the torch model (val-time model selection)."""
    net.eval()
    out = []
    for i in range(0, len(images), bs):
        x = torch.from_numpy(images[i : i + bs]).float()[:, None]
        o = net(x)
        if arch == "tiny":
            out.append(1.0 - torch.softmax(o["logits"], 1)[:, 0])
        else:
            out.append(torch.sigmoid(o["logit"]))
    return torch.cat(out).numpy()


@torch.no_grad()
def predict_map(
    net: torch.nn.Module,
    images: np.ndarray,
    gts: list[tuple[np.ndarray, tuple[str, ...]]],
    labels: tuple[str, ...],
    points: torch.Tensor,
    min_score: float = 0.05,
    bs: int = 32,
) -> float:
    """Val mAP@0.5 with the torch model and the runtime's own per-class NMS."""
    net.eval()
    h, w = images.shape[1:]
    size = torch.tensor([w, h, w, h], dtype=torch.float32)
    dets = []
    for i in range(0, len(images), bs):
        o = net(torch.from_numpy(images[i : i + bs]).float()[:, None])
        boxes = (decode_boxes(o["reg"], points) / size).clamp(0, 1).numpy()
        scores = torch.sqrt(torch.sigmoid(o["cls"]) * torch.sigmoid(o["ctr"]).unsqueeze(2)).numpy()
        for b, s in zip(boxes, scores, strict=True):
            found = nms_per_class(b, s, list(labels), min_score, 0.5, 1000, 1000)
            dets.append([(d.cls, d.confidence, np.asarray(d.bbox) / 1000.0) for d in found])
    return detection_map(gts, dets, list(labels))["map50"]


def train(cfg: dict[str, Any]) -> Path:
    """Train, select on val, export FP32 package to cfg['out']; return the package folder."""
    start = time.time()
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    arch = cfg["arch"]
    width, height = cfg["size"]
    dataset = load_dataset(cfg["data"])
    if (arch == "fcos") != (dataset.kind == "detection"):
        raise SystemExit(f"arch {arch} does not fit a {dataset.layout} folder")
    fractions = cfg.get("fractions") or DEFAULT_FRACTIONS[dataset.kind]
    split = split_dataset(dataset, cfg["split_seed"], fractions)
    if cfg.get("folds"):
        # Cross-validation member: train on train+val minus fold k, score the held-out fold.
        split = fold_split(split, dataset, int(cfg["folds"]), int(cfg["fold"]), cfg["fold_seed"])
        log(f"cross-validation member: fold {cfg['fold']} of {cfg['folds']} held out")
    elif cfg.get("refit"):
        # Refit of a cross-validated recipe on all of train+val (its val is in-sample).
        split = refit_split(split)
        log("refit on train+val (the cross-validation pool); val below is in-sample")
    log(
        f"{dataset.layout}: {len(dataset.samples)} images, split train/val/test = "
        f"{len(split['train'])}/{len(split['val'])}/{len(split['test'])} (seed {cfg['split_seed']})"
    )
    validate_files(dataset, split["test"])
    with_masks = arch in ("tiny", "segdec")
    xtr, mtr = load_arrays(dataset, split["train"], width, height, with_masks, progress=True)
    xva, _ = load_arrays(dataset, split["val"], width, height, False, progress=True)
    labels = dataset.labels
    ytr = np.array([labels.index(dataset.samples[i].label) for i in split["train"]])
    yva = np.array([labels.index(dataset.samples[i].label) for i in split["val"]])
    if cfg.get("teacher_scores") and arch != "tiny":
        raise SystemExit(f"teacher_scores (distillation) is implemented for arch tiny, not {arch}")
    teacher = teacher_targets(cfg, dataset, split["train"])

    net = build(arch, len(labels), bool(cfg.get("mask_in_head")))
    mean, std = float(xtr.mean()), float(xtr.std() + 1e-3)
    net.norm.mean.fill_(mean)
    net.norm.std.fill_(std)
    if cfg.get("channels_last"):
        # NHWC activations: measured ~20-30% faster convolutions on this CPU (one thread).
        net = net.to(memory_format=torch.channels_last)
    ema = EMA(net, cfg["ema"])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    points = fcos_points(height, width) if arch == "fcos" else None
    weights = None
    if arch != "fcos":
        # Balance good vs defect draws (defects are ~1/4 of magnetic tiles).
        counts = np.bincount(ytr, minlength=len(labels)).astype(np.float64)
        weights = 1.0 / np.sqrt(counts[ytr])
    class_w = None
    if arch == "tiny":
        counts = np.bincount(ytr, minlength=len(labels)).astype(np.float64)
        class_w = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
        class_w = class_w / class_w.mean()
    val_gts = [(dataset.samples[i].boxes, dataset.samples[i].box_labels) for i in split["val"]]
    tr_boxes = [
        dataset.samples[i].boxes * np.array([width, height, width, height], np.float32)
        for i in split["train"]
    ]
    tr_blabels = [np.array([labels.index(c) for c in dataset.samples[i].box_labels]) for i in split["train"]]

    epochs = int(cfg["epochs"])
    steps_per_epoch = max(1, len(xtr) // cfg["batch"])
    total = epochs * steps_per_epoch
    warmup = min(total // 10, 3 * steps_per_epoch)
    budget_s = float(cfg["budget_minutes"]) * 60.0

    loop_start = time.time()
    loop_budget = max(1.0, 0.95 * budget_s - (loop_start - start))

    def time_frac() -> float:
        # Fraction of the training-loop budget used (5% kept for the final evaluation/export),
        # but only once the run is projected to overrun the budget: while the epoch budget fits,
        # this is 0 and seeded runs stay repeatable.
        used = time.time() - loop_start
        projected = used * total / max(1, step)
        return used / loop_budget if step > 0 and projected > loop_budget else 0.0

    select_last = cfg.get("select", "best") == "last"
    checkpoints: dict[int, list[float]] = {}
    best: dict[str, Any] = {
        "metric": -1.0,
        "key": (-1.0, 0.0),
        "epoch": 0,
        "state": copy.deepcopy(ema.model.state_dict()),
    }
    history = []
    step = 0
    epochs_run = 0
    for epoch in range(1, epochs + 1):
        net.train()
        t0 = time.time()
        losses = []
        for idx in batches(len(xtr), cfg["batch"], rng, weights):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg["lr"], warmup, time_frac())
            x = torch.from_numpy(xtr[idx]).float()[:, None]
            if arch == "fcos":
                loss = fcos_step(
                    net,
                    x,
                    [tr_boxes[i] for i in idx],
                    [tr_blabels[i] for i in idx],
                    points,
                    len(labels),
                    gen,
                    float(cfg.get("zoom_p", 0.0)),
                )
            else:
                m = torch.from_numpy(mtr[idx]).float()[:, None]
                x, m = augment_images(x, m, gen, True, cfg["scale_jitter"], cfg["aspect_jitter"])
                y = torch.from_numpy(ytr[idx])
                if cfg.get("crop"):
                    x, m, y = random_crop(x, m, y, int(cfg["crop"]), gen, cfg["crop_defect_p"])
                if cfg.get("channels_last"):
                    x = x.contiguous(memory_format=torch.channels_last)
                out = net(x)
                if arch == "tiny":
                    loss = F.cross_entropy(out["logits"], y, weight=class_w)
                    target = F.adaptive_max_pool2d((m > 0.5).float(), out["mask_logits"].shape[-2:])
                    loss = loss + cfg["mask_weight"] * F.binary_cross_entropy_with_logits(
                        out["mask_logits"], target, pos_weight=torch.tensor(4.0)
                    )
                    if teacher is not None:
                        loss = loss + cfg["distill_weight"] * distill_loss(
                            out["logits"], torch.from_numpy(teacher[idx])
                        )
                else:
                    loss = segdec_loss(out, m, y, epoch / epochs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            ema.update(net)
            losses.append(loss.item())
            step += 1
        epochs_run = epoch
        # Model selection on val with the EMA weights.
        last = epoch == epochs or (time.time() - start) * (epoch + 1) / epoch > budget_s
        tie_break = 0.0
        if select_last and not (last or epoch % int(cfg["eval_every"]) == 0):
            metric, name = float("nan"), "val_auroc"
        elif arch == "fcos":
            # mAP (with NMS) is slow: only from a third of the schedule on, and always at the end.
            late = epoch >= epochs // 3 or time_frac() >= 1 / 3
            metric = predict_map(ema.model, xva, val_gts, labels, points) if late or last else 0.0
            name = "val_map50"
        else:
            p_val = predict_scores(ema.model, arch, xva)
            metric = auroc(yva != 0, p_val)
            name = "val_auroc"
            checkpoints[epoch] = [round(float(v), 6) for v in p_val]
            # A small val split saturates AUROC (1.0); ties are broken by val log-loss.
            p_val = np.clip(p_val, 1e-6, 1 - 1e-6)
            tie_break = float(np.mean(np.where(yva != 0, np.log(p_val), np.log(1 - p_val))))
        key = (round(metric, 6), tie_break)
        # select "last": the schedule's final EMA weights, whatever val says (no selection on
        # the held-out data, so a cross-validation member's held-out scores stay unbiased).
        improved = last if select_last else key > best["key"]
        if improved:
            best = {
                "metric": metric,
                "key": key,
                "epoch": epoch,
                "state": copy.deepcopy(ema.model.state_dict()),
            }
        elapsed = time.time() - start
        per_epoch = (elapsed) / epoch
        eta = per_epoch * (epochs - epoch)
        entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5)}
        if not math.isnan(metric):
            entry[name] = round(metric, 4)
        history.append(entry)
        log(
            f"epoch {epoch}/{epochs} loss {np.mean(losses):.4f} {name} {metric:.4f} "
            f"(best {best['metric']:.4f} @ {best['epoch']}) {time.time() - t0:.1f}s/epoch "
            f"elapsed {elapsed / 60:.1f} min ETA {eta / 60:.1f} min"
        )
        if elapsed + per_epoch > budget_s and epoch < epochs:
            log(f"wall-clock budget {cfg['budget_minutes']} min reached after epoch {epoch}")
            break

    model = build(arch, len(labels), bool(cfg.get("mask_in_head")))
    model.load_state_dict(best["state"])
    model.eval()
    train_minutes = (time.time() - start) / 60.0
    out = package(cfg, dataset, split, model, xva, best, history, epochs_run, train_minutes, fractions)
    if checkpoints:
        # Held-out scores at every evaluated epoch: cross-validation pools them across folds.
        held = {
            "paths": [dataset.name(i) for i in split["val"]],
            "defect": [bool(v != 0) for v in yva],
            "checkpoints": {str(k): v for k, v in checkpoints.items()},
        }
        (out / HOLDOUT_FILE).write_text(json.dumps(held), encoding="utf-8")
    return out


def zoom_crop(
    x: torch.Tensor,
    boxes: list[np.ndarray],
    blabels: list[np.ndarray],
    gen: torch.Generator,
    p: float = 0.6,
    max_zoom: float = 1.4,
) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    """Random zoom-in crop (scale 1..max_zoom, random position) of images and their pixel boxes.

    Zooming *in* only, so no padding invents texture; a box keeps its label if at least 30% of
    it stays in view and it is at least 4 px wide and high.
    """
    n, _, h, w = x.shape
    apply = torch.rand(n, generator=gen) < p
    a = 1.0 / (1.0 + torch.rand(n, generator=gen) * (max_zoom - 1.0))
    a = torch.where(apply, a, torch.ones(n))
    off = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - a)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = a
    theta[:, 1, 1] = a
    theta[:, :, 2] = off
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out_b, out_l = [], []
    for i in range(n):
        b = boxes[i].astype(np.float32).copy()
        ai, bx, by = float(a[i]), float(off[i, 0]), float(off[i, 1])
        # pixel -> [-1, 1] -> zoomed view -> pixel
        ux = (b[:, [0, 2]] / w * 2 - 1 - bx) / ai
        uy = (b[:, [1, 3]] / h * 2 - 1 - by) / ai
        nb = np.stack(
            [
                (ux[:, 0] + 1) / 2 * w,
                (uy[:, 0] + 1) / 2 * h,
                (ux[:, 1] + 1) / 2 * w,
                (uy[:, 1] + 1) / 2 * h,
            ],
            1,
        )
        full = (nb[:, 2] - nb[:, 0]) * (nb[:, 3] - nb[:, 1])
        nb = np.clip(nb, 0, [w, h, w, h])
        bw, bh = nb[:, 2] - nb[:, 0], nb[:, 3] - nb[:, 1]
        keep = (bw >= 4) & (bh >= 4) & (bw * bh >= 0.3 * full)
        out_b.append(nb[keep].astype(np.float32))
        out_l.append(np.asarray(blabels[i])[keep])
    return x, out_b, out_l


def fcos_step(
    net: torch.nn.Module,
    x: torch.Tensor,
    boxes: list[np.ndarray],
    blabels: list[np.ndarray],
    points: torch.Tensor,
    n_classes: int,
    gen: torch.Generator,
    zoom_p: float = 0.0,
) -> torch.Tensor:
    """One detector loss: flips + photometric augmentation, FCOS targets, focal/GIoU/ctr losses."""
    n, _, h, w = x.shape
    fh = (torch.rand(n, generator=gen) < 0.5).numpy()
    fv = (torch.rand(n, generator=gen) < 0.5).numpy()
    x = torch.where(torch.from_numpy(fh)[:, None, None, None], x.flip(3), x)
    x = torch.where(torch.from_numpy(fv)[:, None, None, None], x.flip(2), x)
    norm = np.array([w, h, w, h], np.float32)
    boxes = [b * norm for b in flip_boxes([b / norm for b in boxes], fh, fv)]
    if zoom_p > 0:  # skipped entirely at 0 so older recipes keep their random stream
        x, boxes, blabels = zoom_crop(x, boxes, blabels, gen, p=zoom_p)
    x = photometric(x, gen)
    targets = [fcos_targets(points, b, lab, n_classes) for b, lab in zip(boxes, blabels, strict=True)]
    cls_t = torch.stack([t[0] for t in targets])
    box_t = torch.stack([t[1] for t in targets])
    ctr_t = torch.stack([t[2] for t in targets])
    out = net(x)
    pos = ctr_t >= 0
    n_pos = max(1.0, float(pos.sum()))
    loss_cls = focal_loss(out["cls"], cls_t) / n_pos
    if pos.any():
        pred = decode_boxes(out["reg"], points)[pos]
        ctr_w = ctr_t[pos]
        loss_box = (giou_loss(pred, box_t[pos]) * ctr_w).sum() / ctr_w.sum().clamp(min=1e-6)
        loss_ctr = F.binary_cross_entropy_with_logits(out["ctr"][pos], ctr_w)
    else:
        loss_box = loss_ctr = out["reg"].sum() * 0.0
    return loss_cls + loss_box + loss_ctr


def teacher_targets(cfg: dict[str, Any], dataset: Dataset, train: list[int]) -> np.ndarray | None:
    """Held-out P(defect) of a stronger model for each training image (knowledge distillation).

    `teacher_scores` is a JSON {image path: score} file, e.g. the cross-fit tier 2's
    out-of-fold scores: tier 1 then learns where tier 2 is sure and where it hesitates, which is
    what a ladder needs from its first tier (confident only where the next tier would agree).
    """
    if not cfg.get("teacher_scores"):
        return None
    if cfg.get("crop"):
        # A crop may cut the defect out (its label becomes good); the teacher saw the whole image.
        raise SystemExit("teacher_scores cannot be combined with crop")
    path = Path(cfg["teacher_scores"])
    if not path.is_absolute():  # recipes name it relative to the repository
        path = Path(__file__).resolve().parents[1] / path
    cfg["teacher_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()  # into the manifest
    _, scores = read_scores(path, [dataset.name(i) for i in train], what="teacher score")
    return np.clip(scores, 0.0, 1.0).astype(np.float32)


def distill_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the teacher's P(defect) and 1 - P(good) of the class logits."""
    norm = torch.logsumexp(logits, 1)
    log_good = logits[:, 0] - norm
    log_defect = torch.logsumexp(logits[:, 1:], 1) - norm
    return -(target * log_defect + (1.0 - target) * log_good).mean()


def segdec_loss(
    out: dict[str, torch.Tensor], m: torch.Tensor, y: torch.Tensor, progress: float
) -> torch.Tensor:
    """Mask BCE + soft dice at stride 4 plus the decision head's BCE (weight ramps up)."""
    logits = out["mask_logits"]
    target = F.adaptive_max_pool2d((m > 0.5).float(), logits.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0))
    p = torch.sigmoid(logits)
    defect = target.flatten(1).amax(1) > 0
    if defect.any():
        inter = (p * target).flatten(1).sum(1)
        dice = 1 - (2 * inter + 1) / (p.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
        dice = dice[defect].mean()
    else:
        dice = logits.sum() * 0.0
    cls = F.binary_cross_entropy_with_logits(out["logit"], (y != 0).float())
    return bce + 0.5 * dice + min(1.0, 0.3 + progress * 2) * cls


# --------------------------------------------------------------------------- packaging


def git_commit() -> str | None:
    """HEAD of the repository the code runs from (provenance), `+dirty` when pipelines/ or
    appliance/ differ from it (the model then came from uncommitted code), if available."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5, check=False
        )
        return out.stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "../pipelines", "../appliance")
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def package(
    cfg: dict[str, Any],
    dataset: Dataset,
    split: dict[str, list[int]],
    model: torch.nn.Module,
    xva: np.ndarray,
    best: dict[str, Any],
    history: list[dict],
    epochs_run: int,
    train_minutes: float,
    fractions: Any,
) -> Path:
    """Export the selected model, score val through the runtime, write the manifest."""
    arch = cfg["arch"]
    width, height = cfg["size"]
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    wrapper, names = exportable(arch, model, height, width)
    onnx_path = export_onnx(wrapper, out / "model.onnx", height, width, names)
    diff = onnx_matches_torch(wrapper, onnx_path, xva[:8])
    kind = {"tiny": "classification", "segdec": "segmentation", "fcos": "detection"}[arch]
    labels = list(dataset.labels)
    manifest: dict[str, Any] = {
        "name": cfg["name"],
        "version": cfg["version"],
        "kind": kind,
        "file": "model.onnx",
        "input": {
            "name": "image",
            "width": width,
            "height": height,
            "channels": 1,
            "color": "gray",
        },
        "labels": labels,
        "good_label": "good",
        "threshold": 0.5,
        "uncertain_band": [0.0, 0.0],
        "training": {
            "arch": arch,
            "parameters": count_parameters(model),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()},
            "split": {
                "seed": cfg["split_seed"],
                "fractions": list(fractions),
                "method": "per-class seeded permutation (pipelines.datasets.split_dataset)",
                "counts": {k: len(v) for k, v in split.items() if k != "all"},
            },
            "selection": {
                "metric": "val_map50" if arch == "fcos" else "val_auroc",
                "rule": "last epoch (no selection)" if cfg.get("select") == "last" else "best",
                "best_epoch": best["epoch"],
                "best_value": round(best["metric"], 4),
            },
            "epochs_run": epochs_run,
            "history": history,
            "wall_minutes": round(train_minutes, 2),
            "threads": cfg["threads"],
            "onnx_vs_torch_max_abs_diff": diff,
            "precision": "fp32",
        },
        "provenance": {
            "dataset": dataset.layout,
            "data_dir": str(dataset.root),
            "n_images": len(dataset.samples),
            "file_list_sha256": dataset.digest(),
            "code_commit": git_commit(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "box_frame": "VOC boxes are in the annotated <size> frame; scaled by actual/annotated"
            if arch == "fcos"
            else None,
        },
    }
    if cfg.get("folds"):
        manifest["training"]["fold"] = {
            "k": int(cfg["fold"]),
            "n": int(cfg["folds"]),
            "seed": int(cfg["fold_seed"]),
            "pool": "train+val",
            "method": "per-class seeded round-robin (pipelines.datasets.kfold)",
        }
    elif cfg.get("refit"):
        manifest["training"]["refit"] = {
            "pool": "train+val",
            "note": "trained on the whole pool for the recipe's fixed epochs; its val split is "
            "in-sample, its held-out figures are the cross-fit members' out-of-fold ones",
        }
    if arch == "fcos":
        manifest["min_box_score"] = cfg.get("min_box_score", 0.05)
        manifest["nms_iou"] = 0.5
    write_manifest(out, manifest)
    finalize_manifest(out, dataset, split["val"], kind)
    log(f"package written to {out}")
    return out


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line to a config dict (recipe values first, explicit flags override)."""
    from pipelines.recipes import RECIPES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), help="settings of a shipped package")
    p.add_argument("--data", help="dataset folder (default: $APPLIANCE_DATASETS/<recipe dataset>)")
    p.add_argument("--arch", choices=("tiny", "segdec", "fcos"))
    p.add_argument("--out", help="package folder to write (FP32)")
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--split-seed", type=int)
    p.add_argument("--fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--threads", type=int, help="torch threads (<= 2 on the shared box)")
    p.add_argument("--folds", type=int, help="cross-validation member: number of folds")
    p.add_argument("--fold", type=int, help="cross-validation member: the held-out fold (0-based)")
    p.add_argument("--fold-seed", type=int, help="cross-validation fold seed (default: split seed)")
    p.add_argument("--select", choices=("best", "last"), help="best val epoch, or the final EMA weights")
    p.add_argument(
        "--refit",
        action="store_true",
        default=None,
        help="train on all of train+val with the final EMA weights (after cross-validation)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override any config key, e.g. --set crop=256 --set aspect_jitter=0.15",
    )
    args = p.parse_args(argv)
    cfg: dict[str, Any] = {
        "seed": 0,
        "split_seed": 20240,
        "threads": 2,
        "epochs": 30,
        "budget_minutes": 40.0,
        "batch": 16,
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "ema": 0.99,
        "mask_weight": 1.0,
        "zoom_p": 0.0,
        "version": "1.0.0",
        "fractions": None,
        "select": "best",
        "eval_every": 10,
        "scale_jitter": 0.1,
        "aspect_jitter": 0.0,
        "crop": None,
        "crop_defect_p": 0.7,
        "channels_last": False,
        "mask_in_head": False,
        "teacher_scores": None,
        "distill_weight": 1.0,
    }
    if args.recipe:
        cfg.update(RECIPES[args.recipe])
        cfg["name"] = cfg.get("name", args.recipe)
    cfg.pop("crossval", None)  # the cross-validation driver's settings, not a member's
    cfg.update({k: v for k, v in vars(args).items() if v is not None and k not in ("recipe", "set")})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in cfg:
            p.error(f"--set {item!r}: expected KEY=JSON with a known key ({', '.join(sorted(cfg))})")
        try:
            cfg[key] = json.loads(value)
        except json.JSONDecodeError:
            cfg[key] = value
    if cfg.get("refit"):
        if cfg.get("folds"):
            p.error("--refit trains on the whole pool; it takes no --folds")
        cfg["select"] = "last"  # nothing held out to select on
    if cfg.get("folds"):
        if cfg.get("fold") is None:
            p.error("--folds needs --fold")
        cfg.setdefault("fold_seed", None)
        if cfg["fold_seed"] is None:
            cfg["fold_seed"] = cfg["split_seed"]
    if not cfg.get("data") and cfg.get("dataset"):
        cfg["data"] = str(datasets_root() / cfg["dataset"])
    missing = [k for k in ("data", "arch", "out", "name", "size") if not cfg.get(k)]
    if missing:
        p.error(f"missing {', '.join('--' + m for m in missing)} (or give --recipe)")
    cfg["size"] = list(cfg["size"])
    cfg.pop("dataset", None)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    cfg = parse_args(argv)
    log(f"config: {json.dumps(cfg)}")
    try:
        out = train(cfg)
    except DatasetError as exc:
        log(f"error: {exc}")
        raise SystemExit(2) from exc
    log(f"done: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
