//! The row in 8 AVX2 lanes, the tail by masked loads and stores (`vpmaskmovd`).

use std::arch::x86_64::*;

use super::{RowNorm, factor_within, mean_within, variance};

/// The offsets of the 8-lane vectors covering `d` values, each with the mask of its lanes
/// inside (all ones but in the last).
#[target_feature(enable = "avx2")]
fn vectors(d: usize) -> impl Iterator<Item = (usize, __m256i)> {
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    (0..d).step_by(8).map(move |i| {
        let lanes = (d - i).min(8) as i32;
        (i, _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), index))
    })
}

/// [`RowNorm::row`] for a non-empty row (see `avx512::row`, whose steps these are).
#[target_feature(enable = "avx2")]
pub(super) fn row(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> bool {
    let d = x.len();
    assert!(n.zero.len() == d && n.shift.len() == d && centred.len() == d && out.len() == d);
    let (x, zero, shift) = (x.as_ptr(), n.zero.as_ptr(), n.shift.as_ptr().cast::<i32>());
    let (work, dst) = (centred.as_mut_ptr(), out.as_mut_ptr());
    let (mut lo, mut hi) = (_mm256_set1_epi32(i32::MAX), _mm256_set1_epi32(i32::MIN));
    let (mut sum, mut squares) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut lost = _mm256_setzero_si256();
    for (i, k) in vectors(d) {
        // SAFETY (each masked access in this function): the mask holds lanes `i..d` only,
        // inside `x`, the zero-points, the shifts, `centred` and `out`, all `d` long; the
        // lanes past them read as 0.
        let (q, z, s) = unsafe {
            (
                _mm256_maskload_epi32(x.add(i), k),
                _mm256_maskload_epi32(zero.add(i), k),
                _mm256_maskload_epi32(shift.add(i), k),
            )
        };
        let diff = _mm256_sub_epi32(q, z);
        let sign = _mm256_and_si256(_mm256_xor_si256(q, z), _mm256_xor_si256(q, diff));
        let v = _mm256_sllv_epi32(diff, s);
        let shifted_out = _mm256_xor_si256(_mm256_srav_epi32(v, s), diff);
        lost = _mm256_or_si256(
            lost,
            _mm256_or_si256(_mm256_srai_epi32::<31>(sign), shifted_out),
        );
        // Lanes past the row hold 0, which the range must not see.
        lo = _mm256_min_epi32(lo, _mm256_blendv_epi8(lo, v, k));
        hi = _mm256_max_epi32(hi, _mm256_blendv_epi8(hi, v, k));
        let (low, high) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let widened = _mm256_add_epi64(_mm256_cvtepi32_epi64(low), _mm256_cvtepi32_epi64(high));
        sum = _mm256_add_epi64(sum, widened);
        // Lanes past the row hold 0, and so add none.
        let high = _mm256_srli_epi64::<32>(v);
        let square = _mm256_add_epi64(_mm256_mul_epi32(v, v), _mm256_mul_epi32(high, high));
        squares = _mm256_add_epi64(squares, square);
        unsafe { _mm256_maskstore_epi32(work.add(i), k, v) };
    }
    if _mm256_testz_si256(lost, lost) == 0 {
        return false;
    }
    let (lo, hi) = (
        horizontal(lo, i32::min) as i64,
        horizontal(hi, i32::max) as i64,
    );
    let Some(mean) = mean_within(lo, hi, sum64(sum), d) else {
        return false;
    };
    let var = variance(sum64(squares) as u64, sum64(sum), mean, d);
    let Some(f) = factor_within(var, (lo, hi), mean) else {
        return false;
    };
    let (mean, f) = (_mm256_set1_epi32(mean), _mm256_set1_epi32(f));
    for (i, k) in vectors(d) {
        let dev = _mm256_sub_epi32(unsafe { _mm256_maskload_epi32(work.add(i), k) }, mean);
        let even = _mm256_mul_epi32(dev, f);
        let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(dev), f);
        let z =
            _mm256_blend_epi32::<0xAA>(_mm256_srli_epi64::<1>(even), _mm256_slli_epi64::<31>(odd));
        // SAFETY: `i` is a multiple of 8 below the channels (`n.out` holds `d`); AVX2 is
        // this function's.
        let codes = unsafe { n.out.block256(i).apply(z) };
        unsafe { _mm256_maskstore_epi32(dst.add(i), k, codes) };
    }
    true
}

/// The four 64-bit lanes' sum, wrapping.
#[target_feature(enable = "avx2")]
fn sum64(v: __m256i) -> i64 {
    let mut lanes = [0i64; 4];
    // SAFETY: `lanes` holds 4 i64.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
    lanes.iter().fold(0i64, |a, &b| a.wrapping_add(b))
}

/// `f` over the eight lanes.
#[target_feature(enable = "avx2")]
fn horizontal(v: __m256i, f: fn(i32, i32) -> i32) -> i32 {
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` holds 8 i32.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
    lanes.into_iter().reduce(f).expect("eight lanes")
}
