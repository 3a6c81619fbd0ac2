//! Rows of sums over a few i16 pairs of rows: `out[i·n + t] = Σ_p x_p[t]·w_ip`, where
//! `x_p[t]` and `w_ip` are each a pair of i16 ([`pair`](super::pair)) and their product is the
//! two halves' products summed, as `vpmaddwd` forms it — the linear-attention query, whose
//! `d + 1` rows (dividends and divisors) weigh the same `d/2` pair rows of `relu(q − z)`.
//!
//! Row by row (an `acc += x_p·w_ip` pass per row and pair) every product loaded and stored
//! its row of sums again, and a 7×7 map's rows of 49 ended in a part vector done one value at
//! a time (2.5 % of B1's integer samples, `perf`). Here a tile of rows keeps its sums in
//! registers for 16 tokens across every pair (up to 8 rows with AVX-512, 6 with AVX2), each
//! pair row loaded once per tile, the last part vector by masks (AVX-512) or by overlapping
//! the tokens before it (AVX2). Integer sums wrapping in i32 as the instructions do: the same
//! result in any order.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{Isa, Width, madd, width};

/// Rows per AVX-512 tile: eight accumulators, the pair row and the broadcast weight use ten
/// registers.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 8;

/// `out[i·n + t] = Σ_p madd(x[p·n + t], w[i·pairs + p])` for every row `i` of `w` (`pairs` =
/// `x.len() / n` pairs each) and token `t < n`, wrapping in i32.
pub fn pair_products(isa: Isa, x: &[i32], n: usize, w: &[i32], out: &mut [i32]) {
    if n == 0 {
        assert!(
            x.is_empty() && out.is_empty(),
            "no tokens, no pairs or sums"
        );
        return;
    }
    assert!(x.len().is_multiple_of(n), "whole pair rows of {n}");
    let pairs = x.len() / n;
    let rows = w.len().checked_div(pairs).unwrap_or(out.len() / n);
    assert_eq!(w.len(), rows * pairs, "a weight pair per row and pair row");
    assert_eq!(out.len(), rows * n, "a row of sums per weight row");
    if pairs == 0 {
        // Rows without pairs sum nothing.
        out.fill(0);
        return;
    }
    let operands = Operands {
        x,
        n,
        pairs,
        w,
        out,
    };
    match width(isa) {
        // SAFETY (all three): `width` (and the check beside it) found the features the
        // function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 if std::arch::is_x86_feature_detected!("avx512vnni") => unsafe {
            products_avx512_vnni(operands)
        },
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => unsafe { products_avx512(operands) },
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => unsafe { products_avx2(operands) },
        _ => products_portable(operands, 0),
    }
}

/// Checked operands, whole or a tile's (from its first token and row): `pairs` (at least one)
/// rows of pair words `n` (at least one) apart, each row's `pairs` weights, and the rows' sums
/// `n` apart.
struct Operands<'a> {
    x: &'a [i32],
    n: usize,
    pairs: usize,
    w: &'a [i32],
    out: &'a mut [i32],
}

#[cfg(target_arch = "x86_64")]
impl Operands<'_> {
    /// The tile of rows `r0..` from token `t0`.
    fn tile(&mut self, t0: usize, r0: usize) -> Operands<'_> {
        Operands {
            x: &self.x[t0..],
            n: self.n,
            pairs: self.pairs,
            w: &self.w[r0 * self.pairs..],
            out: &mut self.out[r0 * self.n + t0..],
        }
    }

    fn rows(&self) -> usize {
        self.w.len() / self.pairs
    }
}

/// `$call` with the constant `$r` equal to `$rows` (1 to [`ROWS`]): a tile's row count is a
/// constant, so that its sums live in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! with_rows {
    ($rows:expr, $r:ident => $call:expr) => {
        with_rows!(@arms $rows, $r, $call, 8 7 6 5 4 3 2)
    };
    (@arms $rows:expr, $r:ident, $call:expr, $($n:literal)*) => {
        match $rows {
            $($n => {
                const $r: usize = $n;
                $call
            })*
            _ => {
                const $r: usize = 1;
                $call
            }
        }
    };
}

/// The definition for tokens `from..n`.
fn products_portable(a: Operands, from: usize) {
    let Operands {
        x,
        n,
        pairs,
        w,
        out,
    } = a;
    for (weights, sums) in w.chunks_exact(pairs).zip(out.chunks_exact_mut(n)) {
        for (t, s) in sums.iter_mut().enumerate().skip(from) {
            *s = weights.iter().enumerate().fold(0i32, |acc, (p, &wp)| {
                acc.wrapping_add(madd(x[p * n + t], wp))
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn products_avx512_vnni(a: Operands) {
    products_avx512_body::<true>(a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn products_avx512(a: Operands) {
    products_avx512_body::<false>(a)
}

/// Tiles of [`ROWS`] rows × 16 tokens (the last by a mask), `vpdpwssd` with VNNI.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn products_avx512_body<const VNNI: bool>(mut a: Operands) {
    for t0 in (0..a.n).step_by(16) {
        let mask = ((1u32 << (a.n - t0).min(16)) - 1) as __mmask16;
        for r0 in (0..a.rows()).step_by(ROWS) {
            let rows = (a.rows() - r0).min(ROWS);
            let tile = a.tile(t0, r0);
            // SAFETY: the tile reads `pairs` rows of `x` and writes up to `ROWS` rows of
            // `out` from token `t0`, under `mask`, which holds the tokens below `n` only; the
            // caller's features are AVX-512 F and BW (and VNNI when `VNNI`).
            with_rows!(rows, R => unsafe { tile512::<VNNI, R>(tile, mask) });
        }
    }
}

/// The sums of `R` rows at 16 tokens, the tokens `mask` holds.
///
/// # Safety
/// AVX-512 F and BW (and VNNI when `VNNI`); `t.x` holds `pairs` rows of `n` and `t.out` `R`
/// rows from their starts, each as far as `mask`'s last lane; `t.w` holds `R·pairs` weights.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile512<const VNNI: bool, const R: usize>(t: Operands, mask: __mmask16) {
    assert!(t.w.len() >= R * t.pairs && t.out.len() > (R - 1) * t.n);
    // SAFETY: the caller's features; every load and store is masked to lanes inside the
    // slices (the caller's promise on `mask`).
    unsafe {
        let mut acc = [_mm512_setzero_si512(); R];
        for p in 0..t.pairs {
            let xv = _mm512_maskz_loadu_epi32(mask, t.x[p * t.n..].as_ptr());
            for (r, acc) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_epi32(*t.w.get_unchecked(r * t.pairs + p));
                *acc = if VNNI {
                    _mm512_dpwssd_epi32(*acc, xv, wv)
                } else {
                    _mm512_add_epi32(*acc, _mm512_madd_epi16(xv, wv))
                };
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_mask_storeu_epi32(t.out[r * t.n..].as_mut_ptr(), mask, *acc);
        }
    }
}

/// Rows per AVX2 tile: six rows at 16 tokens are twelve accumulators, and with the two pair
/// vectors and the broadcast weight fifteen of the sixteen registers.
#[cfg(target_arch = "x86_64")]
const ROWS_AVX2: usize = 6;

/// Tiles of [`ROWS_AVX2`] rows × 16 tokens: per pair, two loads and six broadcasts for twelve
/// `vpmaddwd`. A first form of 8 rows × 8 tokens took a load and eight broadcasts for eight,
/// and Zen 3 issues two loads a cycle (B1's seven query steps 426 → 350 µs with the level
/// encoders' look-up made by one walk, which `perf` puts at a third of that: `cargo bench -p
/// qvit-core --bench alternating -- linear avx2`, the least tenth percentile of three runs). Past the last whole 16 tokens, 8 more when
/// more than 8 are left, then the last 8 again: each sum depends on its token alone, so
/// those already stored are stored again unchanged (the tail by the definition had taken half
/// as many of B1's query samples as the tiles, `perf` on AMD Zen 3). Fewer than 8 tokens go
/// by the definition.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn products_avx2(mut a: Operands) {
    if a.n < 8 {
        return products_portable(a, 0);
    }
    let whole = a.n / 16 * 16;
    // (first token, vectors) of each block: the whole 16s, then 8 more if more than 8 are
    // left, then the last 8 (the call has at least 8 tokens).
    let left = a.n - whole;
    let eight = (left > 8).then_some((whole, 1));
    let last = (left > 0).then_some((a.n - 8, 1));
    for (t0, vectors) in (0..whole)
        .step_by(16)
        .map(|t0| (t0, 2))
        .chain(eight)
        .chain(last)
    {
        for r0 in (0..a.rows()).step_by(ROWS_AVX2) {
            let rows = (a.rows() - r0).min(ROWS_AVX2);
            let tile = a.tile(t0, r0);
            match vectors {
                2 => with_rows!(rows, R => tile256::<R, 2>(tile)),
                _ => with_rows!(rows, R => tile256::<R, 1>(tile)),
            }
        }
    }
}

/// The sums of `R` rows at `8·V` tokens (all below `n`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn tile256<const R: usize, const V: usize>(t: Operands) {
    assert!(t.w.len() >= R * t.pairs && t.out.len() >= (R - 1) * t.n + 8 * V);
    assert!(t.x.len() >= (t.pairs - 1) * t.n + 8 * V);
    let mut acc = [[_mm256_setzero_si256(); V]; R];
    for p in 0..t.pairs {
        // SAFETY: pair row `p` holds `8·V` words from the tile's token (asserted above).
        let xv: [__m256i; V] = std::array::from_fn(|v| unsafe {
            _mm256_loadu_si256(t.x[p * t.n + 8 * v..].as_ptr().cast())
        });
        for (r, acc) in acc.iter_mut().enumerate() {
            let wv = _mm256_set1_epi32(t.w[r * t.pairs + p]);
            for (acc, xv) in acc.iter_mut().zip(&xv) {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(*xv, wv));
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, acc) in acc.iter().enumerate() {
            // SAFETY: row `r` of the sums holds `8·V` from the tile's token (asserted above).
            let at = t.out[r * t.n + 8 * v..].as_mut_ptr();
            unsafe { _mm256_storeu_si256(at.cast(), *acc) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Random pair words and weights over all of i32 (both halves of every sign, −32,768
    /// among them, so the wrapping cases occur), on every ISA: the definition's sums, for
    /// rows of 1 to 33 (B1's 17, B3's 33), tokens 1 to 200 (7×7, 14×14 maps) and 0 to 17
    /// pairs.
    #[test]
    fn every_isa_equals_the_definition() {
        let mut rng = Rng::new(5);
        let word = |rng: &mut Rng| match rng.below(8) {
            0 => i32::MIN,
            1 => super::super::pair(i16::MIN, i16::MIN),
            _ => rng.below(u32::MAX as usize) as u32 as i32,
        };
        for (rows, n, pairs) in [
            (17, 49, 8),
            (17, 196, 8),
            (33, 49, 16),
            (1, 1, 1),
            (9, 15, 3),
            (8, 16, 17),
            (3, 200, 0),
            (7, 9, 5),
            (16, 8, 2),
            // Whole 16s alone, a last 8 and a last 16 after them.
            (17, 32, 8),
            (6, 40, 3),
            (5, 47, 4),
            (13, 17, 2),
        ] {
            let x: Vec<i32> = (0..pairs * n).map(|_| word(&mut rng)).collect();
            let w: Vec<i32> = (0..rows * pairs).map(|_| word(&mut rng)).collect();
            // In i64, truncated to i32 at the end: the sum modulo 2^32 the lanes wrap to.
            let half = |v: i32, k: u32| i64::from((v >> k) as i16);
            let want: Vec<i32> = (0..rows * n)
                .map(|o| {
                    let (i, t) = (o / n, o % n);
                    let sum: i64 = (0..pairs)
                        .map(|p| {
                            let (a, b) = (x[p * n + t], w[i * pairs + p]);
                            half(a, 0) * half(b, 0) + half(a, 16) * half(b, 16)
                        })
                        .sum();
                    sum as i32
                })
                .collect();
            for isa in Isa::available() {
                let mut got = vec![-1; rows * n];
                pair_products(isa, &x, n, &w, &mut got);
                assert_eq!(
                    got, want,
                    "{} rows, {n} tokens, {pairs} pairs, {isa:?}",
                    rows
                );
            }
        }
    }

    /// By hand: `(3, −2)·(5, 7) = 15 − 14 = 1`; `(−32,768, −32,768)·(5, 7) = −393,216`; and
    /// `(−32,768)²·2 = 2^31` wraps to −2^31, as `vpmaddwd` gives it.
    #[test]
    fn by_hand() {
        let pair = super::super::pair;
        let (x, w) = ([pair(3, -2), pair(i16::MIN, i16::MIN)], [pair(5, 7)]);
        for isa in Isa::available() {
            let mut out = [0; 2];
            pair_products(isa, &x, 2, &w, &mut out);
            assert_eq!(out, [1, -393_216], "{isa:?}");
        }
        let min = [pair(i16::MIN, i16::MIN)];
        for isa in Isa::available() {
            let mut one = [0];
            pair_products(isa, &min, 1, &min, &mut one);
            assert_eq!(one, [i32::MIN], "{isa:?}");
        }
    }
}
