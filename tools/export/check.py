"""Checks a qvit ONNX export in its own runtime, against the samples `qvit export --samples`
wrote beside it: FILE.inputs.npy (the model's input) and FILE.expected.npy (qvit's outputs).

    python tools/export/check.py FILE.onnx [--runtime onnxruntime|qonnx] [--threads N]

Prints one JSON object: the checker's verdict and, for each way the runtime runs the model, the
largest absolute difference relative to the largest expected logit and the share of images whose
predicted class agrees. With qonnx it also runs qonnx's cleanup and InferShapes and reports what
they changed. ONNX Runtime runs twice: `reference`, with graph optimizations off (each
operator as the ONNX specification defines it), and `optimized`, with all of them (fused kernels
whose float arithmetic differs in the last bits; after a quantizer such a difference can move a
value across a rounding boundary). On an x86 CPU without VNNI, whose fused u8 × i8 products can
saturate, a model with int8 weights runs a third time, `optimized_u8_weights`, with them as u8
(the same values).
The requirements are in tools/export/requirements.txt; the export tests and `.ci/run` install
them in target/tmp/export-venv.
"""

import argparse
import copy
import json
import platform
import sys
from pathlib import Path

import numpy as np
import onnx

# The `qvit` operator domain (tools/export/qvit/), which qonnx imports by the domain's name.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def fixed_batch(model):
    """The input's batch size if the file fixes it, else None."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def in_batches(run, x, batch):
    """`run` over `x` in slices of the model's fixed batch size (all at once if it has none)."""
    step = batch or len(x)
    if len(x) % step:
        sys.exit(f"{len(x)} samples do not split into batches of {step}")
    return np.concatenate([run(x[i : i + step]) for i in range(0, len(x), step)])


def exact_int8_products():
    """Whether this CPU's u8 × i8 products are exact in ONNX Runtime's fused kernels: not on an
    x86 CPU without VNNI, where AVX2's 8-bit product (`vpmaddubsw`) adds two of them in i16 and
    can saturate (ONNX Runtime's quantizer offers `reduce_range`, 7-bit weights, for such CPUs;
    docs/export.md has what it did to a QDQ export on one)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    try:
        flags = next(
            (line.split(":", 1)[1].split() for line in open("/proc/cpuinfo")
             if line.startswith("flags")),
            [],
        )
    except OSError:
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def u8_weights(model):
    """A copy of `model` whose int8 weights (initializers a DequantizeLinear reads) are u8 with
    their zero-points moved by 128 — the same values, which ONNX Runtime multiplies by u8
    activations without saturating on any CPU — and how many it moved."""
    from onnx import numpy_helper

    model = copy.deepcopy(model)
    inits = {i.name: i for i in model.graph.initializer}
    moved = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        if inits[node.input[0]].data_type != onnx.TensorProto.INT8:
            continue
        weight = numpy_helper.to_array(inits[node.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]])
        if len(node.input) > 2 and node.input[2]:
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.int16)
        else:
            zero = np.zeros(scale.shape, dtype=np.int16)
        shifted = (weight.astype(np.int16) + 128).astype(np.uint8)
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(shifted, node.input[0]))
        zero_name = f"{node.input[0]}/zero_point_u8"
        model.graph.initializer.append(
            numpy_helper.from_array((zero + 128).astype(np.uint8), zero_name))
        del node.input[2:]
        node.input.append(zero_name)
        moved += 1
    return model, moved


def sessions_on_threads(threads):
    """Every ONNX Runtime session made without options, qonnx's one per node included, runs on
    `threads` threads (its default is a pool of one per core, which spins while it waits: the
    export tests run two checks at once on CI's two cores)."""
    import onnxruntime as ort

    made = ort.InferenceSession

    class Session(made):
        def __init__(self, source, sess_options=None, *args, **kwargs):
            if sess_options is None:
                sess_options = ort.SessionOptions()
                sess_options.intra_op_num_threads = threads
            super().__init__(source, sess_options, *args, **kwargs)

    ort.InferenceSession = Session


def onnxruntime_runs(path, x, threads):
    import onnxruntime as ort

    runs = [
        ("reference", ort.GraphOptimizationLevel.ORT_DISABLE_ALL, str(path)),
        ("optimized", ort.GraphOptimizationLevel.ORT_ENABLE_ALL, str(path)),
    ]
    if not exact_int8_products():
        shifted, moved = u8_weights(onnx.load(str(path)))
        if moved:
            runs.append(("optimized_u8_weights", ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                         shifted.SerializeToString()))
    batch = fixed_batch(onnx.load(str(path), load_external_data=False))
    for name, level, source in runs:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = level
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        yield name, in_batches(lambda b: session.run(["logits"], {"input": b})[0], x, batch)


def qonnx_runs(path, x, threads):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from qonnx.transformation.infer_shapes import InferShapes

    # qonnx's executor needs every value's shape, as FINN's flows do: InferShapes first.
    model = ModelWrapper(str(path)).transform(InferShapes())
    run = lambda b: execute_onnx(model, {"input": b})["logits"]
    yield "reference", in_batches(run, x, fixed_batch(model.model))


def qonnx_cleanup(path, x, reference):
    """qonnx's cleanup (shape inference, constant folding, renaming) and InferShapes on the
    file: how many nodes and values changed, whether every value has a shape, and how far the
    cleaned model's logits are from the uncleaned one's on the first images."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    # The file as written, only counted: a plain load (a ModelWrapper checks every value's
    # shape on construction, 2 s on B1's graph).
    model = onnx.load(str(path))
    clean = cleanup_model(ModelWrapper(str(path))).transform(InferShapes())
    unshaped = [
        v.name
        for v in clean.graph.value_info
        if not v.type.tensor_type.HasField("shape")
    ]
    n = fixed_batch(clean.model) or min(len(x), 16)
    inp, out = clean.graph.input[0].name, clean.graph.output[0].name
    y = execute_onnx(clean, {inp: x[:n]})[out]
    scale = float(np.abs(reference[:n]).max()) or 1.0
    return {
        "nodes_before": len(model.graph.node),
        "nodes_after": len(clean.graph.node),
        "quant_nodes_before": sum(n.op_type == "Quant" for n in model.graph.node),
        "quant_nodes_after": sum(n.op_type == "Quant" for n in clean.graph.node),
        "qvit_nodes_after": sum(n.domain == "qvit" for n in clean.graph.node),
        "changed_operators": changed_operators(model, clean),
        "values_without_shape": unshaped,
        "max_relative_change": float(np.abs(y - reference[:n]).max()) / scale,
    }


def changed_operators(before, after):
    """Operator types whose node count cleanup changed: {type: [before, after]}."""
    count = lambda m: {t: sum(n.op_type == t for n in m.graph.node) for t in
                       {n.op_type for n in m.graph.node}}
    a, b = count(before), count(after)
    return {t: [a.get(t, 0), b.get(t, 0)] for t in sorted(set(a) | set(b))
            if a.get(t, 0) != b.get(t, 0)}


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
    parser.add_argument("--threads", type=int, default=2,
                        help="threads per ONNX Runtime session (qonnx runs one per node)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: a session needs at least one thread")
    sessions_on_threads(args.threads)

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
    for name, y in runs(args.model, x, args.threads):
        if y.shape != expected.shape:
            sys.exit(f"{args.model}: the runtime gave {y.shape}, qvit {expected.shape}")
        report[name] = compare(y, expected)
        if args.runtime == "qonnx":
            report["cleanup"] = qonnx_cleanup(args.model, x, y)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
