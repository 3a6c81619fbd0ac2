#!/usr/bin/env python3
"""Train qvit's micro models on Fashion-MNIST (JAX on CPU) and export them with official names.

The model is not defined here: the trainer reads qvit's own graph (`qvit info MODEL --format
graph`) and interprets it node by node, so the network trained is exactly the one qvit builds —
same ops, shapes and parameter names — and the exported safetensors file loads into qvit as it is.

    python3 tools/train/train.py --model efficientvit-micro --epochs 15 \
        --out assets/efficientvit-micro.safetensors \
        --calibration-out assets/fashion-mnist/calib-1024

A run is a function of its arguments and seed: data order, augmentation and initialisation come
from seeded generators, and XLA's CPU kernels are deterministic.
"""

import argparse
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import save_file

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set statistics (qvit: Normalize::fashion_mnist)
BN_MOMENTUM = 0.1


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rank = raw[3]
    dims = struct.unpack(">" + "I" * rank, raw[4 : 4 + 4 * rank])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * rank).reshape(dims)


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(data, compresslevel=9, mtime=0))
    os.replace(tmp, path)


def load_graph(qvit, model):
    out = subprocess.run([qvit, "info", model, "--format", "graph"], check=True, capture_output=True)
    return json.loads(out.stdout)


def op_of(node):
    op = node["op"]
    return (op, None) if isinstance(op, str) else next(iter(op.items()))


def init_params(graph, key):
    """PyTorch's default initialisation: uniform ±1/√fan_in for convs and linear layers, ones and
    zeros for norms; N(0, 0.02²) for DeiT's class token and position table."""
    params, state = {}, {}
    for node in graph["nodes"]:
        kind, a = op_of(node)
        if kind in ("Conv2d", "PatchEmbed"):
            fan_in = a["in_channels"] // a["groups"] * a["kernel"] ** 2
        elif kind == "Linear":
            fan_in = a["in_features"]
        else:
            fan_in = 1
        bound = 1.0 / math.sqrt(fan_in)
        for p in node["params"]:
            key, sub = jax.random.split(key)
            shape, role = tuple(p["shape"]), p["role"]
            if role in ("Weight", "Bias"):
                params[p["name"]] = jax.random.uniform(sub, shape, jnp.float32, -bound, bound)
            elif role == "NormWeight":
                params[p["name"]] = jnp.ones(shape, jnp.float32)
            elif role == "NormBias":
                params[p["name"]] = jnp.zeros(shape, jnp.float32)
            elif role in ("ClassToken", "PosEmbed"):
                params[p["name"]] = 0.02 * jax.random.normal(sub, shape, jnp.float32)
            elif role == "RunningMean":
                state[p["name"]] = jnp.zeros(shape, jnp.float32)
            elif role == "RunningVar":
                state[p["name"]] = jnp.ones(shape, jnp.float32)
    return params, state


def conv2d(x, w, a):
    """A convolution lowered to what XLA's CPU backend runs fast: its grouped convolutions (and
    their gradients) are several times slower than shifted multiply-adds for depthwise layers, and
    its 1×1 convolutions about twice as slow as a (batched) matrix product."""
    g, k, s, p = a["groups"], a["kernel"], a["stride"], a["padding"]
    cin, cout = a["in_channels"], a["out_channels"]
    b, _, h, wd = x.shape
    oh, ow = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    if g > 1 and g == cin == cout:
        xp = jnp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        return sum(
            xp[:, :, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s] * w[None, :, 0, i, j, None, None]
            for i in range(k) for j in range(k))
    if k == 1 and s == 1:
        xg = x.reshape(b, g, cin // g, h * wd)
        wg = w.reshape(g, cout // g, cin // g)
        return jnp.einsum("goc,bgcn->bgon", wg, xg).reshape(b, cout, h, wd)
    return jax.lax.conv_general_dilated(
        x, w, (s, s), [(p, p), (p, p)], dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=g)


def forward(graph, params, state, x, train, every_value=False):
    """Logits and updated BatchNorm statistics for images x [B, C, H, W]; with `every_value`, the
    output of every node instead (index = node index)."""
    nodes = graph["nodes"]
    values = [x]
    new_state = dict(state)

    def param(node, role):
        return next((params[p["name"]] for p in node["params"] if p["role"] == role), None)

    def buffer_name(node, role):
        return next(p["name"] for p in node["params"] if p["role"] == role)

    for node in nodes[1:]:
        kind, a = op_of(node)
        ins = [values[i] for i in node["inputs"]]
        v = ins[0]
        if kind in ("Conv2d", "PatchEmbed"):
            y = conv2d(v, param(node, "Weight"), a)
            bias = param(node, "Bias")
            if bias is not None:
                y = y + bias[None, :, None, None]
            if kind == "PatchEmbed":
                b, d = y.shape[:2]
                y = y.reshape(b, d, -1).transpose(0, 2, 1)
        elif kind == "BatchNorm2d":
            g, b = param(node, "NormWeight"), param(node, "NormBias")
            rm, rv = buffer_name(node, "RunningMean"), buffer_name(node, "RunningVar")
            if train:
                mean = v.mean(axis=(0, 2, 3))
                var = v.var(axis=(0, 2, 3))
                n = v.shape[0] * v.shape[2] * v.shape[3]
                new_state[rm] = (1 - BN_MOMENTUM) * state[rm] + BN_MOMENTUM * jax.lax.stop_gradient(mean)
                new_state[rv] = (1 - BN_MOMENTUM) * state[rv] + BN_MOMENTUM * jax.lax.stop_gradient(var) * n / (n - 1)
            else:
                mean, var = state[rm], state[rv]
            inv = jax.lax.rsqrt(var + a["eps"])
            y = (v - mean[None, :, None, None]) * (inv * g)[None, :, None, None] + b[None, :, None, None]
        elif kind == "Linear":
            y = v @ param(node, "Weight").T
            bias = param(node, "Bias")
            if bias is not None:
                y = y + bias
        elif kind == "LayerNorm":
            mean = v.mean(-1, keepdims=True)
            var = ((v - mean) ** 2).mean(-1, keepdims=True)
            y = (v - mean) * jax.lax.rsqrt(var + a["eps"]) * param(node, "NormWeight") + param(node, "NormBias")
        elif kind == "Hardswish":
            y = v * jnp.clip(v + 3.0, 0.0, 6.0) / 6.0
        elif kind == "Relu":
            y = jax.nn.relu(v)
        elif kind == "Gelu":
            y = jax.nn.gelu(v, approximate=False)
        elif kind == "Softmax":
            y = jax.nn.softmax(v, axis=-1)
        elif kind == "Add":
            y = ins[0] + ins[1]
        elif kind == "Concat":
            y = jnp.concatenate(ins, axis=1)
        elif kind == "GlobalAvgPool":
            y = v.mean(axis=(2, 3))
        elif kind == "ClassTokenPosEmbed":
            cls = jnp.broadcast_to(param(node, "ClassToken"), (v.shape[0], 1, a["dim"]))
            y = jnp.concatenate([cls, v], axis=1) + param(node, "PosEmbed")
        elif kind == "TakeClassToken":
            y = v[:, 0]
        elif kind in ("AttentionScores", "AttentionMix"):
            qkv = ins[0] if kind == "AttentionScores" else ins[1]
            b, n, _ = qkv.shape
            t = qkv.reshape(b, n, 3, a["heads"], a["head_dim"]).transpose(2, 0, 3, 1, 4)
            if kind == "AttentionScores":
                y = (t[0] @ t[1].transpose(0, 1, 3, 2)) * a["scale"]
            else:
                y = (ins[0] @ t[2]).transpose(0, 2, 1, 3).reshape(b, n, -1)
        elif kind in ("LinearAttentionContext", "LinearAttentionQuery"):
            h, d = a["heads"], a["head_dim"]
            b = v.shape[0]
            ms = v.reshape(b, h, 3 * d, -1)
            if kind == "LinearAttentionContext":
                k = jax.nn.relu(ms[:, :, d : 2 * d])
                v_pad = jnp.concatenate([ms[:, :, 2 * d :], jnp.ones_like(ms[:, :, :1])], axis=2)
                y = v_pad @ k.transpose(0, 1, 3, 2)
            else:
                y = ins[1] @ jax.nn.relu(ms[:, :, :d])
        elif kind == "LinearAttentionNormalize":
            d = a["head_dim"]
            y = v[:, :, :d] / (v[:, :, d : d + 1] + a["eps"])
            y = y.reshape(y.shape[0], a["heads"] * d, a["height"], a["width"])
        else:
            raise ValueError(f"op {kind} of {node['name']} is not supported by the trainer")
        values.append(y)
    if every_value:
        return values
    return values[-1], new_state


def consumers(graph):
    """For every node index, the indices of the nodes that read it."""
    out = [[] for _ in graph["nodes"]]
    for i, node in enumerate(graph["nodes"]):
        for j in node["inputs"]:
            out[j].append(i)
    return out


def affine_before(graph, act):
    """The per-channel affine map feeding Hardswish node `act`: a BatchNorm, or a conv with a
    bias (EfficientViT's attention-stage MBConvs have no norm there), else None."""
    node = graph["nodes"][graph["nodes"][act]["inputs"][0]]
    kind, a = op_of(node)
    if kind == "BatchNorm2d" or (kind == "Conv2d" and a["bias"]):
        return graph["nodes"].index(node)
    return None


def spread_sites(graph):
    """The two MBConv tensors Trio-ViT treats, as (affine, Hardswish, conv) node triples:
    depthwise-conv inputs and projection (point conv after a depthwise conv) inputs, each an
    affine map → Hardswish whose only reader is that conv."""
    nodes, readers = graph["nodes"], consumers(graph)
    depthwise, projection = [], []
    for i, node in enumerate(nodes):
        kind, a = op_of(node)
        if kind != "Conv2d":
            continue
        act = node["inputs"][0]
        if op_of(nodes[act])[0] != "Hardswish" or readers[act] != [i]:
            continue
        affine = affine_before(graph, act)
        if affine is None:
            continue
        if a["groups"] > 1 and a["groups"] == a["in_channels"] == a["out_channels"]:
            depthwise.append((affine, act, i))
        elif a["kernel"] == 1 and a["groups"] == 1:
            dw = affine if op_of(nodes[affine])[0] == "Conv2d" else nodes[affine]["inputs"][0]
            if op_of(nodes[dw])[1]["groups"] > 1:
                projection.append((affine, act, i))
    return depthwise, projection


def inject_spread(graph, params, state, images, rng, max_scale, max_shift):
    """Give a trained EfficientViT the inter-channel variation of EfficientViT-B1's MBConvs.

    Depthwise inputs: channel c of the affine map before the Hardswish (BatchNorm, or conv with
    bias) is multiplied by s_c, log-uniform in [1, max_scale], and the depthwise filter divided by
    it, so the channel's activation is about s_c times larger. Projection inputs: channel c's
    pre-activation gains t_c, uniform in [0, max_shift] standard deviations of the channel's
    activation (its Hardswish output on `images`), moving the channel's centre, and the point conv's BatchNorm running mean absorbs the constant
    that adds. Hardswish is not homogeneous, so both are only approximately function-preserving;
    the fine-tuning that follows recovers the accuracy."""
    nodes = graph["nodes"]

    def name(node, role):
        return next(p["name"] for p in nodes[node]["params"] if p["role"] == role)

    def scale_and_shift(affine, s, t):
        if op_of(nodes[affine])[0] == "BatchNorm2d":
            g, b = name(affine, "NormWeight"), name(affine, "NormBias")
            params[g] = params[g] * s
        else:
            g, b = name(affine, "Weight"), name(affine, "Bias")
            params[g] = params[g] * s[:, None, None, None]
        params[b] = params[b] * s + t

    values = forward(graph, params, state, images, False, every_value=True)
    readers = consumers(graph)
    depthwise, projection = spread_sites(graph)
    for affine, _, conv in depthwise:
        channels = nodes[conv]["op"]["Conv2d"]["in_channels"]
        s = np.exp(rng.uniform(0.0, math.log(max_scale), channels)).astype(np.float32)
        scale_and_shift(affine, s, np.zeros(channels, np.float32))
        w = name(conv, "Weight")
        params[w] = params[w] / s[:, None, None, None]
    for affine, act, conv in projection:
        std = np.asarray(values[act]).std(axis=(0, 2, 3))
        t = (rng.uniform(0.0, max_shift, std.shape[0]) * std).astype(np.float32)
        scale_and_shift(affine, np.ones_like(t), t)
        after = readers[conv]
        if len(after) != 1 or op_of(nodes[after[0]])[0] != "BatchNorm2d":
            raise ValueError(f"{nodes[conv]['name']} is not followed by a BatchNorm to absorb the shift")
        mean = name(after[0], "RunningMean")
        state[mean] = state[mean] + jnp.asarray(np.asarray(params[name(conv, "Weight")])[:, :, 0, 0] @ t)
    print(f"spread injected at {len(depthwise)} depthwise and {len(projection)} projection inputs",
          file=sys.stderr)
    return params, state


def load_weights(path, params, state):
    """Start from a trained model (its safetensors file) instead of a fresh initialisation."""
    from safetensors.numpy import load_file
    saved = load_file(path)
    missing = [n for n in list(params) + list(state) if n not in saved]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensors of the model, first {missing[0]}")
    return ({n: jnp.asarray(saved[n]) for n in params}, {n: jnp.asarray(saved[n]) for n in state})


def augment(images, rng):
    """Random 28×28 crops of the image padded by 2 background pixels, left–right flips."""
    b, h, w = images.shape
    padded = np.zeros((b, h + 4, w + 4), np.uint8)
    padded[:, 2:-2, 2:-2] = images
    dy, dx = rng.integers(0, 5, b), rng.integers(0, 5, b)
    out = np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    flip = rng.random(b) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def normalise(images):
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None]


def write_calibration(images, labels, prefix, size, seed):
    """A seeded, class-balanced choice of training images, written as an IDX pair."""
    rng = np.random.default_rng(seed + 0xCA1B)
    order = rng.permutation(len(labels))
    classes = int(labels.max()) + 1
    quota, counts, chosen = -(-size // classes), np.zeros(classes, int), []
    for i in order:
        if counts[labels[i]] < quota and len(chosen) < size:
            counts[labels[i]] += 1
            chosen.append(i)
    chosen = np.sort(np.array(chosen))
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    write_idx(prefix + "-images-idx3-ubyte.gz", images[chosen])
    write_idx(prefix + "-labels-idx1-ubyte.gz", labels[chosen])
    print(f"wrote {len(chosen)} calibration images to {prefix}-*", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="efficientvit-micro or deit-micro")
    ap.add_argument("--qvit", default="target/release/qvit", help="the qvit binary (reads the graph)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with the Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, help="train on the first N images only (a quick check)")
    ap.add_argument("--out", required=True, help="weights file to write (safetensors)")
    ap.add_argument("--calibration-out", help="prefix of a calibration subset to write as IDX")
    ap.add_argument("--calibration-size", type=int, default=1024)
    ap.add_argument("--init", help="start from these trained weights (safetensors) and fine-tune")
    ap.add_argument("--spread-scale", type=float,
                    help="before training, scale depthwise-conv input channels by up to this factor")
    ap.add_argument("--spread-shift", type=float, default=0.0,
                    help="before training, shift projection input channels by up to this many channel std")
    args = ap.parse_args()
    started = time.time()

    train_x = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    train_y = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    test_x = read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz"))
    test_y = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz"))
    if args.calibration_out:
        write_calibration(train_x, train_y, args.calibration_out, args.calibration_size, args.seed)
    if args.limit:
        train_x, train_y = train_x[: args.limit], train_y[: args.limit]

    graph = load_graph(args.qvit, args.model)
    params, state = init_params(graph, jax.random.PRNGKey(args.seed))
    if args.init:
        params, state = load_weights(args.init, params, state)
    if args.spread_scale:
        probe = normalise(train_x[:512])
        params, state = inject_spread(graph, params, state, probe, np.random.default_rng(args.seed + 0x5B8E),
                                      args.spread_scale, args.spread_shift)
    steps_per_epoch = -(-len(train_y) // args.batch)
    total_steps = steps_per_epoch * args.epochs
    warmup = max(1, min(steps_per_epoch, total_steps // 10))  # one epoch, or a tenth of a short run
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, total_steps, 0.0)
    decay_mask = {name: p.ndim > 1 and "pos_embed" not in name and "cls_token" not in name
                  for name, p in params.items()}
    opt = optax.adamw(schedule, weight_decay=args.weight_decay, mask=decay_mask)
    opt_state = opt.init(params)
    classes = graph["num_classes"]

    def loss_fn(params, state, x, y):
        logits, new_state = forward(graph, params, state, x, True)
        target = optax.smooth_labels(jax.nn.one_hot(y, classes), args.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, target).mean()
        return loss, (new_state, (logits.argmax(-1) == y).sum())

    @jax.jit
    def train_step(params, state, opt_state, x, y):
        (loss, (state, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss, correct

    @jax.jit
    def predict(params, state, x):
        return forward(graph, params, state, x, False)[0].argmax(-1)

    def evaluate():
        correct = 0
        for i in range(0, len(test_y), 500):
            correct += int((np.asarray(predict(params, state, normalise(test_x[i : i + 500]))) == test_y[i : i + 500]).sum())
        return 100.0 * correct / len(test_y)

    rng = np.random.default_rng(args.seed)
    steps, top1 = 0, 0.0
    for epoch in range(args.epochs):
        t0 = time.time()
        order = rng.permutation(len(train_y))
        loss_sum, correct = 0.0, 0
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            x = normalise(augment(train_x[idx], rng))
            params, state, opt_state, loss, c = train_step(params, state, opt_state, x, train_y[idx].astype(np.int32))
            loss_sum += float(loss) * len(idx)
            if steps == 0:
                first_step = time.time()
                print(f"first step (compiles) {first_step - t0:.0f} s", file=sys.stderr, flush=True)
            correct += int(c)
            steps += 1
        t_eval = time.time()
        top1 = evaluate()
        print(f"steps {t_eval - t0:.0f} s, evaluation {time.time() - t_eval:.0f} s", file=sys.stderr, flush=True)
        print(f"epoch {epoch + 1:>2}/{args.epochs}  loss {loss_sum / len(order):.4f}  "
              f"train {100.0 * correct / len(order):.2f} %  test {top1:.2f} %  ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)

    tensors = {name: np.asarray(p, np.float32) for name, p in params.items()}
    tensors.update({name: np.asarray(s, np.float32) for name, s in state.items()})
    for node in graph["nodes"]:
        for p in node["params"]:
            if p["role"] == "NumBatchesTracked":
                tensors[p["name"]] = np.array(steps, np.int64)
    report = {
        "model": args.model,
        "test_top1_percent": top1,
        "test_images": int(len(test_y)),
        "train_images": int(len(train_y)),
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "seed": args.seed,
        "init": args.init,
        "spread_scale": args.spread_scale,
        "spread_shift": args.spread_shift,
        "wall_time_s": round(time.time() - started),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "command": " ".join(["python3"] + sys.argv),
    }
    tmp = args.out + ".tmp"
    save_file(tensors, tmp, metadata={"qvit.model": args.model, "qvit.trainer_top1": f"{top1:.2f}"})
    os.replace(tmp, args.out)
    with open(os.path.splitext(args.out)[0] + ".train.json", "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
