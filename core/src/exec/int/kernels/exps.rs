//! The Softmax's exponentials of one row in lanes: [`exp2_neg`] of `max − x` for every logit,
//! written without its early return (the quadratic is formed for every lane, the integer part
//! capped so the shift stays below 64, and lanes past `2^−EXP_BITS` are set to 0 afterwards)
//! and with its positive polynomial shifted as unsigned, which AVX2 has (`vpsrlvq`). One
//! portable body, also compiled for AVX2 and AVX-512 and chosen at run time; the same integers
//! as [`exp2_neg`] (tested on every input of its range).
#![allow(unsafe_code)]

use super::Isa;
use crate::exec::int::nonlinear::softmax::{EXP_BITS, FRACTION_B, INPUT_BITS};

/// `out[i] = exp2_neg(max − x[i], j)` for a row whose maximum is `max`.
pub fn row_exps(isa: Isa, x: &[i32], max: i32, j: u32, out: &mut [i64]) {
    assert!(
        INPUT_BITS.contains(&j),
        "input grid 2^−{j} outside {INPUT_BITS:?}"
    );
    by_width!(isa, avx512, avx2, portable, (x, max, j, out))
}

// The bounds [`exp2_neg_lane`]'s 32-bit products rest on.
const _: () = assert!(*INPUT_BITS.end() <= 16 && (1 << 15) + FRACTION_B < 1 << 16);
const _: () = assert!(FRACTION_B < 1 << 14);

/// [`exp2_neg`] without branches, for `d ≥ 0` and `j` in [`INPUT_BITS`].
///
/// [`exp2_neg`]: crate::exec::int::nonlinear::softmax::exp2_neg
#[inline(always)]
pub fn exp2_neg_lane(d: i64, j: u32) -> i64 {
    let q = (d >> j).min(EXP_BITS as i64 + 1);
    // `f < 2^j ≤ 2^16`, `a < 2^16` and `B·f < 2^30`: each product is of two 32-bit unsigned
    // values, one `vpmuludq` (in i64 the compiler had built each from three, with shifts).
    let f = (d & ((1 << j) - 1)) as u32 as u64;
    let a = ((1 << 15) + FRACTION_B) as u32 as u64;
    let b = FRACTION_B as u32 as u64;
    let (af, bff) = ((a * f) as i64, (((b * f) as u32 as u64) * f) as i64);
    // Positive: the quadratic is at least ½·2^(16+2j) on [0, 1).
    let poly = (1i64 << (16 + 2 * j)) - (af << j) + bff;
    // 2j − 14 ≤ drop ≤ 2j + 17: no shift reaches 64.
    let drop = 16 + 2 * j - EXP_BITS + q as u32;
    let half = (1i64 << drop) >> 1;
    let e = ((poly + half) as u64 >> drop) as i64;
    if q > EXP_BITS as i64 { 0 } else { e }
}

#[inline(always)]
fn portable(x: &[i32], max: i32, j: u32, out: &mut [i64]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp2_neg_lane(max as i64 - v as i64, j);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2(x: &[i32], max: i32, j: u32, out: &mut [i64]) {
    portable(x, max, j, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn avx512(x: &[i32], max: i32, j: u32, out: &mut [i64]) {
    portable(x, max, j, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::nonlinear::softmax::exp2_neg;

    /// Every `d` up to past the cut-off, at every supported grid, on every ISA.
    #[test]
    fn every_input_equals_the_scalar_exponential() {
        for j in INPUT_BITS {
            let top = ((EXP_BITS as i64 + 2) << j) as i32;
            let x: Vec<i32> = (-top..=0).collect();
            let want: Vec<i64> = x.iter().map(|&v| exp2_neg(-(v as i64), j)).collect();
            for isa in Isa::available() {
                let mut got = vec![-1; x.len()];
                row_exps(isa, &x, 0, j, &mut got);
                assert_eq!(got, want, "{} j = {j}", isa.name());
            }
        }
    }
}
