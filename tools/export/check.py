"""Checks a qvit ONNX export in its own runtime, against the samples `qvit export --samples`
wrote beside it: FILE.inputs.npy (the model's input) and FILE.expected.npy (qvit's outputs).

    python tools/export/check.py FILE.onnx [--runtime onnxruntime|qonnx]

Prints one JSON object: the checker's verdict, the runtime, the largest absolute difference
relative to the largest expected logit, and the share of images whose predicted class agrees.
The requirements are in tools/export/requirements.txt; `.ci/run` installs them in .venv-export.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx


def run_onnxruntime(path, x):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def run_qonnx(path, x):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    rows = [execute_onnx(model, {"input": x[i : i + 1]})["logits"] for i in range(len(x))]
    return np.concatenate(rows)


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
    run = run_onnxruntime if args.runtime == "onnxruntime" else run_qonnx
    y = run(args.model, x)
    if y.shape != expected.shape:
        sys.exit(f"{args.model}: the runtime gave {y.shape}, qvit {expected.shape}")
    scale = float(np.abs(expected).max()) or 1.0
    print(
        json.dumps(
            {
                "model": str(args.model),
                "checker": "ok",
                "runtime": args.runtime,
                "images": int(len(x)),
                "max_relative_error": float(np.abs(y - expected).max()) / scale,
                "argmax_agreement": float((y.argmax(1) == expected.argmax(1)).mean()),
                "disagreeing_images": [int(i) for i in np.nonzero(y.argmax(1) != expected.argmax(1))[0]],
                "metadata": {p.key: p.value for p in model.metadata_props},
            }
        )
    )


if __name__ == "__main__":
    main()
