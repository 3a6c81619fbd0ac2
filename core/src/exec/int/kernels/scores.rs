//! `S = Q·Kᵀ` for one attention head as a blocked product: a tile of [`ROWS`] queries × 32
//! keys (AVX-512; 4 × 16 on AVX2) is held in registers across the whole head dimension, so each
//! logit costs a share of a multiply-add instead of the horizontal sum a dot product per
//! (query, key) pair ends in.
//!
//! Codes are centred i16 (|q|, |k| ≤ 255) taken two dimensions at a time: a pair of one query
//! is one i32 broadcast to every lane, a pair of 16 keys one vector (the keys are packed
//! dimension-pair-major, [`PackedKeys`]), and `vpmaddwd` multiplies the two pairs and adds them
//! in each i32 lane (`vpdpwssd` also adds them to the accumulator, with AVX-512 VNNI).
//! Integers, exact (a pair sums to at most 2·255², a head of up to 2^15 dimensions stays
//! inside i32), so every path gives the definition's result.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::cell::Cell;

use super::{Isa, Width, madd, pair, width};
use crate::exec::spare::{prefix_to_overwrite, resize_to_overwrite, with_kept};
use crate::exec::transpose::transpose;

/// Keys per block: one AVX-512 register of i32 lanes (two AVX2 ones).
pub const KEYS: usize = 16;
/// Queries per tile (two groups of four on AVX2).
pub const ROWS: usize = 8;

/// One head's keys, dimension pairs major: `data[c2·cols + j]` holds dimensions `2·c2` and
/// `2·c2 + 1` of key `j`; keys past the last and the odd dimension's partner are zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedKeys {
    /// Dimension pairs, `⌈d/2⌉`.
    pub pairs: usize,
    /// Keys.
    pub keys: usize,
    /// Keys rounded up to whole blocks.
    pub cols: usize,
    pub data: Vec<i32>,
}

impl PackedKeys {
    /// Packs `keys` keys of `d` dimensions, `code(j, c)` giving dimension `c` of key `j`.
    pub fn pack(keys: usize, d: usize, code: impl Fn(usize, usize) -> i16) -> Self {
        let (pairs, cols) = (d.div_ceil(2), keys.next_multiple_of(KEYS));
        let mut data = vec![0; pairs * cols];
        // One dimension pair at a time, its keys side by side (the odd dimension's pair last).
        for (c2, row) in data.chunks_exact_mut(cols.max(1)).enumerate().take(pairs) {
            let (c, odd) = (2 * c2, 2 * c2 + 1 == d);
            for (j, lane) in row[..keys].iter_mut().enumerate() {
                *lane = pair(code(j, c), if odd { 0 } else { code(j, c + 1) });
            }
        }
        Self {
            pairs,
            keys,
            cols,
            data,
        }
    }
}

/// Zeroes the columns of `data`'s rows (`cols` long) past the first `keys`, where a packing
/// writes none: the packings write over a recycled allocation (`resize_to_overwrite`) and zero
/// only this padding. Zeroed whole for every head of every call, DeiT-T's keys and values had
/// been 1.2 % of its integer time at batch 1 (`memset`, by `perf`).
pub(super) fn zero_padding(data: &mut [i32], cols: usize, keys: usize) {
    if keys < cols {
        data.chunks_exact_mut(cols)
            .for_each(|row| row[keys..].fill(0));
    }
}

/// Asks for `codes`' cache lines ahead of their use: rows that a packing reads one by one out
/// of a wider matrix (attention's keys, queries and values in the `qkv` output, a row of a
/// head's 64 codes each 2,304 bytes apart in DeiT-T), where the stride prefetchers miss: the
/// packings' loads had held most of their `perf` samples. DeiT-T at batch 1 on two threads ran
/// in 0.990 of the time without (twice), at batch 8 in the same (in-process alternation).
#[inline(always)]
pub fn prefetch(codes: &[i32]) {
    #[cfg(target_arch = "x86_64")]
    for line in codes.chunks(16) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE, the instruction's feature, is part of x86-64; a hint reads nothing
        // and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = codes;
}

/// How many rows ahead of its use a packing asks for a row ([`prefetch`]).
pub const AHEAD: usize = 6;

thread_local! {
    /// A packing's passes: the pairs or quads key by key, then their transpose.
    pub(super) static PASSES: Cell<(Vec<i32>, Vec<i32>)> = Cell::default();
}

impl PackedKeys {
    /// Packs `keys` keys of `d` dimensions stored key by key, `row(j)` holding key `j`'s codes
    /// (at least `d`), each less `zero` (the results must fit i16), in `recycled`'s
    /// allocation. The same packing as [`PackedKeys::pack`], in passes that vectorise: each
    /// key's pairs, key-major; their transpose ([`transpose`]); its rows into the blocks.
    pub fn from_key_rows<'a>(
        keys: usize,
        d: usize,
        zero: i32,
        row: impl Fn(usize) -> &'a [i32],
        recycled: PackedKeys,
    ) -> Self {
        let (pairs, cols) = (d.div_ceil(2), keys.next_multiple_of(KEYS));
        let mut data = recycled.data;
        resize_to_overwrite(&mut data, pairs * cols);
        if keys > 0 && pairs > 0 {
            with_kept(&PASSES, |(by_key, by_pair)| {
                by_key.clear();
                for j in 0..keys {
                    if j + AHEAD < keys {
                        prefetch(&row(j + AHEAD)[..d]);
                    }
                    centred_query_pairs(&row(j)[..d], zero, by_key);
                }
                let by_pair = prefix_to_overwrite(by_pair, keys * pairs);
                transpose(by_key, keys, pairs, by_pair);
                for (dst, src) in data.chunks_exact_mut(cols).zip(by_pair.chunks_exact(keys)) {
                    dst[..keys].copy_from_slice(src);
                }
            });
            zero_padding(&mut data, cols, keys);
        } else {
            data.fill(0);
        }
        Self {
            pairs,
            keys,
            cols,
            data,
        }
    }

    /// Packs `keys` keys of `d` dimensions stored dimension by dimension, `dim(c)` holding
    /// dimension `c` of every key (at least `keys` codes), each less `zero`: `P·V`'s values,
    /// whose "keys" are channels and dimensions tokens. The same packing as
    /// [`PackedKeys::pack`], in `recycled`'s allocation: a block row is two dimensions' rows
    /// interleaved. `None` when a centred code leaves i16 (checked as the codes are packed: a
    /// pass of its own before had been 1.5 % of DeiT-T's integer time, by `perf`), or lies so
    /// far from `zero` that the difference leaves i32.
    pub fn from_dim_rows<'a>(
        isa: Isa,
        keys: usize,
        d: usize,
        zero: i32,
        dim: impl Fn(usize) -> &'a [i32],
        recycled: PackedKeys,
    ) -> Option<Self> {
        let (pairs, cols) = (d.div_ceil(2), keys.next_multiple_of(KEYS));
        let mut data = recycled.data;
        resize_to_overwrite(&mut data, pairs * cols);
        let mut fits = true;
        for (c2, dst) in data.chunks_exact_mut(cols.max(1)).enumerate().take(pairs) {
            for c in (2 * (c2 + AHEAD)..d).take(2) {
                prefetch(&dim(c)[..keys]);
            }
            let lo = &dim(2 * c2)[..keys];
            let hi = (2 * c2 + 1 < d).then(|| &dim(2 * c2 + 1)[..keys]);
            fits &= centred_pairs(isa, lo, hi, zero, &mut dst[..keys]);
        }
        zero_padding(&mut data, cols.max(1), keys);
        fits.then_some(Self {
            pairs,
            keys,
            cols,
            data,
        })
    }
}

/// `dst[t] = pair(a[t] − z, b[t] − z)` (`b` absent: 0), and whether every difference is one
/// i16 holds (a difference that leaves i32 wraps, and is caught by its sign).
fn centred_pairs(isa: Isa, a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    assert!(a.len() == dst.len() && b.is_none_or(|b| b.len() == dst.len()));
    by_width!(
        isa,
        centred_pairs_avx512,
        centred_pairs_avx2,
        centred_pairs_portable,
        (a, b, z, dst)
    )
}

#[inline(always)]
fn centred_pairs_portable(a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    // The centred code, and whether it is one i16 holds.
    let centre = |q: i32| {
        let v = q.wrapping_sub(z);
        (v as i16, v as i16 as i32 == v && (q >= z) == (v >= 0))
    };
    let mut fits = true;
    match b {
        Some(b) => {
            for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                let ((x, x_fits), (y, y_fits)) = (centre(x), centre(y));
                fits &= x_fits & y_fits;
                *o = pair(x, y);
            }
        }
        None => {
            for (o, &x) in dst.iter_mut().zip(a) {
                let (x, x_fits) = centre(x);
                fits &= x_fits;
                *o = pair(x, 0);
            }
        }
    }
    fits
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn centred_pairs_avx2(a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    centred_pairs_portable(a, b, z, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn centred_pairs_avx512(a: &[i32], b: Option<&[i32]>, z: i32, dst: &mut [i32]) -> bool {
    centred_pairs_portable(a, b, z, dst)
}

/// A query's codes as dimension pairs (the odd dimension's partner a zero), appended to `out`.
pub fn query_pairs(q: &[i16], out: &mut Vec<i32>) {
    let whole = q.chunks_exact(2);
    let odd = whole.remainder().first().map(|&lo| pair(lo, 0));
    out.extend(whole.map(|p| pair(p[0], p[1])).chain(odd));
}

/// [`query_pairs`] of a query's (or a key's) codes less their zero-point `zero`, each
/// difference cast to i16 (the codes the compiler sends here have at most 8 bits), appended
/// to `out`: one pass into place, where the queries had been centred into a buffer and then
/// paired, and both by `Vec::extend` of iterators (2.9 % of DeiT-T's integer time on AVX2 with
/// the keys' pairs, 1.0 % after, by `perf`).
pub fn centred_query_pairs(q: &[i32], zero: i32, out: &mut Vec<i32>) {
    let centre = |v: i32| v.wrapping_sub(zero) as i16;
    let start = out.len();
    out.resize(start + q.len().div_ceil(2), 0);
    let dst = &mut out[start..];
    for (d, two) in dst.iter_mut().zip(q.chunks_exact(2)) {
        *d = pair(centre(two[0]), centre(two[1]));
    }
    if let (Some(d), [.., lo]) = (dst.last_mut(), q)
        && q.len() % 2 == 1
    {
        *d = pair(centre(*lo), 0);
    }
}

/// The values a [`NarrowTable`] keeps in registers: four of 16.
const HEAD: usize = 64;

/// A code → value table for rows of query pairs decoded from codes (`P·V`'s probabilities):
/// values past i16 are marked by `i32::MIN`, which no i16 equals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrowTable {
    values: Vec<i32>,
    /// The first [`HEAD`] values (0 past the table's end) when every later one is 0, as under
    /// log√2 codes, whose values at 2^−15 vanish from the 34th level on: AVX-512 then looks
    /// codes up with two-register permutes instead of a gather.
    head: Option<[i32; HEAD]>,
}

impl NarrowTable {
    pub fn new(values: &[i32]) -> Self {
        Self::with(values, i32::MIN)
    }

    /// The table with every value past i16 read as 0 instead of marked: the product of the
    /// values inside i16, to which the caller adds the others' terms.
    pub fn clipped(values: &[i32]) -> Self {
        Self::with(values, 0)
    }

    /// The table with every value past i16 as `wide`.
    fn with(values: &[i32], wide: i32) -> Self {
        let values: Vec<i32> = values
            .iter()
            .map(|&v| i16::try_from(v).map_or(wide, i32::from))
            .collect();
        let head = values.iter().skip(HEAD).all(|&v| v == 0).then(|| {
            let mut head = [0; HEAD];
            for (h, &v) in head.iter_mut().zip(&values) {
                *h = v;
            }
            head
        });
        Self { values, head }
    }

    /// The i16 value of `code`, if it has one.
    #[inline(always)]
    fn get(&self, code: i32) -> Option<i16> {
        let v = *self.values.get(usize::try_from(code).ok()?)?;
        (v != i32::MIN).then_some(v as i16)
    }
}

/// Rows of `n` codes decoded through `table`, as [`query_pairs`] of each decoded row, into
/// `out` (replacing what it held); `false` — `out` then unspecified — when a code lies outside
/// the table or decodes past i16.
pub fn decoded_pairs(
    isa: Isa,
    table: &NarrowTable,
    codes: &[i32],
    n: usize,
    out: &mut Vec<i32>,
) -> bool {
    let pairs = n.div_ceil(2);
    let rows = codes.len().checked_div(n).unwrap_or(0);
    assert_eq!(codes.len(), rows * n, "whole rows of codes");
    out.clear();
    // Zeros: the odd row's last partner.
    out.resize(rows * pairs, 0);
    by_width!(
        isa,
        decoded_pairs_avx512,
        decoded_pairs_avx2,
        decoded_pairs_portable,
        (table, codes, n, out)
    )
}

fn decoded_pairs_portable(table: &NarrowTable, codes: &[i32], n: usize, out: &mut [i32]) -> bool {
    let pairs = n.div_ceil(2);
    for (row, dst) in codes.chunks_exact(n).zip(out.chunks_exact_mut(pairs)) {
        for (two, p) in row.chunks(2).zip(dst.iter_mut()) {
            let (Some(lo), hi) = (table.get(two[0]), two.get(1).map(|&c| table.get(c))) else {
                return false;
            };
            let Some(hi) = hi.unwrap_or(Some(0)) else {
                return false;
            };
            *p = pair(lo, hi);
        }
    }
    true
}

/// Decodes one row's codes from `from` on one at a time into the i16 view `dst` of its pairs.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn decode_tail(table: &NarrowTable, row: &[i32], from: usize, dst: *mut i16) -> bool {
    for (j, &code) in row.iter().enumerate().skip(from) {
        let Some(v) = table.get(code) else {
            return false;
        };
        // SAFETY: the caller's `dst` holds the row's `2·pairs ≥ n` i16.
        unsafe { dst.add(j).write_unaligned(v) };
    }
    true
}

/// Each row's pairs as `2·pairs` little-endian i16 — a pair's low half first, as [`pair`]
/// builds it — written 16 codes at a time: a range check, a look-up (a gather, or a permute
/// of [`NarrowTable::head`]), a check against the mark, and a truncation to i16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn decoded_pairs_avx512(table: &NarrowTable, codes: &[i32], n: usize, out: &mut [i32]) -> bool {
    match &table.head {
        Some(head) => decoded_pairs_lanes::<true>(table, head, codes, n, out),
        None => decoded_pairs_lanes::<false>(table, &[0; HEAD], codes, n, out),
    }
}

/// [`decoded_pairs_avx512`] with its look-up permutes of `head` (`PERMUTE`) or a gather.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn decoded_pairs_lanes<const PERMUTE: bool>(
    table: &NarrowTable,
    head: &[i32; HEAD],
    codes: &[i32],
    n: usize,
    out: &mut [i32],
) -> bool {
    // SAFETY: `head` holds 64 i32.
    let quarter = |q: usize| unsafe { _mm512_loadu_si512(head[16 * q..].as_ptr().cast()) };
    let (first, second) = ((quarter(0), quarter(1)), (quarter(2), quarter(3)));
    let (thirty_two, sixty_four) = (_mm512_set1_epi32(32), _mm512_set1_epi32(64));
    let pairs = n.div_ceil(2);
    let (len, mark) = (
        _mm512_set1_epi32(table.values.len() as i32),
        _mm512_set1_epi32(i32::MIN),
    );
    for (row, dst) in codes.chunks_exact(n).zip(out.chunks_exact_mut(pairs)) {
        let dst = dst.as_mut_ptr().cast::<i16>();
        let whole = n / 16 * 16;
        for (k, chunk) in row[..whole].chunks_exact(16).enumerate() {
            // SAFETY: `chunk` holds 16 i32; the gather runs only once every lane's code is
            // inside the table; the store writes 16 of the row's `2·pairs ≥ n` i16.
            unsafe {
                let c = _mm512_loadu_si512(chunk.as_ptr().cast());
                if _mm512_cmplt_epu32_mask(c, len) != u16::MAX {
                    return false;
                }
                let v = if PERMUTE {
                    // Codes 0–31 from the first pair of registers, 32–63 from the second (the
                    // permute reads the low five bits), from 64 on 0 (`NarrowTable::head`).
                    let low = _mm512_cmplt_epu32_mask(c, thirty_two);
                    let high = _mm512_cmplt_epu32_mask(c, sixty_four) & !low;
                    let v = _mm512_maskz_permutex2var_epi32(low, first.0, c, first.1);
                    let w = _mm512_permutex2var_epi32(second.0, c, second.1);
                    _mm512_mask_blend_epi32(high, v, w)
                } else {
                    _mm512_i32gather_epi32::<4>(c, table.values.as_ptr())
                };
                if _mm512_cmpeq_epi32_mask(v, mark) != 0 {
                    return false;
                }
                _mm256_storeu_si256(dst.add(16 * k).cast(), _mm512_cvtepi32_epi16(v));
            }
        }
        if !decode_tail(table, row, whole, dst) {
            return false;
        }
    }
    true
}

/// [`decoded_pairs_avx512`] eight codes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn decoded_pairs_avx2(table: &NarrowTable, codes: &[i32], n: usize, out: &mut [i32]) -> bool {
    let pairs = n.div_ceil(2);
    let last = _mm256_set1_epi32(table.values.len() as i32 - 1);
    let mark = _mm256_set1_epi32(i32::MIN);
    for (row, dst) in codes.chunks_exact(n).zip(out.chunks_exact_mut(pairs)) {
        let dst = dst.as_mut_ptr().cast::<i16>();
        let whole = n / 8 * 8;
        for (k, chunk) in row[..whole].chunks_exact(8).enumerate() {
            // SAFETY: as in `decoded_pairs_avx512`, eight at a time (the table's length fits
            // in i32, so `0 ≤ c ≤ len − 1` is two signed compares).
            unsafe {
                let c = _mm256_loadu_si256(chunk.as_ptr().cast());
                let outside = _mm256_or_si256(
                    _mm256_cmpgt_epi32(_mm256_setzero_si256(), c),
                    _mm256_cmpgt_epi32(c, last),
                );
                if _mm256_movemask_epi8(outside) != 0 {
                    return false;
                }
                let v = _mm256_i32gather_epi32::<4>(table.values.as_ptr(), c);
                if _mm256_movemask_epi8(_mm256_cmpeq_epi32(v, mark)) != 0 {
                    return false;
                }
                // Saturating packs keep every i16 value; lanes 0–3 and 4–7 sit in the low
                // halves of the two 128-bit lanes, joined by the permute.
                let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packs_epi32(v, v));
                _mm_storeu_si128(dst.add(8 * k).cast(), _mm256_castsi256_si128(packed));
            }
        }
        if !decode_tail(table, row, whole, dst) {
            return false;
        }
    }
    true
}

/// `out[r·keys + j]` = query `r` · key `j` for the queries in `queries` (`r` rows of
/// `keys.pairs` pairs, from [`query_pairs`]).
pub fn scores(isa: Isa, queries: &[i32], keys: &PackedKeys, out: &mut [i32]) {
    // With no dimensions there are no query pairs: the output's size gives the rows.
    let rows = queries
        .len()
        .checked_div(keys.pairs)
        .unwrap_or_else(|| out.len() / keys.keys.max(1));
    assert_eq!(queries.len(), rows * keys.pairs, "queries of another width");
    assert_eq!(out.len(), rows * keys.keys, "an output of another size");
    assert_eq!(
        keys.data.len(),
        keys.pairs * keys.cols,
        "a malformed key pack"
    );
    match width(isa) {
        // SAFETY (both): `width` found the features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 if std::arch::is_x86_feature_detected!("avx512vnni") => unsafe {
            scores_avx512_vnni(queries, rows, keys, out)
        },
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => unsafe { scores_avx512(queries, rows, keys, out) },
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => unsafe { scores_avx2(queries, rows, keys, out) },
        _ => scores_portable(queries, rows, keys, out),
    }
}

/// The definition, one logit at a time (the reference the vector paths are tested against).
fn scores_portable(queries: &[i32], rows: usize, keys: &PackedKeys, out: &mut [i32]) {
    for r in 0..rows {
        let q = &queries[r * keys.pairs..(r + 1) * keys.pairs];
        for j in 0..keys.keys {
            out[r * keys.keys + j] = q
                .iter()
                .enumerate()
                .map(|(c2, &qp)| madd(qp, keys.data[c2 * keys.cols + j]))
                .sum();
        }
    }
}

/// The queries of the tile from row `r0`: how many there are, and each tile row's pairs (rows
/// past the last repeat it: their sums are computed and dropped).
#[inline(always)]
pub(super) fn tile_queries(
    queries: &[i32],
    rows: usize,
    pairs: usize,
    r0: usize,
) -> (usize, [&[i32]; ROWS]) {
    let tile_rows = (rows - r0).min(ROWS);
    let q = std::array::from_fn(|r| {
        let row = r0 + r.min(tile_rows - 1);
        &queries[row * pairs..(row + 1) * pairs]
    });
    (tile_rows, q)
}

/// The sums of `R` query rows (`q`, each `keys.pairs` long) with `16·B` keys from `j0`, as
/// `B` registers of 16 i32 per row: `vpdpwssd` where the CPU has AVX-512 VNNI (`VNNI`), else
/// `vpmaddwd` + `vpaddd` — the same integers.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tile_avx512<const VNNI: bool, const R: usize, const B: usize>(
    q: &[&[i32]; R],
    keys: &PackedKeys,
    j0: usize,
) -> [[__m512i; B]; R] {
    let (pairs, cols) = (keys.pairs, keys.cols);
    assert!(j0 + KEYS * B <= cols && keys.data.len() == pairs * cols);
    assert!(q.iter().all(|row| row.len() == pairs));
    let k0 = keys.data[j0..].as_ptr();
    let rows = q.map(|row| row.as_ptr());
    // SAFETY (every intrinsic below): the caller is compiled with AVX-512 F and BW, and with
    // VNNI when `VNNI`; the loads read `data[c2·cols + j0 ..][.. 16·B]` and `q[r][c2]` for
    // `c2 < pairs`, inside the slices by the asserts above.
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); B]; R];
        for c2 in 0..pairs {
            let k: [__m512i; B] =
                std::array::from_fn(|b| _mm512_loadu_si512(k0.add(c2 * cols + KEYS * b).cast()));
            for (a, row) in acc.iter_mut().zip(&rows) {
                let qv = _mm512_set1_epi32(*row.add(c2));
                for (a, &k) in a.iter_mut().zip(&k) {
                    *a = if VNNI {
                        _mm512_dpwssd_epi32(*a, qv, k)
                    } else {
                        _mm512_add_epi32(*a, _mm512_madd_epi16(qv, k))
                    };
                }
            }
        }
        acc
    }
}

/// Stores a tile's first `rows` rows, of each block only the keys before `keys` (a masked
/// store), at row `r0` and key `j0` of `out` (`keys` per row).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn store_avx512<const R: usize, const B: usize>(
    acc: &[[__m512i; B]; R],
    rows: usize,
    keys: usize,
    r0: usize,
    j0: usize,
    out: &mut [i32],
) {
    for (r, blocks) in acc.iter().enumerate().take(rows) {
        let row = &mut out[(r0 + r) * keys..][..keys];
        for (b, &v) in blocks.iter().enumerate() {
            let j = j0 + KEYS * b;
            let valid = keys.saturating_sub(j).min(KEYS);
            if valid == 0 {
                break;
            }
            let dst = row[j..][..valid].as_mut_ptr();
            // SAFETY: the caller is compiled with AVX-512 F; the mask writes the `valid`
            // lanes `dst` holds (masked-off lanes are not touched).
            unsafe { _mm512_mask_storeu_epi32(dst.cast(), ((1u32 << valid) - 1) as u16, v) };
        }
    }
}

/// Tiles of [`ROWS`] queries by 32 keys (16 for a last single block): with VNNI when `VNNI`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn scores_avx512_body<const VNNI: bool>(
    queries: &[i32],
    rows: usize,
    keys: &PackedKeys,
    out: &mut [i32],
) {
    for r0 in (0..rows).step_by(ROWS) {
        let (tile_rows, q) = tile_queries(queries, rows, keys.pairs, r0);
        let mut j0 = 0;
        while j0 + 2 * KEYS <= keys.cols {
            let acc = tile_avx512::<VNNI, ROWS, 2>(&q, keys, j0);
            store_avx512(&acc, tile_rows, keys.keys, r0, j0, out);
            j0 += 2 * KEYS;
        }
        if j0 < keys.cols {
            let acc = tile_avx512::<VNNI, ROWS, 1>(&q, keys, j0);
            store_avx512(&acc, tile_rows, keys.keys, r0, j0, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn scores_avx512_vnni(queries: &[i32], rows: usize, keys: &PackedKeys, out: &mut [i32]) {
    scores_avx512_body::<true>(queries, rows, keys, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn scores_avx512(queries: &[i32], rows: usize, keys: &PackedKeys, out: &mut [i32]) {
    scores_avx512_body::<false>(queries, rows, keys, out)
}

/// Four query rows by 16 keys (two registers of 8 per row: AVX2 has 16 registers).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tile_avx2(q: &[&[i32]], keys: &PackedKeys, j0: usize) -> [[__m256i; 2]; 4] {
    let (pairs, cols) = (keys.pairs, keys.cols);
    assert!(q.len() == 4 && j0 + KEYS <= cols && keys.data.len() == pairs * cols);
    assert!(q.iter().all(|row| row.len() == pairs));
    let k0 = keys.data[j0..].as_ptr();
    let rows: [*const i32; 4] = std::array::from_fn(|r| q[r].as_ptr());
    // SAFETY (every intrinsic below): the caller is compiled with AVX2; the loads read
    // `data[c2·cols + j0 ..][.. 16]` and `q[r][c2]` for `c2 < pairs`, inside the slices by the
    // asserts above.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); 2]; 4];
        for c2 in 0..pairs {
            let k = k0.add(c2 * cols);
            let k = [
                _mm256_loadu_si256(k.cast()),
                _mm256_loadu_si256(k.add(8).cast()),
            ];
            for (a, row) in acc.iter_mut().zip(&rows) {
                let qv = _mm256_set1_epi32(*row.add(c2));
                a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(qv, k[0]));
                a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(qv, k[1]));
            }
        }
        acc
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scores_avx2(queries: &[i32], rows: usize, keys: &PackedKeys, out: &mut [i32]) {
    for r0 in (0..rows).step_by(ROWS) {
        let (tile_rows, q) = tile_queries(queries, rows, keys.pairs, r0);
        for j0 in (0..keys.keys).step_by(KEYS) {
            let valid = (keys.keys - j0).min(KEYS);
            // The tile's rows four at a time (a group of repeated rows only is skipped).
            for (g, q) in q.chunks_exact(4).enumerate().take(tile_rows.div_ceil(4)) {
                let acc = tile_avx2(q, keys, j0);
                for (r, a) in acc.iter().enumerate().take(tile_rows.saturating_sub(4 * g)) {
                    let row = r0 + 4 * g + r;
                    let dst = &mut out[row * keys.keys + j0..][..valid];
                    // SAFETY (both): `dst` holds 16 i32 when whole, `lanes` always.
                    if valid == KEYS {
                        unsafe {
                            _mm256_storeu_si256(dst.as_mut_ptr().cast(), a[0]);
                            _mm256_storeu_si256(dst[8..].as_mut_ptr().cast(), a[1]);
                        }
                    } else {
                        // A last part block through the stack: a copy of `valid` values, not a
                        // masked store (microcode on AMD's Zen 2 and 3, see `spans`).
                        let mut lanes = [0i32; KEYS];
                        unsafe {
                            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a[0]);
                            _mm256_storeu_si256(lanes[8..].as_mut_ptr().cast(), a[1]);
                        }
                        dst.copy_from_slice(&lanes[..valid]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// DeiT's head (64 dims, 197 tokens) and odd sizes (odd dims, partial key blocks and row
    /// tiles, one key, no dims), codes at ±255 included: every path gives `Σ_c q[c]·k_j[c]`.
    #[test]
    fn every_isa_equals_the_definition() {
        let mut rng = Rng::new(33);
        let code = |rng: &mut Rng| match rng.below(4) {
            0 => 255,
            1 => -255,
            _ => rng.below(511) as i16 - 255,
        };
        for (d, n, rows) in [
            (64, 197, 197),
            (64, 197, 5),
            (32, 65, 3),
            (7, 9, 9),
            (1, 3, 2),
            (33, 1, 1),
            (16, 17, 4),
            (0, 4, 3),
            // `P·V`'s shape: the tokens as dimensions, the head's 64 channels as keys.
            (197, 64, 8),
            (197, 64, 13),
        ] {
            let q: Vec<i16> = (0..rows * d).map(|_| code(&mut rng)).collect();
            let k: Vec<i16> = (0..n * d).map(|_| code(&mut rng)).collect();
            let want: Vec<i32> = (0..rows * n)
                .map(|i| {
                    let (r, j) = (i / n, i % n);
                    (0..d)
                        .map(|c| q[r * d + c] as i32 * k[j * d + c] as i32)
                        .sum()
                })
                .collect();
            let keys = PackedKeys::pack(n, d, |j, c| k[j * d + c]);
            let mut pairs = Vec::new();
            for r in 0..rows {
                query_pairs(&q[r * d..(r + 1) * d], &mut pairs);
            }
            for isa in Isa::available() {
                let mut got = vec![-1; rows * n];
                scores(isa, &pairs, &keys, &mut got);
                assert_eq!(got, want, "{} d = {d}, n = {n}, rows = {rows}", isa.name());
            }
            // AVX-512 without VNNI, which `scores` passes over on a CPU that has it.
            #[cfg(target_arch = "x86_64")]
            if Isa::available().contains(&Isa::Avx512Vnni) {
                let mut got = vec![-1; rows * n];
                // SAFETY: AVX-512 F and BW are present (VNNI implies them in `Isa`).
                unsafe { scores_avx512(&pairs, rows, &keys, &mut got) };
                assert_eq!(got, want, "avx512 d = {d}, n = {n}, rows = {rows}");
            }
        }
    }

    /// Rows of odd and even lengths, codes decoding inside i16 and (one code) to 2^15: every
    /// ISA gives the pairs of the decoded rows, and turns away a code past i16, below 0 or
    /// past the table, whether it falls in a vector or in a row's tail. Two tables: one with
    /// values to its end past 64 (gathered), and log√2 levels of 2^15 over 256 codes, 0 from
    /// the 34th on (looked up in the first 64 by permutes).
    #[test]
    fn decoded_pairs_equal_the_pairs_of_the_decoded_rows() {
        let mut rng = Rng::new(8);
        let to_the_end: Vec<i32> = (0..80).map(|k| (1 << 15) >> (k % 17)).rev().collect();
        let log_sqrt2: Vec<i32> = (0..256)
            .map(|k| (32768.0 * 2f64.powf(-k as f64 / 2.0)).round() as i32)
            .collect();
        for (values, head) in [(to_the_end, false), (log_sqrt2, true)] {
            let table = NarrowTable::new(&values);
            assert_eq!(table.head.is_some(), head);
            check_decoded_pairs(&mut rng, &values, &table);
        }
    }

    fn check_decoded_pairs(rng: &mut Rng, values: &[i32], table: &NarrowTable) {
        let narrow: Vec<i32> = (0..values.len() as i32)
            .filter(|&c| values[c as usize] < 1 << 15)
            .collect();
        for (n, rows) in [(197, 8), (197, 3), (1, 4), (16, 2), (17, 1), (40, 5)] {
            let codes: Vec<i32> = (0..n * rows)
                .map(|_| narrow[rng.below(narrow.len())])
                .collect();
            let mut want = Vec::new();
            for row in codes.chunks_exact(n) {
                let w: Vec<i16> = row.iter().map(|&c| values[c as usize] as i16).collect();
                query_pairs(&w, &mut want);
            }
            let wide = (0..values.len() as i32)
                .find(|&c| values[c as usize] == 1 << 15)
                .unwrap();
            for isa in Isa::available() {
                let mut got = vec![7; 3];
                assert!(decoded_pairs(isa, table, &codes, n, &mut got));
                assert_eq!(got, want, "{} n = {n}, rows = {rows}", isa.name());
                // A bad code first in the last row (inside a vector for n ≥ 16) and last (in
                // the tail when n is not a multiple of 16).
                for at in [(rows - 1) * n, rows * n - 1] {
                    for bad in [wide, -1, values.len() as i32, i32::MAX, i32::MIN] {
                        let mut codes = codes.clone();
                        codes[at] = bad;
                        assert!(
                            !decoded_pairs(isa, table, &codes, n, &mut got),
                            "{} n = {n}: code {bad} at {at}",
                            isa.name()
                        );
                    }
                }
            }
        }
    }

    /// Keys stored key by key and dimension by dimension, odd dimensions, key counts off the
    /// blocks, none at all: the same packing as the definition's.
    #[test]
    fn keys_from_rows_equal_the_packing() {
        let mut rng = Rng::new(21);
        for (keys, d) in [
            (0, 5),
            (1, 1),
            (3, 7),
            (16, 64),
            (17, 64),
            (197, 64),
            (64, 197),
            (5, 0),
        ] {
            let zero = rng.below(256) as i32 - 128;
            let by_key: Vec<i32> = (0..keys * d).map(|_| rng.below(256) as i32 - 128).collect();
            let want = PackedKeys::pack(keys, d, |j, c| (by_key[j * d + c] - zero) as i16);
            // In a new allocation, and in one a packing of other keys left longer and dirty.
            let dirty = || PackedKeys {
                data: vec![-7; keys * d + 40],
                ..PackedKeys::default()
            };
            for recycled in [PackedKeys::default(), dirty()] {
                let got =
                    PackedKeys::from_key_rows(keys, d, zero, |j| &by_key[j * d..][..d], recycled);
                assert_eq!(got, want, "{keys} keys of {d} from key rows");
            }
            // Codes whose centred values reach both ends of i16.
            let by_dim: Vec<i32> = (0..d * keys)
                .map(|_| rng.below(1 << 16) as i32 - (1 << 15) + zero)
                .collect();
            let want = PackedKeys::pack(keys, d, |j, c| (by_dim[c * keys + j] - zero) as i16);
            for isa in Isa::available() {
                let dims = |c: usize| &by_dim[c * keys..][..keys];
                for recycled in [PackedKeys::default(), dirty()] {
                    let got = PackedKeys::from_dim_rows(isa, keys, d, zero, dims, recycled);
                    assert_eq!(
                        got.as_ref(),
                        Some(&want),
                        "{keys} keys of {d}, {}",
                        isa.name()
                    );
                }
            }
            // A code one past either end of i16, anywhere: no packing.
            for (i, past) in [
                (0, i16::MAX as i32 + 1),
                (keys * d / 2, i16::MIN as i32 - 1),
            ] {
                if keys * d == 0 {
                    break;
                }
                let mut wide = by_dim.clone();
                wide[i.min(keys * d - 1)] = past + zero;
                for isa in Isa::available() {
                    let dims = |c: usize| &wide[c * keys..][..keys];
                    let got = PackedKeys::from_dim_rows(isa, keys, d, zero, dims, dirty());
                    assert_eq!(
                        got,
                        None,
                        "{keys} keys of {d}, {past} past zero, {}",
                        isa.name()
                    );
                }
            }
        }
    }

    /// A code whose distance from the zero point leaves i32 (`−2^32 + 16`, which wraps to 16):
    /// no packing, where the wrapped difference alone would have looked like an i16.
    #[test]
    fn keys_whose_difference_wraps_are_not_packed() {
        let codes = [i32::MAX - 5, i32::MIN + 10];
        let near = [i32::MAX - 5, i32::MAX - 4];
        for isa in Isa::available() {
            let pack = |codes| {
                PackedKeys::from_dim_rows(isa, 2, 1, i32::MAX - 5, |_| codes, PackedKeys::default())
            };
            assert_eq!(pack(&codes), None, "{}", isa.name());
            assert!(pack(&near).is_some());
        }
    }

    #[test]
    fn pairs_by_hand() {
        assert_eq!(pair(1, 0), 1);
        assert_eq!(pair(0, 1), 1 << 16);
        assert_eq!(pair(-1, 0), 0xFFFF);
        assert_eq!(pair(-255, -1), -65536 | 0xFF01);
        let mut out = Vec::new();
        query_pairs(&[3, -2, 5], &mut out);
        assert_eq!(out, [pair(3, -2), pair(5, 0)]);
        // Appended after what `out` holds, centred on the zero-point, odd and even lengths.
        centred_query_pairs(&[10, 5, 12], 7, &mut out);
        assert_eq!(out[2..], [pair(3, -2), pair(5, 0)]);
        centred_query_pairs(&[0, 255, -128, 127], 0, &mut out);
        assert_eq!(out[4..], [pair(0, 255), pair(-128, 127)]);
        centred_query_pairs(&[], 3, &mut out);
        assert_eq!(out.len(), 6);
    }
}
