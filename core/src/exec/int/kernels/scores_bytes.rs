//! `S = Q·Kᵀ` for one attention head of 8-bit codes on AVX-512 VNNI's byte product: four
//! dimensions per `vpdpbusd` (u8 × i8) where [`scores`](super::scores) takes two per
//! `vpdpwssd` (i16 × i16), so half the instructions for the same tile.
//!
//! The logits are `Σ_d (q − z)·(k − z)` with centred codes up to ±255, which no byte holds. With
//! `q' = q + u` for the queries (u8: `u` lifts the codes' range to `0..=255`), `k' = k + u − 128`
//! for the keys (i8), `a = u + z` and `b = 128 − a`:
//!
//! `Σ_d (q − z)·(k − z) = Σ_d (q' − a)·(k' + b) = Σ_d q'·k' + (b·Σ_d q' − a·b·d) − a·Σ_d k'`,
//!
//! a byte product, a term per query and a term per key, added to each tile before it is stored.
//! Every step wraps in i32, and the logit itself fits i32 (the compiler checks
//! `d·span² < 2^31`), so the result is exact.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::scores::{AHEAD, KEYS, PASSES, ROWS, prefetch, zero_padding};
#[cfg(target_arch = "x86_64")]
use super::scores::{store_avx512, tile_queries};
use super::{Isa, Width, width};
use crate::exec::spare::{prefix_to_overwrite, resize_to_overwrite, with_kept};
use crate::exec::transpose::transpose;

/// How a head's codes become bytes: `u` lifts them to `0..=255`, `z` is their zero point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteCodes {
    pub lift: i32,
    pub zero: i32,
}

impl ByteCodes {
    /// `a = u + z`.
    fn a(self) -> i32 {
        self.lift.wrapping_add(self.zero)
    }

    /// `b = 128 − a`.
    fn b(self) -> i32 {
        128i32.wrapping_sub(self.a())
    }
}

/// Whether [`scores_bytes`] runs on `isa` here (AVX-512 with VNNI).
pub fn available(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        width(isa) == Width::Avx512 && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, width);
        false
    }
}

/// One head's keys as bytes `k' = k + u − 128`, four dimensions per i32, quads major:
/// `data[g·cols + j]` holds dimensions `4g..4g + 4` of key `j` (zeros past `d` and past the
/// last key); and per key the term `−a·Σ_d k'` (zero past the last key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByteKeys {
    /// Dimension quads, `⌈d/4⌉`.
    pub quads: usize,
    pub keys: usize,
    /// Keys rounded up to whole blocks.
    pub cols: usize,
    pub data: Vec<i32>,
    pub terms: Vec<i32>,
}

impl ByteKeys {
    /// Packs `keys` keys of `d` dimensions, `row(j)` holding key `j`'s codes (at least `d`), in
    /// `recycled`'s allocations.
    pub fn from_key_rows<'a>(
        keys: usize,
        d: usize,
        codes: ByteCodes,
        row: impl Fn(usize) -> &'a [i32],
        recycled: ByteKeys,
    ) -> Self {
        let (quads, cols) = (d.div_ceil(4), keys.next_multiple_of(KEYS));
        let (mut data, mut terms) = (recycled.data, recycled.terms);
        resize_to_overwrite(&mut data, quads * cols);
        resize_to_overwrite(&mut terms, cols);
        terms[keys..].fill(0);
        if quads > 0 {
            with_kept(&PASSES, |(by_key, by_quad)| {
                by_key.clear();
                for (j, term) in terms.iter_mut().enumerate().take(keys) {
                    if j + AHEAD < keys {
                        prefetch(&row(j + AHEAD)[..d]);
                    }
                    let sum = byte_quads(&row(j)[..d], codes.lift.wrapping_sub(128), by_key);
                    *term = codes.a().wrapping_neg().wrapping_mul(sum);
                }
                let by_quad = prefix_to_overwrite(by_quad, keys * quads);
                transpose(by_key, keys, quads, by_quad);
                for (dst, src) in data
                    .chunks_exact_mut(cols)
                    .zip(by_quad.chunks_exact(keys.max(1)))
                {
                    dst[..keys].copy_from_slice(src);
                }
            });
            zero_padding(&mut data, cols, keys);
        } else {
            // No dimensions: every key's sum, and so its term, is 0.
            terms.fill(0);
        }
        Self {
            quads,
            keys,
            cols,
            data,
            terms,
        }
    }
}

/// The codes plus `shift` as bytes, four per i32 (little-endian, zeros past the last), appended
/// to `out`; returns the sum of the bytes' values, `Σ q + len·shift` (each `q + shift` lies in
/// the bytes' range: `0..=255` for the queries, `−128..=127` for the keys). Compiled for
/// AVX-512 where the CPU has it (one `vpmovdb` per 16 codes), as the product itself needs.
fn byte_quads(codes: &[i32], shift: i32, out: &mut Vec<i32>) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512 BW (and so F) was checked just above.
        return unsafe { byte_quads_avx512(codes, shift, out) };
    }
    byte_quads_portable(codes, shift, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn byte_quads_avx512(codes: &[i32], shift: i32, out: &mut Vec<i32>) -> i32 {
    byte_quads_portable(codes, shift, out)
}

#[inline(always)]
fn byte_quads_portable(codes: &[i32], shift: i32, out: &mut Vec<i32>) -> i32 {
    let byte = |q: i32| q.wrapping_add(shift) as u8;
    let mut chunks = codes.chunks_exact(16);
    for chunk in &mut chunks {
        let chunk: &[i32; 16] = chunk.try_into().expect("16 codes");
        let bytes: [u8; 16] = std::array::from_fn(|i| byte(chunk[i]));
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4"))),
        );
    }
    for quad in chunks.remainder().chunks(4) {
        let mut bytes = [0u8; 4];
        for (b, &q) in bytes.iter_mut().zip(quad) {
            *b = byte(q);
        }
        out.push(i32::from_le_bytes(bytes));
    }
    let sum = codes.iter().fold(0i32, |s, &q| s.wrapping_add(q));
    sum.wrapping_add((codes.len() as i32).wrapping_mul(shift))
}

/// A query's codes as bytes `q' = q + u`, appended to `out`; returns its term
/// `b·Σ_d q' − a·b·d`.
pub fn query_quads(codes: &[i32], c: ByteCodes, out: &mut Vec<i32>) -> i32 {
    let sum = byte_quads(codes, c.lift, out);
    let d = codes.len() as i32;
    c.b()
        .wrapping_mul(sum)
        .wrapping_sub(c.a().wrapping_mul(c.b()).wrapping_mul(d))
}

/// `out[r·keys + j]` = `Σ_d (q − z)·(k − z)` for the queries in `queries` (`r` rows of
/// `keys.quads` quads from [`query_quads`], whose terms `query_terms` holds).
///
/// Panics unless [`available`] (the caller chooses this product only then) and the slices
/// have those sizes.
pub fn scores_bytes(
    isa: Isa,
    queries: &[i32],
    query_terms: &[i32],
    keys: &ByteKeys,
    out: &mut [i32],
) {
    let rows = query_terms.len();
    assert!(available(isa), "the byte product needs AVX-512 VNNI");
    assert_eq!(queries.len(), rows * keys.quads, "queries of another width");
    assert_eq!(out.len(), rows * keys.keys, "an output of another size");
    assert!(keys.data.len() == keys.quads * keys.cols && keys.terms.len() == keys.cols);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available` found AVX-512 F, BW and VNNI; the sizes are asserted above.
    unsafe {
        scores_vnni(queries, query_terms, keys, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn scores_vnni(queries: &[i32], query_terms: &[i32], keys: &ByteKeys, out: &mut [i32]) {
    let rows = query_terms.len();
    for r0 in (0..rows).step_by(ROWS) {
        let (tile_rows, q) = tile_queries(queries, rows, keys.quads, r0);
        let terms = &query_terms[r0..r0 + tile_rows];
        let mut j0 = 0;
        while j0 + 2 * KEYS <= keys.cols {
            let acc = with_terms(tile::<2>(&q, keys, j0), terms, keys, j0);
            store_avx512(&acc, tile_rows, keys.keys, r0, j0, out);
            j0 += 2 * KEYS;
        }
        if j0 < keys.cols {
            let acc = with_terms(tile::<1>(&q, keys, j0), terms, keys, j0);
            store_avx512(&acc, tile_rows, keys.keys, r0, j0, out);
        }
    }
}

/// The byte products of [`ROWS`] query rows with `16·B` keys from `j0`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tile<const B: usize>(q: &[&[i32]; ROWS], keys: &ByteKeys, j0: usize) -> [[__m512i; B]; ROWS] {
    let (quads, cols) = (keys.quads, keys.cols);
    assert!(j0 + KEYS * B <= cols && keys.data.len() == quads * cols);
    assert!(q.iter().all(|row| row.len() == quads));
    let k0 = keys.data[j0..].as_ptr();
    let rows = q.map(|row| row.as_ptr());
    // SAFETY (every intrinsic below): the caller is compiled with AVX-512 F, BW and VNNI; the
    // loads read `data[g·cols + j0 ..][.. 16·B]` and `q[r][g]` for `g < quads`, inside the
    // slices by the asserts above.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); B]; ROWS];
        for g in 0..quads {
            let k: [__m512i; B] =
                std::array::from_fn(|b| _mm512_loadu_si512(k0.add(g * cols + KEYS * b).cast()));
            for (a, row) in acc.iter_mut().zip(&rows) {
                let qv = _mm512_set1_epi32(*row.add(g));
                for (a, &k) in a.iter_mut().zip(&k) {
                    *a = _mm512_dpbusd_epi32(*a, qv, k);
                }
            }
        }
        acc
    }
}

/// A tile's byte products plus each row's query term (rows past `terms`: none, they are not
/// stored) and each key's term, for the keys from `j0`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn with_terms<const B: usize>(
    mut acc: [[__m512i; B]; ROWS],
    terms: &[i32],
    keys: &ByteKeys,
    j0: usize,
) -> [[__m512i; B]; ROWS] {
    // SAFETY (the block): the caller is compiled with AVX-512 F; each load reads 16 of
    // `keys.terms` from `j0 + 16·b < cols`, its length (asserted by `scores_bytes`).
    unsafe {
        let key_terms: [__m512i; B] = std::array::from_fn(|b| {
            _mm512_loadu_si512(keys.terms[j0 + KEYS * b..][..KEYS].as_ptr().cast())
        });
        for (row, &term) in acc.iter_mut().zip(terms) {
            let term = _mm512_set1_epi32(term);
            for (v, &k) in row.iter_mut().zip(&key_terms) {
                *v = _mm512_add_epi32(_mm512_add_epi32(*v, term), k);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// DeiT's head (64 dims, 197 tokens) and odd sizes (dims off the quads, partial key
    /// blocks and row tiles, one key, no dims), signed and unsigned codes with zero points
    /// anywhere in their range (the ends included): the logits are `Σ_d (q − z)·(k − z)`.
    #[test]
    fn logits_equal_the_definition() {
        if !available(Isa::detect()) {
            eprintln!("scores_bytes: this CPU has no AVX-512 VNNI; the byte product is not run");
            return;
        }
        let mut rng = Rng::new(41);
        for (d, n, rows) in [
            (64, 197, 197),
            (64, 197, 5),
            (32, 65, 3),
            (7, 9, 9),
            (1, 3, 2),
            (33, 1, 1),
            (16, 17, 4),
            (6, 40, 11),
            (0, 4, 3),
        ] {
            for (lift, zero) in [(128, 0), (128, -128), (128, 127), (0, 0), (0, 255), (0, 93)] {
                let (lo, hi) = (-lift, 255 - lift);
                let code = |rng: &mut Rng| match rng.below(4) {
                    0 => lo,
                    1 => hi,
                    _ => lo + rng.below(256) as i32,
                };
                let q: Vec<i32> = (0..rows * d).map(|_| code(&mut rng)).collect();
                let k: Vec<i32> = (0..n * d).map(|_| code(&mut rng)).collect();
                let want: Vec<i32> = (0..rows * n)
                    .map(|i| {
                        let (r, j) = (i / n, i % n);
                        (0..d)
                            .map(|c| (q[r * d + c] - zero) * (k[j * d + c] - zero))
                            .sum()
                    })
                    .collect();
                let codes = ByteCodes { lift, zero };
                let key_row = |j: usize| &k[j * d..][..d];
                let keys = ByteKeys::from_key_rows(n, d, codes, key_row, ByteKeys::default());
                // The same packing in allocations another packing left longer and dirty.
                let dirty = ByteKeys {
                    data: vec![-9; n * d + 40],
                    terms: vec![5; n + 40],
                    ..ByteKeys::default()
                };
                assert_eq!(ByteKeys::from_key_rows(n, d, codes, key_row, dirty), keys);
                let (mut quads, mut terms) = (Vec::new(), Vec::new());
                for r in 0..rows {
                    terms.push(query_quads(&q[r * d..][..d], codes, &mut quads));
                }
                let mut got = vec![-1; rows * n];
                scores_bytes(Isa::detect(), &quads, &terms, &keys, &mut got);
                assert_eq!(
                    got, want,
                    "d = {d}, n = {n}, rows = {rows}, u = {lift}, z = {zero}"
                );
            }
        }
    }
}
