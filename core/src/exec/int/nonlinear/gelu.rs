//! The executor's integer GELU: the tanh form `GELU(x) ≈ x·σ(z)`, `z = 2·√(2/π)·(x + 0.044715x³)`
//! (within 5·10^−4 of the exact erf GELU), with the sigmoid from one base-2 exponential.
//!
//! I-ViT's ShiftGELU ([`super::shift_gelu`]) uses `x·σ(1.702x)`, itself up to 0.02 from GELU,
//! a 7-bit sigmoid and a row maximum that saturates both of its exponentials once the row's
//! maximum passes ~16/1.702. Here, per element and with no row reduction:
//!
//! - `t = |z|·log2 e` at `2^−GELU_INPUT_BITS`, from the integer input `x` (scale `s`) as
//!   `t = (c1·|x| + c3·|x|³ + 2^(shift−1)) >> shift` in i128, `c1` and `c3` the constants
//!   `2√(2/π)·log2 e·s` and `2√(2/π)·0.044715·log2 e·s³` as integers at `2^−(shift−10)`;
//!   `|x|` is first clamped where `e^−|z|` is below `2^−30` anyway, which bounds `|x|³`.
//! - `e = 2^−t·2^30` by the Softmax's exponential ([`super::softmax::exp2_neg`], within 0.27 %).
//! - `σ = 2^30/(2^30 + e)` for `x ≥ 0` and `e/(2^30 + e)` below, one division (tabulated
//!   once per `t`: `σ` depends on nothing else), to `SIGMOID_BITS` bits; the output is `x·σ`
//!   at scale `s·2^−SIGMOID_BITS`.

use serde::Serialize;

use super::softmax::{EXP_BITS, exp2_neg};

/// Fraction bits of the base-2 exponent `t`.
pub const GELU_INPUT_BITS: u32 = 10;

/// Bits of the integer sigmoid.
pub const SIGMOID_BITS: u32 = 15;

/// `2·√(2/π)·log2 e`: the tanh form's slope as a base-2 exponent.
const SLOPE: f64 = 2.0 * 0.797_884_560_802_865_4 * std::f64::consts::LOG2_E;
const CUBIC: f64 = 0.044_715;

/// The integer constants of the GELU for an input at scale `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GeluConstants {
    pub c1: i64,
    pub c3: i64,
    pub shift: u32,
    /// `|x|` is clamped to this before `t` is formed (`e` is 0 from well below it).
    pub limit: i64,
}

impl GeluConstants {
    /// For inputs at scale `s`; `None` when `s` is not a positive finite number or so large
    /// that a single step passes 2^20 (no activation quantizer gives such a scale).
    pub fn new(s: f64) -> Option<Self> {
        if !(s.is_finite() && s > 0.0 && s < (1u64 << 20) as f64) {
            return None;
        }
        let unit = (1u64 << GELU_INPUT_BITS) as f64;
        let a = SLOPE * s * unit;
        let b = SLOPE * CUBIC * s * s * s * unit;
        // c1 < 2^62 with as many fraction bits as fit; c3 = b/a·c1 ≤ c1 while s² < 1/0.0447.
        let shift = (61 - a.log2().ceil() as i64).clamp(0, 100) as u32;
        let c1 = (a * 2f64.powi(shift as i32)).round() as i64;
        let c3 = (b * 2f64.powi(shift as i32)).round().min(i64::MAX as f64) as i64;
        // |z| ≥ 1.6·|v|: at |v| = 14 bits, e^−|z| < 2^−30 (t > 31 at any s).
        let limit = (14.0 / s).ceil().max(1.0) as i64;
        Some(Self {
            c1,
            c3,
            shift,
            limit,
        })
    }
}

/// `x·σ(z)` for an integer `x` at scale `s` (the constants' scale): at scale `s·2^−SIGMOID_BITS`.
#[inline]
pub fn gelu(x: i32, k: &GeluConstants) -> i64 {
    let a = (x.unsigned_abs() as i64).min(k.limit) as i128;
    let poly = k.c1 as i128 * a + k.c3 as i128 * a * a * a;
    let t = (poly + (1i128 << k.shift) / 2) >> k.shift;
    let [above, below] = sigmoids()[t.min(CAP as i128) as usize];
    x as i64 * i64::from(if x >= 0 { above } else { below })
}

/// The largest `t` the sigmoid distinguishes: past `EXP_BITS + 1` whole units `e` is 0.
const CAP: usize = ((EXP_BITS as usize) + 1) << GELU_INPUT_BITS;

/// `σ` to `SIGMOID_BITS` bits for every `t` in `0..=CAP`, for `x ≥ 0` and for `x < 0`:
/// `⌊2^30·2^15/(2^30 + e)⌋` and `⌊e·2^15/(2^30 + e)⌋` with `e = 2^−t` ([`exp2_neg`]). The
/// division per element cost more than the rest of DeiT's fc1 epilogue; the sigmoid depends on
/// `t` alone, so it is a table shared by every layer (124 KiB, built once per process).
fn sigmoids() -> &'static [[u16; 2]] {
    static TABLE: std::sync::OnceLock<Vec<[u16; 2]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=CAP as i64)
            .map(|t| {
                let [above, below] = sigmoid_pair(t);
                // Both are at most 2^SIGMOID_BITS = 32,768.
                [above as u16, below as u16]
            })
            .collect()
    })
}

/// `σ` for `x ≥ 0` and `x < 0` at exponent `t`, by division (the table's definition).
fn sigmoid_pair(t: i64) -> [i64; 2] {
    let e = exp2_neg(t, GELU_INPUT_BITS);
    let one = 1i64 << EXP_BITS;
    [
        (one << SIGMOID_BITS) / (one + e),
        (e << SIGMOID_BITS) / (one + e),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(v: f64) -> f64 {
        v * 0.5 * (1.0 + libm::erf(v / std::f64::consts::SQRT_2))
    }

    /// The division the table replaces, for every input of two grids and past the clamp.
    #[test]
    fn the_table_equals_the_division() {
        for s in [0.0018, 0.02, 0.25] {
            let k = GeluConstants::new(s).unwrap();
            for x in -(k.limit as i32 + 50)..=(k.limit as i32 + 50) {
                let a = (x.unsigned_abs() as i64).min(k.limit) as i128;
                let poly = k.c1 as i128 * a + k.c3 as i128 * a * a * a;
                let t = ((poly + (1i128 << k.shift) / 2) >> k.shift).min(CAP as i128) as i64;
                let [above, below] = sigmoid_pair(t);
                let want = x as i64 * if x >= 0 { above } else { below };
                assert_eq!(gelu(x, &k), want, "s = {s}, x = {x}");
            }
        }
        assert!(sigmoid_pair(0)[0] <= 1 << SIGMOID_BITS && sigmoid_pair(CAP as i64)[1] == 0);
    }

    #[test]
    fn by_hand() {
        let s = 0.01;
        let k = GeluConstants::new(s).unwrap();
        let real = |x: i32| gelu(x, &k) as f64 * s / (1u64 << SIGMOID_BITS) as f64;
        assert_eq!(gelu(0, &k), 0);
        // GELU(1) = 0.8413, GELU(−1) = −0.1587, GELU(3) = 2.9960; far out: x and 0.
        assert!((real(100) - 0.8413).abs() < 1e-3, "{}", real(100));
        assert!((real(-100) + 0.1587).abs() < 1e-3, "{}", real(-100));
        assert!((real(300) - 2.9960).abs() < 2e-3, "{}", real(300));
        assert!((real(5000) - 50.0).abs() < 2e-3);
        assert_eq!(gelu(-5000, &k), 0);
        // The symmetry x·σ(z) − (−x)·σ(−z) = x holds to the sigmoid's rounding.
        let (p, m) = (gelu(40, &k), gelu(-40, &k));
        assert!(((p - m) as f64 / 32768.0 - 40.0).abs() < 0.01);
        assert!(GeluConstants::new(0.0).is_none() && GeluConstants::new(f64::NAN).is_none());
    }

    /// Exhaustive over every input code in [−8, 8] at 801 scales from 0.001 to 0.5 (covering
    /// the executor's grids, a quarter of an activation step): the worst error against the
    /// exact GELU is 0.00061 (s = 0.0018, x = 715): the tanh form's own 0.0005 and the
    /// exponential's 0.27 % on the sigmoid. Exhaustive, so the bound is the measured maximum.
    #[test]
    fn close_to_the_exact_gelu() {
        let mut worst = (0.0f64, 0.0, 0);
        for i in 0..=800 {
            let s = 0.001 * (500f64).powf(i as f64 / 800.0);
            let k = GeluConstants::new(s).unwrap();
            let limit = (8.0 / s).round() as i32;
            for x in -limit..=limit {
                let got = gelu(x, &k) as f64 * s / (1u64 << SIGMOID_BITS) as f64;
                let err = (got - exact(x as f64 * s)).abs();
                if err > worst.0 {
                    worst = (err, s, x);
                }
            }
        }
        assert!(
            worst.0 < 0.001,
            "error {} at s = {}, x = {}",
            worst.0,
            worst.1,
            worst.2
        );
    }
}
