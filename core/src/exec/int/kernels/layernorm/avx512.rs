//! The rows in 16 AVX-512 lanes, the tail by masked loads and stores.

use std::arch::x86_64::*;

use super::{GROUP, RowNorm, factor_within, mean_within, variance};

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

/// [`RowNorm::rows`] (1 to [`GROUP`] rows of `d > 0` values, checked by the caller).
#[target_feature(enable = "avx512f")]
pub(super) fn rows(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> u32 {
    let d = n.zero.len();
    assert!(n.shift.len() == d && centred.len() == x.len() && out.len() == x.len());
    let (count, x) = (x.len() / d, x.as_ptr());
    let (work, dst) = (centred.as_mut_ptr(), out.as_mut_ptr());
    // SAFETY: `x`, `centred` and `out` hold `count` rows each (asserted).
    unsafe { of_rows!(group, count, (n, x, work, dst)) }
}

/// `R` rows of `d` values side by side, each pass over all of them in turn.
///
/// # Safety
/// `x`, `work` and `dst` each point at `R` rows of `d = n.zero.len()` values, `work` and `dst`
/// apart from each other.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn group<const R: usize>(n: &RowNorm, x: *const i32, work: *mut i32, dst: *mut i32) -> u32 {
    const { assert!(R <= GROUP) };
    let d = n.zero.len();
    let (zero, shift) = (n.zero.as_ptr(), n.shift.as_ptr());
    // Promoted values `(q − z) << s`, kept where both the difference and the shift stay in
    // i32: a lane that overflows either is marked, and its row left to the definition.
    let mut lo = [_mm512_set1_epi32(i32::MAX); R];
    let mut hi = [_mm512_set1_epi32(i32::MIN); R];
    let (mut sum, mut squares) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
    let mut lost = [0u16; R];
    for (i, k) in vectors(d) {
        // SAFETY (each masked access in this function): the mask holds lanes `i..d` of a row
        // only, inside `x`, the zero-points, the shifts, `work` and `dst` (the caller's
        // promise).
        let (z, s) = unsafe {
            (
                _mm512_maskz_loadu_epi32(k, zero.add(i)),
                _mm512_maskz_loadu_epi32(k, shift.add(i).cast()),
            )
        };
        for r in 0..R {
            let at = r * d + i;
            let q = unsafe { _mm512_maskz_loadu_epi32(k, x.add(at)) };
            let diff = _mm512_sub_epi32(q, z);
            // The difference overflows where `q` and `z` differ in sign and it differs from
            // `q`.
            let sign = _mm512_and_si512(_mm512_xor_si512(q, z), _mm512_xor_si512(q, diff));
            let v = _mm512_sllv_epi32(diff, s);
            let shifted_out = _mm512_cmpneq_epi32_mask(_mm512_srav_epi32(v, s), diff);
            lost[r] |= negative(sign) | shifted_out;
            lo[r] = _mm512_mask_min_epi32(lo[r], k, lo[r], v);
            hi[r] = _mm512_mask_max_epi32(hi[r], k, hi[r], v);
            let (even, odd) = widened(v);
            sum[r] = _mm512_add_epi64(sum[r], _mm512_add_epi64(even, odd));
            // Lanes past the row hold 0, and so add none.
            let high = _mm512_srli_epi64::<32>(v);
            let square = _mm512_add_epi64(_mm512_mul_epi32(v, v), _mm512_mul_epi32(high, high));
            squares[r] = _mm512_add_epi64(squares[r], square);
            unsafe { _mm512_mask_storeu_epi32(work.add(at), k, v) };
        }
    }
    // Each row's mean and factor, where it runs.
    let scale: [Option<(__m512i, __m512i)>; R] = std::array::from_fn(|r| {
        if lost[r] != 0 {
            return None;
        }
        let (lo, hi) = (
            _mm512_reduce_min_epi32(lo[r]) as i64,
            _mm512_reduce_max_epi32(hi[r]) as i64,
        );
        let sum = _mm512_reduce_add_epi64(sum[r]);
        let mean = mean_within(lo, hi, sum, d)?;
        let var = variance(_mm512_reduce_add_epi64(squares[r]) as u64, sum, mean, d);
        let f = factor_within(var, (lo, hi), mean)?;
        Some((_mm512_set1_epi32(mean), _mm512_set1_epi32(f)))
    });
    // `z = (dev·f) >> 1` for each distance from the mean (in i32: `mean_within` checked; `z`
    // too: `factor_within` checked), the low halves of the even lanes' and the odd ones'
    // products shifted into one register, then each channel's requantization.
    for (i, k) in vectors(d) {
        // SAFETY: `i` is a multiple of 16 below the channels (`n.out` holds `d`); AVX-512 F
        // is this function's.
        let block = unsafe { n.out.block512(i) };
        for (r, scale) in scale.iter().enumerate() {
            let Some((mean, f)) = *scale else { continue };
            let at = r * d + i;
            let dev = _mm512_sub_epi32(unsafe { _mm512_maskz_loadu_epi32(k, work.add(at)) }, mean);
            let even = _mm512_mul_epi32(dev, f);
            let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(dev), f);
            let z = _mm512_mask_blend_epi32(
                0xAAAA,
                _mm512_srli_epi64::<1>(even),
                _mm512_slli_epi64::<31>(odd),
            );
            // SAFETY: AVX-512 F is this function's.
            let codes = unsafe { block.apply(z) };
            unsafe { _mm512_mask_storeu_epi32(dst.add(at), k, codes) };
        }
    }
    scale
        .iter()
        .enumerate()
        .fold(0, |ran, (r, s)| ran | u32::from(s.is_some()) << r)
}

/// The lanes of `v` whose sign bit is set.
#[target_feature(enable = "avx512f")]
fn negative(v: __m512i) -> __mmask16 {
    _mm512_cmplt_epi32_mask(v, _mm512_setzero_si512())
}
