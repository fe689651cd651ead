"""A model package that wedges inference on real frames but loads and warms up at once.

The synthetic ``slow`` kind of `pipelines.synthetic` burns its compute on constants only, and
onnxruntime folds constants when it loads the graph, so its frames are fast. This graph multiplies
an input-dependent matrix instead, and only for frames that are not flat (an ONNX ``If``): the
flat grey warm-up frames cost nothing, every textured camera frame costs tens of seconds, which
is a wedged inference worker as far as the watchdog can tell.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def build_wedge_package(out: Path, size: int = 32, work: int = 2048, steps: int = 400) -> Path:
    """Write the package to `out`: score = mean brightness / 255, after `steps` matrix products."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from appliance.inference.package import MANIFEST_FILE, write_manifest
    from pipelines.synthetic import build_package

    build_package(out, "brightness", size=size)  # the manifest to start from
    w = np.random.default_rng(0).normal(0, 0.5 / np.sqrt(work), (work, work)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
        numpy_helper.from_array(np.array(1.0, np.float32), "flat_below"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    # then-branch: `steps` products of an input-scaled matrix (nothing to fold), times zero.
    body = [helper.make_node("Mul", ["w", "mean_all"], ["p0"])]
    for i in range(steps):
        body.append(helper.make_node("MatMul", [f"p{i}", "w"], [f"p{i + 1}"]))
    body += [
        helper.make_node("ReduceSum", [f"p{steps}"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["busy"]),
    ]
    busy = helper.make_graph(body, "busy", [], [helper.make_tensor_value_info("busy", TensorProto.FLOAT, [])])
    idle = helper.make_graph(
        [helper.make_node("Identity", ["zero"], ["idle"])],
        "idle",
        [],
        [helper.make_tensor_value_info("idle", TensorProto.FLOAT, [])],
    )
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0, axes=[1, 2, 3]),
        helper.make_node("ReduceMean", ["image"], ["mean_all"], keepdims=0, axes=[0, 1, 2, 3]),
        helper.make_node("ReduceMax", ["image"], ["hi"], keepdims=0, axes=[0, 1, 2, 3]),
        helper.make_node("ReduceMin", ["image"], ["lo"], keepdims=0, axes=[0, 1, 2, 3]),
        helper.make_node("Sub", ["hi", "lo"], ["contrast"]),
        helper.make_node("Greater", ["contrast", "flat_below"], ["textured"]),
        helper.make_node("If", ["textured"], ["waste"], then_branch=busy, else_branch=idle),
        helper.make_node("Add", ["mean", "waste"], ["busy_mean"]),
        helper.make_node("Mul", ["busy_mean", "inv255"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "wedge",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(out / "model.onnx"))
    manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["provenance"] = {"builder": "tests.systemd.wedge_model", "work": work, "steps": steps}
    write_manifest(out, manifest)
    return out
