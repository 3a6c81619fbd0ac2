//! `acc[i] += a·x[i]` on i32 — the inner loop of the attention products (`q·kᵀ` row by row,
//! `P·V`, the linear-attention query on codes too wide for i16) — and the i16 pair rows of
//! `relu(q − z)` that the query's [`pair_products`](super::pair_products) take. One portable
//! body, also compiled for AVX2 and AVX-512 and chosen at run time (the baseline x86-64 target
//! has no packed 32-bit multiply).
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
    use super::super::pair_products::pair_products;
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

    /// Pairs of rows, and their products with a pair of weights ([`pair_products`] of one
    /// row) against the two products in i64, on every ISA, every length up to 40 and B1's
    /// token counts.
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
            let want: Vec<i32> = (0..n)
                .map(|t| {
                    let (x, y) = ((a[t] - z).max(0) as i64, (b[t] - z).max(0) as i64);
                    (x * w0 as i64 + y * w1 as i64) as i32
                })
                .collect();
            for isa in Isa::available() {
                let mut words = vec![0; n];
                assert!(pair_rows(isa, &a, Some(&b), z, &mut words));
                let mut got = vec![-1; n];
                pair_products(isa, &words, n, &[pair(w0, w1)], &mut got);
                assert_eq!(got, want, "{} at {n}", isa.name());
                assert!(pair_rows(isa, &a, None, z, &mut words));
                assert!(words.iter().zip(&a).all(|(&w, &x)| w == (x - z).max(0)));
                assert_eq!(pair_rows(isa, &wide, None, 0, &mut words), n == 0);
            }
        }
    }
}
