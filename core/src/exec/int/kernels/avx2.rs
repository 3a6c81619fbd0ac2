//! The AVX2 product. AVX2 has no u8×i8 dot product that cannot saturate (`vpmaddubsw` adds two
//! products in i16, and 255·127·2 overflows it), so the u8 activations are widened to i16 as
//! they are loaded (`vpmovzxbw`) and multiplied with `vpmaddwd`, which adds pairs exactly into
//! i32: 16 MACs per instruction, the exact int8 primitive AVX2 has ([`peak_loop`] measures its
//! rate). Each accumulator lane holds half of a column's sum; the halves are added once per
//! tile.
//!
//! A tile is `MR` ≤ 6 weight rows × 8 columns (half a packed panel): 12 accumulators, 2
//! activation registers and one broadcast weight pair fit AVX2's 16 registers. The weights are
//! read as sign-extended i16 quads ([`PackedA::quads16`]), one broadcast load per row and group.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::columns::{Block256, LookedUp, Requantize};
#[cfg(target_arch = "x86_64")]
use super::finish::{Finish, Sums};
use super::{PANEL, PackedA, PackedB};

/// Weight rows per tile.
pub(super) const MR: usize = 6;
/// The most columns of a last, part-filled half panel that run as dot products
/// ([`dots`]).
#[cfg(target_arch = "x86_64")]
const DOT_COLUMNS: usize = 2;

#[cfg(target_arch = "x86_64")]
pub fn gemm(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    assert!(std::arch::is_x86_feature_detected!("avx2"));
    // SAFETY: AVX2 was checked just above.
    unsafe { gemm_avx2(a, rows, b, out, &Sums) }
}

/// [`gemm`] with each row's sums requantized by `r` (and looked up) in the tile, as
/// `vnni::gemm_requantized` does.
#[cfg(target_arch = "x86_64")]
pub fn gemm_requantized(
    a: &PackedA,
    rows: Range<usize>,
    b: &PackedB,
    r: &Requantize,
    out: &mut [i32],
) {
    assert!(std::arch::is_x86_feature_detected!("avx2"));
    // `gemm_rows_requantized` checked the constants, offsets and marks against the rows and
    // columns; `LookedUp::new` checks the marks again.
    assert!(r.columns.channels() == b.cols && r.offsets.len() >= rows.len());
    match &r.table {
        // SAFETY (both): AVX2 was checked above.
        None => unsafe { gemm_avx2(a, rows, b, out, r) },
        Some(look_up) => {
            let looked_up = LookedUp::new(r, look_up, rows.len());
            unsafe { gemm_avx2(a, rows, b, out, &looked_up) }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Finish<__m256i> for Requantize<'_> {
    const DOTS: bool = false;
    type Block = Block256;
    #[inline(always)]
    unsafe fn block(&self, col: usize) -> Block256 {
        // SAFETY: the caller's promises; a half panel's first column is a multiple of 8 below
        // the channels (asserted equal to the columns in `gemm_requantized`).
        unsafe { self.columns.block256(col) }
    }
    #[inline(always)]
    fn initial(&self, r: usize) -> i32 {
        self.offsets[r]
    }
    #[inline(always)]
    unsafe fn finish(&self, block: &Block256, _: usize, sums: __m256i) -> __m256i {
        // SAFETY: AVX2 is the caller's promise.
        unsafe { block.apply(sums) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Finish<__m256i> for LookedUp<'_> {
    const DOTS: bool = false;
    /// The channels' constants and the lanes that are channels (all ones).
    type Block = (Block256, __m256i);
    #[inline(always)]
    unsafe fn block(&self, col: usize) -> Self::Block {
        let lanes = (self.columns.channels() - col).min(PANEL / 2) as i32;
        // SAFETY: as for `Requantize`.
        unsafe {
            let block = self.columns.block256(col);
            let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            (block, _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), index))
        }
    }
    #[inline(always)]
    fn initial(&self, r: usize) -> i32 {
        self.offsets[r]
    }
    #[inline(always)]
    unsafe fn finish(&self, (block, lanes): &Self::Block, r: usize, sums: __m256i) -> __m256i {
        // SAFETY: AVX2 and `r` are the caller's promises (`r` < the rows `new` took).
        unsafe { self.look_up256(block.apply(sums), *lanes, r) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gemm_avx2<F: Finish<__m256i>>(
    a: &PackedA,
    rows: Range<usize>,
    b: &PackedB,
    out: &mut [i32],
    f: &F,
) {
    // A last half panel of a column or two is cheaper as their dot products than as a tile,
    // which does the work of all 8 (a 7×7 map's 49 columns: 7 halves' work for 6.25). Per
    // weight row, a half panel costs `2·k4` `vpmaddwd`; a column's dot product `⌈k4/4⌉` and a
    // horizontal sum of about 6 instructions.
    let ragged = b.cols % (PANEL / 2);
    let dots_pay = F::DOTS && ragged <= DOT_COLUMNS && ragged * (b.k4.div_ceil(4) + 6) < 2 * b.k4;
    let halves = match dots_pay {
        true => b.cols / (PANEL / 2),
        false => b.cols.div_ceil(PANEL / 2),
    };
    let columns = widened_columns(b, halves * PANEL / 2..b.cols);
    // `out` holds rows `rows` only: tiles write row `r` at `r − first`.
    let first = rows.start;
    let mut r = first;
    while r < rows.end {
        let mr = (rows.end - r).min(MR);
        for h in 0..halves {
            match mr {
                6 => tile::<6, F>(a, b, (out, f), first, r, h),
                5 => tile::<5, F>(a, b, (out, f), first, r, h),
                4 => tile::<4, F>(a, b, (out, f), first, r, h),
                3 => tile::<3, F>(a, b, (out, f), first, r, h),
                2 => tile::<2, F>(a, b, (out, f), first, r, h),
                _ => tile::<1, F>(a, b, (out, f), first, r, h),
            }
        }
        // The dot columns of these rows while their weights are in L1 (see `vnni`).
        dots(a, r..r + mr, first, b.cols, &columns, out);
        r += mr;
    }
}

/// Rows `r0..r0+M` × columns `8h..8h+8` (fewer at the right edge).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tile<const M: usize, F: Finish<__m256i>>(
    a: &PackedA,
    b: &PackedB,
    (out, f): (&mut [i32], &F),
    first: usize,
    r0: usize,
    h: usize,
) {
    let k4 = a.k4;
    let (p, half) = (h / 2, h % 2);
    assert!(r0 + M <= a.rows && a.quads16.len() == a.rows * k4);
    assert!((p + 1) * k4 * PANEL * 4 <= b.data.len());
    // acc[i][q]: row i, columns 4q..4q+4 of this half, two lanes per column, which the
    // horizontal sums below add: the row's initial sum goes in the first lane of each.
    let mut acc: [[__m256i; 2]; M] = std::array::from_fn(|i| {
        let start = _mm256_set1_epi64x(f.initial(r0 + i - first) as u32 as i64);
        [start; 2]
    });
    let bptr = b.data.as_ptr();
    let wptr = a.quads16.as_ptr();
    // The next row tile's weights fetched while this one runs, a line (8 quads) of each row
    // at a time (see `vnni::tile`).
    let next = (r0 + 2 * M <= a.rows).then(|| a.quads16[(r0 + M) * k4..].as_ptr());
    for g in 0..k4 {
        if let Some(next) = next
            && g % 8 == 0
        {
            for i in 0..M {
                // A hint only: it reads nothing and never faults.
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * k4 + g).cast());
            }
        }
        let base = (p * k4 + g) * PANEL * 4 + half * 32;
        // SAFETY: 2 × 16 bytes at base.. base + 32 lie in this panel's group g (asserted).
        let (b0, b1) = unsafe {
            (
                _mm256_cvtepu8_epi16(_mm_loadu_si128(bptr.add(base).cast())),
                _mm256_cvtepu8_epi16(_mm_loadu_si128(bptr.add(base + 16).cast())),
            )
        };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: row r0 + i < rows and g < k4 (asserted), inside `quads16`.
            let w = _mm256_set1_epi64x(unsafe { *wptr.add((r0 + i) * k4 + g) });
            row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(b0, w));
            row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(b1, w));
        }
    }
    let col = p * PANEL + half * 8;
    let n = (b.cols - col).min(8);
    // SAFETY: this function is compiled for AVX2; `col` is a half panel's first column.
    let block = unsafe { f.block(col) };
    for (i, row) in acc.iter().enumerate() {
        // hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7]; the permute puts the columns in order.
        let s = _mm256_hadd_epi32(row[0], row[1]);
        let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
        // SAFETY: as above; row `r0 + i − first` is one of `out`'s.
        let s = unsafe { f.finish(&block, r0 + i - first, s) };
        let dst = &mut out[(r0 + i - first) * b.cols + col..][..n];
        if n == 8 {
            // SAFETY: `dst` holds exactly 8 i32.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), s) };
        } else {
            let mut lanes = [0i32; 8];
            // SAFETY: `lanes` holds exactly 8 i32.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s) };
            dst.copy_from_slice(&lanes[..n]);
        }
    }
}

/// [`gemm`] of one column (`b.cols == 1`): each weight row a dot product with the column
/// ([`dots`]), where a tile would use one of its 8 columns.
#[cfg(target_arch = "x86_64")]
pub fn gemv(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    assert!(std::arch::is_x86_feature_detected!("avx2"));
    assert!(b.cols == 1 && a.k4 == b.k4 && rows.end <= a.rows && out.len() >= rows.len());
    let first = rows.start;
    // SAFETY: AVX2 was checked just above.
    unsafe { dots(a, rows, first, 1, &widened_columns(b, 0..1), out) }
}

/// Columns `columns` of `b`, each quad widened to four i16 in one i64 as the weight rows'
/// quads are ([`PackedA::quads16`]): the operand [`dots`] multiplies them by.
fn widened_columns(b: &PackedB, columns: Range<usize>) -> Vec<(usize, Vec<i64>)> {
    columns
        .map(|c| {
            let x = (b.last_panel_column(c).iter())
                .map(|q| q.to_le_bytes())
                .map(|q| (0..4).fold(0u64, |v, j| v | (q[j] as u64) << (16 * j)) as i64)
                .collect();
            (c, x)
        })
        .collect()
}

/// Of rows `rows` of the product, the `columns` (widened by [`widened_columns`]) as dot
/// products, in `vpmaddwd` on the rows' sign-extended quads (contiguous per row): 16 MACs
/// per instruction, as in a tile. `out` holds rows from `first` on, of all `cols` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots(
    a: &PackedA,
    rows: Range<usize>,
    first: usize,
    cols: usize,
    columns: &[(usize, Vec<i64>)],
    out: &mut [i32],
) {
    assert!(first <= rows.start && rows.end <= a.rows);
    assert!(out.len() >= (rows.end - first) * cols);
    assert_eq!(a.quads16.len(), a.rows * a.k4);
    for (c, x) in columns {
        assert!(*c < cols && x.len() == a.k4);
        // `row_dots` is callable safely: this function is compiled for the features it needs.
        super::rows_by_four(rows.clone(), first, (*c, cols), out, |r, n, sums| {
            of_rows!(row_dots, n, (a, r, x, sums))
        });
    }
}

/// `sums[i] = Σ_g A[r0 + i]'s quad g · x[g]` for `i < R`, 4 quads (16 MACs) per step, the last
/// step masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_dots<const R: usize>(a: &PackedA, r0: usize, x: &[i64], sums: &mut [i32; 4]) {
    let k4 = a.k4;
    assert!((r0 + R) * k4 <= a.quads16.len() && x.len() == k4);
    let mut acc = [_mm256_setzero_si256(); R];
    let w = a.quads16[r0 * k4..].as_ptr();
    let mut g = 0;
    while g < k4 {
        let n = (k4 - g).min(4);
        // SAFETY (the block): whole steps read 4 quads `g..g + 4`, inside `x` and each row
        // (asserted); the last, masked, only its first `n`.
        unsafe {
            let load = |p: *const i64| match n {
                4 => _mm256_loadu_si256(p.cast()),
                _ => {
                    let lane = _mm256_setr_epi64x(0, 1, 2, 3);
                    let mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n as i64), lane);
                    _mm256_maskload_epi64(p, mask)
                }
            };
            let xv = load(x.as_ptr().add(g));
            for (i, acc) in acc.iter_mut().enumerate() {
                let wv = load(w.add(i * k4 + g));
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(xv, wv));
            }
        }
        g += n;
    }
    for (s, acc) in sums.iter_mut().zip(acc) {
        let half = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let quarter = _mm_add_epi32(half, _mm_unpackhi_epi64(half, half));
        *s = _mm_cvtsi128_si32(_mm_add_epi32(quarter, _mm_shuffle_epi32::<1>(quarter)));
    }
}

/// The exact AVX2 int8 rate on one core, measured: `iters` rounds of 12 independent
/// `vpmaddwd` + `vpaddd` pairs (16 MACs each), operands from L1. Returns the MACs done and a
/// value that keeps the work alive; `None` without AVX2.
#[cfg(target_arch = "x86_64")]
pub fn peak_loop(iters: usize) -> Option<(u64, i32)> {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return None;
    }
    // SAFETY: AVX2 was checked just above.
    Some(unsafe { peak_avx2(iters) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn peak_avx2(iters: usize) -> (u64, i32) {
    let b = _mm256_set1_epi32(0x0003_0004);
    let a: [__m256i; 12] = std::array::from_fn(|i| _mm256_set1_epi32(i as i32 + 1));
    let mut acc = [_mm256_setzero_si256(); 12];
    for _ in 0..iters {
        // Twelve different operands read afresh each round (loads, as a GEMM has), so the
        // products can neither be hoisted out of the loop nor shared.
        let a = std::hint::black_box(&a);
        for (r, x) in acc.iter_mut().zip(a) {
            *r = _mm256_add_epi32(*r, _mm256_madd_epi16(*x, b));
        }
    }
    let mut sum = _mm256_setzero_si256();
    for r in acc {
        sum = _mm256_add_epi32(sum, r);
    }
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` holds exactly 8 i32.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
    (
        iters as u64 * 12 * 16,
        lanes.iter().fold(0i32, |s, &v| s.wrapping_add(v)),
    )
}

#[cfg(not(target_arch = "x86_64"))]
pub fn gemv(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    super::scalar_rows(a, rows, b, out)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn peak_loop(_iters: usize) -> Option<(u64, i32)> {
    None
}

#[cfg(not(target_arch = "x86_64"))]
pub fn gemm(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    super::scalar_rows(a, rows, b, out)
}
