//! The Softmax's exponentials of one row in lanes: [`exp2_neg`] of `max − x` for every logit,
//! written without its early return (the quadratic is formed for every lane, the integer part
//! capped so the shift stays below 64, and lanes past `2^−EXP_BITS` are set to 0 afterwards)
//! and with its positive polynomial shifted as unsigned, which AVX2 has (`vpsrlvq`). One
//! portable body, also compiled for AVX2 and AVX-512 and chosen at run time; the same integers
//! as [`exp2_neg`] (tested on every input of its range).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::ops::RangeInclusive;

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

/// The input grids [`Exp512`] takes: from `2^−8`, where the rounding drops at least two bits
/// (`2j − 14`), to `2^−15`, where the quadratic's terms below stay whole.
pub const LANE32_INPUT_BITS: RangeInclusive<u32> = 8..=15;

// The bounds [`Exp512::of`]'s 32-bit terms rest on: `a = 2^15 + B < 2^16` and `B < 2^14`.
const _: () = assert!((1 << 15) + FRACTION_B < 1 << 16 && FRACTION_B < 1 << 14);
const _: () = assert!(EXP_BITS == 30);

/// [`exp2_neg`] of 16 differences `d = max − x` in 32-bit lanes (read as unsigned, so any two
/// i32 logits' difference is exact), for `j` in [`LANE32_INPUT_BITS`]: twice the lanes of
/// [`exp2_neg_lane`]'s i64 and three 32-bit products instead of four 64-bit ones.
///
/// With `s = 2j − 15`, rounding the quadratic `poly` half up by `drop = s + 1 + q` bits is
/// `((⌊poly/2^s⌋ >> q) + 1) >> 1` (adding one then halving rounds the same as adding half the
/// last bit first), and since `a = 2^15 + B`, with `g = B·f`,
///
/// `R = ⌊poly/2^s⌋ = 2^31 − (f·2^(30−j) + g·2^(15−j)) + (g >> s)·f + ⌊(g mod 2^s)·f/2^s⌋`:
///
/// `f < 2^j`, `g < 2^(14+j)`, the subtracted `a·f·2^(15−j) < 2^31`, the products below 2^29 and
/// 2^30, and `R` in `[2^30, 2^31]`: every step is exact in u32.
///
/// [`exp2_neg`]: crate::exec::int::nonlinear::softmax::exp2_neg
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Exp512 {
    j: __m128i,
    s: __m128i,
    f_up: __m128i,
    g_up: __m128i,
    fraction: __m512i,
    low: __m512i,
    b: __m512i,
}

#[cfg(target_arch = "x86_64")]
impl Exp512 {
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(j: u32) -> Self {
        assert!(
            LANE32_INPUT_BITS.contains(&j),
            "input grid 2^−{j} outside {LANE32_INPUT_BITS:?}"
        );
        let s = 2 * j - 15;
        let count = |c: u32| _mm_cvtsi32_si128(c as i32);
        Self {
            j: count(j),
            s: count(s),
            f_up: count(30 - j),
            g_up: count(15 - j),
            fraction: _mm512_set1_epi32((1 << j) - 1),
            low: _mm512_set1_epi32((1 << s) - 1),
            b: _mm512_set1_epi32(FRACTION_B as i32),
        }
    }

    /// `exp2_neg(d, j)` of each lane of `d`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn of(&self, d: __m512i) -> __m512i {
        let q = _mm512_srl_epi32(d, self.j);
        let f = _mm512_and_si512(d, self.fraction);
        let g = _mm512_mullo_epi32(f, self.b);
        let af = _mm512_add_epi32(
            _mm512_sll_epi32(f, self.f_up),
            _mm512_sll_epi32(g, self.g_up),
        );
        let bff = _mm512_add_epi32(
            _mm512_mullo_epi32(_mm512_srl_epi32(g, self.s), f),
            _mm512_srl_epi32(_mm512_mullo_epi32(_mm512_and_si512(g, self.low), f), self.s),
        );
        let r = _mm512_add_epi32(_mm512_sub_epi32(_mm512_set1_epi32(i32::MIN), af), bff);
        // `((R >> q) + 1) >> 1 = (R + 2^q) >> (q + 1)`: below 2^32 for `q ≤ 30`, and 0 past
        // `EXP_BITS` whole units, as the definition's cut-off, since a count of 32 or more
        // clears a lane (at `q = 31` the sum may wrap to 0; it is shifted out all the same).
        let one = _mm512_set1_epi32(1);
        _mm512_srlv_epi32(
            _mm512_add_epi32(r, _mm512_sllv_epi32(one, q)),
            _mm512_add_epi32(q, one),
        )
    }
}

/// [`Exp512`] in 8 AVX2 lanes: the same steps, which AVX2 has every one of (variable shifts
/// whose counts of 32 or more clear the lane included).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Exp256 {
    j: __m128i,
    s: __m128i,
    f_up: __m128i,
    g_up: __m128i,
    fraction: __m256i,
    low: __m256i,
    b: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl Exp256 {
    #[target_feature(enable = "avx2")]
    pub(super) fn new(j: u32) -> Self {
        assert!(
            LANE32_INPUT_BITS.contains(&j),
            "input grid 2^−{j} outside {LANE32_INPUT_BITS:?}"
        );
        let s = 2 * j - 15;
        let count = |c: u32| _mm_cvtsi32_si128(c as i32);
        Self {
            j: count(j),
            s: count(s),
            f_up: count(30 - j),
            g_up: count(15 - j),
            fraction: _mm256_set1_epi32((1 << j) - 1),
            low: _mm256_set1_epi32((1 << s) - 1),
            b: _mm256_set1_epi32(FRACTION_B as i32),
        }
    }

    /// `exp2_neg(d, j)` of each lane of `d`, as [`Exp512::of`].
    #[target_feature(enable = "avx2")]
    pub(super) fn of(&self, d: __m256i) -> __m256i {
        let q = _mm256_srl_epi32(d, self.j);
        let f = _mm256_and_si256(d, self.fraction);
        let g = _mm256_mullo_epi32(f, self.b);
        let af = _mm256_add_epi32(
            _mm256_sll_epi32(f, self.f_up),
            _mm256_sll_epi32(g, self.g_up),
        );
        let bff = _mm256_add_epi32(
            _mm256_mullo_epi32(_mm256_srl_epi32(g, self.s), f),
            _mm256_srl_epi32(_mm256_mullo_epi32(_mm256_and_si256(g, self.low), f), self.s),
        );
        let r = _mm256_add_epi32(_mm256_sub_epi32(_mm256_set1_epi32(i32::MIN), af), bff);
        let one = _mm256_set1_epi32(1);
        _mm256_srlv_epi32(
            _mm256_add_epi32(r, _mm256_sllv_epi32(one, q)),
            _mm256_add_epi32(q, one),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::nonlinear::softmax::exp2_neg;

    /// [`Exp512`] and [`Exp256`] on every `d` up to past the cut-off and on the largest
    /// differences, at every grid they take, where the CPU has AVX-512 and AVX2.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_32_bit_lanes_equal_the_scalar_exponential() {
        #[target_feature(enable = "avx2")]
        fn lanes8(j: u32, d: &[u32]) -> Vec<i64> {
            let exp = Exp256::new(j);
            d.chunks(8)
                .flat_map(|c| {
                    let mut v = [0u32; 8];
                    v[..c.len()].copy_from_slice(c);
                    // SAFETY: `v` holds 8 u32; this function is compiled for AVX2.
                    let e = exp.of(unsafe { _mm256_loadu_si256(v.as_ptr().cast()) });
                    let mut out = [0i32; 8];
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), e) };
                    out.into_iter().take(c.len()).map(i64::from)
                })
                .collect()
        }
        #[target_feature(enable = "avx512f")]
        fn lanes(j: u32, d: &[u32]) -> Vec<i64> {
            let exp = Exp512::new(j);
            d.chunks(16)
                .flat_map(|c| {
                    let mut v = [0u32; 16];
                    v[..c.len()].copy_from_slice(c);
                    // SAFETY: `v` holds 16 u32; this function is compiled for AVX-512 F.
                    let e = exp.of(unsafe { _mm512_loadu_si512(v.as_ptr().cast()) });
                    let mut out = [0i32; 16];
                    // SAFETY: as above.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), e) };
                    out.into_iter().take(c.len()).map(i64::from)
                })
                .collect()
        }
        let available = Isa::available();
        if !available.contains(&Isa::Avx512Vnni) {
            eprintln!("no AVX-512 on this CPU: the 16-lane exponentials are not tested");
        }
        if !available.contains(&Isa::Avx2) {
            eprintln!("no AVX2 on this CPU: the 8-lane exponentials are not tested");
        }
        for j in LANE32_INPUT_BITS {
            let top = (EXP_BITS + 2) << j;
            let d: Vec<u32> = (0..=top).chain(u32::MAX - 40..=u32::MAX).collect();
            let want: Vec<i64> = d.iter().map(|&d| exp2_neg(d as i64, j)).collect();
            if available.contains(&Isa::Avx512Vnni) {
                // SAFETY: AVX-512 F is present (checked above).
                assert_eq!(unsafe { lanes(j, &d) }, want, "16 lanes, j = {j}");
            }
            if available.contains(&Isa::Avx2) {
                // SAFETY: AVX2 is present (checked above).
                assert_eq!(unsafe { lanes8(j, &d) }, want, "8 lanes, j = {j}");
            }
        }
    }

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
