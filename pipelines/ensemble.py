"""Average several FP32 packages of the same kind and input into one ONNX graph (seed ensemble).

    python -m pipelines.ensemble --members build/fp32/mt-tier2-s0,build/fp32/mt-tier2-s1 \
        --out build/fp32/mt-tier2 [--data DIR]

Each member graph is copied in with a name prefix; all read the same `image` input and every
named output (`score`, `defect_map`, `class_probs`) is the mean of the members' outputs. The
merged package then gets its own threshold, val metrics and drift reference on the val split
(all members must record the same split). Averaging seeds reduces the run-to-run variance that
a small training set gives a from-scratch network.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx
from onnx import compose, helper

from appliance.inference.package import MANIFEST_FILE, load_package, write_manifest
from pipelines.datasets import datasets_root, load_dataset, split_dataset
from pipelines.packaging import finalize_manifest

AVERAGED = ("score", "defect_map", "class_probs")


def merge_onnx(paths: list[Path], out: Path, input_name: str = "image") -> Path:
    """Write one ONNX graph whose outputs are the means of the members' outputs."""
    models = [onnx.load(str(p)) for p in paths]
    nodes, inits, outputs = [], [], []
    names = [o.name for o in models[0].graph.output if o.name in AVERAGED]
    for k, m in enumerate(models):
        m = compose.add_prefix(m, prefix=f"m{k}_")
        for node in m.graph.node:
            node.input[:] = [input_name if i == f"m{k}_{input_name}" else i for i in node.input]
            nodes.append(node)
        inits.extend(m.graph.initializer)
    scale = helper.make_tensor("ens_scale", onnx.TensorProto.FLOAT, [], [1.0 / len(models)])
    inits.append(scale)
    for name in names:
        acc = f"m0_{name}"
        for k in range(1, len(models)):
            nodes.append(helper.make_node("Add", [acc, f"m{k}_{name}"], [f"ens_sum{k}_{name}"]))
            acc = f"ens_sum{k}_{name}"
        nodes.append(helper.make_node("Mul", [acc, "ens_scale"], [name]))
        template = next(o for o in models[0].graph.output if o.name == name)
        outputs.append(template)
    graph = helper.make_graph(nodes, "ensemble", list(models[0].graph.input), outputs, inits)
    model = helper.make_model(graph, opset_imports=list(models[0].opset_import))
    model.ir_version = models[0].ir_version
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def ensemble_package(members: list[Path], out: Path, data: Path | None = None) -> Path:
    """Merge member packages into the FP32 package `out` and finish its manifest on val."""
    packages = [load_package(m) for m in members]
    first = packages[0].manifest
    splits = {json.dumps(p.manifest.training["split"], sort_keys=True) for p in packages}
    if len(splits) != 1:
        raise SystemExit("ensemble members were trained on different splits")
    merge_onnx([p.onnx_path for p in packages], out / "model.onnx", first.input.name)
    raw = json.loads((packages[0].path / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["training"] = {
        **raw["training"],
        "ensemble": [
            {
                "seed": p.manifest.training["config"]["seed"],
                "selection": p.manifest.training["selection"],
                "wall_minutes": p.manifest.training["wall_minutes"],
                "val_image_auroc": p.manifest.metrics.get("image_auroc"),
                "sha256": p.manifest.sha256,
            }
            for p in packages
        ],
        "parameters": sum(p.manifest.training["parameters"] for p in packages),
        "history": [],
    }
    write_manifest(out, raw)
    dataset = load_dataset(data or datasets_root() / first.provenance["dataset"])
    info = first.training["split"]
    val = split_dataset(dataset, int(info["seed"]), info["fractions"])["val"]
    finalize_manifest(out, dataset, val, first.kind)
    load_package(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", required=True, help="comma-separated FP32 package folders")
    parser.add_argument("--out", required=True, help="merged FP32 package folder")
    parser.add_argument("--data", help="dataset folder (default: from the manifest)")
    args = parser.parse_args(argv)
    members = [Path(m) for m in args.members.split(",")]
    ensemble_package(members, Path(args.out), Path(args.data) if args.data else None)
    print(f"ensemble of {len(members)} written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
