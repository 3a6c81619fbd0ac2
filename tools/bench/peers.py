"""qvit against ONNX Runtime on the same models, on this machine: one table of images/s and
ratios, for BENCHMARKS.md.

    target/tmp/export-venv/bin/python tools/bench/peers.py [--models efficientvit-b1 deit-tiny]
        [--batch 1 8] [--rounds 3] [--seconds 2] [--threads 2]

For each model it exports, with random weights under the official names (`qvit export
--random-weights`), the float model (`--format onnx`) and the W8A8 fake-quant model as
QuantizeLinear/DequantizeLinear pairs (`--format qdq`, the family's recipe as `qvit bench` uses
it; trio-vit's output-aware search cut to one image, which changes ranges, not the graph), and
has ONNX Runtime's own static quantizer make its int8 model from the float export (QDQ, uint8
activations, int8 per-channel weights, calibrated on the same four random images): the fastest
int8 model ONNX Runtime makes for itself. Then, round after round, it runs `qvit bench` (fp32 and
int executors) and ONNX Runtime (fp32, qvit's QDQ and its own int8; all graph optimizations,
intra-op threads = --threads) in turn, so that a busy spell of a shared
machine hits both, and reports medians over the rounds. The virtualenv is the one the export
tests make (onnxruntime from PyPI).
"""

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


def qvit(binary, *args, capture=False):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True)
    return out.stdout if capture else None


def calibration_folder(folder, shape, count=4):
    """`count` random RGB images as an ImageNet-style folder (what `--calibration-data` reads)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    root = folder / "calibration"
    for i in range(count):
        d = root / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(shape[1], shape[2], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / f"{i}.png")
    return root


def ort_int8(float_model, out, shape, count=4):
    """ONNX Runtime's own static int8 quantization of the float export."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(7)
            batches = [rng.standard_normal((1, *shape), dtype=np.float32) for _ in range(count)]
            self.batches = iter({"input": b} for b in batches)

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(float_model), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return out


def ort_images_per_second(session, x, seconds):
    """Median images/s of one batch run repeatedly for `seconds`, after a warm-up run."""
    session.run(None, {"input": x})
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    return len(x) / statistics.median(times)


def cpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = info.get("Flags", "")
        simd = [f for f in ["avx2", "avx512f", "avx512_vnni", "avx_vnni"] if f in flags.split()]
        return f"{info.get('Model name', '?').strip()}, {' '.join(simd)}"
    except OSError:
        return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qvit", default=str(ROOT / "target/release/qvit"))
    parser.add_argument("--models", nargs="+", default=["efficientvit-b1", "deit-tiny"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    print(f"CPU: {cpu()}; ONNX Runtime {ort.__version__}; {args.threads} threads; "
          f"{args.rounds} interleaved rounds of ~{args.seconds:g} s per executor; medians")
    print()
    print("| model | batch | qvit fp32 | ORT fp32 | qvit / ORT | qvit int | ORT on qvit's QDQ "
          "| qvit / ORT | ORT's own int8 | qvit / ORT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        quick = tmp / "trio-vit-quick.ron"
        preset = (ROOT / "presets/quant/trio-vit.ron").read_text()
        quick.write_text(preset.replace("OutputSearch(images: 64)", "OutputSearch(images: 1)"))
        for model in args.models:
            info = json.loads(qvit(args.qvit, "info", model, "--format", "json", capture=True))
            shape = info["input_shape"]
            recipe = str(quick) if info["family"] == "EfficientViT" else "repq-vit"
            calib = calibration_folder(tmp, shape)
            files = {}
            for fmt in ["onnx", "qdq"]:
                files[fmt] = tmp / f"{model}.{fmt}.onnx"
                extra = [] if fmt == "onnx" else ["--recipe", recipe, "--calibration-data", str(calib)]
                qvit(args.qvit, "export", model, "--random-weights", "1", "--format", fmt,
                     "--out", str(files[fmt]), *extra)
            files["ort-int8"] = ort_int8(files["onnx"], tmp / f"{model}.ort-int8.onnx", shape)
            sessions = {}
            for fmt, path in files.items():
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                sessions[fmt] = ort.InferenceSession(str(path), options,
                                                     providers=["CPUExecutionProvider"])
            for batch in args.batch:
                x = np.random.default_rng(1).standard_normal((batch, *shape), dtype=np.float32)
                measured = {k: [] for k in ["qvit fp32", "qvit int", "ort onnx", "ort qdq",
                                            "ort ort-int8"]}
                for _ in range(args.rounds):
                    report = json.loads(qvit(
                        args.qvit, "bench", model, "--batch", str(batch), "--executors",
                        "fp32,int", "--seconds", str(args.seconds), "--threads",
                        str(args.threads), "--format", "json", capture=True))
                    kernels = report["int_kernels"]
                    for row in report["results"]:
                        measured[f"qvit {row['executor']}"].append(row["images_per_second"])
                    for fmt, session in sessions.items():
                        measured[f"ort {fmt}"].append(
                            ort_images_per_second(session, x, args.seconds))
                m = {k: statistics.median(v) for k, v in measured.items()}
                print(f"| {model} | {batch} | {m['qvit fp32']:.1f} | {m['ort onnx']:.1f} "
                      f"| {m['qvit fp32'] / m['ort onnx']:.2f}× | {m['qvit int']:.1f} ({kernels}) "
                      f"| {m['ort qdq']:.1f} | {m['qvit int'] / m['ort qdq']:.2f}× "
                      f"| {m['ort ort-int8']:.1f} | {m['qvit int'] / m['ort ort-int8']:.2f}× |",
                      flush=True)


if __name__ == "__main__":
    main()
