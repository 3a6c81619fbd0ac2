"""Checks the `qvit` nodes of an integer-steps QONNX export against qvit's golden vectors, step
by step: each node is run (tools/export/qvit/steps.py) on the integer inputs that `qvit vectors`
recorded for the same step, and its output codes are compared with the recorded ones.

    qvit export deit-micro --format qonnx --integer-steps --out deit.onnx
    qvit vectors deit-micro --out vectors/
    python tools/export/golden.py deit.onnx vectors/

Both commands must quantize alike (same recipe, bits, overrides and calibration flags). Prints
one JSON object: per node, the elements compared and how many differ; exits non-zero when any
differs.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qvit.steps import STEPS, encode_output  # noqa: E402


def attributes(node):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}


def real(codes, attrs, what, axis):
    """The real values of codes of a point described by `<what>_*` attributes."""
    if f"{what}_levels" in attrs:
        return np.asarray(attrs[f"{what}_levels"], np.float64)[codes]
    shape = [1] * codes.ndim
    shape[axis] = -1
    per = lambda name, kind: (
        np.asarray(attrs[name], kind).reshape(shape)
        if len(attrs[name]) > 1
        else np.asarray(attrs[name][0], kind)
    )
    scale = per(f"{what}_scale", np.float64)
    zero = per(f"{what}_zero_point", np.int64)
    offset = per(f"{what}_offset", np.float64)
    return scale * (codes - zero) + offset


def node_input(node, attrs, step, steps_by_file, load):
    """The float the node would read for this step's recorded integer inputs (batch of one)."""
    codes = load(step["inputs"][0]["file"]).astype(np.int64)
    if node.op_type == "LayerNorm":
        return real(codes[None], attrs, "input", -1)
    if node.op_type == "LinearAttentionNormalize":
        d = attrs["head_dim"]
        x = codes[None].astype(np.float64)
        x[:, :, :d] = real(codes[None, :, :d], attrs, "dividend", 1)
        x[:, :, d:] = real(codes[None, :, d:], attrs, "divisor", 1)
        return x
    if node.op_type == "Softmax":
        heads, tokens = step["output"]["shape"][0], codes.shape[0]
        producer = steps_by_file[step["inputs"][0]["file"]]
        zero = producer["output_encoding"]["zero_point"][0]
        width = codes.shape[1] // 3
        head_dim = width // heads
        qkv = (codes - zero).reshape(tokens, 3, heads, head_dim).transpose(1, 2, 0, 3)
        acc = qkv[0] @ qkv[1].transpose(0, 2, 1)
        return (acc * attrs["input_scale"])[None]
    if node.op_type == "Gelu":
        constants = dict(step["constants"])
        w = load(constants["weights"]["file"]).astype(np.int64)
        bias = load(constants["bias"]["file"]).astype(np.int64)
        acc = codes @ w.T + bias
        return (acc * np.asarray(attrs["input_scale"], np.float64))[None]
    raise SystemExit(f"no golden input for qvit node {node.op_type}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("vectors", type=Path)
    args = parser.parse_args()

    model = onnx.load(str(args.model))
    manifest = json.loads((args.vectors / "manifest.json").read_text())
    steps = {s["name"]: s for s in manifest["steps"]}
    steps_by_file = {s["output"]["file"]: s for s in manifest["steps"]}
    load = lambda file: np.load(args.vectors / file)
    report = {"model": str(args.model), "vectors": str(args.vectors), "nodes": {}}
    failed = False
    for node in model.graph.node:
        if node.domain != "qvit":
            continue
        name = node.output[0]
        step = steps.get(name)
        if step is None:
            sys.exit(f"{args.vectors}: no golden step named {name}")
        attrs = attributes(node)
        got = STEPS[node.op_type](node_input(node, attrs, step, steps_by_file, load), attrs)
        codes = load(step["output"]["file"]).astype(np.int64)[None]
        axis = 1 if node.op_type == "LinearAttentionNormalize" else -1
        if node.op_type == "LinearAttentionNormalize":
            codes = codes.reshape(got.shape)
        want = encode_output(codes, attrs, axis)
        differ = int(np.count_nonzero(got != want))
        failed |= differ > 0
        report["nodes"][name] = {"op": node.op_type, "elements": int(want.size), "differ": differ}
    report["all_equal"] = not failed
    print(json.dumps(report))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
