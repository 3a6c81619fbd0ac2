//! Every dot product between two sets of i16 rows, in i32: `out[i·m + j] = Σ_t a_i[t]·b_j[t]`
//! — the linear attention's context `Σ_t (v_i − z)·relu(k_j − z)` over a head's tokens. Written
//! as i16 × i16 → i32 products summed along the row, by `vpmaddwd` (two products and their sum
//! per 32-bit lane; the i32 rows it replaces took a `vpmulld`, two µops and ten cycles'
//! latency, and a `vpaddd` per product): one row of `a` against a group of rows of `b` (16 with
//! AVX-512, 8 with AVX2) with their sums in registers, added across lanes once at the end. A
//! portable definition for other CPUs and the tests. Integer sums, wrapping in i32: the same
//! result in any order, exact wherever the callers' bounds keep the whole sum inside i32.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

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

/// Row `i` of `a` against 8 rows of `b` at once, as [`gram_avx512_body`] does 16: 8 sums in
/// registers (16 values, 8 pairs, per `vpmaddwd`), added across by `vphaddd` and one exchange of
/// halves into one register, lane `j` the sum of row `j` of the group. The last tokens past a
/// whole 16 are the row's last 16 again, `a`'s lanes already summed zeroed, where a tail by
/// the definition took 8 rows one token at a time. With the rows read by pointer (below), B1's
/// seven context steps 315 → 232 µs (the least tenth percentile of four runs each, `cargo
/// bench -p qvit-core --bench alternating -- linear avx2`, AMD Zen 3). Rows shorter than 16
/// go by the definition.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gram_avx2(a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    if n < 16 {
        return gram_portable(a, b, n, out);
    }
    let m = b.len() / n;
    let whole = n / 16 * 16;
    // The tail's lanes of `a` that hold tokens past `whole`: the last `n − whole` of 16.
    let tail = (whole < n).then(|| {
        let from = 16 - (n - whole) as i16;
        let lane = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        _mm256_cmpgt_epi16(lane, _mm256_set1_epi16(from - 1))
    });
    for j0 in (0..m).step_by(8) {
        let lanes = (m - j0).min(8);
        // Rows past the group's last repeat it; their sums are not stored. By pointer: the
        // slices' bounds checks, 8 a step, had kept the loop from its `vpmaddwd` pace and
        // spilled the rows to the stack.
        let rows: [*const i16; 8] =
            std::array::from_fn(|k| b[(j0 + k.min(lanes - 1)) * n..].as_ptr());
        for (ai, o) in a.chunks_exact(n).zip(out.chunks_exact_mut(m)) {
            let mut acc = [_mm256_setzero_si256(); 8];
            // `a`'s 16 values from `t`, masked, against each row's.
            let mut step = |t: usize, mask: __m256i| {
                // SAFETY: every row holds `n ≥ t + 16` values (the callers below).
                unsafe {
                    let av = _mm256_and_si256(_mm256_loadu_si256(ai[t..].as_ptr().cast()), mask);
                    for (acc, row) in acc.iter_mut().zip(&rows) {
                        let bv = _mm256_loadu_si256(row.add(t).cast());
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(av, bv));
                    }
                }
            };
            for t0 in (0..whole).step_by(16) {
                step(t0, _mm256_set1_epi32(-1));
            }
            if let Some(mask) = tail {
                step(n - 16, mask);
            }
            let mut sums = [0i32; 8];
            // SAFETY: `sums` holds 8 i32.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), across8(acc)) };
            o[j0..j0 + lanes].copy_from_slice(&sums[..lanes]);
        }
    }
}

/// The sums across each of 8 registers' lanes, in one register, lane `j` register `j`'s.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn across8(acc: [__m256i; 8]) -> __m256i {
    // Per 128-bit half: pairs of lanes, then quads, of registers 0–3 and 4–7.
    let h1: [__m256i; 4] = std::array::from_fn(|k| _mm256_hadd_epi32(acc[2 * k], acc[2 * k + 1]));
    let (x, y) = (
        _mm256_hadd_epi32(h1[0], h1[1]),
        _mm256_hadd_epi32(h1[2], h1[3]),
    );
    // The two halves' partial sums added: registers 0–3 from `x`, 4–7 from `y`.
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(x, y),
        _mm256_permute2x128_si256::<0x31>(x, y),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn gram_avx512(a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    if std::arch::is_x86_feature_detected!("avx512vnni") {
        // SAFETY: AVX-512 F and BW are this function's; VNNI was found just above.
        unsafe { gram_avx512_vnni(a, b, n, out) }
    } else {
        gram_avx512_body::<false>(a, b, n, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn gram_avx512_vnni(a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    gram_avx512_body::<true>(a, b, n, out)
}

/// Row `i` of `a` against 16 rows of `b` at once: 16 sums in registers over the row, 32
/// values (16 pairs) per `vpmaddwd` or, with VNNI, `vpdpwssd`, then the 16 sums' lanes added
/// across in one tree ([`across16`]) into one register, lane `j` the sum of row `j`. The
/// compiler's loop (the portable form's) had taken each dot product alone, with a reduction
/// of its own per sum: 2.4–2.7 % of B1's integer samples (`perf`). Rows of `b` past the last
/// (a last group of fewer than 16) repeat the last row, and their sums are not stored.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn gram_avx512_body<const VNNI: bool>(a: &[i16], b: &[i16], n: usize, out: &mut [i32]) {
    if n == 0 {
        return out.fill(0);
    }
    let m = b.len() / n;
    for j0 in (0..m).step_by(16) {
        let lanes = (m - j0).min(16);
        // Slot `k` sums row `ACROSS16_ROW[k]` of the group (clamped to the last row), so that
        // the tree's lane `j` ends up with row `j`'s sum.
        let rows: [&[i16]; 16] = std::array::from_fn(|k| {
            let j = j0 + usize::from(ACROSS16_ROW[k]).min(lanes - 1);
            &b[j * n..(j + 1) * n]
        });
        for (ai, o) in a.chunks_exact(n).zip(out.chunks_exact_mut(m)) {
            // SAFETY: every load is masked to the values below `n` of a row of `n` (and the
            // target features are the callers').
            let sums = unsafe {
                let mut acc = [_mm512_setzero_si512(); 16];
                for t0 in (0..n).step_by(32) {
                    let mask = u32::MAX >> (32 - (n - t0).min(32));
                    let av = _mm512_maskz_loadu_epi16(mask, ai[t0..].as_ptr());
                    for (acc, row) in acc.iter_mut().zip(&rows) {
                        let bv = _mm512_maskz_loadu_epi16(mask, row[t0..].as_ptr());
                        *acc = if VNNI {
                            _mm512_dpwssd_epi32(*acc, av, bv)
                        } else {
                            _mm512_add_epi32(*acc, _mm512_madd_epi16(av, bv))
                        };
                    }
                }
                across16(acc)
            };
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the mask stores lanes `0..lanes`, sums `j0..j0 + lanes` of row `i`,
            // inside `o` (`m` sums).
            unsafe { _mm512_mask_storeu_epi32(o[j0..].as_mut_ptr(), mask, sums) };
        }
    }
}

/// The row each of [`across16`]'s inputs ends up in: `across16(acc)`'s lane `j` is the sum
/// of the lanes of `acc[ACROSS16_ROW[j]]`; the table is its own inverse, so an input placed in
/// slot `ACROSS16_ROW[j]` comes out in lane `j`.
#[cfg(target_arch = "x86_64")]
const ACROSS16_ROW: [u8; 16] = [0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15];

/// The sums across each of 16 registers' lanes, in one register (lane `j` holds register
/// `ACROSS16_ROW[j]`'s sum): halves, then quarters, then pairs of lanes added 16 registers at
/// a time, 45 instructions in all.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn across16(acc: [__m512i; 16]) -> __m512i {
    // SAFETY (all): the callers are compiled for AVX-512 F.
    unsafe {
        // 256-bit halves: register k's in lanes 0–7, register k + 8's in lanes 8–15.
        let s1: [__m512i; 8] = std::array::from_fn(|k| {
            let (x, y) = (acc[k], acc[k + 8]);
            _mm512_add_epi32(
                _mm512_shuffle_i64x2::<0b01_00_01_00>(x, y),
                _mm512_shuffle_i64x2::<0b11_10_11_10>(x, y),
            )
        });
        // 128-bit quarters: one register's four partial sums per quarter.
        let s2: [__m512i; 4] = std::array::from_fn(|k| {
            let (x, y) = (s1[k], s1[k + 4]);
            _mm512_add_epi32(
                _mm512_shuffle_i64x2::<0b10_00_10_00>(x, y),
                _mm512_shuffle_i64x2::<0b11_01_11_01>(x, y),
            )
        });
        // Two registers' pairs of partial sums per quarter, interleaved.
        let s3: [__m512i; 2] = std::array::from_fn(|k| {
            let (x, y) = (s2[k], s2[k + 2]);
            _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y))
        });
        _mm512_add_epi32(
            _mm512_unpacklo_epi64(s3[0], s3[1]),
            _mm512_unpackhi_epi64(s3[0], s3[1]),
        )
    }
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
            // B1's 17 × 16 and B3's 33 × 32, and groups of 16 with a part-filled last.
            let (ra, rb) = match n {
                49 | 196 => (17, 16),
                784 => (33, 32),
                _ => (1 + n % 3, 1 + n % 21),
            };
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
