//! Every dot product between two sets of i16 rows, in i32: `out[i·m + j] = Σ_t a_i[t]·b_j[t]`
//! — the linear attention's context `Σ_t (v_i − z)·relu(k_j − z)` over a head's tokens. Written
//! as i16 × i16 → i32 products summed along the row, which the compiler makes `vpmaddwd` (two
//! products and their sum per 32-bit lane); the i32 rows it replaces took a `vpmulld` (two
//! µops, ten cycles' latency) and a `vpaddd` per product. One portable body, also compiled for
//! AVX2 and AVX-512 and chosen at run time. Integer sums, wrapping in i32: the same result in
//! any order, exact wherever the callers' bounds keep the whole sum inside i32.
#![allow(unsafe_code)]

use super::Isa;

/// `out[i·m + j] = Σ_t a[i·n + t]·b[j·n + t]` for rows `a` `[·, n]` and `b` `[m, n]`.
pub fn gram(isa: Isa, a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    // Rows of no values have sums of 0, however many `out` holds.
    if n > 0 {
        assert!(
            a.len().is_multiple_of(n) && b.len().is_multiple_of(n),
            "whole rows of {n}"
        );
        let pairs = a.len() / n * (b.len() / n);
        assert_eq!(out.len(), pairs, "one sum per pair of rows");
    }
    by_width!(isa, gram_avx512, gram_avx2, gram_portable, (a, b, n, out))
}

/// `dst[t] = max(codes[t] − z, floor)` as i16, and whether every one fit (where one did not,
/// `dst` holds it wrapped).
pub fn centre_i16(isa: Isa, codes: &[i32], z: i32, floor: i32, dst: &mut [i16]) -> bool {
    assert_eq!(codes.len(), dst.len(), "one value per code");
    by_width!(
        isa,
        centre_avx512,
        centre_avx2,
        centre_portable,
        (codes, z, floor, dst)
    )
}

#[inline(always)]
fn centre_portable(codes: &[i32], z: i32, floor: i32, dst: &mut [i16]) -> bool {
    let mut fits = true;
    for (d, &q) in dst.iter_mut().zip(codes) {
        let c = q.wrapping_sub(z).max(floor);
        *d = c as i16;
        fits &= c == c as i16 as i32;
    }
    fits
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn centre_avx2(codes: &[i32], z: i32, floor: i32, dst: &mut [i16]) -> bool {
    centre_portable(codes, z, floor, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn centre_avx512(codes: &[i32], z: i32, floor: i32, dst: &mut [i16]) -> bool {
    centre_portable(codes, z, floor, dst)
}

#[inline(always)]
fn gram_portable(a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    if n == 0 {
        return out.fill(0);
    }
    let m = b.len() / n;
    for (ai, o) in a.chunks_exact(n).zip(out.chunks_exact_mut(m)) {
        for (bj, o) in b.chunks_exact(n).zip(o) {
            *o = ai
                .iter()
                .zip(bj)
                .fold(0i32, |s, (&x, &y)| s.wrapping_add(x as i32 * y as i32));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gram_avx2(a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    gram_portable(a, b, n, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn gram_avx512(a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    gram_portable(a, b, n, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn centring_says_whether_every_value_fit() {
        let codes = [0, 255, 100, 32_867, -32_668, 7];
        for isa in Isa::available() {
            let mut dst = [0i16; 6];
            assert!(centre_i16(isa, &codes[..3], 100, i32::MIN, &mut dst[..3]));
            assert_eq!(dst[..3], [-100, 155, 0]);
            assert!(centre_i16(isa, &codes[..3], 100, 0, &mut dst[..3]));
            assert_eq!(dst[..3], [0, 155, 0]);
            // The extremes fit: 32,867 − 100 = 32,767 and −32,668 − 100 = −32,768; one past
            // (32,867 − 99) does not.
            assert!(centre_i16(isa, &codes[..5], 100, i32::MIN, &mut dst[..5]));
            assert_eq!(dst[3..5], [i16::MAX, i16::MIN]);
            assert!(
                !centre_i16(isa, &codes, 99, i32::MIN, &mut dst),
                "{}",
                isa.name()
            );
            // A key below the zero-point is 0 whatever its width.
            assert!(centre_i16(isa, &[-1 << 20], 0, 0, &mut dst[..1]));
        }
    }

    /// By hand, then random rows of every length up to 70 and B1's token counts, at the
    /// extremes of i16, on every ISA against the i64 definition.
    #[test]
    fn every_isa_equals_the_definition() {
        let mut out = vec![0; 2];
        gram(Isa::Scalar, &[1, 2, 3], &[4, 5, 6, -1, 0, 2], 3, &mut out);
        assert_eq!(out, [4 + 10 + 18, -1 + 6]);
        let mut rng = Rng::new(3);
        for n in (0..=70).chain([196, 784, 3136]) {
            let (ra, rb) = (1 + n % 3, 1 + n % 4);
            let value = |rng: &mut Rng| match rng.below(8) {
                0 => i16::MIN,
                1 => i16::MAX,
                _ => rng.below(511) as i16 - 255,
            };
            let a: Vec<i16> = (0..ra * n).map(|_| value(&mut rng)).collect();
            let b: Vec<i16> = (0..rb * n).map(|_| value(&mut rng)).collect();
            let want: Vec<i32> = (0..ra * rb)
                .map(|ij| {
                    let (i, j) = (ij / rb, ij % rb);
                    let s: i64 = (0..n)
                        .map(|t| a[i * n + t] as i64 * b[j * n + t] as i64)
                        .sum();
                    s as i32 // wraps as the kernel's i32 sums do
                })
                .collect();
            for isa in Isa::available() {
                let mut got = vec![-1; ra * rb];
                gram(isa, &a, &b, n, &mut got);
                assert_eq!(got, want, "{} rows of {n}", isa.name());
            }
        }
    }
}
