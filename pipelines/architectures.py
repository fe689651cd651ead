"""The three network families, written small enough to train from scratch on two CPU cores.

Every network takes float32 [N,1,H,W] raw pixel values 0..255 and normalises inside the graph
(a fixed mean/std measured on the training split), so the runtime feeds it `blobFromImage`
output directly. `forward` returns training outputs; `Exportable` wraps a trained network with
the output names of the package contract (`score`, `class_probs`, `defect_map`, `boxes`, `scores`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("tiny", "segdec", "fcos")


def conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU: folds into one conv at export."""
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Normalise(nn.Module):
    """(x - mean) / std with constants measured on the training split."""

    def __init__(self, mean: float = 128.0, std: float = 64.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise raw pixels."""
        return (x - self.mean) / self.std


class ResBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut."""

    def __init__(self, ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.a = conv_bn(ch, ch, dilation=dilation)
        self.b = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, dilation, dilation=dilation, bias=False), nn.BatchNorm2d(ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + F(x)."""
        return F.relu(x + self.b(self.a(x)))


class TinyNet(nn.Module):
    """Tier-1 classifier (~75k parameters): plain strided convs, avg+max pooled head.

    Outputs class logits over labels (good first). An auxiliary 1x1 mask head on the stride-8
    features is trained on the defect masks (mask supervision helps a tiny net find small
    defects). With `mask_in_head` the classifier also reads that map's max and mean (detached,
    as in SegDec): a blowhole a few pixels wide lights up the map long before it moves pooled
    stride-16 features. Without it the head is training-only and is not exported.
    """

    def __init__(self, n_classes: int, width: int = 8, mask_in_head: bool = False) -> None:
        super().__init__()
        w = width
        self.mask_in_head = mask_in_head
        self.norm = Normalise()
        self.stem = conv_bn(1, w, 2)
        self.s2 = nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w))
        self.s3 = nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))
        self.s4 = nn.Sequential(conv_bn(4 * w, 8 * w, 2), conv_bn(8 * w, 8 * w))
        self.aux = nn.Conv2d(4 * w, 1, 1)
        self.fc = nn.Linear(16 * w + (2 if mask_in_head else 0), n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training outputs: class logits and auxiliary mask logits (stride 8)."""
        f3 = self.s3(self.s2(self.stem(self.norm(x))))
        f4 = self.s4(f3)
        mask = self.aux(f3)
        parts = [f4.mean((2, 3)), f4.amax((2, 3))]
        if self.mask_in_head:
            m = mask.detach()
            parts += [m.amax((2, 3)), m.mean((2, 3))]
        return {"logits": self.fc(torch.cat(parts, 1)), "mask_logits": mask}


class SegDec(nn.Module):
    """Tier-2: mask-supervised segmentation net with a learned decision head (Tabernik et al.).

    The segmentation part (stride 8) predicts a defect map; the decision head reads the stride-8
    features together with the detached segmentation logits, goes down to stride 32 and pools
    (avg + max) into one defect logit, with the map's own max and mean as extra inputs.
    Kept cheap (~150 MMAC at 256x256) so it gets thousands of optimiser steps on two CPU cores.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.norm = Normalise()
        self.stem = nn.Sequential(conv_bn(1, w, 2), conv_bn(w, w + w // 2, 2))  # /4
        self.seg_body = nn.Sequential(
            conv_bn(w + w // 2, 3 * w, 2), ResBlock(3 * w), ResBlock(3 * w, dilation=2)
        )  # /8
        self.seg_head = nn.Sequential(conv_bn(3 * w, 2 * w), nn.Conv2d(2 * w, 1, 1))
        self.dec = nn.Sequential(
            conv_bn(3 * w + 1, 4 * w, 2), ResBlock(4 * w), conv_bn(4 * w, 6 * w, 2)
        )  # /32
        self.fc = nn.Linear(12 * w + 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training outputs: defect logit [N] and mask logits [N,1,H/8,W/8]."""
        f = self.seg_body(self.stem(self.norm(x)))
        seg = self.seg_head(f)
        s = seg.detach()
        d = self.dec(torch.cat([f, s], 1))
        pooled = torch.cat([d.mean((2, 3)), d.amax((2, 3)), s.mean((2, 3)), s.amax((2, 3))], 1)
        return {"logit": self.fc(pooled).squeeze(1), "mask_logits": seg}


class FCOSLite(nn.Module):
    """A small anchor-free detector (FCOS-style) on three levels, strides 8, 16, 32.

    Shared 3x3 head towers with per-level BatchNorm; per-class sigmoid logits, centerness and
    (l, t, r, b) distances = exp(.) * stride. Exported scores are sqrt(sigmoid(cls) *
    sigmoid(ctr)), a per-class probability-like confidence as the contract asks.
    """

    strides = (8, 16, 32)

    def __init__(self, n_classes: int, width: int = 32, fpn: int = 64) -> None:
        super().__init__()
        w = width
        self.norm = Normalise()
        self.stem = nn.Sequential(conv_bn(1, w // 2, 2), conv_bn(w // 2, w, 2), ResBlock(w))  # /4
        self.c3 = nn.Sequential(conv_bn(w, 2 * w, 2), ResBlock(2 * w), ResBlock(2 * w))  # /8
        self.c4 = nn.Sequential(conv_bn(2 * w, 4 * w, 2), ResBlock(4 * w), ResBlock(4 * w))  # /16
        self.c5 = nn.Sequential(conv_bn(4 * w, 6 * w, 2), ResBlock(6 * w))  # /32
        self.lat = nn.ModuleList([nn.Conv2d(c, fpn, 1) for c in (2 * w, 4 * w, 6 * w)])
        self.smooth = nn.ModuleList([conv_bn(fpn, fpn) for _ in range(3)])
        self.cls_tower = nn.ModuleList([nn.Conv2d(fpn, fpn, 3, 1, 1, bias=False) for _ in range(2)])
        self.reg_tower = nn.ModuleList([nn.Conv2d(fpn, fpn, 3, 1, 1, bias=False) for _ in range(2)])
        self.cls_bn = nn.ModuleList([nn.BatchNorm2d(fpn) for _ in range(6)])
        self.reg_bn = nn.ModuleList([nn.BatchNorm2d(fpn) for _ in range(6)])
        self.cls_out = nn.Conv2d(fpn, n_classes, 3, 1, 1)
        self.reg_out = nn.Conv2d(fpn, 4, 3, 1, 1)
        self.ctr_out = nn.Conv2d(fpn, 1, 3, 1, 1)
        self.scales = nn.Parameter(torch.ones(3))
        nn.init.constant_(self.cls_out.bias, -4.6)  # prior 0.01 (focal-loss init)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training outputs over all levels: cls [N,K,C], reg [N,K,4] (log units), ctr [N,K]."""
        f = self.stem(self.norm(x))
        c3 = self.c3(f)
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p5 = self.lat[2](c5)
        p4 = self.lat[1](c4) + F.interpolate(p5, scale_factor=2.0, mode="nearest")
        p3 = self.lat[0](c3) + F.interpolate(p4, scale_factor=2.0, mode="nearest")
        feats = [self.smooth[0](p3), self.smooth[1](p4), self.smooth[2](p5)]
        cls_all, reg_all, ctr_all = [], [], []
        for level, p in enumerate(feats):
            c, r = p, p
            for j in range(2):
                c = F.relu(self.cls_bn[level * 2 + j](self.cls_tower[j](c)))
                r = F.relu(self.reg_bn[level * 2 + j](self.reg_tower[j](r)))
            n = x.shape[0]
            cls_all.append(self.cls_out(c).flatten(2).transpose(1, 2))
            reg_all.append((self.reg_out(r) * self.scales[level]).flatten(2).transpose(1, 2))
            ctr_all.append(self.ctr_out(r).reshape(n, -1))
        return {
            "cls": torch.cat(cls_all, 1),
            "reg": torch.cat(reg_all, 1),
            "ctr": torch.cat(ctr_all, 1),
        }


def fcos_points(height: int, width: int, strides: tuple[int, ...] = FCOSLite.strides) -> torch.Tensor:
    """Location centres [K,3] (x, y, stride) in input pixels, level by level, row-major."""
    pts = []
    for s in strides:
        h, w = -(-height // s), -(-width // s)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        p = torch.stack([xs.flatten() * s + s // 2, ys.flatten() * s + s // 2, torch.full((h * w,), s)], 1)
        pts.append(p.float())
    return torch.cat(pts, 0)


class ExportTiny(nn.Module):
    """Tier-1 package graph: score = 1 - P(good), class_probs over labels."""

    def __init__(self, net: TinyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score [N], class_probs [N,C])."""
        probs = torch.softmax(self.net(image)["logits"], 1)
        return 1.0 - probs[:, 0], probs


class ExportSegDec(nn.Module):
    """Tier-2 package graph: score = sigmoid(decision logit), defect_map = sigmoid(mask)."""

    def __init__(self, net: SegDec) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score [N], defect_map [N,1,H/8,W/8])."""
        out = self.net(image)
        return torch.sigmoid(out["logit"]), torch.sigmoid(out["mask_logits"])


class ExportFCOS(nn.Module):
    """Detector package graph: boxes [N,K,4] normalised xyxy, scores [N,K,C]."""

    def __init__(self, net: FCOSLite, height: int, width: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("points", fcos_points(height, width))
        self.register_buffer("size", torch.tensor([width, height, width, height], dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes, scores)."""
        out = self.net(image)
        boxes = decode_boxes(out["reg"], self.points) / self.size
        scores = torch.sqrt(torch.sigmoid(out["cls"]) * torch.sigmoid(out["ctr"]).unsqueeze(2))
        return boxes.clamp(0.0, 1.0), scores


def decode_boxes(reg: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(l, t, r, b) log-distances in stride units to xyxy pixel boxes."""
    dist = torch.exp(reg.clamp(max=6.0)) * points[:, 2:3]
    cx, cy = points[:, 0], points[:, 1]
    return torch.stack([cx - dist[..., 0], cy - dist[..., 1], cx + dist[..., 2], cy + dist[..., 3]], -1)


def build(arch: str, n_classes: int, mask_in_head: bool = False) -> nn.Module:
    """A fresh network of the named family (`mask_in_head`: tiny only, see TinyNet)."""
    if arch == "tiny":
        return TinyNet(n_classes, mask_in_head=mask_in_head)
    if arch == "segdec":
        return SegDec()
    if arch == "fcos":
        return FCOSLite(n_classes)
    raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")


def exportable(arch: str, net: nn.Module, height: int, width: int) -> tuple[nn.Module, list[str]]:
    """The export wrapper and its output names for a trained network."""
    if arch == "tiny":
        return ExportTiny(net), ["score", "class_probs"]
    if arch == "segdec":
        return ExportSegDec(net), ["score", "defect_map"]
    return ExportFCOS(net, height, width), ["boxes", "scores"]


def count_parameters(net: nn.Module, exported_only: bool = True) -> int:
    """Parameters in the exported graph (the tiny net's training-only aux head excluded)."""
    training_only = exported_only and not getattr(net, "mask_in_head", True)
    skip = {"aux.weight", "aux.bias"} if training_only else set()
    return sum(p.numel() for n, p in net.named_parameters() if n not in skip)
