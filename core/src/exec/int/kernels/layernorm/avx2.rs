//! The rows in 8 AVX2 lanes, the tail by a masked load and a store through the stack
//! ([`spans`]).

use std::arch::x86_64::*;

use super::{GROUP, RowNorm, factor_within, mean_within, variance};
use crate::exec::int::kernels::spans::spans;

/// [`RowNorm::rows`] (see `avx512::rows`, whose steps these are).
#[target_feature(enable = "avx2")]
pub(super) fn rows(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> u32 {
    let d = n.zero.len();
    assert!(n.shift.len() == d && centred.len() == x.len() && out.len() == x.len());
    let (count, x) = (x.len() / d, x.as_ptr());
    let (work, dst) = (centred.as_mut_ptr(), out.as_mut_ptr());
    // SAFETY: `x`, `centred` and `out` hold `count` rows each (asserted).
    unsafe { of_rows!(group, count, (n, x, work, dst)) }
}

/// `R` rows of `d` values side by side (see `avx512::group`).
///
/// # Safety
/// `x`, `work` and `dst` each point at `R` rows of `d = n.zero.len()` values, `work` and `dst`
/// apart from each other.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn group<const R: usize>(n: &RowNorm, x: *const i32, work: *mut i32, dst: *mut i32) -> u32 {
    const { assert!(R <= GROUP) };
    let d = n.zero.len();
    let (zero, shift) = (n.zero.as_ptr(), n.shift.as_ptr().cast::<i32>());
    let mut lo = [_mm256_set1_epi32(i32::MAX); R];
    let mut hi = [_mm256_set1_epi32(i32::MIN); R];
    let (mut sum, mut squares) = ([_mm256_setzero_si256(); R], [_mm256_setzero_si256(); R]);
    let mut lost = [_mm256_setzero_si256(); R];
    for span in spans(d) {
        // SAFETY (each span's access in this function): the span holds values `span.at..d`
        // of a row only, inside `x`, the zero-points, the shifts, `work` and `dst` (the
        // caller's promise); the lanes past them read as 0.
        let (z, s) = unsafe { (span.load(zero.add(span.at)), span.load(shift.add(span.at))) };
        let k = span.mask;
        for r in 0..R {
            let at = r * d + span.at;
            let q = unsafe { span.load(x.add(at)) };
            let diff = _mm256_sub_epi32(q, z);
            let sign = _mm256_and_si256(_mm256_xor_si256(q, z), _mm256_xor_si256(q, diff));
            let v = _mm256_sllv_epi32(diff, s);
            let shifted_out = _mm256_xor_si256(_mm256_srav_epi32(v, s), diff);
            lost[r] = _mm256_or_si256(
                lost[r],
                _mm256_or_si256(_mm256_srai_epi32::<31>(sign), shifted_out),
            );
            // Lanes past the row hold 0, which the range must not see.
            lo[r] = _mm256_min_epi32(lo[r], _mm256_blendv_epi8(lo[r], v, k));
            hi[r] = _mm256_max_epi32(hi[r], _mm256_blendv_epi8(hi[r], v, k));
            let (low, high) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let widened = _mm256_add_epi64(_mm256_cvtepi32_epi64(low), _mm256_cvtepi32_epi64(high));
            sum[r] = _mm256_add_epi64(sum[r], widened);
            // Lanes past the row hold 0, and so add none.
            let high = _mm256_srli_epi64::<32>(v);
            let square = _mm256_add_epi64(_mm256_mul_epi32(v, v), _mm256_mul_epi32(high, high));
            squares[r] = _mm256_add_epi64(squares[r], square);
            unsafe { span.store(work.add(at), v) };
        }
    }
    let scale: [Option<(__m256i, __m256i)>; R] = std::array::from_fn(|r| {
        if _mm256_testz_si256(lost[r], lost[r]) == 0 {
            return None;
        }
        let (lo, hi) = (
            horizontal(lo[r], i32::min) as i64,
            horizontal(hi[r], i32::max) as i64,
        );
        let sum = sum64(sum[r]);
        let mean = mean_within(lo, hi, sum, d)?;
        let var = variance(sum64(squares[r]) as u64, sum, mean, d);
        let f = factor_within(var, (lo, hi), mean)?;
        Some((_mm256_set1_epi32(mean), _mm256_set1_epi32(f)))
    });
    for span in spans(d) {
        // SAFETY: `span.at` is a multiple of 8 below the channels (`n.out` holds `d`); AVX2
        // is this function's.
        let block = unsafe { n.out.block256(span.at) };
        for (r, scale) in scale.iter().enumerate() {
            let Some((mean, f)) = *scale else { continue };
            let at = r * d + span.at;
            let dev = _mm256_sub_epi32(unsafe { span.load(work.add(at)) }, mean);
            let even = _mm256_mul_epi32(dev, f);
            let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(dev), f);
            let z = _mm256_blend_epi32::<0xAA>(
                _mm256_srli_epi64::<1>(even),
                _mm256_slli_epi64::<31>(odd),
            );
            // SAFETY: AVX2 is this function's.
            let codes = unsafe { block.apply(z) };
            unsafe { span.store(dst.add(at), codes) };
        }
    }
    scale
        .iter()
        .enumerate()
        .fold(0, |ran, (r, s)| ran | u32::from(s.is_some()) << r)
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
