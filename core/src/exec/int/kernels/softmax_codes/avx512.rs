//! The fused rows in 16 AVX-512 lanes, the tail of a row by masked loads and stores.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{GROUP, RowCodes};
use crate::exec::int::kernels::exps::Exp512;
use crate::exec::int::kernels::narrow_lanes::Narrow512;
use crate::exec::int::nonlinear::levels::Binades512;
use crate::exec::int::nonlinear::softmax::Normaliser;

/// The offsets of the 16-lane vectors covering `n` values, each with the mask of its lanes
/// inside (all but the last whole).
fn vectors(n: usize) -> impl Iterator<Item = (usize, __mmask16)> {
    (0..n).step_by(16).map(move |i| {
        let lanes = (n - i).min(16);
        (i, ((1u32 << lanes) - 1) as u16)
    })
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd")]
pub(super) fn rows(rc: &RowCodes, acc: &[i32], scratch: &mut [i32], dst: &mut [i32]) {
    let n = rc.tokens;
    let lanes = Lanes512 {
        n,
        to_x: Narrow512::new(&rc.to_x),
        exp: Exp512::new(rc.j),
        codes: rc.codes.lanes512().expect("checked by `RowCodes::new`"),
    };
    let work = scratch.as_mut_ptr();
    for (acc, dst) in acc.chunks(GROUP * n).zip(dst.chunks_mut(GROUP * n)) {
        let (a, d) = (acc.as_ptr(), dst.as_mut_ptr());
        // SAFETY: the group's rows of sums and codes, and as many rows of the scratch, hold
        // `n` values each (`RowCodes::rows` checked the lengths).
        unsafe { of_rows!(group, acc.len() / n, (&lanes, a, work, d)) }
    }
}

/// The constants of a tile's rows.
struct Lanes512 {
    n: usize,
    to_x: Narrow512,
    exp: Exp512,
    codes: Binades512,
}

/// The codes of `R` rows of `n` sums from `acc` into `dst`, the logits and then the
/// exponentials of row `r` in `work`'s row `r`: each pass over the rows side by side.
///
/// # Safety
/// `acc`, `work` and `dst` point at `R` rows of `n` values each, `work`'s apart from the
/// others.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd")]
#[inline]
unsafe fn group<const R: usize>(lanes: &Lanes512, acc: *const i32, work: *mut i32, dst: *mut i32) {
    let n = lanes.n;
    let row = |r: usize| r * n;
    let low = _mm512_set1_epi64(u32::MAX as i64);
    // Lanes past the row read as i32::MIN in the exponentials' pass: the logits are
    // clamped to ±2^30 ([`Narrow`]), so their difference from the maximum is at least
    // 2^30 and their exponential 0.
    let past = _mm512_set1_epi32(i32::MIN);
    // Logits and their maximum (lanes past the row left out).
    let mut top = [past; R];
    for (i, k) in vectors(n) {
        for (r, top) in top.iter_mut().enumerate() {
            // SAFETY (each masked access below): the mask holds lanes `i..n` of row `r`
            // only, inside the rows (the caller's promise).
            let at = row(r) + i;
            let x = lanes
                .to_x
                .apply(unsafe { _mm512_maskz_loadu_epi32(k, acc.add(at)) });
            unsafe { _mm512_mask_storeu_epi32(work.add(at), k, x) };
            *top = _mm512_mask_max_epi32(*top, k, *top, x);
        }
    }
    let max = top.map(|t| _mm512_set1_epi32(_mm512_reduce_max_epi32(t)));
    // The exponentials of `max − x` (as u32, exact for any two i32) and their sum in i64
    // lanes, the even and the odd ones apart.
    let mut sums = [(_mm512_setzero_si512(), _mm512_setzero_si512()); R];
    for (i, k) in vectors(n) {
        for (r, (even, odd)) in sums.iter_mut().enumerate() {
            let at = row(r) + i;
            let x = unsafe { _mm512_mask_loadu_epi32(past, k, work.add(at)) };
            let e = lanes.exp.of(_mm512_sub_epi32(max[r], x));
            unsafe { _mm512_mask_storeu_epi32(work.add(at), k, e) };
            *even = _mm512_add_epi64(*even, _mm512_and_si512(e, low));
            *odd = _mm512_add_epi64(*odd, _mm512_srli_epi64::<32>(e));
        }
    }
    let norms = sums.map(|(even, odd)| {
        let sum = _mm512_reduce_add_epi64(_mm512_add_epi64(even, odd));
        Normalise512::new(&Normaliser::new(sum))
    });
    // Probabilities, then their codes.
    for (i, k) in vectors(n) {
        for (r, norm) in norms.iter().enumerate() {
            let at = row(r) + i;
            let e = unsafe { _mm512_maskz_loadu_epi32(k, work.add(at)) };
            let p = norm.of(e);
            unsafe { _mm512_mask_storeu_epi32(dst.add(at), k, lanes.codes.code(p)) };
        }
    }
}

/// A [`Normaliser`] in 512-bit registers: `e·r` one `vpmuludq` per 8 lanes (exact in u64:
/// below 2^62), the probability `(e·r + 2^(shift−1)) >> shift`. Its reciprocal `r` lies in
/// (2^31, 2^32]; at 2^32 (a row whose sum is a power of two), past u32, it is halved with the
/// shift one less, the same quotient: `(e·2^31 + 2^(shift−2)) >> (shift − 1)`. (A second form
/// for that case, in 32-bit lanes, had put a branch on every row's vector of the pass.)
pub(super) struct Normalise512 {
    r: __m512i,
    half: __m512i,
    shift: __m128i,
}

impl Normalise512 {
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(n: &Normaliser) -> Self {
        let (r, shift) = super::product_form(n);
        Self {
            r: _mm512_set1_epi64(i64::from(r)),
            half: _mm512_set1_epi64(1 << (shift - 1)),
            shift: _mm_cvtsi32_si128(shift as i32),
        }
    }

    /// [`Normaliser::apply`] of 16 exponentials (each at most 2^30): the even lanes' and the
    /// odd ones' probabilities as 64-bit lanes (`vpmuludq` reads the low half of each), put
    /// back together by an OR: each is at most 2^24, so every high half is 0.
    #[target_feature(enable = "avx512f")]
    pub(super) fn of(&self, e: __m512i) -> __m512i {
        let scaled = |e| {
            let times_r = _mm512_add_epi64(mul_epu32(e, self.r), self.half);
            _mm512_srl_epi64(times_r, self.shift)
        };
        let odd = scaled(_mm512_srli_epi64::<32>(e));
        _mm512_or_si512(scaled(e), _mm512_slli_epi64::<32>(odd))
    }
}

/// `vpmuludq`, the product of each 64-bit lane's low halves as unsigned, held from LLVM: with
/// AVX-512 DQ it rewrites `_mm512_mul_epu32` of values whose high halves it knows to be zero
/// as `vpmullq`, three micro-ops on port 0 of Intel's cores where this is one (`objdump` of
/// [`rows`]).
#[target_feature(enable = "avx512f")]
#[inline]
fn mul_epu32(a: __m512i, b: __m512i) -> __m512i {
    let product;
    // SAFETY: an instruction of AVX-512 F, for which this function is compiled, on registers
    // only.
    unsafe {
        std::arch::asm!(
            "vpmuludq {p}, {a}, {b}",
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            p = lateout(zmm_reg) product,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    product
}
