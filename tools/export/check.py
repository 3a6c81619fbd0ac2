"""Checks a qvit ONNX export in its own runtime, against the samples `qvit export --samples`
wrote beside it: FILE.inputs.npy (the model's input) and FILE.expected.npy (qvit's outputs).

    python tools/export/check.py FILE.onnx [--runtime onnxruntime|qonnx]

Prints one JSON object: the checker's verdict and, for each way the runtime runs the model, the
largest absolute difference relative to the largest expected logit and the share of images whose
predicted class agrees. ONNX Runtime runs twice: `reference`, with graph optimizations off (each
operator as the ONNX specification defines it), and `optimized`, with all of them (fused kernels
whose float arithmetic differs in the last bits; after a quantizer such a difference can move a
value across a rounding boundary).
The requirements are in tools/export/requirements.txt; `.ci/run` installs them in .venv-export.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx


def onnxruntime_runs(path, x):
    import onnxruntime as ort

    levels = {
        "reference": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "optimized": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    for name, level in levels.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        yield name, session.run(["logits"], {"input": x})[0]


def qonnx_runs(path, x):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    rows = [execute_onnx(model, {"input": x[i : i + 1]})["logits"] for i in range(len(x))]
    yield "reference", np.concatenate(rows)


def initializer_types(model):
    counts = {}
    for t in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(t.data_type)
        counts[name] = counts.get(name, 0) + 1
    return counts


def compare(y, expected):
    scale = float(np.abs(expected).max()) or 1.0
    differ = np.nonzero(y.argmax(1) != expected.argmax(1))[0]
    return {
        "max_relative_error": float(np.abs(y - expected).max()) / scale,
        "argmax_agreement": float(1 - len(differ) / len(y)),
        "disagreeing_images": [int(i) for i in differ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--runtime", choices=["onnxruntime", "qonnx"], default="onnxruntime")
    args = parser.parse_args()

    model = onnx.load(str(args.model))
    onnx.checker.check_model(model, full_check=True)
    stem = args.model.with_suffix("")
    x = np.load(f"{stem}.inputs.npy")
    expected = np.load(f"{stem}.expected.npy")
    runs = onnxruntime_runs if args.runtime == "onnxruntime" else qonnx_runs
    report = {
        "model": str(args.model),
        "checker": "ok",
        "runtime": args.runtime,
        "images": int(len(x)),
        "metadata": {p.key: p.value for p in model.metadata_props},
        "initializer_types": initializer_types(model),
        "operators": sorted({n.op_type for n in model.graph.node}),
    }
    for name, y in runs(args.model, x):
        if y.shape != expected.shape:
            sys.exit(f"{args.model}: the runtime gave {y.shape}, qvit {expected.shape}")
        report[name] = compare(y, expected)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
