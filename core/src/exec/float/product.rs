//! `out[m, n] = act(w[m, k] · x[k, n] + bias[m])` in AVX-512 tiles that read `x` where it lies
//! and finish each tile in registers: the conv layers' products (1×1 convs on the feature map,
//! others on `im2col`'s columns).
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

use crate::exec::matmul::summation_blocks;

/// Output rows per tile (one weight panel).
pub const PANEL_ROWS: usize = 6;
/// Columns per vector register.
const LANES: usize = 16;
/// Vectors of columns per tile: 6 × 4 sums, 4 loads of `x` and a broadcast weight fit the 32
/// registers.
const TILE_VECTORS: usize = 4;
const TILE_COLUMNS: usize = LANES * TILE_VECTORS;

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

/// Whether this CPU runs [`product`] (AVX-512F).
pub fn available() -> bool {
    super::has_avx512f()
}

/// Whether [`product`] gives `matmul`'s sums for an `m × k × n` product: `gemm` runs its
/// blocked kernels, whose order this module follows, only when neither side is small (it sums
/// products of at most 16 × 16 outputs, matrix-vector products and reductions of at most two
/// terms in orders of their own). `m` is the number of rows of one call to `matmul`.
pub fn sums_as_matmul(m: usize, k: usize, n: usize) -> bool {
    m > 16 && n > 16 && k > 2
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
    let m = bias.len();
    let n = x.len().checked_div(k).unwrap_or(0);
    assert!(available(), "the f32 tiles need AVX-512F");
    assert_eq!(x.len(), k * n, "x holds k = {k} rows");
    assert_eq!(out.len(), m * n, "out holds {m} rows of {n}");
    assert_eq!(
        panels.len(),
        m.div_ceil(PANEL_ROWS) * k * PANEL_ROWS,
        "panels of {m} × {k}"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F was checked above, and the sizes of every slice the tiles address.
    #[allow(unsafe_code)]
    unsafe {
        lanes::product(out, panels, x, (m, k, n), bias, act)
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

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(
        out: &mut [f32],
        panels: &[f32],
        x: &[f32],
        (m, k, n): (usize, usize, usize),
        bias: &[f32],
        act: Activation,
    ) {
        let blocks = summation_blocks(m, k, n);
        for column in (0..n).step_by(TILE_COLUMNS) {
            let width = (n - column).min(TILE_COLUMNS);
            let masks = std::array::from_fn(|v| {
                let lanes = width.saturating_sub(v * LANES).min(LANES);
                ((1u32 << lanes) - 1) as __mmask16
            });
            let vectors = width.div_ceil(LANES);
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
                        match vectors {
                            1 => tile_sums::<1>(&tile, panel, x, n, out, b > 0, finish),
                            2 => tile_sums::<2>(&tile, panel, x, n, out, b > 0, finish),
                            3 => tile_sums::<3>(&tile, panel, x, n, out, b > 0, finish),
                            _ => tile_sums::<4>(&tile, panel, x, n, out, b > 0, finish),
                        }
                    }
                }
            }
        }
    }

    /// One tile's sums over one reduction block (`panel`, `x`: its terms), added to what `out`
    /// holds when `add`, finished with the bias and activation when `finish`.
    ///
    /// # Safety
    /// The tile's rows and its columns' vectors `0..V` start inside `out` and `x`'s rows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_sums<const V: usize>(
        tile: &Tile,
        panel: &[f32],
        x: &[f32],
        n: usize,
        out: &mut [f32],
        add: bool,
        finish: Option<(&[f32], Activation)>,
    ) {
        let terms = panel.len() / PANEL_ROWS;
        debug_assert!(x.len() >= terms * n && tile.column + V * LANES <= n + LANES);
        let mut acc = [[_mm512_setzero_ps(); V]; PANEL_ROWS];
        let (w, mut xr) = (panel.as_ptr(), x.as_ptr().wrapping_add(tile.column));
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
            xr = xr.wrapping_add(n);
        }
        let three = _mm512_set1_ps(3.0);
        let six = _mm512_set1_ps(6.0);
        let zero = _mm512_setzero_ps();
        // A macro rather than a closure: LLVM called the closure six times per tile, its
        // sums passed through memory (7 % of B1's fp32 time).
        macro_rules! finish_row {
            ($r:expr, $sums:expr) => {{
                let r: usize = $r;
                let at = out
                    .as_mut_ptr()
                    .wrapping_add((tile.row + r) * n + tile.column);
                for (v, &s) in $sums.iter().enumerate() {
                    let (mask, dst) = (tile.masks[v], at.wrapping_add(v * LANES));
                    let mut s = if add {
                        _mm512_add_ps(unsafe { _mm512_maskz_loadu_ps(mask, dst) }, s)
                    } else {
                        s
                    };
                    if let Some((bias, act)) = finish {
                        if bias[r] != 0.0 {
                            s = _mm512_add_ps(s, _mm512_set1_ps(bias[r]));
                        }
                        if act == Activation::Hardswish {
                            // clamp(v + 3, 0, 6) as `f32::clamp` gives it: x86's max and min
                            // return their second operand on a NaN or equal zeros, so NaN
                            // and −0 pass through.
                            let c =
                                _mm512_min_ps(six, _mm512_max_ps(zero, _mm512_add_ps(s, three)));
                            s = _mm512_div_ps(_mm512_mul_ps(s, c), six);
                        }
                    }
                    unsafe { _mm512_mask_storeu_ps(dst, mask, s) };
                }
            }};
        }
        // Row by row, written out, so that the sums stay registers: a loop over the rows kept
        // them in a stack array, zeroed by a `memset` for every tile (3 % of B1's fp32 time).
        let [r0, r1, r2, r3, r4, r5] = acc;
        finish_row!(0, r0);
        if tile.rows > 1 {
            finish_row!(1, r1);
        }
        if tile.rows > 2 {
            finish_row!(2, r2);
        }
        if tile.rows > 3 {
            finish_row!(3, r3);
        }
        if tile.rows > 4 {
            finish_row!(4, r4);
        }
        if tile.rows > 5 {
            finish_row!(5, r5);
        }
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

    #[test]
    fn tiles_equal_the_product_then_the_bias_then_the_activation_bit_for_bit() {
        if !available() {
            eprintln!("SKIPPED: this CPU has no AVX-512F; the f32 tiles do not run here");
            return;
        }
        let mut rng = crate::rng::Rng::new(21);
        // Odd sizes around the tile (6 × 64) and B1's and the micro models' 1×1 convs,
        // reductions past one depth block (768, 1025) included.
        let shapes = [
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
            if i == 3 {
                x[5] = f32::NAN;
                x[n + 7] = f32::INFINITY;
            }
            let mut bias: Vec<f32> = (0..m).map(|_| rng.uniform(-2.0, 2.0)).collect();
            bias[0] = 0.0;
            if m > 3 {
                bias[3] = -3.0;
            }
            let p = panels(&w, m, k);
            for act in [Activation::None, Activation::Hardswish] {
                let mut got = vec![f32::NAN; m * n];
                product(&mut got, &p, &x, k, &bias, act);
                let want = by_passes(&w, &x, (m, k, n), &bias, act);
                assert_eq!(
                    first_bit_difference(&got, &want),
                    None,
                    "{m}×{k}×{n} {act:?}"
                );
            }
        }
    }
}
