//! f32 kernels for one image. Feature maps are `[C, H, W]` row-major, token sequences `[N, D]`.
//!
//! Kernels that are heavy enough split their output into fixed-size blocks of rows and run the
//! blocks in parallel; the blocks depend only on the shapes, so the arithmetic (and the result) is
//! the same for any number of threads.

use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::depthwise::depthwise;
use super::exp::exp_shifted;
use super::one_token;
use super::product::{self, Activation, PANEL_ROWS};
use super::row_sums::{ROW_GROUP, Term, row_sums};
use super::stem_conv;
use super::widest::in_widest_lanes;
use crate::exec::matmul::{MatMut, MatRef, matmul, rows_cut_freely, summation_blocks};
use crate::exec::transpose::transpose;
use crate::graph::Conv2d;

/// Output rows per parallel block of a matrix product.
const ROW_BLOCK: usize = 32;
/// The column counts at which a product of the tiles splits its columns between the threads
/// ([`product::product_by_columns`]): B1's 28², 56² and 112² maps. Its two 1×1 convs on 112²
/// took 0.241–0.242 ms of an image as blocks of rows on two threads, 0.198–0.217 by columns
/// (Emerald Rapids; with `QVIT_ISA=avx2` 0.369–0.419 → 0.293–0.339); on 14×14 maps columns
/// were slower (1.03 → 1.16–1.20 ms) (`qvit bench efficientvit-b1 --executors fp32 --batch 1
/// --steps`, BENCHMARKS.md).
const BY_COLUMNS: std::ops::RangeInclusive<usize> = 28 * 28..=112 * 112;
/// Blocks a conv's output channels are cut into when large: enough for two to four threads
/// to share evenly.
const ROW_PARTS: usize = 4;
/// Below this many multiply-accumulates an image's op runs on one thread.
const PARALLEL_MACS: usize = 1 << 20;
/// The most rows of a linear layer's parallel block ([`token_rows`]): `gemm` packs the weight
/// again for every call, so blocks are as large as an even split over the threads allows.
const LINEAR_ROWS: usize = 128;
/// From this many multiply-accumulates the attention products run their heads in parallel
/// (DeiT-T: 3 heads of 197² × 64, 7.5 M; B1's linear attention at 14²: 16 heads of 17 × 16
/// × 196, 0.85 M).
const PARALLEL_HEAD_MACS: usize = 1 << 18;
/// From this many values row-wise ops (LayerNorm, Softmax) split their rows in parallel.
const PARALLEL_ROWS_VALUES: usize = 1 << 15;
/// From this many values `im2col` copies its rows in parallel.
const PARALLEL_COPY: usize = 1 << 16;
/// From this many multiply-accumulates a grouped conv runs its groups in parallel: each
/// group's product is small (B1's attention splits 16 channels per group), so they rarely
/// reach [`PARALLEL_MACS`] on their own.
const PARALLEL_GROUP_MACS: usize = 1 << 17;

/// `out[m, n] = act(w[m, k] · x[k, n] + bias[m])` (`x` row-major), in parallel blocks of rows
/// when large, or of columns on the maps of [`BY_COLUMNS`]. With `tiles` (`w` as
/// [`product::panels`]) each block runs as the tiles of [`product`], which finish it in
/// registers; without, as `matmul`, then the bias while the block is in cache, then the
/// activation. All give the same values.
fn product_rows(
    out: &mut [f32],
    w: &[f32],
    tiles: Option<&[f32]>,
    x: MatRef<'_>,
    bias: &[f32],
    act: Activation,
) {
    let (k, n) = (x.rows, x.cols);
    debug_assert_eq!((x.row_stride, x.col_stride), (n, 1), "x is row-major");
    let m = bias.len();
    let block = |out: &mut [f32], first: usize, bias: &[f32]| {
        let rows = bias.len();
        if let Some(panels) = tiles.filter(|_| product::sums_as_matmul(rows, k, n)) {
            let panels = &panels[first * k..(first + rows).next_multiple_of(PANEL_ROWS) * k];
            product::product(out, panels, &x.data[..k * n], k, bias, act);
            return;
        }
        block_by_matmul(out, &w[first * k..(first + rows) * k], x, bias, act);
    };
    let threads = rayon::current_num_threads();
    if let Some(panels) = tiles.filter(|_| {
        threads > 1
            && BY_COLUMNS.contains(&n)
            && m * n * k >= PARALLEL_MACS
            && product::sums_as_matmul(m, k, n)
    }) {
        product::product_by_columns(out, panels, x.data, k, bias, act, threads);
        return;
    }
    let rows = block_rows(m, k, n, tiles.is_some());
    if rows >= m {
        block(out, 0, bias);
    } else {
        out.par_chunks_mut(rows * n)
            .zip(bias.par_chunks(rows))
            .enumerate()
            .for_each(|(i, (o, b))| block(o, i * rows, b));
    }
}

/// The rows per block of [`product_rows`] when it cuts an `m × k × n` product by rows (`m`:
/// one block), run as the tiles or not: the rows of a block sum as one product (which, for a
/// few rows, may not be the tiles' order; [`product::sums_as_matmul`]), so the blocks depend
/// on the shape only.
fn block_rows(m: usize, k: usize, n: usize, tiles: bool) -> usize {
    // With the tiles, a few channels over a large map (B1's 16 and 32 at 112² and 56²) run
    // as two blocks of whole panels: the tiles read `x` in place, so the second block costs
    // no second packing, and a second thread is busy where one block had left it idle at
    // batch 1. Not where the second block would be a single row, which `matmul` would sum as
    // a matrix-vector product.
    let halves = m.div_ceil(2).next_multiple_of(PANEL_ROWS);
    let in_halves = tiles && halves < m && m - halves >= 2;
    if m * n * k < PARALLEL_MACS || (m <= ROW_BLOCK && !in_halves) {
        m
    } else if m <= ROW_BLOCK {
        halves
    } else {
        // `gemm` packs the columns of `x` again for every call, so blocks are as large as
        // keeping [`ROW_PARTS`] of them allows; their size depends on the shape only. At most
        // 64 rows when there are at most 64 columns: past that `matmul` would cut a depth
        // over 512 in two (see `depth_blocks`) where blocks of [`ROW_BLOCK`] rows do not. The
        // tiles' blocks start on a panel.
        let align = if tiles { PANEL_ROWS } else { 8 };
        let rows = m.div_ceil(ROW_PARTS).max(ROW_BLOCK).next_multiple_of(align);
        if n <= 64 {
            rows.min(64 / align * align)
        } else {
            rows
        }
    }
}

/// A block of a product's rows through `matmul` (`w`: its rows' weights), then the bias while
/// the block is in cache, then the activation.
fn block_by_matmul(out: &mut [f32], w: &[f32], x: MatRef<'_>, bias: &[f32], act: Activation) {
    let (rows, n) = (bias.len(), x.cols);
    matmul(
        MatMut::row_major(out, rows, n),
        MatRef::row_major(w, rows, x.rows),
        x,
        false,
    );
    add_channel_bias(out, bias, n);
    product::activate(act, out);
}

/// The most pixels of a map on which [`pointwise_images`] runs a batch's 1×1 convs as one
/// product, with the AVX2 tiles: B1's 7×7 and 14×14 maps, where one image's product read a
/// layer's weights (up to 1 MiB, past L2) for 49 or 196 columns. In B1 at batch 8 on one
/// thread of a Zen 3, the products' cycles against the depthwise convs' fell about 5 % by
/// stacking the 7×7 maps and 2–3 % more with the 14×14 ones; the 28×28 ones, whose one image
/// is 784 columns, gained nothing that two runs agreed on (`perf record` under `qvit bench
/// efficientvit-b1 --executors fp32 --batch 8 --threads 1`; BENCHMARKS.md).
pub const STACKED_PLANE: usize = 14 * 14;

/// [`STACKED_PLANE`] for the AVX-512 tiles, which read each image's columns in place and so
/// run a stacked product's images one after another: stacking gains them only the weights'
/// reuse. From the first stacked conv on, a group's images run node by node together
/// (`FloatExecutor`'s `advance_image_by_image`), and on B1's 14×14 maps that cost more than
/// it saved: B1 at batch 8 on an Emerald Rapids, stacking from the 7×7 maps 116.0–116.4
/// images/s on one thread and 236–237 on two, from the 14×14 ones 107.7–114.0 and 231–232.
/// With `QVIT_ISA=avx2` the 14×14 maps still pay: 71.2–71.4 images/s against 69.0–69.1
/// (`qvit bench efficientvit-b1 --executors fp32 --batch 8`; BENCHMARKS.md).
pub const STACKED_PLANE_AVX512: usize = 7 * 7;

/// Whether [`pointwise_images`] runs conv `c` on a batch of `batch` maps of `hw`.
pub fn stacks_images(c: &Conv2d, (h, w): (usize, usize), batch: usize) -> bool {
    let most = match crate::exec::cpu::float_lanes() {
        crate::exec::cpu::FloatLanes::Avx512 => STACKED_PLANE_AVX512,
        _ => STACKED_PLANE,
    };
    batch > 1
        && c.kernel == 1
        && c.stride == 1
        && c.padding == 0
        && c.groups == 1
        && h * w <= most
        && product::available()
}

/// A 1×1 conv (`stacks_images`) on a batch of images at once, followed by `act`: `x` is the
/// batch's `[B, cin, h, w]`, `out` its `[B, cout, h, w]`. Its output channels run in parts
/// ([`stacked_parts`]), each as one product over every image's pixels
/// (`product::product_images`), so that a part's weights are read once for the batch; every
/// output is the one [`conv2d`] gives for its image alone.
pub fn pointwise_images(
    c: &Conv2d,
    x: &[f32],
    plane: usize,
    p: &ConvWeights<'_>,
    act: Activation,
    out: &mut [f32],
) {
    let (m, k, n) = (c.out_channels, c.in_channels, plane);
    let panels = conv_panels(c, p);
    let xs: Vec<&[f32]> = x.chunks_exact(k * n).collect();
    let parts = stacked_parts(m, k, n, rayon::current_num_threads());
    // Each part's rows of every image's output.
    let mut outs: Vec<Vec<&mut [f32]>> = parts.iter().map(|_| Vec::new()).collect();
    for image in out.chunks_exact_mut(m * n) {
        let mut rest = image;
        for (rows, part) in outs.iter_mut().zip(&parts) {
            let (these, after) = rest.split_at_mut(part.rows.len() * n);
            rows.push(these);
            rest = after;
        }
    }
    parts
        .into_par_iter()
        .zip(outs)
        .for_each(|(part, mut outs)| {
            let (rows, bias) = (part.rows.clone(), &p.bias[part.rows]);
            if part.tiles {
                let panels = &panels[rows.start * k..rows.end.next_multiple_of(PANEL_ROWS) * k];
                product::product_images(&mut outs, panels, &xs, k, bias, act);
            } else {
                let w = &p.weight[rows.start * k..rows.end * k];
                for (out, x) in outs.into_iter().zip(&xs) {
                    block_by_matmul(out, w, MatRef::row_major(x, k, n), bias, act);
                }
            }
        });
}

/// A run of output channels of [`pointwise_images`], and whether it runs as the tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StackedPart {
    rows: Range<usize>,
    tiles: bool,
}

/// The parts [`pointwise_images`] cuts an `m × k × n` product's rows into for `threads`
/// threads: the blocks of one image's product ([`block_rows`]), each summed as there — the
/// tiles where [`product::sums_as_matmul`] holds for it, else `matmul` — and, where the tiles
/// sum every row over the same blocks whatever their number
/// ([`product::sums_whatever_the_rows`]), the tiles' blocks merged and cut again into one part
/// of whole panels per thread: a part packs every image's columns once, for all its rows.
fn stacked_parts(m: usize, k: usize, n: usize, threads: usize) -> Vec<StackedPart> {
    let rows = block_rows(m, k, n, true).max(1);
    let blocks = (0..m).step_by(rows).map(|first| {
        let rows = first..(first + rows).min(m);
        let tiles = product::sums_as_matmul(rows.len(), k, n);
        StackedPart { rows, tiles }
    });
    if !product::sums_whatever_the_rows(k, n) {
        return blocks.collect();
    }
    let mut parts: Vec<StackedPart> = Vec::new();
    for block in blocks {
        match parts.last_mut() {
            Some(last) if last.tiles && block.tiles => last.rows.end = block.rows.end,
            _ => parts.push(block),
        }
    }
    parts
        .into_iter()
        .flat_map(|part| {
            let per_thread = part.rows.len().div_ceil(threads.max(1));
            let step = per_thread.next_multiple_of(PANEL_ROWS);
            // No part of a single row (a matrix-vector product's sums): it joins the one before.
            let cuts = match part.tiles {
                true => part
                    .rows
                    .clone()
                    .step_by(step)
                    .filter(|&f| part.rows.end - f >= 2)
                    .collect(),
                false => vec![part.rows.start],
            };
            let ends = cuts.iter().skip(1).copied().chain([part.rows.end]);
            let tiles = part.tiles;
            cuts.iter()
                .zip(ends)
                .map(move |(&start, end)| StackedPart {
                    rows: start..end,
                    tiles,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Copies the receptive fields of a conv group into columns: `[cin·k·k, oh·ow]`, one row per
/// input channel and tap, the rows in parallel when there are many values to copy (the stem's
/// 27 rows of 112² at 224 px).
///
/// Per tap and output row, the outputs whose input column lies inside the map form one run:
/// zeros left and right of it, and the run copied every `stride`-th input (rather than a test
/// of all four borders per element).
fn im2col(
    x: &[f32],
    cin: usize,
    hw: (usize, usize),
    c: &Conv2d,
    (oh, ow): (usize, usize),
    cols: &mut [f32],
) {
    im2col_rows(x, cin, hw, c, (0..oh, ow), cols);
}

/// [`im2col`] for the output rows `rows` of a map `ow` wide: `[cin·k·k, rows.len()·ow]`.
fn im2col_rows(
    x: &[f32],
    cin: usize,
    (h, w): (usize, usize),
    c: &Conv2d,
    (rows, ow): (Range<usize>, usize),
    cols: &mut [f32],
) {
    let (k, stride, pad) = (c.kernel, c.stride, c.padding);
    let width = rows.len() * ow;
    let fill_row = |(r, row): (usize, &mut [f32])| {
        let (ci, ky, kx) = (r / (k * k), r / k % k, r % k);
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        // Output `ox` reads input column `ox·stride + kx − pad`: inside the map for
        // `first ≤ ox < end`.
        let first = pad.saturating_sub(kx).div_ceil(stride).min(ow);
        let end = if w + pad > kx {
            ((w + pad - kx - 1) / stride + 1).clamp(first, ow)
        } else {
            first
        };
        for (oy, out) in rows.clone().zip(row.chunks_mut(ow)) {
            let iy = (oy * stride + ky).checked_sub(pad).filter(|&iy| iy < h);
            let Some(iy) = iy else {
                out.fill(0.0);
                continue;
            };
            out[..first].fill(0.0);
            out[end..].fill(0.0);
            if first < end {
                let start = first * stride + kx - pad;
                let src = plane[iy * w + start..(iy + 1) * w].iter().step_by(stride);
                for (o, &v) in out[first..end].iter_mut().zip(src) {
                    *o = v;
                }
            }
        }
    };
    let cols = &mut cols[..cin * k * k * width];
    if cols.is_empty() {
        return;
    }
    if cols.len() >= PARALLEL_COPY {
        cols.par_chunks_mut(width).enumerate().for_each(fill_row);
    } else {
        cols.chunks_mut(width).enumerate().for_each(fill_row);
    }
}

/// A conv layer's parameters as its kernels read them.
pub struct ConvWeights<'a> {
    /// `[cout, cin/g, k, k]`.
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    /// Where the weight is kept as [`product`]'s panels, group after group, made the first
    /// time a product runs as tiles.
    pub panels: &'a OnceLock<Vec<f32>>,
}

/// Any convolution, followed by `act`: `x` is `[cin, h, w]`, `out` is `[cout, oh, ow]`.
pub fn conv2d(
    c: &Conv2d,
    x: &[f32],
    hw: (usize, usize),
    p: &ConvWeights<'_>,
    act: Activation,
    out: &mut [f32],
    ohw: (usize, usize),
) {
    let (weight, bias) = (p.weight, p.bias);
    if c.is_depthwise() {
        depthwise(c, x, hw, (weight, bias), act, out, ohw);
        return;
    }
    let (g, k) = (c.groups, c.kernel);
    let (cin_g, cout_g) = (c.in_channels / g, c.out_channels / g);
    let (in_plane, plane) = (hw.0 * hw.1, ohw.0 * ohw.1);
    let direct = k == 1 && c.stride == 1 && c.padding == 0;
    let depth = cin_g * k * k;
    let weights_per_group = cout_g * depth;
    let panels_per_group = cout_g.next_multiple_of(PANEL_ROWS) * depth;
    let tiles = product::available().then(|| conv_panels(c, p));
    if let Some(panels) = tiles
        && g == 1
        && !direct
        && by_output_rows(cout_g, depth, ohw)
    {
        // The same sums either way: by the stem's kernel where it runs.
        if stem_conv::applies(c, hw, ohw) {
            stem_conv::conv(c, x, hw, (weight, bias, act), out);
        } else {
            conv_by_output_rows(c, x, hw, (panels, bias, act), out, ohw);
        }
        return;
    }
    // `cols` is scratch for the receptive fields: `im2col` writes every element it holds.
    let run_group = |cols: &mut Vec<f32>, (group, og): (usize, &mut [f32])| {
        let xg = &x[group * cin_g * in_plane..(group + 1) * cin_g * in_plane];
        let rhs = if direct {
            MatRef::row_major(xg, cin_g, plane)
        } else {
            cols.resize(depth * plane, 0.0);
            im2col(xg, cin_g, hw, c, ohw, cols);
            MatRef::row_major(cols, depth, plane)
        };
        let wg = &weight[group * weights_per_group..(group + 1) * weights_per_group];
        let tg = tiles.map(|t| &t[group * panels_per_group..(group + 1) * panels_per_group]);
        let bg = &bias[group * cout_g..(group + 1) * cout_g];
        product_rows(og, wg, tg, rhs, bg, act);
    };
    if g > 1 && out.len() * depth >= PARALLEL_GROUP_MACS {
        out.par_chunks_mut(cout_g * plane)
            .enumerate()
            .for_each_init(Vec::new, run_group);
    } else {
        let mut cols = Vec::new();
        out.chunks_mut(cout_g * plane)
            .enumerate()
            .for_each(|item| run_group(&mut cols, item));
    }
}

/// Conv `c`'s weights as [`product`]'s panels, group after group, made the first time.
fn conv_panels<'a>(c: &Conv2d, p: &ConvWeights<'a>) -> &'a [f32] {
    let (cout_g, depth) = (
        c.out_channels / c.groups,
        c.in_channels / c.groups * c.kernel * c.kernel,
    );
    p.panels.get_or_init(|| {
        p.weight
            .chunks_exact((cout_g * depth).max(1))
            .flat_map(|wg| product::panels(wg, cout_g, depth))
            .collect()
    })
}

/// Columns (output pixels) per block of [`conv_by_output_rows`], about: a block's `im2col`
/// rows and outputs stay in L2 (B1's stem: 27 + 16 rows of 896 columns, 150 KiB).
const BLOCK_COLUMNS: usize = 1024;

/// Whether a conv through `im2col` of `m` output channels, `depth` terms per sum over an
/// `ohw` map runs as [`conv_by_output_rows`]: few channels over a large map, where the
/// blocks' tiles sum as the whole map's product does (one reduction block and `gemm`'s
/// blocked order, [`product::sums_as_matmul`], for every block's width).
fn by_output_rows(m: usize, depth: usize, (oh, ow): (usize, usize)) -> bool {
    if m > ROW_BLOCK || oh * ow < 2 * BLOCK_COLUMNS {
        return false;
    }
    let rows = (BLOCK_COLUMNS / ow).clamp(1, oh);
    let (whole, last) = (rows * ow, (oh - 1) % rows * ow + ow);
    let one_block = |n| summation_blocks(m, depth, n) == [(0, depth)];
    [whole, last, oh * ow]
        .into_iter()
        .all(|n| one_block(n) && product::sums_as_matmul(m, depth, n))
}

/// A conv through `im2col` with few output channels over a large map, by blocks of output
/// rows in parallel: each block's columns are made and multiplied while they are in L2, and
/// its outputs copied into their rows. As one product, B1's stem (16 channels, 112²) wrote
/// `im2col`'s 1.4 MB through memory, then split its 16 rows 12 + 4 between two threads
/// (whole panels of [`PANEL_ROWS`]): 0.38 ms, 3.4× ONNX Runtime's time; 0.34–0.36 ms by
/// blocks (BENCHMARKS.md). Each output is the same sum.
fn conv_by_output_rows(
    c: &Conv2d,
    x: &[f32],
    hw: (usize, usize),
    (panels, bias, act): (&[f32], &[f32], Activation),
    out: &mut [f32],
    (oh, ow): (usize, usize),
) {
    let (m, depth) = (bias.len(), c.in_channels * c.kernel * c.kernel);
    let rows = (BLOCK_COLUMNS / ow).clamp(1, oh);
    let starts: Vec<usize> = (0..oh).step_by(rows).collect();
    let blocks: Vec<Vec<f32>> = starts
        .into_par_iter()
        .map_init(Vec::new, |cols, first| {
            let range = first..(first + rows).min(oh);
            let width = range.len() * ow;
            cols.resize(depth * width, 0.0);
            im2col_rows(x, c.in_channels, hw, c, (range, ow), cols);
            let mut o = vec![0.0; m * width];
            product::product(&mut o, panels, cols, depth, bias, act);
            o
        })
        .collect();
    let plane = oh * ow;
    out.par_chunks_mut(plane).enumerate().for_each(|(r, row)| {
        for (segment, block) in row.chunks_mut(rows * ow).zip(&blocks) {
            let width = segment.len();
            segment.copy_from_slice(&block[r * width..(r + 1) * width]);
        }
    });
}

fn add_channel_bias(out: &mut [f32], bias: &[f32], plane: usize) {
    in_widest_lanes(
        #[inline(always)]
        || {
            for (o, b) in out.chunks_mut(plane).zip(bias) {
                if *b != 0.0 {
                    o.iter_mut().for_each(|v| *v += b);
                }
            }
        },
    )
}

/// DeiT's patch embedding: a stride-`p` `p×p` conv whose `[D, gh, gw]` output is laid out as
/// tokens `[gh·gw, D]`.
pub fn patch_embed(
    c: &Conv2d,
    x: &[f32],
    hw: (usize, usize),
    p: &ConvWeights<'_>,
    out: &mut [f32],
) {
    let ohw = (hw.0 / c.stride, hw.1 / c.stride);
    let tokens = ohw.0 * ohw.1;
    let mut channels_first = vec![0.0; c.out_channels * tokens];
    conv2d(c, x, hw, p, Activation::None, &mut channels_first, ohw);
    for t in 0..tokens {
        for d in 0..c.out_channels {
            out[t * c.out_channels + d] = channels_first[d * tokens + t];
        }
    }
}

/// `out[t, :] = x[t, :] · wᵀ + b` for every token row, given the weight `w` (`[out, in]`) and
/// a place for its transpose `w_t` (`[in, out]`), made from `w` the first time a product
/// needs it and kept there for the next call.
///
/// Why the transpose: the product runs as `outᵀ = w · xᵀ`, and `gemm` packs its left operand
/// into panels along the output features; from `w` (a stride of `in` between features) it
/// gathers one element at a time, again for every block of token rows — a quarter of DeiT-T's
/// fp32 time. From `w_t` it reads the features in place, with the same sums — except where
/// `gemm` leaves its blocked kernels for paths whose order of summation follows the layout:
/// dot products for outputs of at most 16 × 16 values, outer products for a depth of 2 or
/// less. There it keeps reading `w`, so every result is the one the weight as stored gives
/// (tested: `linear_equals_the_product_with_the_weight_as_stored`).
///
/// A single token (a classifier's) runs as [`one_token::linear`], in that module's order of
/// the sums; a layer that only ever sees single tokens never makes the transpose, which for
/// B1's head is 4 M values.
pub fn linear(
    x: &[f32],
    in_features: usize,
    weight: &[f32],
    weight_t: &OnceLock<Vec<f32>>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let out_features = weight.len() / in_features;
    let tokens = x.len() / in_features;
    let rows = |o: &mut [f32], x: &[f32]| {
        let n = x.len() / in_features;
        let blocked = n >= 2 && n * out_features > 16 * 16 && in_features > 2;
        let w = if blocked {
            let t = weight_t.get_or_init(|| transposed(weight, out_features, in_features));
            MatRef::row_major(t, in_features, out_features)
        } else {
            MatRef::row_major(weight, out_features, in_features).t()
        };
        matmul(
            MatMut::row_major(o, n, out_features),
            MatRef::row_major(x, n, in_features),
            w,
            false,
        );
        if let Some(b) = bias {
            in_widest_lanes(
                #[inline(always)]
                || {
                    for row in o.chunks_mut(out_features) {
                        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                    }
                },
            );
        }
    };
    if tokens == 1 {
        one_token::linear(x, in_features, weight, bias, out);
    } else if tokens * in_features * out_features < PARALLEL_MACS {
        rows(out, x);
    } else if let Some(block) = token_rows(tokens, in_features, out_features) {
        out.par_chunks_mut(block * out_features)
            .zip(x.par_chunks(block * in_features))
            .for_each(|(o, x)| rows(o, x));
    } else if tokens <= ROW_BLOCK {
        rows(out, x);
    } else {
        out.par_chunks_mut(ROW_BLOCK * out_features)
            .zip(x.par_chunks(ROW_BLOCK * in_features))
            .for_each(|(o, x)| rows(o, x));
    }
}

/// Rows per block of a linear layer on `tokens` rows whose sums the rows may be cut across
/// freely ([`rows_cut_freely`]): as many blocks as a whole number of rounds over the pool's
/// threads needs, each of at most [`LINEAR_ROWS`], none of a single row: DeiT-T's 197 tokens
/// as two calls of 99 and 98 rows rather than seven of up to 32 (each packing the weight
/// again), the last block never one `gemm` sums in another order ([`row_blocks`]). The bits
/// are those of the product in one call whatever the threads. `None` where the sums depend on
/// the rows: then blocks of [`ROW_BLOCK`], whatever the threads.
fn token_rows(tokens: usize, in_features: usize, out_features: usize) -> Option<usize> {
    if tokens < 4 || !rows_cut_freely(in_features, out_features) {
        return None;
    }
    let threads = rayon::current_num_threads().max(1);
    let blocks = tokens.div_ceil(LINEAR_ROWS).next_multiple_of(threads);
    Some(row_blocks(tokens, in_features, out_features, blocks))
}

/// The transpose of the row-major `rows × cols` matrix `m`, row-major.
pub fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    transpose(m, rows, cols, &mut t);
    t
}

/// LayerNorm over each row of `dim` values (statistics in f64), the rows in parallel when
/// there are many values.
pub fn layer_norm(x: &[f32], dim: usize, eps: f64, weight: &[f32], bias: &[f32], out: &mut [f32]) {
    by_rows(
        x,
        dim,
        out,
        #[inline(always)]
        |(x, out)| layer_norm_rows(x, dim, eps, (weight, bias), out),
    );
}

/// [`layer_norm`] of one group of rows (inlined into [`by_rows`]'s widest lanes).
#[inline(always)]
fn layer_norm_rows(
    x: &[f32],
    dim: usize,
    eps: f64,
    (weight, bias): (&[f32], &[f32]),
    out: &mut [f32],
) {
    // `Iterator::sum`'s fold, which starts at −0.
    let means = row_sums(x, dim, -0.0, Term::Value).map(|s| s / dim as f64);
    let vars = row_sums(x, dim, -0.0, Term::SquareFrom(means));
    for (r, (row, o)) in x.chunks(dim).zip(out.chunks_mut(dim)).enumerate() {
        let (mean, var) = (means[r], vars[r] / dim as f64);
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..dim {
            o[i] = ((row[i] as f64 - mean) * inv) as f32 * weight[i] + bias[i];
        }
    }
}

/// `f(rows of x, the same rows of out)` for every group of up to [`ROW_GROUP`] rows of `dim`
/// values, compiled for the widest lanes (`f` should call an `#[inline(always)]` body, which
/// then is too), the groups in parallel when there are many values.
fn by_rows(x: &[f32], dim: usize, out: &mut [f32], f: impl Fn((&[f32], &mut [f32])) + Sync + Send) {
    if dim == 0 {
        return;
    }
    let group = ROW_GROUP * dim;
    let f = |rows| {
        in_widest_lanes(
            #[inline(always)]
            || f(rows),
        )
    };
    if x.len() >= PARALLEL_ROWS_VALUES {
        x.par_chunks(group)
            .zip(out.par_chunks_mut(group))
            .for_each(f);
    } else {
        x.chunks(group).zip(out.chunks_mut(group)).for_each(f);
    }
}

/// `y = x·scale[c] + shift[c]` over `[C, plane]` (an unfolded BatchNorm).
pub fn channel_affine(x: &[f32], plane: usize, scale: &[f32], shift: &[f32], out: &mut [f32]) {
    for (c, (xs, os)) in x.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
        for (o, &v) in os.iter_mut().zip(xs) {
            *o = v * scale[c] + shift[c];
        }
    }
}

#[inline(always)]
pub fn relu(v: f32) -> f32 {
    v.max(0.0)
}

#[inline(always)]
pub fn hardswish(v: f32) -> f32 {
    v * (v + 3.0).clamp(0.0, 6.0) / 6.0
}

/// Exact GELU, `x·Φ(x) = x·(1 + erf(x/√2))/2`.
pub fn gelu(v: f32) -> f32 {
    let x = v as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

/// Softmax over each row of `n` values, the rows in parallel when there are many values.
pub fn softmax(x: &[f32], n: usize, out: &mut [f32]) {
    by_rows(
        x,
        n,
        out,
        #[inline(always)]
        |(x, out)| softmax_rows(x, n, out),
    );
}

/// [`softmax`] of one group of rows (inlined into [`by_rows`]'s widest lanes).
#[inline(always)]
fn softmax_rows(x: &[f32], n: usize, out: &mut [f32]) {
    for (row, o) in x.chunks(n).zip(out.chunks_mut(n)) {
        exp_shifted(row, row_max(row), o);
    }
    let sums = row_sums(out, n, 0.0, Term::Value);
    for (o, sum) in out.chunks_mut(n).zip(sums) {
        let inv = (1.0 / sum) as f32;
        o.iter_mut().for_each(|v| *v *= inv);
    }
}

/// A row's largest value, NaN left out, as `fold(−∞, f32::max)` gives it, in lanes. Which
/// zero it returns when `±0` is largest may differ, and does not matter to Softmax:
/// `v − (±0)` is the same for every `v` but `−0`, whose `e^(±0)` is 1 either way.
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    // `v > m ? v : m` keeps `m` when `v` is NaN, and is one `vmaxps` per lane.
    let max = |m: f32, v: f32| if v > m { v } else { m };
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for chunk in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = max(*m, v);
        }
    }
    let rest = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, max);
    lanes.into_iter().fold(rest, max)
}

/// Mean over the spatial plane of each channel.
pub fn global_avg_pool(x: &[f32], plane: usize, out: &mut [f32]) {
    for (o, xs) in out.iter_mut().zip(x.chunks(plane)) {
        *o = (xs.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32;
    }
}

/// Softmax attention logits `q·kᵀ·scale` per head from fused qkv `[N, 3·h·d]` → `[h, N, N]`,
/// in parallel when large: each head's rows in [`row_blocks`] blocks, so that DeiT-T's
/// three heads keep two threads busy at batch 1 (one head each, then a single thread on the
/// third, was a sixth of its attention time idle).
pub fn attention_scores(qkv: &[f32], heads: usize, d: usize, scale: f32, out: &mut [f32]) {
    let width = 3 * heads * d;
    let n = qkv.len() / width;
    if n == 0 {
        return;
    }
    // Rows `first..` of head `h`'s logits into `o`.
    let rows = |h: usize, first: usize, o: &mut [f32]| {
        let count = o.len() / n;
        let q = MatRef {
            data: &qkv[first * width + h * d..],
            rows: count,
            cols: d,
            row_stride: width,
            col_stride: 1,
        };
        let k = MatRef {
            data: &qkv[heads * d + h * d..],
            rows: n,
            cols: d,
            row_stride: width,
            col_stride: 1,
        };
        matmul(MatMut::row_major(o, count, n), q, k.t(), false);
        o.iter_mut().for_each(|v| *v *= scale);
    };
    let out = &mut out[..heads * n * n];
    if heads * n * n * d < PARALLEL_HEAD_MACS {
        out.chunks_mut(n * n)
            .enumerate()
            .for_each(|(h, o)| rows(h, 0, o));
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let block = row_blocks(n, d, n, threads / gcd(heads, threads));
    out.par_chunks_mut(n * n).enumerate().for_each(|(h, o)| {
        o.par_chunks_mut(block * n)
            .enumerate()
            .for_each(|(b, o)| rows(h, b * block, o));
    });
}

/// Attention output `P_h · V_h` per head, heads side by side: `[h, N, N]`, qkv → `[N, h·d]`.
///
/// When large its rows run in parallel blocks ([`row_blocks`]), each block every head's
/// product for those rows. Where the sums would depend on the rows (more than 512 tokens and
/// at most 64 values per head), the heads run in parallel instead, each into a `[N, d]` block
/// of its own that is then copied to its columns (a head's columns of `out` are not one
/// slice). Either way each output is the head's product computed alone.
pub fn attention_mix(probs: &[f32], qkv: &[f32], heads: usize, d: usize, out: &mut [f32]) {
    let width = 3 * heads * d;
    let n = qkv.len() / width;
    // Rows `first..` of head `h`'s output into `o`.
    let product = |h: usize, first: usize, o: MatMut<'_>| {
        let v = MatRef {
            data: &qkv[2 * heads * d + h * d..],
            rows: n,
            cols: d,
            row_stride: width,
            col_stride: 1,
        };
        let start = (h * n + first) * n;
        let p = MatRef::row_major(&probs[start..start + o.rows * n], o.rows, n);
        matmul(o, p, v, false);
    };
    // Every head's output for the rows `first..` of `out` that `o` holds.
    let all_heads = |first: usize, o: &mut [f32]| {
        let rows = o.len() / (heads * d);
        for h in 0..heads {
            let o = MatMut {
                data: &mut o[h * d..],
                rows,
                cols: d,
                row_stride: heads * d,
                col_stride: 1,
            };
            product(h, first, o);
        }
    };
    let out = &mut out[..n * heads * d];
    if heads * n * n * d < PARALLEL_HEAD_MACS {
        all_heads(0, out);
    } else if rows_cut_freely(n, d) {
        let block = row_blocks(n, n, d, rayon::current_num_threads().max(1));
        out.par_chunks_mut(block * heads * d)
            .enumerate()
            .for_each(|(b, o)| all_heads(b * block, o));
    } else {
        let mut blocks = vec![0.0; heads * n * d];
        blocks
            .par_chunks_mut(n * d)
            .enumerate()
            .for_each(|(h, b)| product(h, 0, MatMut::row_major(b, n, d)));
        for (h, block) in blocks.chunks(n * d).enumerate() {
            for (row, src) in out.chunks_mut(heads * d).zip(block.chunks(d)) {
                row[h * d..(h + 1) * d].copy_from_slice(src);
            }
        }
    }
}

/// Rows per parallel block of `n` rows of a product (`depth` terms per sum, `cols` columns)
/// cut into about `parts` blocks: all `n` where its sums depend on the rows
/// ([`rows_cut_freely`]), else blocks whose last one is neither a single row (a matrix-vector
/// product) nor of 256 values or fewer (dot products): both sum in an order of their own, so
/// every block gives the bits of the product in one call.
fn row_blocks(n: usize, depth: usize, cols: usize, parts: usize) -> usize {
    if !rows_cut_freely(depth, cols) {
        return n.max(1);
    }
    let mut rows = n.div_ceil(parts.max(1)).max(1);
    let too_small = |r: usize| r < 2 || r * cols <= 256;
    while rows < n && (too_small(rows) || (!n.is_multiple_of(rows) && too_small(n % rows))) {
        rows += 1;
    }
    rows.min(n).max(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `[v; 1] · relu(k)ᵀ` per head of the multi-scale map `[heads·3d, N]` → `[heads, d+1, d]`.
pub fn linear_attention_context(ms: &[f32], heads: usize, d: usize, out: &mut [f32]) {
    let n = ms.len() / (heads * 3 * d).max(1);
    // Scratch per thread: relu(k) `[d, N]` and `[v; 1]` `[d+1, N]`.
    let scratch = || (vec![0.0; d * n], vec![1.0; (d + 1) * n]);
    let head = |(k_relu, v_pad): &mut (Vec<f32>, Vec<f32>), (h, o): (usize, &mut [f32])| {
        let head = &ms[h * 3 * d * n..(h + 1) * 3 * d * n];
        for (dst, &src) in k_relu.iter_mut().zip(&head[d * n..2 * d * n]) {
            *dst = src.max(0.0);
        }
        v_pad[..d * n].copy_from_slice(&head[2 * d * n..3 * d * n]);
        matmul(
            MatMut::row_major(o, d + 1, d),
            MatRef::row_major(v_pad, d + 1, n),
            MatRef::row_major(k_relu, d, n).t(),
            false,
        );
    };
    let out = &mut out[..heads * (d + 1) * d];
    if out.is_empty() {
        return;
    }
    if heads * (d + 1) * d * n >= PARALLEL_HEAD_MACS {
        let heads = out.par_chunks_mut((d + 1) * d).enumerate();
        heads.for_each_init(scratch, head);
    } else {
        let mut s = scratch();
        out.chunks_mut((d + 1) * d)
            .enumerate()
            .for_each(|item| head(&mut s, item));
    }
}

/// `context · relu(q)` per head → `[heads, d+1, N]` (rows 0..d dividends, row d divisor).
pub fn linear_attention_query(
    ms: &[f32],
    context: &[f32],
    heads: usize,
    d: usize,
    out: &mut [f32],
) {
    let n = ms.len() / (heads * 3 * d).max(1);
    let head = |q_relu: &mut Vec<f32>, (h, o): (usize, &mut [f32])| {
        let head = &ms[h * 3 * d * n..(h + 1) * 3 * d * n];
        q_relu.clear();
        q_relu.extend(head[..d * n].iter().map(|v| v.max(0.0)));
        matmul(
            MatMut::row_major(o, d + 1, n),
            MatRef::row_major(&context[h * (d + 1) * d..(h + 1) * (d + 1) * d], d + 1, d),
            MatRef::row_major(q_relu, d, n),
            false,
        );
    };
    let out = &mut out[..heads * (d + 1) * n];
    if out.is_empty() {
        return;
    }
    if heads * (d + 1) * d * n >= PARALLEL_HEAD_MACS {
        let heads = out.par_chunks_mut((d + 1) * n).enumerate();
        heads.for_each_init(Vec::new, head);
    } else {
        let mut q_relu = Vec::new();
        out.chunks_mut((d + 1) * n)
            .enumerate()
            .for_each(|item| head(&mut q_relu, item));
    }
}

/// Dividends over `divisor + eps`, as channels `head·d + c` of an `[heads·d, N]` map, the
/// heads in parallel when large.
pub fn linear_attention_normalize(x: &[f32], heads: usize, d: usize, eps: f32, out: &mut [f32]) {
    let n = x.len() / (heads * (d + 1)).max(1);
    let head = |(head, o): (&[f32], &mut [f32])| {
        in_widest_lanes(
            #[inline(always)]
            || divide_head(head, d, n, eps, o),
        )
    };
    if n == 0 || d == 0 {
        return;
    }
    if x.len() >= PARALLEL_ROWS_VALUES {
        let heads = x.par_chunks((d + 1) * n).zip(out.par_chunks_mut(d * n));
        heads.for_each(head);
    } else {
        x.chunks((d + 1) * n)
            .zip(out.chunks_mut(d * n))
            .for_each(head);
    }
}

/// One head of [`linear_attention_normalize`]: its `d` rows of dividends over its last row
/// plus `eps` (inlined into the widest lanes).
#[inline(always)]
fn divide_head(head: &[f32], d: usize, n: usize, eps: f32, o: &mut [f32]) {
    let divisor = &head[d * n..];
    for (o, dividends) in o.chunks_mut(n).zip(head.chunks(n)) {
        for ((o, &num), &den) in o.iter_mut().zip(dividends).zip(divisor) {
            *o = num / (den + eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    /// The columns of `cin` channels of `x` by their definition: each tap's input, or 0 outside
    /// the map.
    fn columns_by_definition(
        x: &[f32],
        cin: usize,
        (h, w): (usize, usize),
        c: &Conv2d,
        (oh, ow): (usize, usize),
    ) -> Vec<f32> {
        let (k, stride, pad) = (c.kernel, c.stride, c.padding);
        let mut want = Vec::new();
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            let inside =
                                (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                            want.push(if inside {
                                x[ci * h * w + iy as usize * w + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        want
    }

    /// The parts of a stacked 1×1 conv cover its rows once, in order; each sums as the
    /// blocks of one image's product it covers (the tiles or `matmul`); a part of the tiles
    /// spans more than one block only where the tiles sum the same whatever the rows, and
    /// none is a single row. B1's 7×7 and 14×14 convs, and shapes whose last block is a few
    /// rows or whose reduction is cut in two ways.
    #[test]
    fn stacked_parts_sum_as_one_images_blocks() {
        for (m, k, n) in [
            (1024, 256, 49),
            (256, 1024, 49),
            (512, 128, 196),
            (128, 512, 196),
            (1028, 256, 49),
            (1025, 256, 49),
            (100, 1100, 49),
            (16, 64, 49),
            (4, 64, 49),
            // Cut in two, the second part would be the 13th row alone.
            (13, 64, 49),
            (2304, 256, 49),
        ] {
            let rows = block_rows(m, k, n, true);
            // The block of one image's product that row `r` lies in, and whether it runs as
            // the tiles.
            let block_of = |r: usize| r / rows;
            let tiled = |r: usize| {
                let first = r / rows * rows;
                product::sums_as_matmul((first + rows).min(m) - first, k, n)
            };
            for threads in 1..=4 {
                let parts = stacked_parts(m, k, n, threads);
                let covered: Vec<usize> = parts.iter().flat_map(|p| p.rows.clone()).collect();
                assert_eq!(covered, (0..m).collect::<Vec<_>>(), "{m}×{k}×{n}");
                for part in &parts {
                    let case = format!("{m}×{k}×{n} on {threads}: {part:?}");
                    assert!(part.rows.clone().all(|r| tiled(r) == part.tiles), "{case}");
                    if block_of(part.rows.start) != block_of(part.rows.end - 1) {
                        assert!(
                            part.tiles && product::sums_whatever_the_rows(k, n),
                            "{case}"
                        );
                    }
                    assert!(!part.tiles || part.rows.len() >= 2, "{case}");
                }
            }
        }
    }

    /// The columns against their definition on every small geometry: kernels 1–5, strides
    /// 1–3, paddings up to the kernel, sizes 1–9.
    #[test]
    fn im2col_equals_the_definition() {
        for k in 1..=5 {
            for stride in 1..=3 {
                for pad in 0..=k {
                    for (h, w) in [(1, 1), (2, 5), (5, 2), (7, 9), (9, 4)] {
                        if h + 2 * pad < k || w + 2 * pad < k {
                            continue;
                        }
                        let c = Conv2d {
                            padding: pad,
                            ..Conv2d::same(2, 4, k, stride)
                        };
                        let (oh, ow) = (
                            (h + 2 * pad - k) / stride + 1,
                            (w + 2 * pad - k) / stride + 1,
                        );
                        let x: Vec<f32> = (0..2 * h * w).map(|v| v as f32 + 1.0).collect();
                        let mut got = vec![f32::NAN; 2 * k * k * oh * ow];
                        im2col(&x, 2, (h, w), &c, (oh, ow), &mut got);
                        let want = columns_by_definition(&x, 2, (h, w), &c, (oh, ow));
                        assert_eq!(got, want, "k {k} stride {stride} pad {pad} {h}×{w}");
                    }
                }
            }
        }
    }

    /// B1's stem at 224 px (3 channels, 3×3, stride 2): 27 rows of 112², past
    /// [`PARALLEL_COPY`], so the rows are copied in parallel.
    #[test]
    fn im2col_of_the_stem_equals_the_definition() {
        let c = Conv2d::same(3, 16, 3, 2);
        let x: Vec<f32> = (0..3 * 224 * 224).map(|v| v as f32).collect();
        let mut got = vec![f32::NAN; 27 * 112 * 112];
        assert!(got.len() >= PARALLEL_COPY);
        im2col(&x, 3, (224, 224), &c, (112, 112), &mut got);
        assert_eq!(
            got,
            columns_by_definition(&x, 3, (224, 224), &c, (112, 112))
        );
    }

    /// A grouped conv past [`PARALLEL_GROUP_MACS`] (groups in parallel) gives, bit for bit, each
    /// group's own conv run alone: 1×1 as in B1's attention and 3×3 through `im2col`.
    #[test]
    fn grouped_conv_equals_its_groups_run_alone() {
        let mut rng = crate::rng::Rng::new(11);
        for (k, groups) in [(1, 4), (3, 4), (1, 48)] {
            let (cin, cout, hw) = (96, 96, (28, 28));
            let c = Conv2d::same(cin, cout, k, 1).with_groups(groups);
            let (cin_g, cout_g, plane) = (cin / groups, cout / groups, hw.0 * hw.1);
            assert!(cout * plane * cin_g * k * k >= PARALLEL_GROUP_MACS);
            let x: Vec<f32> = (0..cin * plane).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..cout * cin_g * k * k).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..cout).map(|_| rng.normal()).collect();
            let mut got = vec![f32::NAN; cout * plane];
            conv_plain(&c, &x, hw, &w, &b, &mut got, hw);
            let alone = Conv2d::same(cin_g, cout_g, k, 1);
            for g in 0..groups {
                let mut want = vec![f32::NAN; cout_g * plane];
                let wg = &w[g * cout_g * cin_g * k * k..(g + 1) * cout_g * cin_g * k * k];
                let xg = &x[g * cin_g * plane..(g + 1) * cin_g * plane];
                let bg = &b[g * cout_g..(g + 1) * cout_g];
                conv_plain(&alone, xg, hw, wg, bg, &mut want, hw);
                let gotg = &got[g * cout_g * plane..(g + 1) * cout_g * plane];
                assert_eq!(
                    bits(gotg),
                    bits(&want),
                    "{k}×{k}, {groups} groups, group {g}"
                );
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// DeiT-T's attention (3 heads of 64, 197 tokens) is past [`PARALLEL_HEAD_MACS`], so its
    /// heads' rows run in parallel blocks: on pools of 1–3 threads each head's logits and
    /// output equal, bit for bit, that head's products computed alone. So do those of 530
    /// tokens, whose output sums (530 terms, 32 columns) depend on the rows and so run a
    /// whole head per thread.
    #[test]
    fn attention_heads_in_parallel_equal_each_head_alone() {
        for (heads, d, n) in [(3, 64, 197), (2, 32, 530)] {
            assert!(heads * n * n * d >= PARALLEL_HEAD_MACS);
            let mut rng = crate::rng::Rng::new(5);
            let width = 3 * heads * d;
            let qkv: Vec<f32> = (0..n * width).map(|_| rng.normal()).collect();
            let probs: Vec<f32> = (0..heads * n * n).map(|_| rng.normal().abs()).collect();
            let column = |start: usize| MatRef {
                data: &qkv[start..],
                rows: n,
                cols: d,
                row_stride: width,
                col_stride: 1,
            };
            for threads in 1..=3 {
                let pool = crate::exec::test_pool(threads);
                let mut scores = vec![f32::NAN; heads * n * n];
                let mut mixed = vec![f32::NAN; n * heads * d];
                pool.install(|| {
                    attention_scores(&qkv, heads, d, 0.125, &mut scores);
                    attention_mix(&probs, &qkv, heads, d, &mut mixed);
                });
                for h in 0..heads {
                    let case = format!("{n} tokens, head {h}, {threads} threads");
                    let mut want = vec![0.0; n * n];
                    let (q, k) = (column(h * d), column((heads + h) * d));
                    matmul(MatMut::row_major(&mut want, n, n), q, k.t(), false);
                    want.iter_mut().for_each(|v| *v *= 0.125);
                    let got = &scores[h * n * n..(h + 1) * n * n];
                    assert_eq!(bits(got), bits(&want), "{case}");
                    let mut want = vec![0.0; n * d];
                    let p = MatRef::row_major(&probs[h * n * n..(h + 1) * n * n], n, n);
                    matmul(
                        MatMut::row_major(&mut want, n, d),
                        p,
                        column((2 * heads + h) * d),
                        false,
                    );
                    let got: Vec<f32> = mixed
                        .chunks(heads * d)
                        .flat_map(|row| row[h * d..(h + 1) * d].to_vec())
                        .collect();
                    assert_eq!(bits(&got), bits(&want), "{case}");
                }
            }
        }
    }

    /// The attention row blocks: even parts; never a last block of one row or of 256 values
    /// or fewer; one block where the sums depend on the rows.
    #[test]
    fn row_blocks_keep_every_block_blocked() {
        assert_eq!(row_blocks(197, 64, 197, 2), 99);
        assert_eq!(row_blocks(197, 197, 64, 2), 99);
        assert_eq!(row_blocks(197, 64, 197, 1), 197);
        assert_eq!(row_blocks(530, 530, 32, 2), 530);
        for n in 1..300 {
            for (depth, cols) in [(64, n), (n, 64), (16, 3)] {
                for parts in 1..=4 {
                    let rows = row_blocks(n, depth, cols, parts);
                    assert!((1..=n).contains(&rows), "{n} {depth} {cols} {parts}");
                    if rows == n {
                        continue;
                    }
                    for r in [rows, n % rows].into_iter().filter(|&r| r > 0) {
                        assert!(r >= 2 && r * cols > 256, "{n} {depth} {cols} {parts}: {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn row_ops_in_parallel_equal_each_row_alone() {
        let mut rng = crate::rng::Rng::new(9);
        let (tokens, dim) = (197, 192);
        let x: Vec<f32> = (0..tokens * dim).map(|_| 3.0 * rng.normal()).collect();
        let weight: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        let bias: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        assert!(x.len() >= PARALLEL_ROWS_VALUES);
        let mut got = vec![f32::NAN; x.len()];
        layer_norm(&x, dim, 1e-6, &weight, &bias, &mut got);
        for (t, row) in x.chunks(dim).enumerate() {
            let mut want = vec![f32::NAN; dim];
            layer_norm(row, dim, 1e-6, &weight, &bias, &mut want);
            assert_eq!(bits(&got[t * dim..(t + 1) * dim]), bits(&want), "token {t}");
        }
        let x: Vec<f32> = (0..3 * tokens * tokens)
            .map(|_| 4.0 * rng.normal())
            .collect();
        let mut got = vec![f32::NAN; x.len()];
        softmax(&x, tokens, &mut got);
        for (r, row) in x.chunks(tokens).enumerate() {
            let mut want = vec![f32::NAN; tokens];
            softmax(row, tokens, &mut want);
            assert_eq!(
                bits(&got[r * tokens..(r + 1) * tokens]),
                bits(&want),
                "row {r}"
            );
        }
    }

    /// Softmax's definition, one row at a time: the row's `fold(−∞, f32::max)`, `f32::exp`
    /// per element, their sum in order in f64.
    fn softmax_by_definition(x: &[f32], n: usize) -> Vec<f32> {
        x.chunks(n)
            .flat_map(|row| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
                let inv = (1.0 / e.iter().fold(0.0, |s, &v| s + v as f64)) as f32;
                e.into_iter().map(move |v| v * inv)
            })
            .collect()
    }

    /// Softmax in lanes (the row's maximum, `exp_shifted`, the group's sums side by side)
    /// equals its definition bit for bit: DeiT-T's 3·197 rows of 197 (past
    /// [`PARALLEL_ROWS_VALUES`]), groups short of [`ROW_GROUP`] rows, short rows, and rows
    /// whose maximum is NaN-flanked, infinite, or a zero of either sign.
    #[test]
    fn softmax_equals_its_definition() {
        let mut rng = crate::rng::Rng::new(4);
        for (rows, n, spread) in [
            (3 * 197, 197, 4.0f32),
            (13, 50, 1.0),
            (9, 3, 30.0),
            (7, 1, 1.0),
        ] {
            let x: Vec<f32> = (0..rows * n).map(|_| spread * rng.normal()).collect();
            let mut got = vec![f32::NAN; x.len()];
            softmax(&x, n, &mut got);
            assert_eq!(
                bits(&got),
                bits(&softmax_by_definition(&x, n)),
                "{rows} × {n}"
            );
        }
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        let special: [[f32; 5]; 9] = [
            [nan, 1.0, -2.0, nan, 0.5],
            [nan; 5],
            [-0.0, 0.0, -3.0, -0.0, -1.0],
            [0.0, -0.0, -0.0, -5.0, 0.0],
            [inf, 1.0, 2.0, 3.0, 4.0],
            [-inf, -inf, -inf, -inf, -inf],
            [-inf, 1.0, -inf, 2.0, nan],
            [-120.0, 0.0, -90.0, -104.0, -88.0],
            [1e-45, -1e-45, 0.0, -0.0, f32::MIN_POSITIVE],
        ];
        let x: Vec<f32> = special.iter().flatten().copied().collect();
        let mut got = vec![0.0; x.len()];
        softmax(&x, 5, &mut got);
        assert_eq!(bits(&got), bits(&softmax_by_definition(&x, 5)));
    }

    /// LayerNorm with its row sums side by side equals its definition, one row at a time with
    /// `Iterator::sum`, bit for bit: DeiT-T's 197 tokens of 192, groups short of
    /// [`ROW_GROUP`] rows, and a row of `−0` with a bias of `−0` (where the sums' first value
    /// shows in the output's sign).
    #[test]
    fn layer_norm_equals_its_definition() {
        let by_definition = |x: &[f32], dim: usize, weight: &[f32], bias: &[f32]| -> Vec<f32> {
            x.chunks(dim)
                .flat_map(|row| {
                    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
                    let var =
                        row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
                    let inv = 1.0 / (var + 1e-6).sqrt();
                    (0..dim)
                        .map(move |i| ((row[i] as f64 - mean) * inv) as f32 * weight[i] + bias[i])
                })
                .collect()
        };
        let mut rng = crate::rng::Rng::new(8);
        for (rows, dim) in [(197, 192), (13, 64), (3, 5)] {
            let mut x: Vec<f32> = (0..rows * dim).map(|_| 3.0 * rng.normal()).collect();
            let weight: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
            let mut bias: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
            bias[0] = -0.0;
            x[..dim].fill(-0.0);
            let mut got = vec![f32::NAN; x.len()];
            layer_norm(&x, dim, 1e-6, &weight, &bias, &mut got);
            let want = by_definition(&x, dim, &weight, &bias);
            assert_eq!(bits(&got), bits(&want), "{rows} × {dim}");
        }
    }

    /// A conv's product in blocks of output channels gives, bit for bit, the sums of blocks of
    /// [`ROW_BLOCK`] rows plus the bias (then the activation), through `matmul` or as tiles:
    /// larger blocks change where `gemm` packs, never how a sum is cut. B1's 1×1 convs at 7² (a
    /// depth past 512), 14² and 56², and odd shapes.
    #[test]
    fn product_in_row_blocks_sums_as_blocks_of_32_rows() {
        let mut rng = crate::rng::Rng::new(17);
        let shapes = [
            (1024, 1024, 49),
            (256, 1024, 196),
            (128, 32, 3136),
            (100, 600, 50),
            (200, 520, 70),
        ];
        for (m, k, n) in shapes {
            assert!(m * n * k >= PARALLEL_MACS && m > ROW_BLOCK);
            let x: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let bias: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
            let x = MatRef::row_major(&x, k, n);
            let mut got = vec![f32::NAN; m * n];
            product_rows(&mut got, &w, None, x, &bias, Activation::None);
            let mut tiled = vec![f32::NAN; m * n];
            if product::available() {
                let panels = product::panels(&w, m, k);
                product_rows(&mut tiled, &w, Some(&panels), x, &bias, Activation::None);
            }
            let mut want = vec![f32::NAN; m * n];
            for ((o, w), b) in want
                .chunks_mut(ROW_BLOCK * n)
                .zip(w.chunks(ROW_BLOCK * k))
                .zip(bias.chunks(ROW_BLOCK))
            {
                let rows = b.len();
                let w = MatRef::row_major(w, rows, k);
                matmul(MatMut::row_major(o, rows, n), w, x, false);
                add_channel_bias(o, b, n);
            }
            assert_eq!(bits(&got), bits(&want), "{m} × {k} × {n}");
            if product::available() {
                let diff = product::first_bit_difference(&tiled, &want);
                assert_eq!(diff, None, "{m} × {k} × {n} as tiles");
            }
            // With a Hardswish: applied after the bias on either path (the `matmul` one is
            // what a CPU without AVX2 and FMA runs).
            let activated: Vec<f32> = want.iter().map(|&v| hardswish(v)).collect();
            let panels = product::available().then(|| product::panels(&w, m, k));
            for tiles in [None, panels.as_deref()] {
                let mut got = vec![f32::NAN; m * n];
                product_rows(&mut got, &w, tiles, x, &bias, Activation::Hardswish);
                let diff = product::first_bit_difference(&got, &activated);
                assert_eq!(
                    diff,
                    None,
                    "{m} × {k} × {n} with a Hardswish, tiles {}",
                    tiles.is_some()
                );
            }
        }
    }

    /// [`conv2d`] without an activation, its weights' panels made for this call.
    fn conv_plain(
        c: &Conv2d,
        x: &[f32],
        hw: (usize, usize),
        weight: &[f32],
        bias: &[f32],
        out: &mut [f32],
        ohw: (usize, usize),
    ) {
        let panels = OnceLock::new();
        let p = ConvWeights {
            weight,
            bias,
            panels: &panels,
        };
        conv2d(c, x, hw, &p, Activation::None, out, ohw);
    }

    /// A conv that applies a Hardswish gives, bit for bit, the conv and then the activation:
    /// 1×1 (tiles where the CPU has them, in parallel blocks), grouped, through `im2col`, and
    /// depthwise; the panels made by the first call serve the second.
    #[test]
    fn a_conv_with_its_activation_equals_the_conv_then_the_activation() {
        let mut rng = crate::rng::Rng::new(23);
        let cases = [
            (Conv2d::same(32, 128, 1, 1), (56usize, 56usize)),
            (Conv2d::same(256, 1024, 1, 1), (7, 7)),
            (Conv2d::same(96, 96, 1, 1).with_groups(4), (28, 28)),
            (Conv2d::same(3, 16, 3, 2), (32, 32)),
            (Conv2d::depthwise(64, 3, 1), (14, 14)),
            (Conv2d::same(20, 23, 1, 1), (5, 5)),
        ];
        for (c, hw) in cases {
            let ohw = (hw.0.div_ceil(c.stride), hw.1.div_ceil(c.stride));
            let x: Vec<f32> = (0..c.in_channels * hw.0 * hw.1)
                .map(|_| 3.0 * rng.normal())
                .collect();
            let per_out = c.in_channels / c.groups * c.kernel * c.kernel;
            let w: Vec<f32> = (0..c.out_channels * per_out)
                .map(|_| rng.normal())
                .collect();
            let b: Vec<f32> = (0..c.out_channels).map(|_| rng.normal()).collect();
            let len = c.out_channels * ohw.0 * ohw.1;
            let mut want = vec![f32::NAN; len];
            conv_plain(&c, &x, hw, &w, &b, &mut want, ohw);
            want.iter_mut().for_each(|v| *v = hardswish(*v));
            let panels = OnceLock::new();
            let p = ConvWeights {
                weight: &w,
                bias: &b,
                panels: &panels,
            };
            for round in 0..2 {
                let mut got = vec![f32::NAN; len];
                conv2d(&c, &x, hw, &p, Activation::Hardswish, &mut got, ohw);
                let diff = product::first_bit_difference(&got, &want);
                assert_eq!(diff, None, "{c:?} on {hw:?}, call {round}");
            }
            let tiled = product::available() && !c.is_depthwise();
            assert_eq!(panels.get().is_some(), tiled, "{c:?}: panels made");
        }
    }

    /// A conv with few channels over a large map, by blocks of output rows, gives the one
    /// product over the whole map's columns bit for bit (then the bias, then the Hardswish):
    /// B1's stem at 224 px (by the stem's kernel where the CPU has it), and a 5×5 conv whose
    /// last block is shorter than the others, on one to three threads.
    #[test]
    fn a_conv_by_output_rows_equals_the_whole_maps_product() {
        if !product::available() {
            eprintln!("conv_by_output_rows needs the AVX-512 tiles: not on this CPU");
            return;
        }
        let mut rng = crate::rng::Rng::new(29);
        let cases = [
            (Conv2d::same(3, 16, 3, 2), (224usize, 224usize)),
            (Conv2d::same(4, 10, 5, 1), (67, 45)),
        ];
        for (c, hw) in cases {
            let ohw = (hw.0.div_ceil(c.stride), hw.1.div_ceil(c.stride));
            let (m, n) = (c.out_channels, ohw.0 * ohw.1);
            let depth = c.in_channels * c.kernel * c.kernel;
            assert!(by_output_rows(m, depth, ohw), "{c:?} runs by output rows");
            let x: Vec<f32> = (0..c.in_channels * hw.0 * hw.1)
                .map(|_| 3.0 * rng.normal())
                .collect();
            let w: Vec<f32> = (0..m * depth).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
            let mut cols = vec![0.0; depth * n];
            im2col(&x, c.in_channels, hw, &c, ohw, &mut cols);
            let mut want = vec![0.0; m * n];
            matmul(
                MatMut::row_major(&mut want, m, n),
                MatRef::row_major(&w, m, depth),
                MatRef::row_major(&cols, depth, n),
                false,
            );
            add_channel_bias(&mut want, &b, n);
            want.iter_mut().for_each(|v| *v = hardswish(*v));
            let panels = OnceLock::new();
            let p = ConvWeights {
                weight: &w,
                bias: &b,
                panels: &panels,
            };
            for threads in 1..=3 {
                let pool = crate::exec::test_pool(threads);
                let mut got = vec![f32::NAN; m * n];
                pool.install(|| conv2d(&c, &x, hw, &p, Activation::Hardswish, &mut got, ohw));
                let diff = product::first_bit_difference(&got, &want);
                assert_eq!(diff, None, "{c:?} on {hw:?}, {threads} threads");
            }
        }
    }

    #[test]
    fn conv_3x3_stride_2_padding_1_by_hand() {
        // 1×4×4 input 1..16, a 3×3 kernel of ones, bias 0.5: each output sums its window.
        let x: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        let c = Conv2d::same(1, 1, 3, 2);
        let mut out = vec![0.0; 4];
        conv_plain(&c, &x, (4, 4), &[1.0; 9], &[0.5], &mut out, (2, 2));
        close(&out, &[14.5, 30.5, 57.5, 99.5]);
    }

    #[test]
    fn grouped_1x1_conv_by_hand() {
        // Two groups of two input channels; output 0 reads channels 0–1, output 1 channels 2–3.
        let c = Conv2d::same(4, 2, 1, 1).with_groups(2);
        let mut out = vec![0.0; 2];
        conv_plain(
            &c,
            &[1.0, 2.0, 3.0, 4.0],
            (1, 1),
            &[1.0, 10.0, 100.0, 1000.0],
            &[0.0, 0.0],
            &mut out,
            (1, 1),
        );
        close(&out, &[21.0, 4300.0]);
    }

    #[test]
    fn depthwise_5x5_by_hand() {
        // On a 3×3 map with padding 2 every 5×5 window covers the whole map: a kernel of ones sums
        // the channel; a kernel whose centre is 2 doubles it.
        let x: Vec<f32> = (1..=18).map(|v| v as f32).collect();
        let mut w = vec![0.0; 50];
        w[..25].fill(1.0);
        w[25 + 12] = 2.0;
        let c = Conv2d::depthwise(2, 5, 1);
        let mut out = vec![0.0; 18];
        conv_plain(&c, &x, (3, 3), &w, &[0.0, 1.0], &mut out, (3, 3));
        let mut expected = vec![45.0; 9];
        expected.extend((10..=18).map(|v| 2.0 * v as f32 + 1.0));
        close(&out, &expected);
    }

    #[test]
    fn relu_linear_attention_on_two_heads_by_hand() {
        // d = 1, N = 2. Per head the channels are q, k, v.
        // Head 0: q = [1, −1], k = [2, 0], v = [3, 5]: context [v;1]·relu(k)ᵀ = [6, 2];
        // relu(q) = [1, 0] → dividends [6, 0], divisors [2, 0] → [3, 0].
        // Head 1: q = [0.5, 2], k = [1, 1], v = [4, −2]: context [2, 2] → [1, 1].
        let ms = [1.0, -1.0, 2.0, 0.0, 3.0, 5.0, 0.5, 2.0, 1.0, 1.0, 4.0, -2.0];
        let mut ctx = vec![0.0; 4];
        linear_attention_context(&ms, 2, 1, &mut ctx);
        close(&ctx, &[6.0, 2.0, 2.0, 2.0]);
        let mut q = vec![0.0; 8];
        linear_attention_query(&ms, &ctx, 2, 1, &mut q);
        close(&q, &[6.0, 0.0, 2.0, 0.0, 1.0, 4.0, 1.0, 4.0]);
        let mut y = vec![0.0; 4];
        linear_attention_normalize(&q, 2, 1, 1e-15, &mut y);
        close(&y, &[3.0, 0.0, 1.0, 1.0]);
    }

    /// B1's linear attention at 14² (16 heads of 16, 196 tokens) is past the parallel
    /// thresholds: the context, query and normalised output of every head equal, bit for bit,
    /// that head's computed alone.
    #[test]
    fn linear_attention_heads_in_parallel_equal_each_head_alone() {
        let (heads, d, n) = (16, 16, 196);
        assert!(heads * (d + 1) * d * n >= PARALLEL_HEAD_MACS);
        assert!(heads * (d + 1) * n >= PARALLEL_ROWS_VALUES);
        let mut rng = crate::rng::Rng::new(13);
        let ms: Vec<f32> = (0..heads * 3 * d * n).map(|_| rng.normal()).collect();
        let mut context = vec![f32::NAN; heads * (d + 1) * d];
        linear_attention_context(&ms, heads, d, &mut context);
        let mut query = vec![f32::NAN; heads * (d + 1) * n];
        linear_attention_query(&ms, &context, heads, d, &mut query);
        let mut y = vec![f32::NAN; heads * d * n];
        linear_attention_normalize(&query, heads, d, 1e-15, &mut y);
        for h in 0..heads {
            let ms_h = &ms[h * 3 * d * n..(h + 1) * 3 * d * n];
            let mut context_h = vec![f32::NAN; (d + 1) * d];
            linear_attention_context(ms_h, 1, d, &mut context_h);
            let got = &context[h * (d + 1) * d..(h + 1) * (d + 1) * d];
            assert_eq!(bits(got), bits(&context_h), "context of head {h}");
            let mut query_h = vec![f32::NAN; (d + 1) * n];
            linear_attention_query(ms_h, &context_h, 1, d, &mut query_h);
            let got = &query[h * (d + 1) * n..(h + 1) * (d + 1) * n];
            assert_eq!(bits(got), bits(&query_h), "query of head {h}");
            let mut y_h = vec![f32::NAN; d * n];
            linear_attention_normalize(&query_h, 1, d, 1e-15, &mut y_h);
            assert_eq!(bits(&y[h * d * n..(h + 1) * d * n]), bits(&y_h), "head {h}");
        }
    }

    #[test]
    fn softmax_attention_by_hand() {
        // One head, d = 1, N = 2: q = [1, 2], k = [0, ln 3], v = [10, 20], scale 1.
        let qkv = [1.0, 0.0, 10.0, 2.0, 3f32.ln(), 20.0];
        let mut scores = vec![0.0; 4];
        attention_scores(&qkv, 1, 1, 1.0, &mut scores);
        close(&scores, &[0.0, 3f32.ln(), 0.0, 2.0 * 3f32.ln()]);
        let mut p = vec![0.0; 4];
        softmax(&scores, 2, &mut p);
        close(&p, &[0.25, 0.75, 0.1, 0.9]);
        let mut y = vec![0.0; 2];
        attention_mix(&p, &qkv, 1, 1, &mut y);
        close(&y, &[17.5, 19.0]);
    }

    #[test]
    fn nonlinearities_by_hand() {
        close(
            &[-4.0, -1.0, 0.0, 1.0, 4.0].map(hardswish),
            &[0.0, -1.0 / 3.0, 0.0, 2.0 / 3.0, 4.0],
        );
        // x·Φ(x): Φ(1) = 0.841344746…
        close(
            &[1.0, -1.0, 0.0].map(gelu),
            &[0.841_344_7, -0.158_655_3, 0.0],
        );
        let mut y = vec![0.0; 4];
        layer_norm(&[1.0, 2.0, 3.0, 4.0], 4, 0.0, &[1.0; 4], &[0.0; 4], &mut y);
        let s = 1.0 / 1.25f32.sqrt();
        close(&y, &[-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s]);
        // A constant row has variance 0: eps keeps it finite.
        layer_norm(&[7.0; 4], 4, 1e-6, &[2.0; 4], &[1.0; 4], &mut y);
        close(&y, &[1.0; 4]);
    }

    #[test]
    fn linear_and_pool_by_hand() {
        // Two tokens of width 2 through a 2→3 layer.
        let mut y = vec![0.0; 6];
        let w = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        linear(
            &[1.0, 2.0, 3.0, 4.0],
            2,
            &w,
            &OnceLock::new(),
            Some(&[0.0, 0.0, 10.0]),
            &mut y,
        );
        close(&y, &[1.0, 2.0, 13.0, 3.0, 4.0, 17.0]);
        let mut p = vec![0.0; 2];
        global_avg_pool(&[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 8.0], 4, &mut p);
        close(&p, &[2.5, 2.0]);
    }

    /// A single row is [`one_token::linear`]'s, with the weight as stored: no transpose is
    /// made for it. Two rows of a wide layer are a blocked product: the transpose is made.
    #[test]
    fn linear_makes_the_transpose_only_for_blocked_products() {
        let (inf, outf) = (24, 200);
        let w: Vec<f32> = (0..outf * inf).map(|i| (i % 7) as f32 - 3.0).collect();
        let wt = OnceLock::new();
        let mut y = vec![0.0; 2 * outf];
        linear(&[1.0; 24], inf, &w, &wt, None, &mut y[..outf]);
        assert!(wt.get().is_none(), "a single row made the transpose");
        linear(&[1.0; 48], inf, &w, &wt, None, &mut y);
        assert_eq!(wt.get(), Some(&transposed(&w, outf, inf)));
    }

    /// The layer through the transposed weight gives the sums of the products with the weight
    /// as stored, bit for bit: in one call where the rows may be cut freely, else over blocks
    /// of [`ROW_BLOCK`] rows; at DeiT-T's and the micro models' sizes, past the 512-term depth
    /// block, for row counts from 2 to 70 (one block or several, whole and partial), on pools
    /// of one to three threads; a single row gives [`one_token::linear`]'s bits.
    #[test]
    fn linear_equals_the_product_with_the_weight_as_stored() {
        let mut rng = crate::rng::Rng::new(3);
        let sizes = [
            (192, 768),
            (768, 192),
            (192, 1000),
            (16, 10),
            (1100, 24),
            (64, 128),
            (2, 300),
            (3, 96),
            // B1's classifier.
            (1536, 1600),
            (1600, 1000),
        ];
        for (inf, outf) in sizes {
            let w: Vec<f32> = (0..outf * inf).map(|_| rng.normal()).collect();
            // One place for the transpose across all row counts: made by the first blocked
            // product, reused by the later ones.
            let wt = OnceLock::new();
            let bias: Vec<f32> = (0..outf).map(|_| rng.normal()).collect();
            for tokens in (1..=70).filter(|t| inf < 1000 || t % 16 == 1) {
                let x: Vec<f32> = (0..tokens * inf).map(|_| rng.normal()).collect();
                let parallel = tokens * inf * outf >= PARALLEL_MACS;
                let blocked = parallel && tokens > ROW_BLOCK && !rows_cut_freely(inf, outf);
                let block = if blocked { ROW_BLOCK } else { tokens };
                let mut want = vec![0.0; tokens * outf];
                for (o, xb) in want.chunks_mut(block * outf).zip(x.chunks(block * inf)) {
                    let n = xb.len() / inf;
                    matmul(
                        MatMut::row_major(o, n, outf),
                        MatRef::row_major(xb, n, inf),
                        MatRef::row_major(&w, outf, inf).t(),
                        false,
                    );
                    o.iter_mut()
                        .zip(bias.iter().cycle())
                        .for_each(|(v, b)| *v += b);
                }
                if tokens == 1 {
                    one_token::linear(&x, inf, &w, Some(&bias), &mut want);
                }
                for threads in 1..=3 {
                    let pool = crate::exec::test_pool(threads);
                    let mut got = vec![f32::NAN; tokens * outf];
                    pool.install(|| linear(&x, inf, &w, &wt, Some(&bias), &mut got));
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{tokens} rows of {inf} → {outf}, element {i}, {threads} threads"
                        );
                    }
                }
            }
        }
    }
}
