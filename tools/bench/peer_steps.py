"""Where qvit's fp32 executor and ONNX Runtime spend an image's time, layer kind by layer kind:
one table for BENCHMARKS.md, to see which kind of layer to make faster.

    target/tmp/export-venv/bin/python tools/bench/peer_steps.py [--models efficientvit-b1]
        [--seconds 3] [--threads 2]

For each model it exports the float model with random weights (`qvit export --random-weights 1
--format onnx`), times qvit's fp32 executor node by node on one image (`qvit bench --executors
fp32 --batch 1 --steps --format json`) and runs ONNX Runtime on the export with its profiler
(all graph optimizations, intra-op threads = --threads, batch 1), then joins the two by node
name: the export names each of a layer's ONNX nodes under the layer's name (`blocks.0.mlp.fc1/
product/MatMul`), and ONNX Runtime keeps them, adding suffixes to those it rewrites (`_nchwc`).
Nodes it fused under names of its own (`BiasGelu`) or added (layout reorders) are totalled apart
by kind.
Per-node times from a profiler include its overhead, so read the ratios by kind, and take
whole-model speeds from `tools/bench/peers.py`. The virtualenv is the one the export tests make.
"""

import argparse
import collections
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


def qvit(binary, *args):
    return subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout


def ort_node_times(path, threads, seconds, shape):
    """Milliseconds per run of each node, by the node's name in the export."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(path).with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).random([1, *shape], dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    start = time.time()
    while time.time() - start < seconds:
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sum(1 for e in events if e.get("name") == "model_run")
    times = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = re.sub(r"(_nchwc|_token_\d+)$", "", e["name"][: -len("_kernel_time")])
            times[node] += e["dur"] / 1000 / runs
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qvit", default=str(ROOT / "target/release/qvit"))
    parser.add_argument("--models", nargs="+", default=["efficientvit-b1", "deit-tiny"])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"ONNX Runtime {ort.__version__}; {args.threads} threads; batch 1; ms per image")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            info = json.loads(qvit(args.qvit, "info", model, "--format", "json"))
            path = Path(tmp) / f"{model}.onnx"
            qvit(args.qvit, "export", model, "--random-weights", "1", "--format", "onnx",
                 "--out", str(path))
            bench = json.loads(qvit(args.qvit, "bench", model, "--executors", "fp32", "--batch",
                                    "1", "--steps", "--seconds", str(args.seconds), "--threads",
                                    str(args.threads), "--format", "json"))
            steps = bench["steps"][0]["steps"]
            peer = ort_node_times(path, args.threads, args.seconds, info["input_shape"])
            kinds = collections.defaultdict(lambda: [0, 0.0, 0.0])
            kind_of = {s["name"]: (s["kind"], s["shape"]) for s in steps}
            for s in steps:
                k = kinds[kind_of[s["name"]]]
                k[0] += 1
                k[1] += s["seconds"] * 1000
            # Each ONNX node to the layer whose name is the longest prefix of its own.
            names = sorted(kind_of, key=len, reverse=True)
            others = collections.Counter()
            for node, ms in peer.items():
                layer = next((n for n in names if node == n or node.startswith(n + "/")), None)
                if layer is None:
                    others[re.sub(r"[_\d]+$", "", node.split("/")[-1])] += ms
                else:
                    kinds[kind_of[layer]][2] += ms
            total_q = sum(k[1] for k in kinds.values())
            total_o = sum(k[2] for k in kinds.values()) + sum(others.values())
            print(f"\n{model}: qvit {total_q:.2f} ms, ONNX Runtime {total_o:.2f} ms\n")
            print("| layer kind | on | layers | qvit ms | ORT ms | qvit / ORT time |")
            print("|---|---|---:|---:|---:|---:|")
            for (kind, shape), (count, q, o) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
                ratio = f"{q / o:.2f}" if o > 0 else "–"
                print(f"| {kind} | {shape} | {count} | {q:.3f} | {o:.3f} | {ratio} |")
            rest = ", ".join(f"{n} {t:.3f}" for n, t in others.most_common())
            print(f"\nONNX Runtime's nodes of its own or fused under names of its own (ms): {rest}")


if __name__ == "__main__":
    main()
