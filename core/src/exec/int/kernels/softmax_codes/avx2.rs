//! The fused rows in 8 AVX2 lanes: [`super::avx512`]'s passes, the tail of a row by
//! `vpmaskmovd` (lanes outside read as 0 and are not written), the codes by permutes
//! ([`Binades256`](crate::exec::int::nonlinear::levels::Binades256)).
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{GROUP, RowCodes};
use crate::exec::int::kernels::exps::Exp256;
use crate::exec::int::kernels::narrow_lanes::Narrow256;
use crate::exec::int::nonlinear::levels::Binades256;
use crate::exec::int::nonlinear::softmax::Normaliser;

/// The offsets of the 8-lane vectors covering `n` values, each with the mask of its lanes
/// inside (all-ones lanes; all but the last whole).
#[target_feature(enable = "avx2")]
fn vectors(n: usize) -> impl Iterator<Item = (usize, __m256i)> {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    (0..n).step_by(8).map(move |i| {
        let inside = _mm256_set1_epi32((n - i).min(8) as i32);
        (i, _mm256_cmpgt_epi32(inside, lane))
    })
}

#[target_feature(enable = "avx2")]
pub(super) fn rows(rc: &RowCodes, acc: &[i32], scratch: &mut [i32], dst: &mut [i32]) {
    let n = rc.tokens;
    let lanes = Lanes256 {
        n,
        to_x: Narrow256::new(&rc.to_x),
        exp: Exp256::new(rc.j),
        codes: rc.codes.lanes256().expect("checked by `RowCodes::new`"),
    };
    let work = scratch.as_mut_ptr();
    for (acc, dst) in acc.chunks(GROUP * n).zip(dst.chunks_mut(GROUP * n)) {
        let (a, d) = (acc.as_ptr(), dst.as_mut_ptr());
        // SAFETY: as in 16 lanes.
        unsafe { of_rows!(group, acc.len() / n, (&lanes, a, work, d)) }
    }
}

/// The constants of a tile's rows.
struct Lanes256 {
    n: usize,
    to_x: Narrow256,
    exp: Exp256,
    codes: Binades256,
}

/// `avx512::group` in 8 lanes.
///
/// # Safety
/// `acc`, `work` and `dst` point at `R` rows of `n` values each, `work`'s apart from the
/// others.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn group<const R: usize>(lanes: &Lanes256, acc: *const i32, work: *mut i32, dst: *mut i32) {
    let n = lanes.n;
    let row = |r: usize| r * n;
    let low = _mm256_set1_epi64x(u32::MAX as i64);
    // As in 16 lanes: lanes past the row count as i32::MIN, below every clamped logit.
    let past = _mm256_set1_epi32(i32::MIN);
    let mut top = [past; R];
    for (i, k) in vectors(n) {
        for (r, top) in top.iter_mut().enumerate() {
            // SAFETY (each masked access below): the mask holds lanes `i..n` of row `r`
            // only, inside the rows (the caller's promise).
            let at = row(r) + i;
            let x = lanes
                .to_x
                .apply(unsafe { _mm256_maskload_epi32(acc.add(at), k) });
            unsafe { _mm256_maskstore_epi32(work.add(at), k, x) };
            *top = _mm256_max_epi32(*top, _mm256_blendv_epi8(past, x, k));
        }
    }
    let max = top.map(|t| _mm256_set1_epi32(max_of(t)));
    let mut sums = [(_mm256_setzero_si256(), _mm256_setzero_si256()); R];
    for (i, k) in vectors(n) {
        for (r, (even, odd)) in sums.iter_mut().enumerate() {
            let at = row(r) + i;
            let x = unsafe { _mm256_maskload_epi32(work.add(at), k) };
            let e = lanes
                .exp
                .of(_mm256_sub_epi32(max[r], _mm256_blendv_epi8(past, x, k)));
            unsafe { _mm256_maskstore_epi32(work.add(at), k, e) };
            *even = _mm256_add_epi64(*even, _mm256_and_si256(e, low));
            *odd = _mm256_add_epi64(*odd, _mm256_srli_epi64::<32>(e));
        }
    }
    let norms = sums.map(|(even, odd)| {
        Normalise256::new(&Normaliser::new(sum_of(_mm256_add_epi64(even, odd))))
    });
    for (i, k) in vectors(n) {
        for (r, norm) in norms.iter().enumerate() {
            let at = row(r) + i;
            let e = unsafe { _mm256_maskload_epi32(work.add(at), k) };
            let p = norm.of(e);
            unsafe { _mm256_maskstore_epi32(dst.add(at), k, lanes.codes.code(p)) };
        }
    }
}

/// The largest of 8 i32 lanes.
#[target_feature(enable = "avx2")]
fn max_of(v: __m256i) -> i32 {
    let v = _mm256_max_epi32(v, _mm256_permute2x128_si256::<1>(v, v));
    let v = _mm256_max_epi32(v, _mm256_shuffle_epi32::<0b01_00_11_10>(v));
    let v = _mm256_max_epi32(v, _mm256_shuffle_epi32::<0b10_11_00_01>(v));
    _mm256_cvtsi256_si32(v)
}

/// The sum of 4 i64 lanes.
#[target_feature(enable = "avx2")]
fn sum_of(v: __m256i) -> i64 {
    let v = _mm256_add_epi64(v, _mm256_permute2x128_si256::<1>(v, v));
    let v = _mm256_add_epi64(v, _mm256_shuffle_epi32::<0b01_00_11_10>(v));
    _mm_cvtsi128_si64(_mm256_castsi256_si128(v))
}

/// [`super::avx512::Normalise512`] in 256-bit registers (AVX2 has no `vpmullq` for LLVM to
/// prefer to `vpmuludq`).
pub(super) struct Normalise256 {
    r: __m256i,
    half: __m256i,
    shift: __m128i,
}

impl Normalise256 {
    #[target_feature(enable = "avx2")]
    pub(super) fn new(n: &Normaliser) -> Self {
        let (r, shift) = super::product_form(n);
        Self {
            r: _mm256_set1_epi64x(i64::from(r)),
            half: _mm256_set1_epi64x(1 << (shift - 1)),
            shift: _mm_cvtsi32_si128(shift as i32),
        }
    }

    /// [`Normaliser::apply`] of 8 exponentials (each at most 2^30).
    #[target_feature(enable = "avx2")]
    pub(super) fn of(&self, e: __m256i) -> __m256i {
        let scaled = |e| {
            let times_r = _mm256_add_epi64(_mm256_mul_epu32(e, self.r), self.half);
            _mm256_srl_epi64(times_r, self.shift)
        };
        let odd = scaled(_mm256_srli_epi64::<32>(e));
        _mm256_or_si256(scaled(e), _mm256_slli_epi64::<32>(odd))
    }
}
