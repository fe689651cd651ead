"""Torch -> ONNX export (opset 17, dynamic batch) and the check that ONNX matches torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17


def export_onnx(wrapper: nn.Module, path: Path, height: int, width: int, output_names: list[str]) -> Path:
    """Export an (eval-mode) export wrapper to `path` with input `image` [N,1,H,W]."""
    wrapper = wrapper.eval()
    dummy = torch.full((1, 1, height, width), 128.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in torch 2.9+ but is stable, fast and needs no
        # extra packages; its deprecation notices are not actionable here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=output_names,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            dynamic_axes={"image": {0: "N"}, **{n: {0: "N"} for n in output_names}},
        )
    return path


def onnx_matches_torch(wrapper: nn.Module, path: Path, images: np.ndarray, atol: float = 1e-3) -> float:
    """Max absolute difference between torch and onnxruntime outputs on images [N,H,W] uint8.

    Raises AssertionError when it exceeds `atol`.
    """
    import onnxruntime as ort

    x = images.astype(np.float32)[:, None]
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper.eval()(torch.from_numpy(x))]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x})
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, got, strict=True))
    if worst > atol:
        raise AssertionError(f"{path}: ONNX differs from torch by {worst:.2e} (> {atol})")
    return worst
