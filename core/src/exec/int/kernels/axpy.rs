//! `acc[i] += a·x[i]` on i32 — the inner loop of the attention products (`q·kᵀ` row by row,
//! `P·V`) — and its form on pairs of i16 rows (the linear-attention query). One portable body,
//! also compiled for AVX2 and AVX-512 and chosen at run time (the baseline x86-64 target has no
//! packed 32-bit multiply); the pairs' loop written with `vpmaddwd` itself.
#![allow(unsafe_code)]

use super::{Isa, pair};

/// `acc[i] += a·x[i]` (wrapping is impossible for the callers' bounds, which they check).
pub fn axpy(isa: Isa, acc: &mut [i32], a: i32, x: &[i32]) {
    by_width!(isa, axpy_avx512, axpy_avx2, axpy_portable, (acc, a, x))
}

#[inline(always)]
fn axpy_portable(acc: &mut [i32], a: i32, x: &[i32]) {
    for (s, &v) in acc.iter_mut().zip(x) {
        *s += a * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn axpy_avx2(acc: &mut [i32], a: i32, x: &[i32]) {
    axpy_portable(acc, a, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn axpy_avx512(acc: &mut [i32], a: i32, x: &[i32]) {
    axpy_portable(acc, a, x)
}

/// `acc[i] += x₀·w₀ + x₁·w₁` where `x[i]` and `w` are each a pair of i16 ([`pair`]): two
/// rows' products in one `vpmaddwd`, where [`axpy`] takes a `vpmulld` (two µops, ten cycles'
/// latency) per row. Wrapping in i32 as the instruction does.
pub fn axpy_pairs(isa: Isa, acc: &mut [i32], w: i32, x: &[i32]) {
    assert_eq!(acc.len(), x.len(), "one pair per sum");
    by_width!(
        isa,
        axpy_pairs_avx512,
        axpy_pairs_avx2,
        axpy_pairs_portable,
        (acc, w, x)
    )
}

#[inline(always)]
fn madd(x: i32, w: i32) -> i32 {
    let lo = (x as i16 as i32).wrapping_mul(w as i16 as i32);
    let hi = ((x >> 16) as i16 as i32).wrapping_mul((w >> 16) as i16 as i32);
    lo.wrapping_add(hi)
}

#[inline(always)]
fn axpy_pairs_portable(acc: &mut [i32], w: i32, x: &[i32]) {
    for (s, &v) in acc.iter_mut().zip(x) {
        *s = s.wrapping_add(madd(v, w));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn axpy_pairs_avx2(acc: &mut [i32], w: i32, x: &[i32]) {
    use std::arch::x86_64::*;
    let wv = _mm256_set1_epi32(w);
    let whole = acc.len() / 8 * 8;
    for (s, v) in acc[..whole].chunks_exact_mut(8).zip(x.chunks_exact(8)) {
        // SAFETY: `s` and `v` hold eight i32 each.
        unsafe {
            let p = _mm256_madd_epi16(_mm256_loadu_si256(v.as_ptr().cast()), wv);
            let a = _mm256_loadu_si256(s.as_ptr().cast());
            _mm256_storeu_si256(s.as_mut_ptr().cast(), _mm256_add_epi32(a, p));
        }
    }
    axpy_pairs_portable(&mut acc[whole..], w, &x[whole..]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn axpy_pairs_avx512(acc: &mut [i32], w: i32, x: &[i32]) {
    use std::arch::x86_64::*;
    let wv = _mm512_set1_epi32(w);
    let whole = acc.len() / 16 * 16;
    for (s, v) in acc[..whole].chunks_exact_mut(16).zip(x.chunks_exact(16)) {
        // SAFETY: `s` and `v` hold sixteen i32 each.
        unsafe {
            let p = _mm512_madd_epi16(_mm512_loadu_si512(v.as_ptr().cast()), wv);
            let a = _mm512_loadu_si512(s.as_ptr().cast());
            _mm512_storeu_si512(s.as_mut_ptr().cast(), _mm512_add_epi32(a, p));
        }
    }
    axpy_pairs_portable(&mut acc[whole..], w, &x[whole..]);
}

/// `dst[t] = pair(max(a[t] − z, 0), max(b[t] − z, 0))` (`b` absent: 0), and whether every
/// value fit i16 (where one did not, its half holds it wrapped).
pub fn pair_rows(isa: Isa, a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    assert!(
        a.len() == dst.len() && b.is_none_or(|b| b.len() == dst.len()),
        "one word per pair of codes"
    );
    by_width!(
        isa,
        pair_rows_avx512,
        pair_rows_avx2,
        pair_rows_portable,
        (a, b, z, dst)
    )
}

#[inline(always)]
fn pair_rows_portable(a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    let relu = |q: i32| q.wrapping_sub(z).max(0);
    let mut fits = true;
    match b {
        Some(b) => {
            for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                let (x, y) = (relu(x), relu(y));
                *d = pair(x as i16, y as i16);
                fits &= x <= i16::MAX as i32 && y <= i16::MAX as i32;
            }
        }
        None => {
            for (d, &x) in dst.iter_mut().zip(a) {
                let x = relu(x);
                *d = pair(x as i16, 0);
                fits &= x <= i16::MAX as i32;
            }
        }
    }
    fits
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pair_rows_avx2(a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    pair_rows_portable(a, b, z, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn pair_rows_avx512(a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    pair_rows_portable(a, b, z, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_agrees() {
        let x: Vec<i32> = (0..37).map(|i| i * 7 - 100).collect();
        let mut want: Vec<i32> = (0..37).map(|i| i * 3).collect();
        let start = want.clone();
        axpy_portable(&mut want, -13, &x);
        assert_eq!(want[5], 15 + (-13) * (35 - 100));
        if Isa::available().len() == 1 {
            eprintln!("note: this CPU has no AVX2: only the portable axpy was tested");
        }
        for isa in Isa::available() {
            let mut got = start.clone();
            axpy(isa, &mut got, -13, &x);
            assert_eq!(got, want, "{}", isa.name());
        }
    }

    /// Pairs of rows against the two products in i64, on every ISA, every length up to 40 and
    /// B1's token counts, with the i16 extremes (whose pair sum wraps, as `vpmaddwd`'s does).
    #[test]
    fn pairs_of_rows_equal_their_two_products() {
        let mut rng = crate::rng::Rng::new(6);
        for n in (0..=40).chain([196, 784]) {
            let z = 100;
            let (a, b): (Vec<i32>, Vec<i32>) = (0..n)
                .map(|_| (rng.below(400) as i32, rng.below(400) as i32))
                .unzip();
            let wide: Vec<i32> = (0..n)
                .map(|t| if t == n / 2 { 40_000 } else { 3 })
                .collect();
            let (w0, w1) = (-(rng.below(255) as i16) - 1, rng.below(255) as i16);
            let start: Vec<i32> = (0..n).map(|t| t as i32 * 11 - 50).collect();
            let want: Vec<i32> = (0..n)
                .map(|t| {
                    let (x, y) = ((a[t] - z).max(0) as i64, (b[t] - z).max(0) as i64);
                    (start[t] as i64 + x * w0 as i64 + y * w1 as i64) as i32
                })
                .collect();
            for isa in Isa::available() {
                let mut words = vec![0; n];
                assert!(pair_rows(isa, &a, Some(&b), z, &mut words));
                let mut got = start.clone();
                axpy_pairs(isa, &mut got, pair(w0, w1), &words);
                assert_eq!(got, want, "{} at {n}", isa.name());
                assert!(pair_rows(isa, &a, None, z, &mut words));
                assert!(words.iter().zip(&a).all(|(&w, &x)| w == (x - z).max(0)));
                assert_eq!(pair_rows(isa, &wide, None, 0, &mut words), n == 0);
                // Both halves at i16::MIN times i16::MIN: 2^31 wraps to i32::MIN.
                let mut got = vec![0; n];
                axpy_pairs(
                    isa,
                    &mut got,
                    pair(i16::MIN, i16::MIN),
                    &vec![pair(i16::MIN, i16::MIN); n],
                );
                assert!(got.iter().all(|&v| v == i32::MIN), "{}", isa.name());
            }
        }
    }
}
