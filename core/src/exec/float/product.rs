//! `out[m, n] = act(w[m, k] · x[k, n] + bias[m])` in AVX-512 tiles (AVX2 + FMA ones, [`avx2`])
//! that read `x` where it lies and finish each tile in registers: the conv layers' products
//! (1×1 convs on the feature map, others on `im2col`'s columns).
//!
//! Through the `gemm` crate the same product packed `x` for every call (7 % of
//! EfficientViT-B1's fp32 time), wrote the sums, and then a pass added the biases and another
//! applied the activation (4 %). Here a tile of 6 output rows × 64 columns keeps its 24 sums in
//! registers over the whole reduction, reads `x`'s rows in place (a 1×1 conv's input planes),
//! broadcasts the weights from panels packed once per layer, and adds the bias and applies the
//! Hardswish before its one store.
//!
//! The arithmetic is `gemm`'s, so the outputs are bit for bit those of
//! [`matmul`](crate::exec::matmul::matmul) followed by the bias and the activation (tested):
//! each sum starts at +0 and adds its products in order of `k` with one rounding each (fused
//! multiply-adds); a long reduction is summed block by block as `gemm` cuts it
//! ([`summation_blocks`]) and the blocks' sums added in order; the bias is added after the sum
//! (not when it is +0: a sum of −0 keeps its sign, as the separate pass left it), and the
//! activation is the definition's operations in lanes.

use crate::exec::cpu::{FloatLanes, float_lanes};
use crate::exec::matmul::summation_blocks;

/// `$finish_row!(r, sums)` for each of a tile's `$rows` rows that exist (of the
/// [`PANEL_ROWS`] in `$acc`), written out so that the sums stay registers: a loop over the rows
/// kept them in a stack array, zeroed by a `memset` for every tile (3 % of B1's fp32 time).
#[cfg(target_arch = "x86_64")]
macro_rules! finish_rows {
    ($finish_row:ident, $acc:expr, $rows:expr) => {{
        let [r0, r1, r2, r3, r4, r5] = $acc;
        let rows: usize = $rows;
        $finish_row!(0, r0);
        if rows > 1 {
            $finish_row!(1, r1);
        }
        if rows > 2 {
            $finish_row!(2, r2);
        }
        if rows > 3 {
            $finish_row!(3, r3);
        }
        if rows > 4 {
            $finish_row!(4, r4);
        }
        if rows > 5 {
            $finish_row!(5, r5);
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Output rows per tile (one weight panel).
pub const PANEL_ROWS: usize = 6;
/// Columns per vector register.
const LANES: usize = 16;
/// Vectors of columns per tile: 6 × 4 sums, 4 loads of `x` and a broadcast weight fit the 32
/// registers.
const TILE_VECTORS: usize = 4;
const TILE_COLUMNS: usize = LANES * TILE_VECTORS;
/// The most columns past a last tile's whole vectors that it takes one by one, each a
/// vector of its six rows' sums, rather than in a masked vector of sixteen: B1's 7×7 maps
/// (49 columns) then run 3 vectors and a column, 19 multiply-adds per term where 4 vectors
/// had been 24.
const TAIL_COLUMNS: usize = 2;

/// What a product's epilogue applies after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `v·clamp(v + 3, 0, 6)/6` ([`hardswish`](super::kernels::hardswish)).
    Hardswish,
}

/// Applies `act` to `values` in place, as the tiles' epilogue does.
pub fn activate(act: Activation, values: &mut [f32]) {
    match act {
        Activation::None => {}
        Activation::Hardswish => super::map_in_place(values, super::kernels::hardswish),
    }
}

/// Whether this CPU runs [`product`] (AVX-512 F, or AVX2 and FMA, as `QVIT_ISA` allows).
pub fn available() -> bool {
    float_lanes() != FloatLanes::Baseline
}

/// Whether [`product`] gives `matmul`'s sums for an `m × k × n` product: `gemm` runs its
/// blocked kernels, whose order this module follows, only when neither side is small (it sums
/// products of at most 16 × 16 outputs, matrix-vector products and reductions of at most two
/// terms in orders of their own). `m` is the number of rows of one call to `matmul`.
pub fn sums_as_matmul(m: usize, k: usize, n: usize) -> bool {
    m >= 2 && n >= 2 && m * n > 16 * 16 && k > 2
}

/// Whether the tiles sum every output of an `m × k × n` product over the same blocks
/// ([`summation_blocks`]) for any `m` from two up, so that its rows may be cut into parts of
/// any size from two and give the same bits. The blocks take one form up to 64 rows and
/// another past them (`summation_blocks`): the two agree for a depth of one block, more than
/// 64 columns, or a depth of whole blocks of 512 (B1's 1,024).
pub fn sums_whatever_the_rows(k: usize, n: usize) -> bool {
    summation_blocks(2, k, n) == summation_blocks(65, k, n)
}

/// `w`'s `m × k` rows as panels of [`PANEL_ROWS`]: panel `p` holds, for each `k`, the weights
/// of rows `6p..6p + 6` side by side (zeros past the last row), the order the tiles broadcast
/// them in.
pub fn panels(w: &[f32], m: usize, k: usize) -> Vec<f32> {
    assert_eq!(w.len(), m * k, "weights of {m} rows of {k}");
    let count = m.div_ceil(PANEL_ROWS);
    let mut out = vec![0.0; count * k * PANEL_ROWS];
    for (r, row) in w.chunks_exact(k.max(1)).enumerate().take(m) {
        let (p, lane) = (r / PANEL_ROWS, r % PANEL_ROWS);
        let panel = &mut out[p * k * PANEL_ROWS..(p + 1) * k * PANEL_ROWS];
        for (i, &v) in row.iter().enumerate() {
            panel[i * PANEL_ROWS + lane] = v;
        }
    }
    out
}

/// `out[r, j] = act(Σ_k w[r, k]·x[k, j] + bias[r])` for the `m = bias.len()` rows whose
/// weights `panels` holds (from [`panels`]), `x` row-major `k × n`, `out` row-major `m × n`.
///
/// Panics unless [`available`] and the slices have those sizes (programming errors).
pub fn product(
    out: &mut [f32],
    panels: &[f32],
    x: &[f32],
    k: usize,
    bias: &[f32],
    act: Activation,
) {
    let (m, n) = checked_shape(out, panels, x, k, bias);
    // SAFETY: `checked_shape` checked the CPU and the sizes of every slice the tiles address.
    #[allow(unsafe_code)]
    unsafe {
        product_in(
            float_lanes(),
            out.as_mut_ptr(),
            panels,
            x,
            (m, k, n),
            bias,
            act,
            0..n,
        )
    }
}

/// [`product`]'s columns `columns` in the tiles of `lanes`.
///
/// # Safety
/// The CPU has `lanes`' features; `out`, `panels`, `x` and `bias` have the sizes
/// [`checked_shape`] checks for `(m, k, n)`; `columns` lies inside `0..n` and starts at a
/// multiple of [`TILE_COLUMNS`].
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn product_in(
    lanes: FloatLanes,
    out: *mut f32,
    panels: &[f32],
    x: &[f32],
    shape: (usize, usize, usize),
    bias: &[f32],
    act: Activation,
    columns: std::ops::Range<usize>,
) {
    // SAFETY (both): the caller's promises.
    #[cfg(target_arch = "x86_64")]
    match lanes {
        FloatLanes::Avx512 => unsafe { lanes::product(out, panels, x, shape, bias, act, columns) },
        FloatLanes::Avx2Fma => unsafe {
            let images = avx2::Images {
                xs: &[x],
                outs: &[out],
            };
            avx2::product(&images, panels, shape, bias, act, columns)
        },
        FloatLanes::Baseline => unreachable!("`checked_shape` checks for the tiles' lanes"),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (lanes, out, panels, x, shape, bias, act, columns);
        unreachable!("`checked_shape` checks for the tiles' lanes")
    }
}

/// [`product`] for each image of a batch: `outs[i] = act(w · xs[i] + bias)`, every `xs[i]`
/// row-major `k × n` and every `outs[i]` `m × n`, each output the sum [`product`] gives for
/// its image alone. In AVX2's tiles the images' columns run side by side as one product, a
/// tile's columns packed from two images where it straddles them: on a small map, a layer's
/// weights are then read once for all the images rather than once for each (they outgrow L2
/// on B1's 7×7 maps), and only the batch's last tile is short where every image's was (49
/// columns: three tiles of 16 and one of 1). The AVX-512 tiles, which read `x` in place and
/// take a short tile's last columns one by one, run the images one after another.
///
/// Panics unless [`available`] and the slices have those sizes (programming errors).
pub fn product_images(
    outs: &mut [&mut [f32]],
    panels: &[f32],
    xs: &[&[f32]],
    k: usize,
    bias: &[f32],
    act: Activation,
) {
    images_in(float_lanes(), outs, panels, xs, (k, bias, act));
}

/// [`product_images`] in the tiles of `lanes`, which the CPU has (checked).
fn images_in(
    lanes: FloatLanes,
    outs: &mut [&mut [f32]],
    panels: &[f32],
    xs: &[&[f32]],
    (k, bias, act): (usize, &[f32], Activation),
) {
    assert!(
        lanes <= float_lanes(),
        "{lanes:?} tiles on a CPU without them"
    );
    assert_eq!(outs.len(), xs.len(), "an output for each image");
    let Some(first) = xs.first() else {
        return;
    };
    let n = first.len().checked_div(k).unwrap_or(0);
    for (out, x) in outs.iter().zip(xs) {
        assert_eq!(x.len(), first.len(), "the images have the same size");
        checked_shape(out, panels, x, k, bias);
    }
    let shape = (bias.len(), k, n);
    #[cfg(target_arch = "x86_64")]
    if lanes == FloatLanes::Avx2Fma && xs.len() > 1 && n >= avx2::COLUMNS {
        let outs: Vec<*mut f32> = outs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        let images = avx2::Images { xs, outs: &outs };
        // SAFETY: the CPU has AVX2 and FMA (checked above and by `checked_shape`), every
        // image has the product's sizes, and `n` spans a tile.
        #[allow(unsafe_code)]
        unsafe {
            avx2::product(&images, panels, shape, bias, act, 0..xs.len() * n)
        };
        return;
    }
    for (out, x) in outs.iter_mut().zip(xs) {
        // SAFETY: as above, and the columns are the image's.
        #[allow(unsafe_code)]
        unsafe {
            product_in(lanes, out.as_mut_ptr(), panels, x, shape, bias, act, 0..n)
        };
    }
}

/// The `m × n` of a product's operands, after checking that the CPU runs the tiles and that
/// every slice has the size the shape asks.
fn checked_shape(out: &[f32], panels: &[f32], x: &[f32], k: usize, bias: &[f32]) -> (usize, usize) {
    let m = bias.len();
    let n = x.len().checked_div(k).unwrap_or(0);
    assert!(available(), "the f32 tiles need AVX-512 F or AVX2 and FMA");
    assert_eq!(x.len(), k * n, "x holds k = {k} rows");
    assert_eq!(out.len(), m * n, "out holds {m} rows of {n}");
    assert_eq!(
        panels.len(),
        m.div_ceil(PANEL_ROWS) * k * PANEL_ROWS,
        "panels of {m} × {k}"
    );
    (m, n)
}

/// [`product`] with the columns cut into `parts` runs of whole tiles, in parallel: each thread
/// reads only its own columns of `x`, where blocks of rows would each read all of it. On a
/// large map from a layer that split it otherwise (a depthwise conv, by channels), half of
/// `x` lies in the other core's cache either way, but each core fetches half as much: B1's
/// 1×1 convs on 56² and 28² maps ran no faster on two threads than on one as blocks of rows
/// (and those on 112² 1.5× ONNX Runtime's time on two threads, 1.05× on one).
/// Each output is the same sum.
pub fn product_by_columns(
    out: &mut [f32],
    panels: &[f32],
    x: &[f32],
    k: usize,
    bias: &[f32],
    act: Activation,
    parts: usize,
) {
    let (m, n) = checked_shape(out, panels, x, k, bias);
    #[cfg(target_arch = "x86_64")]
    {
        use rayon::prelude::*;
        let per_part = n.div_ceil(TILE_COLUMNS).div_ceil(parts.max(1)) * TILE_COLUMNS;
        // The parts write disjoint columns of `out`.
        let shared = super::shared_out::SharedOut::new(out);
        let lanes = float_lanes();
        (0..n.div_ceil(per_part.max(1)))
            .into_par_iter()
            .for_each(|p| {
                let columns = p * per_part..((p + 1) * per_part).min(n);
                // SAFETY: `checked_shape` checked the CPU and the sizes of every slice the
                // tiles address; each part writes only its own columns.
                #[allow(unsafe_code)]
                unsafe {
                    let shape = (m, k, n);
                    product_in(lanes, shared.get(), panels, x, shape, bias, act, columns)
                }
            });
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    use super::*;

    /// Where a tile lies and what it finishes with.
    struct Tile {
        /// Its first row and how many of its [`PANEL_ROWS`] rows exist.
        row: usize,
        rows: usize,
        /// Its first column and, per vector, which of its lanes are columns.
        column: usize,
        masks: [__mmask16; TILE_VECTORS],
    }

    /// A last tile's columns as whole vectors and columns taken one by one
    /// ([`TAIL_COLUMNS`]), or as vectors alone (the last one masked). Rows `n` apart must be
    /// i32 offsets for the columns' gathers and scatters, which rows of 2^28 columns and more
    /// (no model's) are not: those keep the vectors.
    fn split(width: usize, n: usize) -> (usize, usize) {
        match (width / LANES, width % LANES) {
            (vectors @ 1..TILE_VECTORS, tail @ 1..=TAIL_COLUMNS) if n < 1 << 28 => (vectors, tail),
            _ => (width.div_ceil(LANES), 0),
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(
        out: *mut f32,
        panels: &[f32],
        x: &[f32],
        (m, k, n): (usize, usize, usize),
        bias: &[f32],
        act: Activation,
        columns: std::ops::Range<usize>,
    ) {
        let blocks = summation_blocks(m, k, n);
        for column in columns.step_by(TILE_COLUMNS) {
            let width = (n - column).min(TILE_COLUMNS);
            let (vectors, tail) = split(width, n);
            let masks = std::array::from_fn(|v| {
                let lanes = (width - tail).saturating_sub(v * LANES).min(LANES);
                ((1u32 << lanes) - 1) as __mmask16
            });
            for row in (0..m).step_by(PANEL_ROWS) {
                let tile = Tile {
                    row,
                    rows: (m - row).min(PANEL_ROWS),
                    column,
                    masks,
                };
                let panel = &panels[row * k..(row + PANEL_ROWS) * k];
                for (b, &(start, end)) in blocks.iter().enumerate() {
                    let last = b + 1 == blocks.len();
                    let finish = last.then_some((&bias[row..row + tile.rows], act));
                    let (panel, x) = (
                        &panel[start * PANEL_ROWS..end * PANEL_ROWS],
                        &x[start * n..end * n],
                    );
                    // SAFETY (of each call): the tile's rows and columns lie inside `out`,
                    // and its panel and `x`'s rows `start..end` hold `end − start` terms.
                    unsafe {
                        let blk = (panel, x, b > 0);
                        match (vectors, tail) {
                            (1, 0) => tile_sums::<1, 0>(&tile, blk, n, out, finish),
                            (2, 0) => tile_sums::<2, 0>(&tile, blk, n, out, finish),
                            (3, 0) => tile_sums::<3, 0>(&tile, blk, n, out, finish),
                            (1, 1) => tile_sums::<1, 1>(&tile, blk, n, out, finish),
                            (2, 1) => tile_sums::<2, 1>(&tile, blk, n, out, finish),
                            (3, 1) => tile_sums::<3, 1>(&tile, blk, n, out, finish),
                            (1, _) => tile_sums::<1, 2>(&tile, blk, n, out, finish),
                            (2, _) => tile_sums::<2, 2>(&tile, blk, n, out, finish),
                            (3, _) => tile_sums::<3, 2>(&tile, blk, n, out, finish),
                            _ => tile_sums::<4, 0>(&tile, blk, n, out, finish),
                        }
                    }
                }
            }
        }
    }

    /// One tile's sums over one reduction block (`panel`, `x`: its terms), added to what `out`
    /// holds when `add`, finished with the bias and activation when `finish`: `V` vectors of
    /// columns, then `T` columns one by one (each its rows' sums in the lanes of a vector, the
    /// same multiply-adds in the same order).
    ///
    /// # Safety
    /// The tile's rows and its columns' vectors `0..V` start inside `out` and `x`'s rows; with
    /// `T` > 0, the `V` vectors are whole and the `T` columns after them lie inside the rows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_sums<const V: usize, const T: usize>(
        tile: &Tile,
        (panel, x, add): (&[f32], &[f32], bool),
        n: usize,
        out: *mut f32,
        finish: Option<(&[f32], Activation)>,
    ) {
        let terms = panel.len() / PANEL_ROWS;
        debug_assert!(x.len() >= terms * n && tile.column + V * LANES <= n + LANES);
        debug_assert!(T == 0 || tile.column + V * LANES + T <= n);
        let mut acc = [[_mm512_setzero_ps(); V]; PANEL_ROWS];
        let mut columns = [_mm512_setzero_ps(); T];
        let (w, mut xr) = (panel.as_ptr(), x.as_ptr().wrapping_add(tile.column));
        let panel_rows: __mmask16 = (1 << PANEL_ROWS) - 1;
        for t in 0..terms {
            let xv: [__m512; V] = std::array::from_fn(|v| unsafe {
                _mm512_maskz_loadu_ps(tile.masks[v], xr.wrapping_add(v * LANES))
            });
            for (r, sums) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(unsafe { *w.add(t * PANEL_ROWS + r) });
                for (s, &x) in sums.iter_mut().zip(&xv) {
                    *s = _mm512_fmadd_ps(wv, x, *s);
                }
            }
            if T > 0 {
                // The term's six weights, one per row, times each column's input.
                let wv = unsafe { _mm512_maskz_loadu_ps(panel_rows, w.add(t * PANEL_ROWS)) };
                for (c, s) in columns.iter_mut().enumerate() {
                    let xc = _mm512_set1_ps(unsafe { *xr.add(V * LANES + c) });
                    *s = _mm512_fmadd_ps(wv, xc, *s);
                }
            }
            xr = xr.wrapping_add(n);
        }
        let zero = _mm512_setzero_ps();
        // The bias and the activation on sums that already hold `out`'s earlier blocks: the
        // bias where it is not ±0 (`bias` per lane, `biased` the lanes that take it).
        macro_rules! finished {
            ($s:expr, $bias:expr, $biased:expr, $act:expr) => {{
                let mut s: __m512 = $s;
                s = _mm512_mask_add_ps(s, $biased, s, $bias);
                if $act == Activation::Hardswish {
                    s = crate::exec::float::hardswish_lanes::avx512(s);
                }
                s
            }};
        }
        if T > 0 {
            // Lane `r` of a column's vector is row `tile.row + r`: gathered from and scattered
            // to `out` a row apart.
            let rows: __mmask16 = ((1u32 << tile.rows) - 1) as __mmask16;
            let apart = _mm512_mullo_epi32(
                _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                _mm512_set1_epi32(n as i32),
            );
            let first = tile.row * n + tile.column + V * LANES;
            for (c, &s) in columns.iter().enumerate() {
                let at = out.wrapping_add(first + c);
                let mut s = match add {
                    // SAFETY: the tile's rows of this column lie inside `out`.
                    true => _mm512_add_ps(
                        unsafe { _mm512_mask_i32gather_ps::<4>(zero, rows, apart, at.cast()) },
                        s,
                    ),
                    false => s,
                };
                if let Some((bias, act)) = finish {
                    // SAFETY: `bias` holds the tile's rows.
                    let b = unsafe { _mm512_maskz_loadu_ps(rows, bias.as_ptr()) };
                    let biased = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(b, zero) & rows;
                    s = finished!(s, b, biased, act);
                }
                // SAFETY: as for the gather.
                unsafe { _mm512_mask_i32scatter_ps::<4>(at.cast(), rows, apart, s) };
            }
        }
        // A macro rather than a closure: LLVM called the closure six times per tile, its
        // sums passed through memory (7 % of B1's fp32 time).
        macro_rules! finish_row {
            ($r:expr, $sums:expr) => {{
                let r: usize = $r;
                let at = out.wrapping_add((tile.row + r) * n + tile.column);
                for (v, &s) in $sums.iter().enumerate() {
                    let (mask, dst) = (tile.masks[v], at.wrapping_add(v * LANES));
                    let mut s = if add {
                        _mm512_add_ps(unsafe { _mm512_maskz_loadu_ps(mask, dst) }, s)
                    } else {
                        s
                    };
                    if let Some((bias, act)) = finish {
                        let biased: __mmask16 = if bias[r] != 0.0 { 0xffff } else { 0 };
                        s = finished!(s, _mm512_set1_ps(bias[r]), biased, act);
                    }
                    unsafe { _mm512_mask_storeu_ps(dst, mask, s) };
                }
            }};
        }
        finish_rows!(finish_row, acc, tile.rows);
    }
}

/// The first index at which `a` and `b` differ in their bits (or in length), with both
/// values, for tests whose failure should not print a whole map.
#[cfg(test)]
pub(crate) fn first_bit_difference(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    if a.len() != b.len() {
        return Some((a.len().min(b.len()), f32::NAN, f32::NAN));
    }
    (0..a.len())
        .find(|&i| a[i].to_bits() != b[i].to_bits())
        .map(|i| (i, a[i], b[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::float::kernels::hardswish;
    use crate::exec::matmul::{MatMut, MatRef, matmul};

    /// `matmul`, then the bias where it is not +0, then the activation: the passes the tiles
    /// replace.
    fn by_passes(
        w: &[f32],
        x: &[f32],
        (m, k, n): (usize, usize, usize),
        bias: &[f32],
        act: Activation,
    ) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        matmul(
            MatMut::row_major(&mut out, m, n),
            MatRef::row_major(w, m, k),
            MatRef::row_major(x, k, n),
            false,
        );
        for (row, &b) in out.chunks_mut(n.max(1)).zip(bias) {
            for v in row {
                if b != 0.0 {
                    *v += b;
                }
                if act == Activation::Hardswish {
                    *v = hardswish(*v);
                }
            }
        }
        out
    }

    /// The tiles' lanes this CPU runs, the narrower ones too where it has the wider.
    fn every_lanes() -> Vec<FloatLanes> {
        [FloatLanes::Avx2Fma, FloatLanes::Avx512]
            .into_iter()
            .filter(|&l| l <= float_lanes())
            .collect()
    }

    /// Every image of a batch run as one product gives the bits of its own product: tiles
    /// that straddle two images (maps of 16 to 200 columns, some not a multiple of 8 or 16),
    /// a batch whose last tile is short, reductions of two blocks (1,024 terms: the tiles add
    /// to what the first block stored), Hardswish, zeros, NaN and infinities, and maps too
    /// narrow to stack (run image by image).
    #[test]
    fn images_side_by_side_give_each_image_its_own_product() {
        if !available() {
            eprintln!("SKIPPED: this CPU has neither AVX-512 F nor AVX2 and FMA: no f32 tiles");
            return;
        }
        let mut rng = crate::rng::Rng::new(22);
        // (rows, terms, columns per image, images): B1's 7×7 and 14×14 convs among them.
        let shapes = [
            (13, 20, 49, 3),
            (64, 256, 49, 8),
            (30, 1024, 49, 5),
            (7, 9, 16, 4),
            (20, 33, 17, 6),
            (12, 40, 24, 3),
            (9, 64, 196, 2),
            (6, 5, 100, 7),
            (40, 16, 9, 5),
            (17, 600, 70, 3),
        ];
        for (i, &(m, k, n, count)) in shapes.iter().enumerate() {
            let w: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mut x: Vec<f32> = (0..count * k * n).map(|_| rng.uniform(-4.0, 4.0)).collect();
            if i % 3 == 1 {
                x[3] = f32::NAN;
                x[k * n + n - 1] = f32::NEG_INFINITY;
                x[2 * n + 1] = -0.0;
            }
            let bias: Vec<f32> = (0..m).map(|r| [0.0, -0.5, 1.5][r % 3]).collect();
            let p = panels(&w, m, k);
            let xs: Vec<&[f32]> = x.chunks_exact(k * n).collect();
            for act in [Activation::None, Activation::Hardswish] {
                for lanes in every_lanes() {
                    let mut stacked = vec![f32::NAN; count * m * n];
                    let mut outs: Vec<&mut [f32]> = stacked.chunks_exact_mut(m * n).collect();
                    images_in(lanes, &mut outs, &p, &xs, (k, &bias, act));
                    for (image, (got, x)) in stacked.chunks_exact(m * n).zip(&xs).enumerate() {
                        let mut alone = vec![f32::NAN; m * n];
                        product(&mut alone, &p, x, k, &bias, act);
                        assert_eq!(
                            first_bit_difference(got, &alone),
                            None,
                            "{m}×{k}×{n}, image {image} of {count}, {act:?} in {lanes:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sums_whatever_the_rows_means_the_same_blocks_for_every_row_count() {
        let mut cut_freely = 0;
        for k in [
            1, 3, 100, 512, 513, 768, 1000, 1024, 1025, 1536, 2048, 2304, 3072,
        ] {
            for n in [2, 16, 49, 64, 65, 196, 3136] {
                let blocks: Vec<_> = (2..200).map(|m| summation_blocks(m, k, n)).collect();
                let same = blocks.iter().all(|b| *b == blocks[0]);
                assert_eq!(sums_whatever_the_rows(k, n), same, "{k} × {n}");
                cut_freely += usize::from(same);
            }
        }
        // Both answers occur: 1,025 or 1,000 terms over 49 columns are cut in two ways.
        assert!(cut_freely > 0 && !sums_whatever_the_rows(1025, 49));
        assert!(sums_whatever_the_rows(1024, 49) && sums_whatever_the_rows(1025, 65));
    }

    #[test]
    fn tiles_equal_the_product_then_the_bias_then_the_activation_bit_for_bit() {
        if !available() {
            eprintln!("SKIPPED: this CPU has neither AVX-512 F nor AVX2 and FMA: no f32 tiles");
            return;
        }
        if float_lanes() != FloatLanes::Avx512 {
            eprintln!("no AVX-512 F here: the 16-lane f32 tiles are not tested");
        }
        let mut rng = crate::rng::Rng::new(21);
        // Odd sizes around the tile (6 × 64) and B1's and the micro models' 1×1 convs,
        // reductions past one depth block (768, 1025) included; last tiles of whole vectors
        // and one or two columns (49, 81, 18, 34, 50), of vectors alone, and of one masked.
        let shapes = [
            (19, 9, 18),
            (30, 768, 34),
            (40, 1100, 50),
            (17, 40, 113),
            (17, 3, 17),
            (17, 5, 65),
            (23, 16, 49),
            (32, 16, 3136),
            (128, 32, 784),
            (64, 27, 1),
            (96, 48, 196),
            (30, 768, 70),
            (65, 1025, 81),
            (256, 1024, 49),
            (40, 130, 63),
            (40, 1100, 63),
            (60, 1024, 49),
            (61, 7, 129),
            // Few rows (a block of a small conv's rows): B1's 16 and 32 channels at 112² and
            // 56², and the least that still run blocked.
            (2, 5, 129),
            (4, 16, 65),
            (12, 16, 12544),
            (14, 128, 3136),
            (16, 600, 100),
            (5, 1100, 70),
            (3, 3, 90),
            (100, 9, 3),
            (40, 20, 7),
        ];
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            if !sums_as_matmul(m, k, n) {
                continue;
            }
            let w: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mut x: Vec<f32> = (0..k * n).map(|_| rng.uniform(-4.0, 4.0)).collect();
            // Zeros, signed zeros, a NaN and an infinity pass through as the passes leave them.
            if n > 2 {
                x[0] = -0.0;
                x[n + 1] = 0.0;
            }
            if i % 4 == 3 {
                x[5] = f32::NAN;
                x[n + 7] = f32::INFINITY;
                x[2 * n - 1] = f32::NAN;
            }
            let mut bias: Vec<f32> = (0..m).map(|_| rng.uniform(-2.0, 2.0)).collect();
            bias[0] = 0.0;
            bias[1] = -0.0;
            if m > 3 {
                bias[3] = -3.0;
            }
            let p = panels(&w, m, k);
            for act in [Activation::None, Activation::Hardswish] {
                let want = by_passes(&w, &x, (m, k, n), &bias, act);
                for lanes in every_lanes() {
                    let mut got = vec![f32::NAN; m * n];
                    // SAFETY: the CPU has `lanes`; the slices have the product's sizes.
                    #[allow(unsafe_code)]
                    unsafe {
                        let out = got.as_mut_ptr();
                        product_in(lanes, out, &p, &x, (m, k, n), &bias, act, 0..n)
                    };
                    assert_eq!(
                        first_bit_difference(&got, &want),
                        None,
                        "{m}×{k}×{n} {act:?} in {lanes:?}"
                    );
                }
                // Cut by columns into one to five parts of whole tiles (the last one short,
                // fewer where the tiles run out): the same bits, on pools of one to three.
                for parts in 1..=5 {
                    let pool = crate::exec::test_pool(1 + parts % 3);
                    let mut by_columns = vec![f32::NAN; m * n];
                    pool.install(|| {
                        product_by_columns(&mut by_columns, &p, &x, k, &bias, act, parts)
                    });
                    assert_eq!(
                        first_bit_difference(&by_columns, &want),
                        None,
                        "{m}×{k}×{n} {act:?} in {parts} parts by columns"
                    );
                }
            }
        }
    }
}
