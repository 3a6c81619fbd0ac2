//! A linear layer on many tokens with the tokens as the product's rows, so that its sums come
//! out token-major (`[P, O]`), as the layer's output is stored, and need no transpose.
//!
//! The int8 product multiplies a u8 operand by an i8 one (`vpdpbusd`, `vpmaddwd` on widened
//! bytes), and the kernels broadcast the i8 side per row. With the tokens as rows, the
//! activations must be the i8 side and the weights the u8 one, so both are shifted by 128:
//! `x' = q + u − 128` (`u` the layer's lift: `x'` is the code itself for signed codes) and
//! `w' = w + 128`. Then, with `s_t = Σ_k x'[t, k]` and `Σw_c = Σ_k w[c, k]`,
//!
//! `Σ_k w·(q + u) = Σ_k x'·w' − 128·s_t + 128·Σw_c`,
//!
//! the left side being what the conv step's epilogue takes. The last term is folded into each
//! channel's requantization with the bias, the middle one is an offset per token added to its
//! sums before it. Each step is exact in i32 for `K ≤` [`MAX_K`] (`|Σ x'·w'| ≤ 128·255·K`).
//!
//! A layer runs by blocks of tokens on the pool's threads: each packs its tokens, multiplies
//! them by every channel's weights (packed once, at compile time) and requantizes straight into
//! its rows of the output. Before, the product ran `[O, P]` and every linear layer's codes were
//! transposed into `[P, O]` (4.5 % of DeiT-T's integer time in the transpose, by `perf`).

use rayon::prelude::*;

use std::cell::Cell;

use super::super::kernels::columns::{ColumnNarrow, LookUp, Read, Requantize};
use super::super::kernels::pack::pack_signed_tokens;
use super::super::kernels::requant::{Fast, in_32_bits};
use super::super::kernels::{PackedA, PackedB, gemm_rows, gemm_rows_requantized, tile_rows};
use super::super::nonlinear::gelu::gelu;
use super::super::requant::{Encoder, Epilogue};
use super::weighted::{Geometry, Output, Weighted, Weights};
use super::{Ctx, copy_run};
use crate::exec::spare::{Buffer, prefix_to_overwrite, with_kept};

/// The longest reduction this form takes: every sum stays inside ±2^30.
pub const MAX_K: usize = 1 << 15;
/// Products of at least this many multiply-accumulates split their tokens over the pool.
const PARALLEL_MACS: usize = 1 << 20;
/// The most tokens of a block: their packed codes (`128·K` bytes, 96 KiB at `K` = 768) stay
/// in L2 while every channel's weights pass them, and so do their sums.
const BLOCK_TOKENS: usize = 128;

/// Tokens per block for `tokens` tokens on `threads` threads: at most [`BLOCK_TOKENS`], a
/// multiple of `align` (the product's tile height: every tile but the last block's full), and
/// as many blocks as a whole number of rounds over the threads needs (DeiT-T's 197 tokens on
/// two threads in tiles of 8: blocks of 104 and 93; in whole panels of 16 they had been 112 and
/// 85, one thread idle for an eighth of each layer at batch 1).
fn tokens_per_block(tokens: usize, threads: usize, align: usize) -> usize {
    let blocks = tokens
        .div_ceil(BLOCK_TOKENS)
        .next_multiple_of(threads.max(1));
    tokens.div_ceil(blocks).next_multiple_of(align.max(1))
}

/// A linear layer's weights and epilogue laid out with the tokens as the product's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMajor {
    /// The weights plus 128, `K × O`: the product's u8 operand.
    weights: PackedB,
    /// Per output channel, the requantization of `Σ x'·w'` less `128·s_t`, its bias and
    /// `128·Σw_c` folded in (the module's identity).
    requant: ColumnNarrow,
    /// Whether the requantized values are GELU's `x`, then looked up in the layer's table.
    gelu: bool,
}

/// One thread's operands and sums for a block of tokens, kept from block to block.
#[derive(Default)]
struct BlockScratch {
    tokens: Option<PackedA>,
    offsets: Vec<i32>,
    sums: Vec<i32>,
    /// Per token, whether a GELU look-up found a value past its table.
    outside: Vec<Cell<bool>>,
}

impl TokenMajor {
    /// The form of `layer`, when it has one: a linear layer or a patch embedding (patches
    /// side by side, no padding: its tokens are the patches' codes, [`patch_rows`]) of one
    /// group of int8 weights with `K ≤` [`MAX_K`], whose output is a plain linear
    /// requantization or a tabulated GELU, every channel's requantization (with the folded
    /// terms) in 32-bit lanes ([`Fast::narrow`]). Other layers keep the channel-major product.
    pub fn new(layer: &Weighted) -> Option<TokenMajor> {
        let tokens = match &layer.geometry {
            Geometry::Tokens { .. } => true,
            Geometry::Patch { conv, .. } => {
                conv.kernel > 0 && conv.stride == conv.kernel && conv.padding == 0
            }
            Geometry::Conv { .. } => false,
        };
        let (true, Weights::Int8(groups)) = (tokens, &layer.weights) else {
            return None;
        };
        let [a] = &groups[..] else { return None };
        let (o, k) = (layer.out_channels, a.k);
        if k == 0 || k > MAX_K || a.rows != o || o == 0 {
            return None;
        }
        let weight = |c: usize, kk: usize| a.quads[c * a.k4 + kk / 4].to_le_bytes()[kk % 4] as i8;
        let mut shifted = vec![0u8; k * o];
        let mut sums = vec![0i64; o];
        for (c, sum) in sums.iter_mut().enumerate() {
            for kk in 0..k {
                let w = weight(c, kk);
                shifted[kk * o + c] = (w as i16 + 128) as u8;
                *sum += w as i64;
            }
        }
        let bias = |c: usize| layer.emit_bias(c) + 128 * sums[c];
        let (fast, gelu): (Option<Vec<Fast>>, bool) = match (&layer.output, &layer.table) {
            (Output::Epilogue(Epilogue::Plain(Encoder::Linear(r))), _) => {
                ((0..o).map(|c| r.fast(c, bias(c))).collect(), false)
            }
            (Output::Gelu { to_x, .. }, Some(table)) => {
                let fast = |c: usize| to_x.fast(c, bias(c)).filter(|f| in_32_bits(f, table));
                ((0..o).map(fast).collect(), true)
            }
            _ => return None,
        };
        let narrow: Option<Vec<_>> = fast?.iter().map(Fast::narrow).collect();
        Some(TokenMajor {
            weights: PackedB::from_rows(&shifted, k, o),
            requant: ColumnNarrow::new(narrow?),
            gelu,
        })
    }

    /// `layer`'s output codes `[P, O]` for the tokens `x` (`[P, K]`), into `out`.
    pub fn run(&self, layer: &Weighted, ctx: Ctx, x: &[i32], out: &mut Buffer<i32>) {
        thread_local! {
            static BLOCK: std::cell::Cell<BlockScratch> = std::cell::Cell::default();
        }
        let (o, k) = (layer.out_channels, self.weights.k);
        let p = x.len() / k;
        let tokens = tokens_per_block(p, rayon::current_num_threads(), tile_rows(ctx.isa));
        let block = |(b, dst): (usize, &mut [i32])| {
            with_kept(&BLOCK, |s| {
                let n = dst.len() / o;
                let packed = s.tokens.get_or_insert_with(|| PackedA::new(&[], 0, k));
                let x = &x[b * tokens * k..][..n * k];
                pack_signed_tokens(ctx.isa, k, x, layer.lift, packed, &mut s.offsets);
                s.offsets.iter_mut().for_each(|sum| *sum *= -128);
                s.outside.clear();
                s.outside.resize(n, Cell::new(false));
                let table = match (self.gelu, &layer.table) {
                    (true, Some(table)) => Some(LookUp {
                        table,
                        outside: &s.outside,
                        read: Read::Buckets,
                    }),
                    _ => None,
                };
                let r = Requantize {
                    columns: &self.requant,
                    offsets: &s.offsets,
                    table,
                };
                // Every code is written.
                gemm_rows_requantized(ctx.isa, packed, 0..n, &self.weights, &r, &mut s.sums, dst);
                if self.gelu {
                    let marks = (&s.offsets[..], &s.outside[..], &mut s.sums);
                    self.past_the_table(layer, ctx, packed, marks, dst);
                }
            })
        };
        // Every element is written: each block's rows, every channel of them.
        let dst = out.overwrite(o * p);
        if o * p * k >= PARALLEL_MACS {
            dst.par_chunks_mut(tokens * o).enumerate().for_each(block);
        } else {
            dst.chunks_mut(tokens * o).enumerate().for_each(block);
        }
    }

    /// GELU's codes of the values past its table, which the look-up in the product left as
    /// some code of the table in the rows it marked (`outside`): each such row's sums
    /// computed again (rare) from its token in `packed`, each value requantized, and those
    /// past the table computed and encoded, as the channel-major epilogue does.
    fn past_the_table(
        &self,
        layer: &Weighted,
        ctx: Ctx,
        packed: &PackedA,
        (offsets, outside, sums): (&[i32], &[Cell<bool>], &mut Vec<i32>),
        dst: &mut [i32],
    ) {
        let (Some(table), Output::Gelu { gelu: k, out, .. }) = (&layer.table, &layer.output) else {
            unreachable!("a GELU layer has a table (`TokenMajor::new`)")
        };
        let o = self.requant.channels();
        let rows = dst.chunks_exact_mut(o).zip(offsets).zip(outside);
        for (t, ((row, &offset), outside)) in rows.enumerate() {
            if !outside.get() {
                continue;
            }
            let sums = prefix_to_overwrite(sums, o);
            gemm_rows(ctx.isa, packed, t..t + 1, &self.weights, sums);
            for (c, (code, &sum)) in row.iter_mut().zip(&*sums).enumerate() {
                let x = self.requant.channel(c).apply_i32(sum.wrapping_add(offset));
                if table.get(x as i64).is_none() {
                    *code = out.encode(gelu(x, k), c);
                }
            }
        }
    }
}

/// The patches of `x` (`[C, H, W]`) as token rows `[P, C·k·k]` in `out`: patch `t` (row
/// `t / ow`, column `t % ow` of `out_hw`), its codes in the weights' order — channel, then the
/// patch's row, then its column. For `k × k` patches side by side (stride `k`, no padding), so
/// that every code of `out` is one of `x`'s. The channel-major form had packed the same codes
/// as the product's columns (serially), multiplied, then transposed the sums' codes: DeiT-T's
/// patch embedding took 0.399 ms on one thread and 0.324 on two, as token rows 0.252 and 0.164
/// (`qvit bench deit-tiny --executors int --batch 1 --steps --threads 1`, then `2`).
pub fn patch_rows(
    x: &[i32],
    channels: usize,
    k: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    out: &mut [i32],
) {
    let row = channels * k * k;
    assert!(oh * k <= h && ow * k <= w && x.len() >= channels * h * w);
    assert_eq!(out.len(), oh * ow * row, "{oh}×{ow} patches of {row} codes");
    if out.is_empty() {
        return;
    }
    let patch_row = |(py, dst): (usize, &mut [i32])| {
        for (px, token) in dst.chunks_exact_mut(row).enumerate() {
            for (ci, taps) in token.chunks_exact_mut(k * k).enumerate() {
                for (ky, run) in taps.chunks_exact_mut(k).enumerate() {
                    let at = ci * h * w + (py * k + ky) * w + px * k;
                    copy_run(run, &x[at..at + k]);
                }
            }
        }
    };
    // Rows of patches on the pool's threads when large (DeiT's 14 rows of 14 patches of 768).
    if out.len() >= PARALLEL_CODES {
        out.par_chunks_mut(ow * row).enumerate().for_each(patch_row);
    } else {
        out.chunks_mut(ow * row).enumerate().for_each(patch_row);
    }
}

/// From this many codes [`patch_rows`] copies rows of patches in parallel.
const PARALLEL_CODES: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-worked splits, then every token count up to two batches of 8 of DeiT's: whole
    /// tiles, at most `BLOCK_TOKENS` (rounded up to a tile), and no more blocks than a whole
    /// number of rounds over the threads.
    #[test]
    fn blocks_cover_the_tokens_in_rounds() {
        assert_eq!(tokens_per_block(197, 2, 8), 104);
        assert_eq!(tokens_per_block(197, 2, 6), 102);
        assert_eq!(tokens_per_block(8 * 197, 2, 8), 120);
        assert_eq!(tokens_per_block(32, 2, 8), 16);
        assert_eq!(tokens_per_block(20, 1, 1), 20);
        for threads in [1, 2, 3, 8] {
            for align in [1, 6, 8] {
                for tokens in 1..=2 * 8 * 197 {
                    let per = tokens_per_block(tokens, threads, align);
                    let most = BLOCK_TOKENS.next_multiple_of(align);
                    assert!(per.is_multiple_of(align) && per <= most, "{tokens}");
                    let blocks = tokens.div_ceil(per);
                    let wanted = tokens.div_ceil(BLOCK_TOKENS).next_multiple_of(threads);
                    assert!(blocks <= wanted, "{tokens} on {threads}: {blocks} blocks");
                }
            }
        }
    }
}
