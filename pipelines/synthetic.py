"""Small hand-built model packages with known behaviour, for tests and as a stand-in demo model.

- ``brightness``: a classifier whose score is the frame's mean pixel value / 255, so that a test
  controls the score exactly by painting a grey frame (ladder escalation, bands, deadlines).
- ``darkspot``: a segmentation model that marks pixels much darker than their neighbourhood
  (blowholes, cracks, breaks) and scores a frame by its strongest mark.
- ``darkness``: score = 1 - mean / 255, to make two tiers disagree on purpose.
- ``slow``: like ``brightness`` but burns a fixed amount of compute per frame (deadline tests).
- ``boxes``: a detector with two fixed boxes, the first scored mean / 255, the second 0.1.

Their manifests say ``synthetic: true``. Needs the `onnx` package (the `dev`/`train` extras).

    python -m pipelines.synthetic --kind darkspot --out models/demo-darkspot
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("pipelines.synthetic needs the 'onnx' package: pip install -e '.[dev]'") from exc
    return onnx


def _graph_brightness(size: int, work: int = 0, invert: bool = False) -> Any:
    onnx = _onnx()
    h = onnx.helper
    nodes = [h.make_node("ReduceMean", ["image"], ["mean"], keepdims=0, axes=[1, 2, 3])]
    inits = [onnx.numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255")]
    if invert:
        nodes.append(h.make_node("Sub", ["full", "mean"], ["inverted"]))
        inits.append(onnx.numpy_helper.from_array(np.array(255.0, np.float32), "full"))
    score_input = "inverted" if invert else "mean"
    if work:
        # Matrix products whose result is multiplied by zero: compute time without effect.
        w = np.random.default_rng(0).normal(0, 0.01, (work, work)).astype(np.float32)
        inits += [
            onnx.numpy_helper.from_array(w, "w"),
            onnx.numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
        ]
        # Scaled by the input so that onnxruntime cannot constant-fold the chain away.
        nodes.append(h.make_node("Mul", ["w", score_input], ["w_in"]))
        previous = "w_in"
        for i in range(8):
            nodes.append(h.make_node("MatMul", [previous, "w_in"], [f"m{i}"]))
            previous = f"m{i}"
        nodes += [
            h.make_node("ReduceSum", [previous], ["waste"], keepdims=0),
            h.make_node("Mul", ["waste", "zero"], ["nothing"]),
            h.make_node("Add", ["mean", "nothing"], ["busy_mean"]),
        ]
        score_input = "busy_mean"
    nodes.append(h.make_node("Mul", [score_input, "inv255"], ["score"]))
    return h.make_graph(
        nodes,
        "brightness",
        [h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 1, size, size])],
        [h.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N"])],
        inits,
    )


def _graph_darkspot(size: int) -> Any:
    onnx = _onnx()
    h = onnx.helper
    k = 15
    nodes = [
        h.make_node(
            "AveragePool",
            ["image"],
            ["local"],
            kernel_shape=[k, k],
            strides=[1, 1],
            pads=[k // 2] * 4,
            count_include_pad=0,
        ),
        h.make_node("Sub", ["local", "image"], ["darker"]),
        h.make_node("MaxPool", ["darker"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        h.make_node("Sub", ["pooled", "offset"], ["shifted"]),
        h.make_node("Mul", ["shifted", "gain"], ["logit"]),
        h.make_node("Sigmoid", ["logit"], ["defect_map"]),
        h.make_node("ReduceMax", ["defect_map"], ["score"], keepdims=0, axes=[1, 2, 3]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array(28.0, np.float32), "offset"),
        onnx.numpy_helper.from_array(np.array(0.35, np.float32), "gain"),
    ]
    return h.make_graph(
        nodes,
        "darkspot",
        [h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 1, size, size])],
        [
            h.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N"]),
            h.make_tensor_value_info("defect_map", onnx.TensorProto.FLOAT, ["N", 1, size // 4, size // 4]),
        ],
        inits,
    )


def _graph_boxes(size: int) -> Any:
    onnx = _onnx()
    h = onnx.helper
    boxes = np.array([[[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]]], np.float32)
    nodes = [
        h.make_node("ReduceMean", ["image"], ["mean"], keepdims=1, axes=[1, 2, 3]),  # [N,1,1,1]
        h.make_node("Mul", ["mean", "inv255"], ["bright"]),
        h.make_node("Reshape", ["bright", "shape"], ["first"]),  # [1,1,1]
        h.make_node("Concat", ["first", "weak"], ["scores"], axis=1),  # [1,2,1]
        h.make_node("Identity", ["fixed_boxes"], ["boxes"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
        onnx.numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape"),
        onnx.numpy_helper.from_array(np.full((1, 1, 1), 0.1, np.float32), "weak"),
        onnx.numpy_helper.from_array(boxes, "fixed_boxes"),
    ]
    return h.make_graph(
        nodes,
        "boxes",
        [h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 1, size, size])],
        [
            h.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, [1, 2, 4]),
            h.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 2, 1]),
        ],
        inits,
    )


def build_package(
    out: Path,
    kind: str = "brightness",
    *,
    name: str | None = None,
    size: int = 64,
    threshold: float = 0.5,
    band: tuple[float, float] = (0.3, 0.7),
    version: str = "0.0.1",
    work: int = 256,
) -> Path:
    """Write a synthetic model package to `out` and return its folder."""
    from appliance.inference.package import write_manifest

    onnx = _onnx()
    if kind == "brightness":
        graph, model_kind = _graph_brightness(size), "classification"
    elif kind == "darkness":
        graph, model_kind = _graph_brightness(size, invert=True), "classification"
    elif kind == "slow":
        graph, model_kind = _graph_brightness(size, work=work), "classification"
    elif kind == "darkspot":
        graph, model_kind = _graph_darkspot(size), "segmentation"
    elif kind == "boxes":
        graph, model_kind = _graph_boxes(size), "detection"
    else:
        raise ValueError(f"unknown synthetic kind {kind!r}")
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    write_manifest(
        out,
        {
            "name": name or out.name,
            "version": version,
            "kind": model_kind,
            "input": {"name": "image", "width": size, "height": size, "channels": 1, "color": "gray"},
            "labels": ["defect"] if model_kind == "detection" else ["good", "defect"],
            "threshold": threshold,
            "min_box_score": 0.05,
            "uncertain_band": list(band),
            "synthetic": True,
            "provenance": {"builder": "pipelines.synthetic", "kind": kind},
        },
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: build one synthetic package."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kind", choices=["brightness", "darkness", "darkspot", "slow", "boxes"], default="darkspot"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    folder = build_package(args.out, args.kind, size=args.size)
    print(f"wrote {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
