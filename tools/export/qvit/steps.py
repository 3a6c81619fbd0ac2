"""The integer steps of qvit's integer executor, in numpy: what the `qvit` nodes of a
`qvit export --format qonnx --integer-steps` file compute, reimplemented from qvit's
documentation of each step (core/src/exec/int/nonlinear/, docs/export.md) so that a flow can
run and check them without qvit.

Each function takes the node's float input and its attributes (a dict, as ONNX stores them)
and returns the float output: the real value of each output code. All integer arithmetic is
exact: int64 where its bound is proven below, Python integers where a product can pass 63
bits.
"""

import numpy as np

INT64_SAFE = 1 << 62


def channel_vector(values, ndim, axis):
    """Per-channel attribute values shaped to broadcast along `axis` of an ndim-array (one
    value broadcasts everywhere)."""
    v = np.asarray(values)
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def decode(x, attrs, what, axis):
    """The codes of a point's real values: nearest of `<what>_levels`, or
    round((x − offset)/scale) + zero_point."""
    if f"{what}_levels" in attrs:
        levels = np.asarray(attrs[f"{what}_levels"], np.float64)
        distance = np.abs(x.astype(np.float64)[..., None] - levels)
        return np.argmin(distance, axis=-1).astype(np.int64)
    scale = channel_vector(np.asarray(attrs[f"{what}_scale"], np.float64), x.ndim, axis)
    zero = channel_vector(np.asarray(attrs[f"{what}_zero_point"], np.int64), x.ndim, axis)
    offset = channel_vector(np.asarray(attrs[f"{what}_offset"], np.float64), x.ndim, axis)
    return np.round((x.astype(np.float64) - offset) / scale).astype(np.int64) + zero


def encode_output(codes, attrs, axis):
    """The real value of each output code, as float32."""
    if "output_levels" in attrs:
        return np.asarray(attrs["output_levels"], np.float32)[codes]
    ndim = codes.ndim
    scale = channel_vector(np.asarray(attrs["output_scale"], np.float32), ndim, axis)
    zero = channel_vector(np.asarray(attrs["output_zero_point"], np.int64), ndim, axis)
    offset = channel_vector(np.asarray(attrs["output_offset"], np.float32), ndim, axis)
    return (scale * (codes - zero).astype(np.float32) + offset).astype(np.float32)


def rescale(v, attrs, what, axis):
    """clamp((v·multiplier + addend + 2^(shift−1)) >> shift, saturate), per channel along
    `axis`, rounding half up with an arithmetic shift (exact)."""
    m = [int(a) for a in attrs[f"{what}_multiplier"]]
    k = [int(a) for a in attrs[f"{what}_shift"]]
    a = [int(b) for b in attrs[f"{what}_addend"]]
    lo, hi = (int(s) for s in attrs[f"{what}_saturate"])
    half = [(1 << (s - 1)) if s > 0 else 0 for s in k]
    largest = int(np.abs(v).max(initial=0))
    bound = largest * max(abs(x) for x in m) + max(abs(x) for x in a) + max(half)
    kind = np.int64 if bound < INT64_SAFE else object
    vec = lambda values: channel_vector(np.array(values, dtype=kind), v.ndim, axis)
    p = v.astype(kind) * vec(m) + vec(a) + vec(half)
    r = p >> vec(k)
    return np.clip(r, lo, hi).astype(np.int64)


def thresholds(v, attrs, what):
    """codes[i], i the number of thresholds below v."""
    t = np.asarray(attrs[f"{what}_thresholds"], np.int64)
    codes = np.asarray(attrs[f"{what}_codes"], np.int64)
    return codes[np.searchsorted(t, v, side="left")]


def exp2_neg(d, j, exp_bits, fraction_b):
    """2^(−d·2^−j)·2^exp_bits for d ≥ 0: integer part a shift, the fraction by the quadratic
    1 − (½ + b)t + bt² (b in units of 2^−16), rounded half up; 0 once the integer part passes
    exp_bits. Every intermediate is below 2^49."""
    q = d >> j
    f = d & ((1 << j) - 1)
    a = (1 << 15) + fraction_b
    poly = (1 << (16 + 2 * j)) - ((a * f) << j) + fraction_b * f * f
    drop = np.minimum(16 + 2 * j - exp_bits + q, 62)
    half = np.where(drop > 0, np.left_shift(1, np.maximum(drop - 1, 0)), 0)
    e = (poly + half) >> drop
    return np.where(q > exp_bits, 0, e)


def softmax(x, attrs):
    """qvit's integer Softmax over the last axis of attention logits handed over as floats
    (`input_scale` per accumulator unit): base-2 exponents at 2^−input_bits, the exponential
    of max − x, one reciprocal of the exact row sum normalised to 32 bits, probabilities at
    2^−probability_bits, then the output point's thresholds."""
    acc = np.round(x.astype(np.float64) / attrs["input_scale"]).astype(np.int64)
    xs = rescale(acc, attrs, "to_x", -1)
    j, exp_bits = attrs["input_bits"], attrs["exp_bits"]
    e = exp2_neg(xs.max(axis=-1, keepdims=True) - xs, j, exp_bits, attrs["fraction_b"])
    total = e.sum(axis=-1, keepdims=True)  # ≤ N·2^exp_bits
    bits = np.vectorize(lambda s: int(s).bit_length())(total)
    reciprocal = np.vectorize(lambda b, s: (1 << (int(b) + 31)) // int(s), otypes=[np.int64])(
        bits, total
    )  # in (2^31, 2^32]
    shift = bits + 31 - attrs["probability_bits"]
    p = (e * reciprocal + np.left_shift(1, shift - 1)) >> shift  # e·r ≤ 2^62
    return encode_output(thresholds(p, attrs, "output"), attrs, -1)


def layer_norm(x, attrs):
    """I-LayerNorm over the last axis: the input point's codes centred and shifted left per
    channel, the exact mean (half to even), ten Newton steps for the standard deviation from
    2^16, z = ((y − mean)·⌊(2^31 − 1)/std⌋) >> 1, then the output requantization (γ and β
    folded)."""
    q = decode(x, attrs, "input", -1)
    zero = channel_vector(np.asarray(attrs["input_zero_point"], np.int64), x.ndim, -1)
    shift = channel_vector(np.asarray(attrs["shift"], np.int64), x.ndim, -1)
    y = (q - zero) << shift
    c = y.shape[-1]
    total = y.sum(axis=-1, keepdims=True)
    floor, rest = np.divmod(total, c)
    mean = floor + (2 * rest > c) + ((2 * rest == c) & (floor % 2 == 1))
    var = ((y - mean) ** 2).sum(axis=-1, keepdims=True)  # ≤ 2^44, checked by qvit
    std = np.full_like(var, 1 << 16)
    for _ in range(10):
        std = (std + var // std) // 2
    z = ((y - mean) * ((2**31 - 1) // std)) >> 1
    return encode_output(rescale(z, attrs, "output", -1), attrs, -1)


def gelu(x, attrs):
    """qvit's integer GELU x·σ(z), z the tanh form, over accumulators handed over as floats
    (`input_scale` per channel of the last axis): x requantized to the GELU's grid, t =
    |z|·log2 e at 2^−input_bits from c1, c3 (exact, in Python integers per distinct |x|),
    e = 2^−t·2^exp_bits, σ to sigmoid_bits, then the output requantization."""
    unit = channel_vector(np.asarray(attrs["input_scale"], np.float64), x.ndim, -1)
    acc = np.round(x.astype(np.float64) / unit).astype(np.int64)
    xs = rescale(acc, attrs, "to_x", -1)
    a = np.minimum(np.abs(xs), attrs["limit"])
    values, where = np.unique(a, return_inverse=True)
    c1, c3, shift = attrs["c1"], attrs["c3"], attrs["shift"]
    half = (1 << shift) // 2
    t_values = np.array(
        [(c1 * int(v) + c3 * int(v) ** 3 + half) >> shift for v in values], dtype=object
    )
    j, exp_bits = attrs["input_bits"], attrs["exp_bits"]
    cap = (exp_bits + 1) << j
    t = np.minimum(t_values, cap).astype(np.int64)[where.reshape(a.shape)]
    e = exp2_neg(t, j, exp_bits, attrs["fraction_b"])
    one = 1 << exp_bits
    num = np.where(xs >= 0, one, e)
    sig = (num << attrs["sigmoid_bits"]) // (one + e)
    return encode_output(rescale(xs * sig, attrs, "output", -1), attrs, -1)


def linear_attention_normalize(x, attrs):
    """Linear attention's division, per head of [B, heads, d + 1, N]: rows 0..d are the
    dividends' codes, row d the divisors'. With a log2 divisor (`divide` = "shift") the code
    c shifts the product left; otherwise the dividend is divided by the code's integer value
    (`divisor_of_code`), rounding half up. Output [B, heads·d, height, width]."""
    heads, d = attrs["heads"], attrs["head_dim"]
    b, n = x.shape[0], x.shape[-1]
    dividends = decode(x[:, :, :d, :], attrs, "dividend", 1)
    codes = decode(x[:, :, d : d + 1, :], attrs, "divisor", 1)
    ch = lambda name: np.array([int(v) for v in attrs[name]], dtype=object).reshape(
        1, heads, d, 1
    ) if len(attrs[name]) > 1 else np.array(int(attrs[name][0]), dtype=object)
    m, k, a = ch("output_multiplier"), ch("output_shift"), ch("output_addend")
    lo, hi = (int(s) for s in attrs["output_saturate"])
    num = (dividends - attrs["dividend_zero"]).astype(object) * m
    if attrs["divide"] == "shift":
        p = (num << codes.astype(object)) + a
        y = (p + (1 << (k - 1))) >> k
    else:
        den = np.asarray(attrs["divisor_of_code"], np.int64)[codes].astype(object)
        zero = np.array([int(z) for z in attrs["output_zero_point"]], dtype=object)
        zero = zero.reshape(1, heads, d, 1) if zero.size > 1 else zero.reshape(())
        scaled = np.vectorize(lambda v, s: v << s, otypes=[object])(den, k)
        safe = np.where(den > 0, scaled, 1)
        divided = (2 * num + safe) // (2 * safe) + zero
        sign = np.vectorize(lambda v: (v > 0) - (v < 0), otypes=[object])(num)
        edge = np.where(sign > 0, hi, np.where(sign < 0, lo, zero))
        y = np.where(den > 0, divided, edge)
    y = np.clip(y, lo, hi).astype(np.int64).reshape(b, heads * d, attrs["height"], attrs["width"])
    return encode_output(y, attrs, 1)


STEPS = {
    "Softmax": softmax,
    "LayerNorm": layer_norm,
    "Gelu": gelu,
    "LinearAttentionNormalize": linear_attention_normalize,
}
