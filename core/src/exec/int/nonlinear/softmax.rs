//! The executor's integer Softmax: exact normalisation at any token count.
//!
//! I-ViT's [`shiftmax`](super::shiftmax) divides `2^31 − 1` by the row sum once and multiplies
//! every exponential by that integer. The integer is small when the sum is large (1 when the
//! sum passes 2^30), so rows sum to as little as half of one; and its `log2 e ≈ 1.4375` by
//! shifts and linear `2^−t ≈ 1 − t/2` bend every exponential by up to 6 %. Here:
//!
//! - **Base-2 input.** The compiler folds `log2 e` into the logits' requantization, so the
//!   input `x` is a base-2 exponent at `2^−j`: `e^(logit) = 2^(x·2^−j)`, with no shift-add
//!   approximation of `log2 e`.
//! - **Exponential.** `d = max − x ≥ 0` splits into an integer part `q = d >> j`, a shift, and
//!   a fraction `t = (d mod 2^j)/2^j` whose power `2^−t` is the quadratic `1 − a·t + b·t²`
//!   ([`FRACTION_B`], `a = ½ + b`, so the value at `t = 1` is exactly ½ and the exponential is
//!   continuous and monotone): within 0.27 % of `2^−t`. The row maximum's exponential is
//!   `2^EXP_BITS` exactly; values below `2^−EXP_BITS` of it are 0.
//! - **Normalisation.** The exact i64 row sum `S` gets one reciprocal per row, normalised to
//!   32 significant bits: `r = ⌊2^(t+31)/S⌋` with `2^(t−1) ≤ S < 2^t`, so `2^31 < r ≤ 2^32`;
//!   each output is `(e·r + 2^(L−1)) >> L` with `L = t + 31 − PROBABILITY_BITS` (round half
//!   up, as every requantization), at scale `2^−PROBABILITY_BITS`. Every output is then within
//!   half a unit plus `2^−31` relative of `e/S`, so a row sums to one within `N/2` units of
//!   `2^−PROBABILITY_BITS` (1.2·10^−4 at 4,096 tokens).
//!
//! Bounds: `e ≤ 2^30` and `r ≤ 2^32`, so `e·r ≤ 2^62`; `S ≤ N·2^30` fits i64 (and `2^(t+31)`
//! u128) for up to 2^32 tokens, which the compiler checks.

#![allow(unsafe_code)]

use crate::exec::int::kernels::exps::row_exps;
use crate::exec::int::kernels::{Isa, Width, width};
use crate::exec::spare::resize_to_overwrite;

/// The row maximum's exponential: `2^EXP_BITS`.
pub const EXP_BITS: u32 = 30;

/// Outputs are probabilities at scale `2^−PROBABILITY_BITS`.
pub const PROBABILITY_BITS: u32 = 24;

/// The input grids this function supports: `x` at `2^−j` base-2 units, `j` in this range
/// (the fraction's square `f²·b` needs `16 + 2j ≤ 48` bits; below 7 the mantissa would need a
/// left shift and the grid is too coarse to be useful).
pub const INPUT_BITS: std::ops::RangeInclusive<u32> = 7..=16;

/// The grid the compiler chooses: a logit resolution of `2^−10` in base 2 (0.07 % in
/// probability), far below the quadratic's 0.27 %.
pub const COMPILED_INPUT_BITS: u32 = 10;

/// `b` of the fraction's quadratic `2^−t ≈ 1 − (½ + b)·t + b·t²` in units of `2^−16`: the
/// minimax choice (0.1699) for relative error on `[0, 1)`.
pub const FRACTION_B: i64 = 11_135;

/// `2^−(d·2^−j)·2^EXP_BITS`, rounded, for `d ≥ 0` (0 once `d·2^−j` passes `EXP_BITS`).
#[inline]
pub fn exp2_neg(d: i64, j: u32) -> i64 {
    debug_assert!(d >= 0 && INPUT_BITS.contains(&j));
    let q = d >> j;
    if q > EXP_BITS as i64 {
        return 0;
    }
    let f = d & ((1 << j) - 1);
    let a = (1 << 15) + FRACTION_B;
    // (1 − a·t + b·t²)·2^(16+2j), t = f/2^j: at most 2^48.
    let poly = (1i64 << (16 + 2 * j)) - ((a * f) << j) + FRACTION_B * f * f;
    let drop = 16 + 2 * j - EXP_BITS + q as u32;
    if drop == 0 {
        return poly;
    }
    (poly + (1 << (drop - 1))) >> drop
}

/// Softmax of one row of base-2 logits `x` (real exponent `x·2^−j`): probabilities at scale
/// `2^−PROBABILITY_BITS` in `out`. `exps` is scratch. An empty row writes nothing.
/// The exponentials run in `isa`'s lanes (the same integers on every ISA).
pub fn softmax_row(isa: Isa, x: &[i32], j: u32, exps: &mut Vec<i64>, out: &mut [i32]) {
    // Every exponential is written: a buffer long enough keeps its contents.
    resize_to_overwrite(exps, x.len());
    match width(isa) {
        // SAFETY (both): `width` found the features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => unsafe { softmax_row_avx512(isa, x, j, exps, out) },
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => unsafe { softmax_row_avx2(isa, x, j, exps, out) },
        _ => softmax_row_portable(isa, x, j, exps, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn softmax_row_avx2(isa: Isa, x: &[i32], j: u32, exps: &mut [i64], out: &mut [i32]) {
    softmax_row_portable(isa, x, j, exps, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn softmax_row_avx512(isa: Isa, x: &[i32], j: u32, exps: &mut [i64], out: &mut [i32]) {
    softmax_row_portable(isa, x, j, exps, out)
}

/// [`softmax_row`]'s body, whose maximum, sum and normalisation vectorise under the
/// wrappers above (the exponentials dispatch on their own).
#[inline(always)]
fn softmax_row_portable(isa: Isa, x: &[i32], j: u32, exps: &mut [i64], out: &mut [i32]) {
    if x.is_empty() {
        return;
    }
    // A fold by value, which vectorises (`Iterator::max` by reference does not).
    let m = x.iter().copied().fold(i32::MIN, i32::max);
    row_exps(isa, x, m, j, exps);
    let norm = Normaliser::new(exps.iter().sum());
    for (o, &e) in out.iter_mut().zip(exps.iter()) {
        *o = norm.apply(e);
    }
}

/// A row's normalisation: one reciprocal of its exponentials' sum, normalised to 32
/// significant bits, and the shift that brings `e·r` to `2^−PROBABILITY_BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normaliser {
    /// `⌊2^(bits+31)/sum⌋`, in `(2^31, 2^32]`.
    pub reciprocal: i64,
    /// `bits + 31 − PROBABILITY_BITS`, from 38 up.
    pub shift: u32,
}

impl Normaliser {
    /// For a row's sum, at least `2^EXP_BITS` (its maximum's exponential), so `bits ≥ 31`.
    #[inline(always)]
    pub fn new(sum: i64) -> Self {
        debug_assert!(sum >= 1 << EXP_BITS);
        let bits = 64 - sum.leading_zeros();
        Self {
            reciprocal: ((1u128 << (bits + 31)) / sum as u128) as i64,
            shift: bits + 31 - PROBABILITY_BITS,
        }
    }

    /// The probability of an exponential `e` of the row: `(e·r + 2^(shift−1)) >> shift`.
    #[inline(always)]
    pub fn apply(&self, e: i64) -> i32 {
        ((e * self.reciprocal + (1 << (self.shift - 1))) >> self.shift) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_by_hand() {
        let j = 10;
        // d = 0: exactly 2^30; one whole unit halves it; half a unit is 1 − 0.6699/2 + 0.1699/4
        // = 0.70752 (2^−½ = 0.70711).
        assert_eq!(exp2_neg(0, j), 1 << 30);
        assert_eq!(exp2_neg(1 << j, j), 1 << 29);
        assert_eq!(exp2_neg(3 << j, j), 1 << 27);
        let half = exp2_neg(1 << (j - 1), j) as f64 / (1u64 << 30) as f64;
        assert!((half - 0.707_52).abs() < 1e-5, "{half}");
        // 30 whole units: 1; beyond: 0.
        assert_eq!(exp2_neg(30 << j, j), 1);
        assert_eq!(exp2_neg(31 << j, j), 0);
    }

    #[test]
    fn equal_logits_share_one_exactly() {
        let mut exps = Vec::new();
        for n in [1usize, 2, 50, 197, 3855, 4096] {
            let mut out = vec![0; n];
            softmax_row(
                Isa::Scalar,
                &vec![-77; n],
                COMPILED_INPUT_BITS,
                &mut exps,
                &mut out,
            );
            let want = ((1u64 << PROBABILITY_BITS) as f64 / n as f64).round() as i32;
            assert!(out.iter().all(|&p| p == want), "{n}: {:?}", &out[..1]);
        }
    }

    #[test]
    fn a_dominant_logit_takes_everything() {
        let mut out = [0; 3];
        softmax_row(Isa::Scalar, &[0, 1 << 20, 5], 10, &mut Vec::new(), &mut out);
        assert_eq!(out, [0, 1 << PROBABILITY_BITS, 0]);
    }

    /// Exhaustive over one unit of the fraction at every supported grid: within 0.27 % of
    /// `2^−t`, and never increasing with `d`.
    #[test]
    fn exponential_is_close_and_monotone() {
        for j in INPUT_BITS {
            let mut last = i64::MAX;
            for d in 0..=(2i64 << j) {
                let got = exp2_neg(d, j);
                assert!(got <= last, "j = {j}, d = {d}");
                last = got;
                let want = (-(d as f64) / (1u64 << j) as f64).exp2() * (1u64 << 30) as f64;
                assert!((got as f64 / want - 1.0).abs() < 0.0027, "j = {j}, d = {d}");
            }
        }
    }

    proptest::proptest! {
        /// Rows sum to one within 1 % (and within N/2 output units) on every supported grid,
        /// for 2 to 4,096 tokens and logit spreads 0–16 (natural units), and the outputs are
        /// within 0.6 % + one unit of the exact softmax; every ISA's are the scalar ones.
        #[test]
        fn rows_sum_to_one_and_follow_softmax(
            n in 2usize..=4096,
            spread in 0.0f64..=16.0,
            j in INPUT_BITS,
            seed in 0u64..1 << 32,
        ) {
            let mut rng = crate::rng::Rng::new(seed);
            let unit = std::f64::consts::LN_2 / (1u64 << j) as f64;
            let x: Vec<i32> = (0..n)
                .map(|_| (rng.uniform(0.0, spread as f32) as f64 / unit).round() as i32)
                .collect();
            let mut out = vec![0; n];
            softmax_row(Isa::Scalar, &x, j, &mut Vec::new(), &mut out);
            // Every ISA's lanes give the same integers (a reused, longer scratch included).
            let mut exps = vec![-1; n + 3];
            for isa in Isa::available() {
                let mut lanes = vec![0; n];
                softmax_row(isa, &x, j, &mut exps, &mut lanes);
                proptest::prop_assert_eq!(&lanes, &out, "{}", isa.name());
            }
            let one = (1u64 << PROBABILITY_BITS) as f64;
            let sum: i64 = out.iter().map(|&p| p as i64).sum();
            proptest::prop_assert!((sum as f64 - one).abs() <= (n as f64 / 2.0 + 1.0).min(0.01 * one),
                "n = {}, j = {}: sum {} of {}", n, j, sum, one);
            let m = *x.iter().max().unwrap() as f64;
            let e: Vec<f64> = x.iter().map(|&v| ((v as f64 - m) * unit).exp()).collect();
            let total: f64 = e.iter().sum();
            for (&p, &ei) in out.iter().zip(&e) {
                let want = ei / total * one;
                proptest::prop_assert!((p as f64 - want).abs() <= 0.006 * want + 1.0,
                    "n = {}, j = {}: {} vs {}", n, j, p, want);
            }
        }
    }
}
