//! The product's tiles in AVX2 + FMA registers: 6 output rows × 16 columns, their 12 sums, two
//! vectors of `x` and a broadcast weight in 15 of the 16 registers. The same multiply-adds in
//! the same order as the AVX-512 tiles (and `gemm`), so the same bits.
//!
//! Before, a CPU without AVX-512 ran these products through the `gemm` crate and a pass for
//! the bias and one for the activation after: EfficientViT-B1's 1×1 convs at 53 % of the fp32
//! peak on an AMD Zen 3 (`qvit bench efficientvit-b1 --executors fp32 --steps --threads 1`).
//!
//! Each tile's 16 columns of `x` are copied side by side once, for all the row panels (zeros
//! past a last tile's columns), a block of tiles at a time ([`PACKED_BYTES`]): read in place,
//! every term of a tile came from a row of its own, `n` floats apart, and the tiles ran at
//! 0.55–0.8× the `gemm` crate's rate on B1's large maps (`cargo bench -p qvit-core --bench fp32
//! -- pointwise_f32`, Zen 3). A last tile narrower than 16 columns writes its part vector
//! through the stack: AMD's Zen 2 and 3 run `vmaskmovps`'s store form in microcode.
//!
//! A batch's images may run as one product, their columns side by side ([`Images`], for the 1×1
//! convs on small maps): tiles pack columns across an image's end, a tile inside one image runs
//! as above in that image's output, and one that straddles two sums into a tile of its own
//! that is then copied to both ([`straddling`]), so each image gets its own product's bits.
#![allow(unsafe_code)]

use std::arch::x86_64::*;
use std::cell::Cell;

use super::{Activation, PANEL_ROWS, summation_blocks};
use crate::exec::spare::prefix_to_overwrite;

/// Columns per vector register.
const LANES: usize = 8;
/// Columns per tile: two vectors.
pub(super) const COLUMNS: usize = 2 * LANES;
/// Bytes of `x` packed at a time, a block of columns that stays in L2 (512 KiB a core on AMD's
/// Zen 2–4, more on Intel's) while every row panel runs over it: each weight is then read once
/// per block. Packed one tile at a time, with every row panel run over each, a layer's
/// weights were read once per 16 columns (13 times on B1's 14² maps, from L3 or memory where
/// they pass L2's size), and B1's 1×1 convs ran in the model at half the rate they reach with
/// everything in cache: 22.5 → 17.1 ms of its fp32 steps on one thread, Zen 3 (`qvit bench
/// efficientvit-b1 --executors fp32 --steps --threads 1`).
const PACKED_BYTES: usize = 192 * 1024;

thread_local! {
    /// The packed columns of the last product on this thread, kept for the next one.
    static PACKED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The images whose columns a product runs side by side, each with `n` of them: image `i`'s
/// `k × n` input is `xs[i]`, its `m × n` output starts at `outs[i]`, and the product's column
/// `c` is column `c % n` of image `c / n`. With more than one image, `n` is at least
/// [`COLUMNS`], so that a tile's columns lie in at most two images.
pub(super) struct Images<'a> {
    pub xs: &'a [&'a [f32]],
    pub outs: &'a [*mut f32],
}

impl Images<'_> {
    /// The image that holds the product's column `column`, and the column's place in it.
    fn locate(&self, n: usize, column: usize) -> (usize, usize) {
        match self.xs.len() {
            1 => (0, column),
            _ => (column / n, column % n),
        }
    }
}

/// Where a tile lies: its first row, how many of its [`PANEL_ROWS`] rows exist, its first
/// column, and the mask of its last vector's lanes that are columns (`len` of them).
struct Tile {
    row: usize,
    rows: usize,
    column: usize,
    last: __m256i,
    len: usize,
}

/// `super::lanes::product` in 8 lanes, over the columns of every image of `images` side by
/// side: each output the sum that image's product alone gives. A tile that straddles two
/// images sums into a tile of its own on the stack, copied to (and, for a reduction's later
/// blocks, from) the two images.
///
/// # Safety
/// The CPU has AVX2 and FMA; each image's input and output have the sizes
/// `super::checked_shape` checks for `(m, k, n)`, and `n` ≥ [`COLUMNS`] when there is more
/// than one; `columns` lies inside `0..n·images`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn product(
    images: &Images<'_>,
    panels: &[f32],
    (m, k, n): (usize, usize, usize),
    bias: &[f32],
    act: Activation,
    columns: std::ops::Range<usize>,
) {
    let blocks = summation_blocks(m, k, n);
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Tiles of `x` packed per block of columns: as many as fill `PACKED_BYTES`, each its own
    // `k × COLUMNS` values.
    let tiles_per_block = (PACKED_BYTES / (k.max(1) * COLUMNS * size_of::<f32>())).max(1);
    let most_tiles = columns.len().div_ceil(COLUMNS).min(tiles_per_block);
    // The buffer this thread's last product packed into (`pack` writes every value a tile
    // reads): a fresh zeroed one for each product was a `memset` of up to `PACKED_BYTES`, 5 %
    // of B1's fp32 time at batch 8 (`perf record` under `qvit bench efficientvit-b1
    // --executors fp32 --batch 8`, Zen 3), most of it on small maps that use a few tiles.
    let mut kept = PACKED.take();
    let packed = prefix_to_overwrite(&mut kept, most_tiles * k * COLUMNS);
    for start in columns.clone().step_by(tiles_per_block * COLUMNS) {
        let end = (start + tiles_per_block * COLUMNS).min(columns.end);
        let tiles = (start..end).step_by(COLUMNS);
        for (column, packed) in tiles.clone().zip(packed.chunks_exact_mut(k * COLUMNS)) {
            pack(packed, images, n, column..(column + COLUMNS).min(end));
        }
        for row in (0..m).step_by(PANEL_ROWS) {
            let panel = &panels[row * k..(row + PANEL_ROWS) * k];
            let rows = (m - row).min(PANEL_ROWS);
            for (column, packed) in tiles.clone().zip(packed.chunks_exact(k * COLUMNS)) {
                let width = (end - column).min(COLUMNS);
                let vectors = width.div_ceil(LANES);
                let len = width - (vectors - 1) * LANES;
                let last = _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), index);
                let (image, within) = images.locate(n, column);
                if within + width > n {
                    let tile = Tile {
                        row: 0,
                        rows,
                        column: 0,
                        last,
                        len,
                    };
                    let place = (images.outs[image], images.outs[image + 1], row * n + within);
                    // SAFETY: the tile's rows of its columns lie inside the two images'
                    // outputs, and its panel and packed columns hold its terms.
                    unsafe {
                        let terms = (panel, packed);
                        let finish = (&bias[row..row + rows], act);
                        straddling(&tile, terms, &blocks, place, (n, width, vectors), finish)
                    };
                    continue;
                }
                let out = images.outs[image];
                let tile = Tile {
                    row,
                    rows,
                    column: within,
                    last,
                    len,
                };
                for (b, &(from, to)) in blocks.iter().enumerate() {
                    let finish = (b + 1 == blocks.len()).then_some((&bias[row..row + rows], act));
                    let (panel, x) = (
                        &panel[from * PANEL_ROWS..to * PANEL_ROWS],
                        &packed[from * COLUMNS..to * COLUMNS],
                    );
                    // SAFETY (of each call): the tile's rows and columns lie inside `out`, and
                    // its panel and packed columns hold `to − from` terms.
                    unsafe {
                        let blk = (panel, x, b > 0);
                        match (vectors, len == LANES) {
                            (1, true) => tile_sums::<1, false>(&tile, blk, n, out, finish),
                            (1, false) => tile_sums::<1, true>(&tile, blk, n, out, finish),
                            (_, true) => tile_sums::<2, false>(&tile, blk, n, out, finish),
                            (_, false) => tile_sums::<2, true>(&tile, blk, n, out, finish),
                        }
                    }
                }
            }
        }
    }
    PACKED.set(kept);
}

/// A tile whose columns straddle two images (`tile`, at row 0 and column 0 of a tile of its
/// own), summed over every reduction block into `sums` on the stack: its first columns lie
/// in the image whose output starts at `this`, the others in the next one's (`next`), both
/// from element `at` (its first row and column in the first image; column 0 in the next).
///
/// # Safety
/// As [`tile_sums`], for the tile's rows of its columns in both images' outputs.
#[target_feature(enable = "avx2,fma")]
unsafe fn straddling(
    tile: &Tile,
    (panel, packed): (&[f32], &[f32]),
    blocks: &[(usize, usize)],
    (this, next, at): (*mut f32, *mut f32, usize),
    (n, width, vectors): (usize, usize, usize),
    finish: (&[f32], Activation),
) {
    let mut sums = [0f32; PANEL_ROWS * COLUMNS];
    let first = n - at % n;
    let row_of = |r: usize| {
        (
            this.wrapping_add(at + r * n),
            next.wrapping_add(at - at % n + r * n),
        )
    };
    for (b, &(from, to)) in blocks.iter().enumerate() {
        let (panel, x) = (
            &panel[from * PANEL_ROWS..to * PANEL_ROWS],
            &packed[from * COLUMNS..to * COLUMNS],
        );
        let sums_ptr = sums.as_mut_ptr();
        let finish = (b + 1 == blocks.len()).then_some(finish);
        // SAFETY: the stack tile holds `PANEL_ROWS` rows of `COLUMNS`; the caller's promise.
        unsafe {
            let blk = (panel, x, b > 0);
            match (vectors, width % LANES == 0) {
                (1, true) => tile_sums::<1, false>(tile, blk, COLUMNS, sums_ptr, finish),
                (1, false) => tile_sums::<1, true>(tile, blk, COLUMNS, sums_ptr, finish),
                (_, true) => tile_sums::<2, false>(tile, blk, COLUMNS, sums_ptr, finish),
                (_, false) => tile_sums::<2, true>(tile, blk, COLUMNS, sums_ptr, finish),
            }
        }
    }
    for (r, row) in sums.chunks_exact(COLUMNS).take(tile.rows).enumerate() {
        let (here, there) = row_of(r);
        // SAFETY: the caller's promise.
        unsafe {
            std::ptr::copy_nonoverlapping(row.as_ptr(), here, first);
            std::ptr::copy_nonoverlapping(row[first..].as_ptr(), there, width - first);
        }
    }
}

/// Copies the product's columns `columns` (at most [`COLUMNS`], in at most two images) of
/// each of the `k` rows of `n` side by side into `packed` (`k × COLUMNS`), zeros past the last
/// column. A whole tile's row from one image is one fixed-size copy, two vector moves, where a
/// copy of a run of any length called `memmove` for each (7 % of EfficientViT-B1's fp32 time
/// at batch 1).
fn pack(packed: &mut [f32], images: &Images<'_>, n: usize, columns: std::ops::Range<usize>) {
    let width = columns.len();
    let (image, within) = images.locate(n, columns.start);
    let first = width.min(n - within);
    let x = images.xs[image];
    for (term, row) in packed.chunks_exact_mut(COLUMNS).enumerate() {
        let src = &x[term * n + within..];
        if first == COLUMNS {
            let src: &[f32; COLUMNS] = src[..COLUMNS].try_into().expect("a whole tile's row");
            row.copy_from_slice(src);
        } else {
            row[..first].copy_from_slice(&src[..first]);
            if first < width {
                let next = &images.xs[image + 1][term * n..];
                row[first..width].copy_from_slice(&next[..width - first]);
            }
            row[width..].fill(0.0);
        }
    }
}

/// One tile's sums over one reduction block (`panel`, `x`: its terms, `x` the tile's packed
/// columns), added to what `out` holds when `add`, finished with the bias and activation when
/// `finish`: `V` vectors of columns, the last of them `tile.len` columns wide when `PART`.
///
/// # Safety
/// The tile's rows and columns lie inside `out`; `x` holds [`COLUMNS`] values per term.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_sums<const V: usize, const PART: bool>(
    tile: &Tile,
    (panel, x, add): (&[f32], &[f32], bool),
    n: usize,
    out: *mut f32,
    finish: Option<(&[f32], Activation)>,
) {
    let terms = panel.len() / PANEL_ROWS;
    debug_assert!(x.len() == terms * COLUMNS && tile.column + (V - 1) * LANES + tile.len <= n);
    // The tile's vector `v` of its row of `out` at `p`: the last one masked when part-filled.
    // A macro, as `finish_row!` below.
    macro_rules! load {
        ($p:expr, $v:expr) => {{
            let (p, v): (*const f32, usize) = ($p, $v);
            // SAFETY: the vector's columns lie inside the row (the caller's promise); a
            // masked load reads the first `len` lanes alone.
            unsafe {
                match PART && v + 1 == V {
                    true => _mm256_maskload_ps(p.add(v * LANES), tile.last),
                    false => _mm256_loadu_ps(p.add(v * LANES)),
                }
            }
        }};
    }
    let mut acc = [[_mm256_setzero_ps(); V]; PANEL_ROWS];
    let (w, mut xr) = (panel.as_ptr(), x.as_ptr());
    for t in 0..terms {
        // SAFETY: `x` holds `COLUMNS` values of each term, past `V` vectors (zeros past the
        // tile's columns).
        let xv: [__m256; V] =
            std::array::from_fn(|v| unsafe { _mm256_loadu_ps(xr.add(v * LANES)) });
        for (r, sums) in acc.iter_mut().enumerate() {
            // SAFETY: the panel holds `PANEL_ROWS` weights per term.
            let wv = _mm256_set1_ps(unsafe { *w.add(t * PANEL_ROWS + r) });
            for (s, &x) in sums.iter_mut().zip(&xv) {
                *s = _mm256_fmadd_ps(wv, x, *s);
            }
        }
        xr = xr.wrapping_add(COLUMNS);
    }
    // As in 16 lanes: the earlier blocks' sums, the bias where it is not ±0, the activation
    // ([`hardswish_lanes`](crate::exec::float::hardswish_lanes)); the last
    // vector of a part tile through the stack.
    macro_rules! finish_row {
        ($r:expr, $sums:expr) => {{
            let r: usize = $r;
            let at = out.wrapping_add((tile.row + r) * n + tile.column);
            for (v, &s) in $sums.iter().enumerate() {
                let mut s = if add {
                    _mm256_add_ps(load!(at.cast_const(), v), s)
                } else {
                    s
                };
                if let Some((bias, act)) = finish {
                    if bias[r] != 0.0 {
                        s = _mm256_add_ps(s, _mm256_set1_ps(bias[r]));
                    }
                    if act == Activation::Hardswish {
                        s = crate::exec::float::hardswish_lanes::avx2(s);
                    }
                }
                let dst = at.wrapping_add(v * LANES);
                // SAFETY (both): the vector's columns of the row lie inside `out`.
                if PART && v + 1 == V {
                    let mut lanes = [0f32; LANES];
                    unsafe {
                        _mm256_storeu_ps(lanes.as_mut_ptr(), s);
                        std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, tile.len);
                    }
                } else {
                    unsafe { _mm256_storeu_ps(dst, s) };
                }
            }
        }};
    }
    finish_rows!(finish_row, acc, tile.rows);
}
