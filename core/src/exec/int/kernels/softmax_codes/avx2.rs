//! The fused rows in 8 AVX2 lanes: [`super::avx512`]'s passes, the tail of a row by a masked
//! load and a store through the stack ([`spans`]), the codes by permutes
//! ([`Binades256`](crate::exec::int::nonlinear::levels::Binades256)).
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{GROUP, RowCodes};
use crate::exec::int::kernels::exps::Exp256;
use crate::exec::int::kernels::narrow_lanes::Narrow256;
use crate::exec::int::kernels::spans::spans;
use crate::exec::int::nonlinear::levels::Binades256;
use crate::exec::int::nonlinear::softmax::Normaliser;

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
    for s in spans(n) {
        for (r, top) in top.iter_mut().enumerate() {
            // SAFETY (each span's access below): the span holds values `s.at..` of row `r`
            // only, inside the rows (the caller's promise).
            let at = row(r) + s.at;
            let x = lanes.to_x.apply(unsafe { s.load(acc.add(at)) });
            unsafe { s.store(work.add(at), x) };
            *top = _mm256_max_epi32(*top, _mm256_blendv_epi8(past, x, s.mask));
        }
    }
    let max = top.map(|t| _mm256_set1_epi32(max_of(t)));
    let mut sums = [(_mm256_setzero_si256(), _mm256_setzero_si256()); R];
    for s in spans(n) {
        for (r, (even, odd)) in sums.iter_mut().enumerate() {
            let at = row(r) + s.at;
            let x = unsafe { s.load(work.add(at)) };
            let e = lanes.exp.of(_mm256_sub_epi32(
                max[r],
                _mm256_blendv_epi8(past, x, s.mask),
            ));
            unsafe { s.store(work.add(at), e) };
            *even = _mm256_add_epi64(*even, _mm256_and_si256(e, low));
            *odd = _mm256_add_epi64(*odd, _mm256_srli_epi64::<32>(e));
        }
    }
    let norms = sums.map(|(even, odd)| {
        Normalise256::new(&Normaliser::new(sum_of(_mm256_add_epi64(even, odd))))
    });
    for s in spans(n) {
        for (r, norm) in norms.iter().enumerate() {
            let at = row(r) + s.at;
            let e = unsafe { s.load(work.add(at)) };
            let p = norm.of(e);
            unsafe { s.store(dst.add(at), lanes.codes.code(p)) };
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
