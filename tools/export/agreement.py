"""Measures how closely ONNX Runtime runs qvit's QDQ exports, and what qvit's rounding costs:
the table of docs/export.md.

    target/tmp/export-venv/bin/python tools/export/agreement.py [--qvit target/release/qvit] [--images 1000]
    target/tmp/export-venv/bin/python tools/export/agreement.py --integer-steps

For each micro model and recipe at W8A8 and W4A8 it exports the QDQ model twice, with qvit
rounding activations half up (its default) and half to even (as QuantizeLinear does), and the
QONNX model once (its Quant nodes round as the plan does), with the first N test images, and
prints one Markdown row: the share of images whose predicted class agrees between qvit's
fake-quant and ONNX Runtime op by op (graph optimizations off) and fully optimized, between
qvit's two roundings, and between qvit and qonnx's executor on the QONNX file.

With --integer-steps it measures the QONNX exports whose non-linear steps are the integer
executor's `qvit` nodes instead (the recipes that compile to the integer executor): the share of
images whose class in qonnx's executor agrees with qvit's integer executor, beside the share on
which qvit's own fake-quant executor agrees with it.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CASES = [
    ("efficientvit-micro", "trio-vit"),
    ("deit-micro", "repq-vit"),
    ("deit-micro", "fq-vit"),
    ("deit-micro", "ptq4vit"),
]


def qvit(binary, *args):
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def check(path, runtime="onnxruntime"):
    out = subprocess.run(
        [sys.executable, str(HERE / "check.py"), str(path), "--runtime", runtime],
        check=True,
        capture_output=True,
    )
    return json.loads(out.stdout)


def pct(v):
    return f"{100 * v:.1f} %"


def integer_steps(args):
    print("| model | recipe | bits | integer-steps export = int | fake-quant = int |")
    print("|---|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, recipe in CASES:
            if recipe == "ptq4vit":
                continue  # twin-uniform codes do not compile to the integer executor
            calib = tmp / f"{model}.calib.safetensors"
            if not calib.exists():
                qvit(args.qvit, "calibrate", model, "--out", str(calib))
            for bits in ["w8a8", "w4a8"]:
                plan = ["--recipe", recipe, "--bits", bits, "--calibration", str(calib)]
                out = tmp / f"{model}-{recipe}-{bits}-int.onnx"
                qvit(args.qvit, "export", model, "--format", "qonnx", "--integer-steps", *plan,
                     "--batch", "100", "--out", str(out), "--samples", str(args.images))
                fake = tmp / f"{model}-{recipe}-{bits}-fake.onnx"
                qvit(args.qvit, "export", model, "--format", "qdq", *plan,
                     "--out", str(fake), "--samples", str(args.images))
                report = check(out, "qonnx")
                int_logits = np.load(out.with_suffix(".expected.npy"))
                fake_logits = np.load(fake.with_suffix(".expected.npy"))
                same = (int_logits.argmax(1) == fake_logits.argmax(1)).mean()
                print(f"| {model} | {recipe} | {bits.upper()} "
                      f"| {pct(report['reference']['argmax_agreement'])} | {pct(same)} |",
                      flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qvit", default=str(HERE.parents[1] / "target/release/qvit"))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--integer-steps", action="store_true")
    args = parser.parse_args()
    if args.integer_steps:
        return integer_steps(args)
    print("| model | recipe | bits | ORT op by op, qvit half-even | ORT optimized, qvit half-even "
          "| ORT op by op, qvit half-up | qvit half-up vs half-even | qonnx, qvit half-up |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, recipe in CASES:
            calib = tmp / f"{model}.calib.safetensors"
            if not calib.exists():
                qvit(args.qvit, "calibrate", model, "--out", str(calib))
            for bits in ["w8a8", "w4a8"]:
                reports, expected = {}, {}
                for rounding in ["half-even", "half-up"]:
                    out = tmp / f"{model}-{recipe}-{bits}-{rounding}.onnx"
                    qvit(args.qvit, "export", model, "--format", "qdq", "--recipe", recipe,
                         "--bits", bits, "--rounding", rounding, "--calibration", str(calib),
                         "--out", str(out), "--samples", str(args.images))
                    reports[rounding] = check(out)
                    expected[rounding] = np.load(out.with_suffix(".expected.npy"))
                same = (expected["half-up"].argmax(1) == expected["half-even"].argmax(1)).mean()
                q = tmp / f"{model}-{recipe}-{bits}-qonnx.onnx"
                qvit(args.qvit, "export", model, "--format", "qonnx", "--recipe", recipe,
                     "--bits", bits, "--calibration", str(calib), "--batch", "100",
                     "--out", str(q), "--samples", str(args.images))
                qonnx = check(q, "qonnx")
                even, up = reports["half-even"], reports["half-up"]
                print(f"| {model} | {recipe} | {bits.upper()} "
                      f"| {pct(even['reference']['argmax_agreement'])} "
                      f"| {pct(even['optimized']['argmax_agreement'])} "
                      f"| {pct(up['reference']['argmax_agreement'])} | {pct(same)} "
                      f"| {pct(qonnx['reference']['argmax_agreement'])} |", flush=True)


if __name__ == "__main__":
    main()
