//! I-ViT's shift-based exponential and the two functions built on it, Shiftmax and ShiftGELU.
//!
//! Semantics (`i-vit.md` §6.1): all intermediates in i64; `e^(x·s)` is computed as
//! `2^(x·s·log2 e)` with `log2 e ≈ 1 + 1/2 − 1/16` done by shifts, the integer part of the
//! exponent becomes a shift and the fraction `r` a linear term, `2^(r·s) ≈ 1 + r·s/2`. `x0 =
//! ⌊−1/s⌋` is "−1" in input units and is precomputed per layer. The mantissa is
//! `((r − 2·x0) << (n − q)) >> 1`, the exact value of I-ViT's PyTorch formula (its TVM graph
//! floors `r/2` first and differs on odd `r`).

/// `≈ e^(d·s)·2^n` in units of `|x0|`, for `x0 = ⌊−1/s⌋ < 0`.
///
/// For `d ≤ 0` (Shiftmax and ShiftGELU's `x − max`) the exponent is clamped at `n·x0`, so the
/// smallest result is about `2^−n`, never 0. ShiftGELU also passes the positive `−max` of a
/// row whose values are all negative; there `q` is negative and the result grows as `2^(n−q)`.
/// It saturates at the largest power of two whose mantissa still fits 62 bits (I-ViT's TVM
/// graph overflows int32 here); GELU's output is then 0, as it should be.
#[inline]
pub fn shift_exp(d: i64, x0: i64, n: u32) -> i64 {
    debug_assert!(x0 < 0);
    let d = d + (d >> 1) - (d >> 4);
    let d = d.max(n as i64 * x0);
    let q = floor_div(d, x0);
    let growth_limit = 62 - n as i64 - (64 - (-2 * x0).leading_zeros() as i64);
    if q < -growth_limit {
        return (-2 * x0) << (n as i64 + growth_limit) >> 1;
    }
    let r = d - x0 * q;
    ((r - 2 * x0) << (n as i64 - q)) >> 1
}

/// `⌊a/b⌋` for `b ≠ 0` (Rust's `/` truncates toward zero).
#[inline]
pub fn floor_div(a: i64, b: i64) -> i64 {
    let q = a / b;
    if a % b != 0 && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

/// Shiftmax over one row of integer logits `x` (scale `s`, `x0 = ⌊−1/s⌋`): outputs in
/// `0 ..= 2^(b−1) − 1` at scale `2^−(b−1)`. The sum is exact in i64 and clamped to `2^31 − 1`
/// as in I-ViT's simulator; `f = ⌊(2^31 − 1)/S⌋`, `out = (e·f) >> (32 − b)`.
pub fn shiftmax(x: &[i32], x0: i64, n: u32, b: u32, exps: &mut Vec<i64>, out: &mut [i32]) {
    let m = x.iter().copied().max().unwrap_or(0) as i64;
    exps.clear();
    exps.extend(x.iter().map(|&v| shift_exp(v as i64 - m, x0, n)));
    let sum = exps.iter().sum::<i64>().min(i32::MAX as i64);
    let f = i32::MAX as i64 / sum.max(1);
    for (o, &e) in out.iter_mut().zip(exps.iter()) {
        *o = ((e * f) >> (32 - b)) as i32;
    }
}

/// ShiftGELU over one row `x` at scale `s` (`x0 = ⌊−1/(s·1.702)⌋`, `n = 23` in I-ViT), exactly
/// as I-ViT's simulator computes it: `GELU(x) ≈ x·σ(1.702x)`, with the sigmoid as
/// `e1/(e1 + e2)`, `e1 = exp(x − max)`, `e2 = exp(−max)`, the sum clamped to `2^31 − 1` so that
/// `f = ⌊(2^31 − 1)/S⌋ ≥ 1`. Writes `y = x·sig` at scale `s·2^−7`, `sig` in `0..=127`. Kept so
/// that I-ViT's arithmetic can be reproduced bit for bit; the executor runs [`super::gelu`].
pub fn shift_gelu(x: &[i32], x0: i64, n: u32, out: &mut [i64]) {
    let m = x.iter().copied().max().unwrap_or(0) as i64;
    let e2 = shift_exp(-m, x0, n);
    for (o, &v) in out.iter_mut().zip(x) {
        let e1 = shift_exp(v as i64 - m, x0, n);
        let f = i32::MAX as i64 / (e1 + e2).clamp(1, i32::MAX as i64);
        let sig = (e1 * f) >> 24;
        *o = v as i64 * sig;
    }
}

/// `⌊−1/s⌋` for a scale `s` as the layer's f32 constant (I-ViT computes it in f32).
pub fn exp_unit(s: f64) -> i64 {
    (-1.0f32 / s as f32).floor() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `i-vit.md` §2 worked example.
    #[test]
    fn shiftmax_worked_example() {
        let x = [-37, -112, -21, 54, 119, 74, 105, -122];
        let x0 = exp_unit(0.1);
        assert_eq!(x0, -10);
        let m = 119;
        let e: Vec<i64> = x.iter().map(|&v| shift_exp(v - m, x0, 15)).collect();
        assert_eq!(e, [10, 10, 10, 544, 327680, 3840, 81920, 10]);
        let mut buf = Vec::new();
        let mut out = [0; 8];
        shiftmax(&x.map(|v| v as i32), x0, 15, 16, &mut buf, &mut out);
        assert_eq!(out, [0, 0, 0, 43, 25930, 303, 6482, 0]);
        shiftmax(&x.map(|v| v as i32), x0, 15, 8, &mut buf, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 101, 1, 25, 0]);
    }

    /// `i-vit.md` §3 worked example.
    #[test]
    fn shift_gelu_worked_example() {
        let x = [-100, -20, -5, 0, 3, 17, 60, 127];
        let x0 = exp_unit((0.05f32 * 1.702) as f64);
        assert_eq!(x0, -12);
        assert_eq!(shift_exp(-127, x0, 23), 2688);
        let mut y = [0i64; 8];
        shift_gelu(&x, x0, 23, &mut y);
        assert_eq!(y, [0, -420, -265, 0, 219, 1751, 7620, 16002]);
    }

    #[test]
    fn exp_of_zero_is_two_to_the_n() {
        // d = 0: q = 0, r = 0, mantissa (0 − 2·x0) << n >> 1 = |x0|·2^n.
        assert_eq!(shift_exp(0, -10, 15), 10 << 15);
    }

    /// A row whose maximum is negative: `e2` is huge, I-ViT clamps the sum to `2^31 − 1`, so
    /// `f = 1` and `sig = e1 >> 24` (s = 0.05, x = −40: e1 = 12·2^23, sig = 6, y = −240; the
    /// real GELU(−2)/0.05·2^7 is −116.5).
    #[test]
    fn gelu_of_an_all_negative_row_follows_i_vit() {
        let x0 = exp_unit((0.05f32 * 1.702) as f64);
        let mut y = [0i64; 1];
        shift_gelu(&[-40], x0, 23, &mut y);
        assert_eq!(y, [-240]);
        let mut y = [0i64; 3];
        shift_gelu(&[-400, -350, -300], x0, 23, &mut y);
        // Only the row maximum has e1 = 12·2^23 (sig 6); the others' e1 < 2^24 give sig 0.
        assert_eq!(y, [0, 0, -1800]);
    }

    proptest::proptest! {
        /// Shiftmax is a probability distribution up to its approximation: outputs sum to about
        /// 2^(b−1) and the largest logit gets the largest output.
        #[test]
        fn shiftmax_sums_to_one(xs in proptest::collection::vec(-127i32..=127, 1..64), s in 0.02f64..0.5) {
            let mut buf = Vec::new();
            let mut out = vec![0; xs.len()];
            shiftmax(&xs, exp_unit(s), 15, 16, &mut buf, &mut out);
            let sum: i64 = out.iter().map(|&v| v as i64).sum();
            // Each output floors (≤ 1 lost) and so does f (≤ S/2^16 lost in all).
            let s_total: i64 = buf.iter().sum();
            let loss = xs.len() as i64 + s_total / (1 << 16) + 1;
            proptest::prop_assert!(sum <= 1 << 15 && sum >= (1 << 15) - loss, "sum {sum}, allowed loss {loss}");
            let arg = xs.iter().enumerate().max_by_key(|(i, v)| (**v, -(*i as i64))).unwrap().0;
            proptest::prop_assert_eq!(out[arg], *out.iter().max().unwrap());
        }

        /// The shift exponential is `2^t` (t the exponent in units of `x0`, clamped at −n)
        /// times at most the 6.2 % of the linear `2^r` term, never below it.
        #[test]
        fn shift_exp_is_two_to_the_scaled_exponent(d in -4000i64..=0, x0 in -200i64..=-2) {
            let got = shift_exp(d, x0, 15) as f64 / (-x0 as f64 * 32768.0);
            let scaled = d + (d >> 1) - (d >> 4);
            let t = (scaled as f64 / -x0 as f64).max(-15.0);
            let want = t.exp2();
            proptest::prop_assert!(got >= want * (1.0 - 1e-9) - 1.0 / (-x0 as f64 * 32768.0), "{got} < {want}");
            proptest::prop_assert!(got <= want * 1.062, "{got} vs {want}");
        }
    }
}
