//! The row in 16 AVX-512 lanes, the tail by masked loads and stores.

use std::arch::x86_64::*;

use super::{RowNorm, factor_within, mean_within, variance};

/// The offsets of the 16-lane vectors covering `d` values, each with the mask of its lanes
/// inside (all but the last whole).
fn vectors(d: usize) -> impl Iterator<Item = (usize, __mmask16)> {
    (0..d).step_by(16).map(move |i| {
        let lanes = (d - i).min(16);
        (i, ((1u32 << lanes) - 1) as u16)
    })
}

/// The even lanes' values and the odd ones' as i64 lanes, each i32 sign-extended.
#[target_feature(enable = "avx512f")]
fn widened(v: __m512i) -> (__m512i, __m512i) {
    let even = _mm512_srai_epi64::<32>(_mm512_slli_epi64::<32>(v));
    (even, _mm512_srai_epi64::<32>(v))
}

/// [`RowNorm::row`] for a non-empty row.
#[target_feature(enable = "avx512f")]
pub(super) fn row(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> bool {
    let d = x.len();
    assert!(n.zero.len() == d && n.shift.len() == d && centred.len() == d && out.len() == d);
    let (x, zero, shift) = (x.as_ptr(), n.zero.as_ptr(), n.shift.as_ptr());
    let (work, dst) = (centred.as_mut_ptr(), out.as_mut_ptr());
    // Promoted values `(q − z) << s`, kept where both the difference and the shift stay in
    // i32: a lane that overflows either is marked, and the row left to the definition.
    let (mut lo, mut hi) = (_mm512_set1_epi32(i32::MAX), _mm512_set1_epi32(i32::MIN));
    let (mut sum, mut squares, mut lost) = (_mm512_setzero_si512(), _mm512_setzero_si512(), 0u16);
    for (i, k) in vectors(d) {
        // SAFETY (each masked access in this function): the mask holds lanes `i..d` only,
        // inside `x`, the zero-points, the shifts, `centred` and `out`, all `d` long.
        let (q, z, s) = unsafe {
            (
                _mm512_maskz_loadu_epi32(k, x.add(i)),
                _mm512_maskz_loadu_epi32(k, zero.add(i)),
                _mm512_maskz_loadu_epi32(k, shift.add(i).cast()),
            )
        };
        let diff = _mm512_sub_epi32(q, z);
        // The difference overflows where `q` and `z` differ in sign and it differs from `q`.
        let sign = _mm512_and_si512(_mm512_xor_si512(q, z), _mm512_xor_si512(q, diff));
        let v = _mm512_sllv_epi32(diff, s);
        let shifted_out = _mm512_cmpneq_epi32_mask(_mm512_srav_epi32(v, s), diff);
        lost |= negative(sign) | shifted_out;
        lo = _mm512_mask_min_epi32(lo, k, lo, v);
        hi = _mm512_mask_max_epi32(hi, k, hi, v);
        let (even, odd) = widened(v);
        sum = _mm512_add_epi64(sum, _mm512_add_epi64(even, odd));
        // Lanes past the row hold 0, and so add none.
        let high = _mm512_srli_epi64::<32>(v);
        let square = _mm512_add_epi64(_mm512_mul_epi32(v, v), _mm512_mul_epi32(high, high));
        squares = _mm512_add_epi64(squares, square);
        unsafe { _mm512_mask_storeu_epi32(work.add(i), k, v) };
    }
    if lost != 0 {
        return false;
    }
    let (lo, hi) = (
        _mm512_reduce_min_epi32(lo) as i64,
        _mm512_reduce_max_epi32(hi) as i64,
    );
    let Some(mean) = mean_within(lo, hi, _mm512_reduce_add_epi64(sum), d) else {
        return false;
    };
    let squares = _mm512_reduce_add_epi64(squares) as u64;
    let var = variance(squares, _mm512_reduce_add_epi64(sum), mean, d);
    let Some(f) = factor_within(var, (lo, hi), mean) else {
        return false;
    };
    // `z = (dev·f) >> 1` for each distance from the mean (in i32: `mean_within` checked;
    // `z` too: `factor_within` checked), the low halves of the even lanes' and the odd ones'
    // products shifted into one register, then each channel's requantization.
    let (mean, f) = (_mm512_set1_epi32(mean), _mm512_set1_epi32(f));
    for (i, k) in vectors(d) {
        let dev = _mm512_sub_epi32(unsafe { _mm512_maskz_loadu_epi32(k, work.add(i)) }, mean);
        let even = _mm512_mul_epi32(dev, f);
        let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(dev), f);
        let z = _mm512_mask_blend_epi32(
            0xAAAA,
            _mm512_srli_epi64::<1>(even),
            _mm512_slli_epi64::<31>(odd),
        );
        // SAFETY: `i` is a multiple of 16 below the channels (`n.out` holds `d`); AVX-512 F
        // is this function's.
        let codes = unsafe { n.out.block512(i).apply(z) };
        unsafe { _mm512_mask_storeu_epi32(dst.add(i), k, codes) };
    }
    true
}

/// The lanes of `v` whose sign bit is set.
#[target_feature(enable = "avx512f")]
fn negative(v: __m512i) -> __mmask16 {
    _mm512_cmplt_epi32_mask(v, _mm512_setzero_si512())
}
