//! Convolutions (k×k, depthwise, grouped, patch embedding) and linear layers: an integer
//! product, the i32 bias, then the epilogue into the next point.
//!
//! Zero-points: the product needs `Σ W·(q − z)`. The int8 path multiplies u8 values `q + u`
//! (`u` = 128 when codes are signed, else 0) and subtracts `Σ W·(z + u)` per output channel;
//! padding is stored as `z + u`, which that correction cancels exactly. Depthwise and wide
//! (more than 8-bit) layers work on centred values `q − z` directly.

use rayon::prelude::*;

use super::super::byte_codes::{Store, as_bytes, as_bytes_mut};
use super::super::code_table::CodeTable;
use super::super::kernels::Isa;
use super::super::kernels::bytes::{narrow, widen};
use super::super::kernels::depthwise::{DwShape, depthwise, depthwise_bytes};
use super::super::kernels::pack::{
    Windows, im2col_plane, pack_rows, pack_stacked_rows, pack_tokens,
};
use super::super::kernels::requant::{
    Fast, FastHardswish, NarrowHardswish, WideHardswish, hardswish, hardswish_narrow,
    hardswish_wide, lookup, lookup_within, requant,
};
use super::super::kernels::square_hardswish::{
    SquareHardswish, hardswish_square, hardswish_square_bytes,
};
use super::super::kernels::{PackedA, PackedB, gemm, gemm_rows, tile_rows};
use super::super::nonlinear::gelu::{GeluConstants, gelu};
use super::super::requant::{Encoder, Epilogue, Requant};
use super::token_major::{TokenMajor, patch_rows};
use super::{Ctx, Scratch};
use crate::exec::spare::{Buffer, prefix_to_overwrite, with_kept};
use crate::exec::step_time::{conv_kind, map_or_tokens};
use crate::exec::transpose::transpose_parallel;
use crate::graph::Conv2d;

/// Products of at least this many multiply-accumulates (depthwise convs: a quarter of it)
/// split their output channels into blocks that run in parallel.
const PARALLEL_MACS: usize = 1 << 20;
/// An `im2col` of at least this many codes lays out its input channels on the pool's threads.
const PARALLEL_COLUMNS: usize = 1 << 16;
/// The most output channels a block holds: its accumulators then stay in L2 (24 rows of B1's
/// largest map, see [`with_thread_accumulators`]). A multiple of the VNNI and AVX2 tiles'
/// heights; AMX's units of 32 rows take blocks of 32 ([`tile_rows`]).
const ROW_BLOCK: usize = 24;
/// The most sums a block of depthwise channels holds (128 KiB): on small maps a block then
/// takes more than [`ROW_BLOCK`] channels (up to 668 on 7×7, where B1's 1,024 run as two
/// blocks of 512), where 43 blocks of 24 had cost about a quarter as much as the convolution
/// itself (`cargo bench -p qvit-core --bench alternating -- depthwise`, BENCHMARKS.md).
const DEPTHWISE_BLOCK_SUMS: usize = 32 * 1024;

/// Output channels per block when `channels` split across `threads`: a multiple of `align`
/// (the product's tile height; 1 for depthwise) of at most [`ROW_BLOCK`], the one whose
/// rounds of blocks over the threads cover the fewest channels (the largest such). Blocks of
/// [`ROW_BLOCK`] alone had left a thread idle for a third of B1's 64-channel products at batch
/// 1 (three blocks of 24, 24 and 16 on two threads) and for all of its 16-channel depthwise
/// conv (one block).
fn block_rows(channels: usize, align: usize, threads: usize) -> usize {
    block_rows_within(channels, align, threads, ROW_BLOCK)
}

/// [`block_rows`] with blocks of at most `most` channels rather than [`ROW_BLOCK`].
fn block_rows_within(channels: usize, align: usize, threads: usize, most: usize) -> usize {
    let align = align.max(1);
    let largest = most.max(align).min(channels.next_multiple_of(align));
    let mut best = (usize::MAX, align);
    for rows in (align..=largest).step_by(align) {
        let rounds = channels.div_ceil(rows).div_ceil(threads.max(1));
        let covered = rounds * rows;
        if covered <= best.0 {
            best = (covered, rows);
        }
    }
    best.1
}

/// Runs `f` on this thread's scratch for the groups of a grouped product, kept from its last
/// group for the next, as [`with_thread_accumulators`] keeps its buffer: a fresh scratch per
/// job split (rayon's `for_each_init`) had allocated every group's packed activations and
/// sums again on every image.
fn with_thread_group_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    thread_local! {
        static GROUP: std::cell::Cell<Scratch> = std::cell::Cell::default();
    }
    with_kept(&GROUP, f)
}

/// Runs `f` on this thread's accumulator buffer, whatever its length and contents (the last
/// block's leftovers): a large product's blocks then allocate and zero their accumulators once
/// per thread rather than once per job split, as rayon's `for_each_init` does. The buffer
/// stays with the thread (24 rows of the largest map: 1.2 MB for B1's 112² maps at 224). A
/// nested call, were `f` ever to run pool work, finds the buffer taken and starts an empty one.
fn with_thread_accumulators<R>(f: impl FnOnce(&mut Vec<i32>) -> R) -> R {
    thread_local! {
        static ACC: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
    }
    with_kept(&ACC, f)
}

/// A 1×1 conv on at most this many positions (EfficientViT-B1's 7×7 maps) runs a run of
/// images at once ([`Weighted::run_stacked`]). With B1's 14×14 maps too (196 positions), a run
/// of 8 images took 1.07× the time image by image with VNNI kernels and 0.99× with AVX2 ones,
/// against 0.95–0.99× and 0.94–0.95× with the 7×7 maps alone (`cargo bench -p qvit-core
/// --bench alternating -- stacked [avx2]`, AMD Zen 4): there the product has columns enough,
/// and the run's sums no longer fit in L1.
pub const STACK_POSITIONS: usize = 49;

/// A linear layer on at least this many tokens runs with them as its product's rows
/// ([`TokenMajor`]); on fewer (a class token, the head) a tile of tokens would be mostly empty.
const TOKEN_ROWS_FROM: usize = 16;

/// A conv's settings with its input and output sides.
type ConvGeometry<'a> = (&'a Conv2d, (usize, usize), (usize, usize));

/// Where inputs and outputs lie.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    /// `[C, H, W]` → `[O, OH, OW]`.
    Conv {
        conv: Conv2d,
        in_hw: (usize, usize),
        out_hw: (usize, usize),
    },
    /// `[C, H, W]` → tokens `[P, O]`, non-overlapping patches.
    Patch {
        conv: Conv2d,
        in_hw: (usize, usize),
        out_hw: (usize, usize),
    },
    /// `[N, K]` → `[N, O]` (`N` = 1 for a vector).
    Tokens { tokens: usize },
}

/// Integer weights, laid out for their kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// One packed i8 matrix per group, `out/groups × in/groups·k·k`.
    Int8(Vec<PackedA>),
    /// Depthwise, `[C, k, k]`.
    Depthwise(Vec<i16>),
    /// More than 8 bits: `[O, in/groups·k·k]`, run by the scalar path in i64.
    Wide(Vec<i32>),
}

/// What becomes of the accumulators.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Epilogue(Epilogue),
    /// DeiT's fc1 + GELU: requantize to `x` (one scale), integer GELU
    /// ([`gelu`], `SIGMOID_BITS`-bit sigmoid), encode.
    Gelu {
        to_x: Requant,
        gelu: GeluConstants,
        out: Encoder,
        /// The real value of one accumulator unit per output channel (`s_x·s_w[o]`): not used
        /// to run, only by exports that hand the accumulator over as a float.
        unit: Vec<f64>,
    },
    /// The network's logits: per-class scales brought to one, so argmax compares real values.
    Logits(Requant),
}

/// One weighted layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    pub geometry: Geometry,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub weights: Weights,
    /// The float bias at the accumulator's scale, per output channel.
    pub bias: Vec<i64>,
    /// `Σ W·(z + u)` per output channel (int8 path only).
    pub correction: Vec<i64>,
    /// Zero-point per input channel.
    pub zero: Vec<i32>,
    /// `u`, making every input code a u8.
    pub lift: i32,
    pub output: Output,
    /// `output`'s codes tabulated after its first requantization (built by the compiler from
    /// `output`; see [`CodeTable`]), but for a Hardswish that runs in 32-bit lanes instead.
    pub table: Option<CodeTable>,
    /// A Hardswish output's epilogue in lanes per output channel, where its constants allow
    /// (built by [`Weighted::with_lanes`]; empty for other outputs, and for a Hardswish that
    /// keeps its table).
    pub hardswish: Vec<Option<HardswishLanes>>,
    /// A plain output's requantization per output channel, its bias folded in, where its
    /// constants allow (built by [`Weighted::with_lanes`]; empty for other outputs): found per
    /// call, in i128, they had cost as much as the requantization of a 7×7 map's 49 values.
    pub requant: Vec<Option<Fast>>,
    /// A linear layer's product and epilogue with the tokens as rows, where its form allows
    /// (built by [`Weighted::with_lanes`], see [`TokenMajor`]).
    pub token_major: Option<TokenMajor>,
}

/// How a weighted step's input and output codes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stores {
    pub input: Store,
    pub output: Store,
}

impl Stores {
    /// Codes in, codes out.
    pub const CODES: Stores = Stores {
        input: Store::Codes,
        output: Store::Codes,
    };
}

/// A step's input codes as they lie.
#[derive(Clone, Copy)]
enum Input<'a> {
    Codes(&'a [i32]),
    /// Each a code plus the `lift` given.
    Bytes(&'a [u8], i32),
}

impl<'a> Input<'a> {
    /// The first `len` codes themselves: widened into `buf` where they are bytes (which the
    /// paths that read bytes never ask for).
    fn codes(self, isa: Isa, len: usize, buf: &'a mut Vec<i32>) -> &'a [i32] {
        match self {
            Input::Codes(x) => x,
            Input::Bytes(x, lift) => {
                buf.resize(len, 0);
                widen(isa, &x[..len], lift, buf);
                buf
            }
        }
    }
}

/// What an epilogue writes: codes, or bytes (each a code plus a `lift`).
trait OutputCode: Copy + Send + Sync {
    /// This type's form of `code`.
    fn of(code: i32, lift: i32) -> Self;
    /// [`Weighted::emit`] of channel `oc`'s accumulators into `dst`.
    fn emit(w: &Weighted, ctx: Ctx, oc: usize, acc: &[i32], dst: &mut [Self], lift: i32);
}

impl OutputCode for i32 {
    fn of(code: i32, _: i32) -> i32 {
        code
    }

    #[inline]
    fn emit(w: &Weighted, ctx: Ctx, oc: usize, acc: &[i32], dst: &mut [i32], _: i32) {
        w.emit(ctx, oc, acc, dst)
    }
}

impl OutputCode for u8 {
    fn of(code: i32, lift: i32) -> u8 {
        code.wrapping_add(lift) as u8
    }

    /// The square Hardswish stores its lanes as bytes; other epilogues go through a row of
    /// codes in this thread's buffer (one channel's, in L1 or L2 when the bytes are written).
    #[inline]
    fn emit(w: &Weighted, ctx: Ctx, oc: usize, acc: &[i32], dst: &mut [u8], lift: i32) {
        if let Some(Some(HardswishLanes::Square(h))) = w.hardswish.get(oc) {
            return hardswish_square_bytes(ctx.isa, h, acc, lift, dst);
        }
        thread_local! {
            static ROW: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
        }
        with_kept(&ROW, |row| {
            let row = prefix_to_overwrite(row, acc.len());
            w.emit(ctx, oc, acc, row);
            narrow(ctx.isa, row, lift, dst);
        })
    }
}

/// One output channel's Hardswish epilogue in lanes, its constants found once at compile time
/// (found per call, they had been 2 % of efficientvit-micro's integer time by `perf`, and the
/// 64-bit form's checks 0.7 % of EfficientViT-B1's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardswishLanes {
    /// Products in 32-bit lanes as a square, codes that stop changing below `x = 3`
    /// ([`FastHardswish::square`]).
    Square(SquareHardswish),
    /// Products inside 32 bits ([`FastHardswish::narrow`]).
    Narrow(NarrowHardswish),
    /// Products in 64 bits, `t` in 32 ([`FastHardswish::wide`]).
    Wide(WideHardswish),
    /// Every step in 64 bits.
    Long(FastHardswish),
}

impl HardswishLanes {
    /// Whether a channel's epilogue has a form in 32-bit lanes.
    fn in_32_bits(lanes: &Option<HardswishLanes>) -> bool {
        matches!(
            lanes,
            Some(HardswishLanes::Square(_) | HardswishLanes::Narrow(_))
        )
    }
}

impl Weighted {
    /// The layer with the per-channel constants its epilogue runs on: the code table, each
    /// channel's Hardswish in lanes (32-bit where `FastHardswish::narrow` allows), or each
    /// channel's plain requantization.
    ///
    /// A Hardswish whose every channel has a form in 32-bit lanes runs in them rather than
    /// from its table: on EfficientViT-B1's stem the look-up took 2.1–2.5× the lanes' time
    /// (BENCHMARKS.md, sixty-eighth session). Its table is kept where a channel has none.
    pub fn with_lanes(mut self) -> Self {
        let lanes: Vec<Option<HardswishLanes>> = match &self.output {
            Output::Epilogue(e @ Epilogue::Hardswish { .. }) => (0..self.out_channels)
                .map(|oc| {
                    let fast = e.fast_hardswish(oc, self.emit_bias(oc))?;
                    // The first form the constants allow, each tried only if the one
                    // before was not (every one searches the channel's clamps again).
                    let lanes = fast
                        .square()
                        .map(HardswishLanes::Square)
                        .or_else(|| fast.narrow().map(HardswishLanes::Narrow))
                        .or_else(|| fast.wide().map(HardswishLanes::Wide))
                        .unwrap_or(HardswishLanes::Long(fast));
                    Some(lanes)
                })
                .collect(),
            _ => Vec::new(),
        };
        let hardswish = matches!(&self.output, Output::Epilogue(Epilogue::Hardswish { .. }));
        // The table is made only where it would run.
        self.table = match hardswish && lanes.iter().all(HardswishLanes::in_32_bits) {
            true => None,
            false => CodeTable::for_output(&self.output),
        };
        self.hardswish = match hardswish && self.table.is_some() {
            true => Vec::new(),
            false => lanes,
        };
        self.requant = match &self.output {
            Output::Epilogue(Epilogue::Plain(Encoder::Linear(r))) => (0..self.out_channels)
                .map(|oc| r.fast(oc, self.emit_bias(oc)))
                .collect(),
            _ => Vec::new(),
        };
        self.token_major = TokenMajor::new(&self);
        self
    }

    /// What [`Weighted::emit`] adds to output channel `oc`'s accumulators.
    pub(super) fn emit_bias(&self, oc: usize) -> i64 {
        match self.weights {
            Weights::Int8(_) => self.bias[oc] - self.correction[oc],
            Weights::Depthwise(_) | Weights::Wide(_) => self.bias[oc],
        }
    }

    fn patch_or_kernel(&self) -> Option<ConvGeometry<'_>> {
        match &self.geometry {
            Geometry::Conv {
                conv,
                in_hw,
                out_hw,
            }
            | Geometry::Patch {
                conv,
                in_hw,
                out_hw,
            } => Some((conv, *in_hw, *out_hw)),
            Geometry::Tokens { .. } => None,
        }
    }

    /// Output positions per channel for the input codes `x`, and whether outputs are stored
    /// token-major (`[P, O]`). A linear layer runs on the tokens it is given: one image's, or
    /// one per image of a run when the executor takes the program's token tail for the run
    /// at once ([`IntProgram::token_tail`](super::super::program::IntProgram::token_tail)).
    fn positions(&self, x: &[i32]) -> (usize, bool) {
        match &self.geometry {
            Geometry::Conv { out_hw, .. } => (out_hw.0 * out_hw.1, false),
            Geometry::Patch { out_hw, .. } => (out_hw.0 * out_hw.1, true),
            Geometry::Tokens { .. } => {
                debug_assert_eq!(x.len() % self.in_channels, 0, "whole tokens");
                (x.len() / self.in_channels, true)
            }
        }
    }

    /// Multiply-accumulates of one image: every output channel at every position, over the
    /// reduction of its group.
    pub fn macs(&self) -> u64 {
        let positions = match &self.geometry {
            Geometry::Conv { out_hw, .. } | Geometry::Patch { out_hw, .. } => out_hw.0 * out_hw.1,
            Geometry::Tokens { tokens } => *tokens,
        };
        (self.out_channels * positions * self.k()) as u64
    }

    /// The kind of product and what it works on, for reports: ("depthwise 3×3", "7×7"),
    /// ("linear", "197 tokens").
    pub fn describe(&self) -> (&'static str, String) {
        let kind = match (&self.geometry, &self.weights) {
            (Geometry::Tokens { .. }, _) => "linear",
            (Geometry::Patch { .. }, _) => "patch embedding",
            (Geometry::Conv { conv, .. }, weights) => conv_kind(
                conv.kernel,
                matches!(weights, Weights::Depthwise(_)),
                self.groups,
            ),
        };
        let shape = match &self.geometry {
            Geometry::Conv { out_hw, .. } | Geometry::Patch { out_hw, .. } => {
                map_or_tokens(Some(*out_hw), 1)
            }
            Geometry::Tokens { tokens } => map_or_tokens(None, *tokens),
        };
        (kind, shape)
    }

    /// Reduction length per group.
    fn k(&self) -> usize {
        let cin_g = self.in_channels / self.groups;
        match self.patch_or_kernel() {
            Some((c, _, _)) => cin_g * c.kernel * c.kernel,
            None => cin_g,
        }
    }

    /// Codes of the input, for `p` output positions per channel.
    fn input_len(&self, p: usize) -> usize {
        match &self.geometry {
            Geometry::Conv { in_hw, .. } | Geometry::Patch { in_hw, .. } => {
                self.in_channels * in_hw.0 * in_hw.1
            }
            Geometry::Tokens { .. } => self.in_channels * p,
        }
    }

    /// Codes of the output for the input codes `x`: every output channel at every position.
    pub fn output_len(&self, x: &[i32]) -> usize {
        self.out_channels * self.positions(x).0
    }

    pub fn run(&self, ctx: Ctx, x: &[i32], out: &mut Buffer<i32>, s: &mut Scratch) {
        self.run_stored(ctx, x, out, Stores::CODES, s)
    }

    /// [`Weighted::run`] with its input and output codes stored as `stores` says (see
    /// [`byte_codes`](super::super::byte_codes)): a value stored as bytes holds its codes in
    /// `⌈len/4⌉` words. Only a conv's output is stored as bytes (an output token-major is
    /// not).
    pub fn run_stored(
        &self,
        ctx: Ctx,
        x: &[i32],
        out: &mut Buffer<i32>,
        stores: Stores,
        s: &mut Scratch,
    ) {
        let input = match stores.input {
            Store::Codes => Input::Codes(x),
            Store::Bytes { lift } => Input::Bytes(as_bytes(x), lift),
        };
        let (p, token_major) = self.positions(x);
        assert!(
            !(token_major && matches!(stores.output, Store::Bytes { .. })),
            "only a conv's output is stored as bytes"
        );
        if let Some(t) = &self.token_major
            && p >= TOKEN_ROWS_FROM
        {
            let mut widened = Vec::new();
            let x = input.codes(ctx.isa, self.input_len(p), &mut widened);
            let Geometry::Patch {
                conv,
                in_hw,
                out_hw,
            } = &self.geometry
            else {
                return t.run(self, ctx, x, out);
            };
            // A patch embedding's tokens: each patch's codes, a row of the product.
            let k = self.k();
            let mut tokens = s.spare.take(p * k);
            let rows = tokens.overwrite(p * k);
            patch_rows(x, self.in_channels, conv.kernel, *in_hw, *out_hw, rows);
            t.run(self, ctx, rows, out);
            s.spare.keep(tokens);
            return;
        }
        let o = self.out_channels;
        // Codes as [O][P]: straight into `out`, or for token-major outputs into the spare
        // buffer that fits best, transposed into `out` at the end. Every code is written below
        // (each output channel's epilogue writes its whole row).
        let mut codes = match token_major {
            true => s.spare.take(o * p),
            false => std::mem::take(out),
        };
        codes.overwrite(stores.output.words(o * p));
        match stores.output {
            Store::Codes => self.products(ctx, input, p, (&mut codes, 0), s),
            Store::Bytes { lift } => {
                let bytes = &mut as_bytes_mut(&mut codes)[..o * p];
                self.products(ctx, input, p, (bytes, lift), s)
            }
        }
        if token_major {
            // The transpose writes every element too.
            transpose_parallel(&codes, o, p, out.overwrite(o * p));
            s.spare.keep(codes);
        } else {
            *out = codes;
        }
    }

    /// Every output channel's codes at its `p` positions, as `[O][P]` into `codes` (each a
    /// code plus `lift` where they are bytes).
    fn products<T: OutputCode>(
        &self,
        ctx: Ctx,
        x: Input,
        p: usize,
        (codes, lift): (&mut [T], i32),
        s: &mut Scratch,
    ) {
        let o = self.out_channels;
        let emit = |oc: usize, acc: &[i32], dst: &mut [T]| T::emit(self, ctx, oc, acc, dst, lift);
        match &self.weights {
            Weights::Depthwise(w) => {
                let (conv, in_hw, out_hw) = self.patch_or_kernel().expect("depthwise is a conv");
                let plane = in_hw.0 * in_hw.1;
                let kk = conv.kernel * conv.kernel;
                // Channels are independent: blocks of them, each conv then epilogue, run on
                // the pool's threads when large (the only work of an image at batch 1).
                let parallel = o * p * kk >= PARALLEL_MACS / 4;
                let most = ROW_BLOCK.max(DEPTHWISE_BLOCK_SUMS / p.max(1));
                let rows = match parallel {
                    true => block_rows_within(o, 1, rayon::current_num_threads(), most),
                    false => most,
                };
                let block = |acc: &mut Vec<i32>, (b, dst): (usize, &mut [T])| {
                    let channels = b * rows..(b * rows + rows).min(o);
                    let shape = DwShape {
                        channels: channels.len(),
                        in_hw,
                        out_hw,
                        kernel: conv.kernel,
                        stride: conv.stride,
                        padding: conv.padding,
                    };
                    // The kernel writes every accumulator.
                    let acc = prefix_to_overwrite(acc, channels.len() * p);
                    let planes = channels.start * plane..channels.end * plane;
                    let wb = &w[channels.start * kk..channels.end * kk];
                    let zero = &self.zero[channels.clone()];
                    match x {
                        Input::Codes(x) => {
                            depthwise(ctx.isa, &shape, &x[planes], zero, self.lift, wb, acc)
                        }
                        Input::Bytes(x, lift) => {
                            depthwise_bytes(ctx.isa, &shape, &x[planes], zero, lift, wb, acc)
                        }
                    }
                    for (i, oc) in channels.enumerate() {
                        let r = i * p..(i + 1) * p;
                        emit(oc, &acc[r.clone()], &mut dst[r]);
                    }
                };
                if parallel {
                    codes
                        .par_chunks_mut(rows * p)
                        .enumerate()
                        .for_each(|item| with_thread_accumulators(|acc| block(acc, item)));
                } else {
                    let mut acc = std::mem::take(&mut s.acc);
                    codes
                        .chunks_mut(rows * p)
                        .enumerate()
                        .for_each(|item| block(&mut acc, item));
                    s.acc = acc;
                }
            }
            Weights::Int8(groups) if groups.len() == 1 && o * p * self.k() >= PARALLEL_MACS => {
                // One large product: blocks of output channels on the pool's threads (an
                // image at batch 1 would otherwise use one core). Integers, so the blocks
                // change nothing in the result.
                let (a, b) = (&groups[0], self.pack_group(ctx, x, p, 0, s));
                let block_len = block_rows(o, tile_rows(ctx.isa), rayon::current_num_threads());
                codes
                    .par_chunks_mut(block_len * p)
                    .enumerate()
                    .for_each(|(block, dst)| {
                        with_thread_accumulators(|acc| {
                            let rows = block * block_len..(block * block_len + block_len).min(o);
                            // The product writes every accumulator.
                            let acc = prefix_to_overwrite(acc, rows.len() * p);
                            gemm_rows(ctx.isa, a, rows.clone(), &b, acc);
                            for (i, oc) in rows.enumerate() {
                                let r = i * p..(i + 1) * p;
                                emit(oc, &acc[r.clone()], &mut dst[r]);
                            }
                        })
                    });
                s.packed = b.data;
            }
            Weights::Int8(groups) => {
                let cout_g = o / self.groups;
                // Groups are independent: each packs, multiplies and emits its own channels,
                // on the pool's threads when the conv is large (B1's attention splits its
                // 384 or 768 channels into groups of 16, each too small to split alone).
                let group = |s: &mut Scratch, (g, dst): (usize, &mut [T])| {
                    let b = self.pack_group(ctx, x, p, g, s);
                    let acc = prefix_to_overwrite(&mut s.acc, cout_g * p);
                    gemm(ctx.isa, &groups[g], &b, acc);
                    s.packed = b.data;
                    for (r, dst) in dst.chunks_mut(p).enumerate() {
                        let acc = &s.acc[r * p..(r + 1) * p];
                        emit(g * cout_g + r, acc, dst);
                    }
                };
                if groups.len() > 1 && o * p * self.k() >= PARALLEL_MACS / 8 {
                    codes
                        .par_chunks_mut(cout_g * p)
                        .enumerate()
                        .for_each(|item| with_thread_group_scratch(|s| group(s, item)));
                } else {
                    codes
                        .chunks_mut(cout_g * p)
                        .enumerate()
                        .for_each(|item| group(s, item));
                }
            }
            Weights::Wide(w) => {
                s.wide.clear();
                s.wide.resize(o * p, 0);
                let mut widened = Vec::new();
                let x = x.codes(ctx.isa, self.input_len(p), &mut widened);
                self.run_wide(x, w, &mut s.wide);
                for (i, c) in codes.iter_mut().enumerate() {
                    *c = T::of(self.emit_one(i / p, s.wide[i]), lift);
                }
            }
        }
    }

    /// Whether [`Weighted::run_stacked`] runs this layer: a 1×1 conv (stride 1, no padding,
    /// one group of 8-bit weights) on a map of at most [`STACK_POSITIONS`] positions.
    pub fn stacks(&self) -> bool {
        let small_pointwise = matches!(
            &self.geometry,
            Geometry::Conv { conv, out_hw, .. } if conv.kernel == 1
                && conv.stride == 1
                && conv.padding == 0
                && out_hw.0 * out_hw.1 <= STACK_POSITIONS
        );
        small_pointwise && matches!(&self.weights, Weights::Int8(groups) if groups.len() == 1)
    }

    /// [`Weighted::run`] of a run of images at once, `xs[i]` the input codes of image `i` and
    /// `outs[i]` its output: the images' positions side by side as the columns of one product,
    /// so that each weight tile serves them all. On a small map one image's columns fill few
    /// of the kernel's panels (49 on a 7×7 map: three panels and a column), and each output
    /// channel's epilogue ran on a row with a part-filled last vector. Each output code is
    /// the one [`Weighted::run`] gives: the product's columns and the epilogues are
    /// independent of one another. For layers that [`Weighted::stacks`].
    pub fn run_stacked(&self, ctx: Ctx, xs: &[&[i32]], outs: &mut [Buffer<i32>], s: &mut Scratch) {
        let Weights::Int8(groups) = &self.weights else {
            panic!("a stacked layer has 8-bit weights");
        };
        assert!(self.stacks(), "a 1×1 conv on a small map");
        assert_eq!(xs.len(), outs.len(), "an output per image");
        let (p, _) = self.positions(&[]);
        let (k, o) = (self.k(), self.out_channels);
        let wide = xs.len() * p;
        // The matrix `[K][n·P]`, each input channel's row every image's plane in turn, packed
        // from the images' own codes.
        let b = pack_stacked_rows(ctx.isa, k, p, xs, self.lift, std::mem::take(&mut s.packed));
        let mut outs: Vec<&mut [i32]> = outs.iter_mut().map(|out| out.overwrite(o * p)).collect();
        let (mut acc, mut codes) = (std::mem::take(&mut s.acc), std::mem::take(&mut s.codes));
        // Blocks of output channels whose sums stay in cache while their epilogues run, a
        // whole number of tiles (AMX's units are 32 rows); each channel's codes, one row for
        // the run, are dealt to the images' outputs.
        let block = ROW_BLOCK.next_multiple_of(tile_rows(ctx.isa));
        for first in (0..o).step_by(block) {
            let channels = first..(first + block).min(o);
            let acc = prefix_to_overwrite(&mut acc, channels.len() * wide);
            gemm_rows(ctx.isa, &groups[0], channels.clone(), &b, acc);
            let row = prefix_to_overwrite(&mut codes, wide);
            for (sums, oc) in acc.chunks_exact(wide).zip(channels) {
                self.emit(ctx, oc, sums, row);
                for (out, image_row) in outs.iter_mut().zip(row.chunks_exact(p)) {
                    super::copy_run(&mut out[oc * p..(oc + 1) * p], image_row);
                }
            }
        }
        (s.acc, s.codes, s.packed) = (acc, codes, b.data);
    }

    /// Codes of output channel `oc` from its i32 accumulators (bias not yet added).
    fn emit(&self, ctx: Ctx, oc: usize, acc: &[i32], dst: &mut [i32]) {
        let bias = self.emit_bias(oc);
        match self.hardswish.get(oc) {
            Some(Some(HardswishLanes::Square(h))) => return hardswish_square(ctx.isa, h, acc, dst),
            Some(Some(HardswishLanes::Narrow(h))) => return hardswish_narrow(ctx.isa, h, acc, dst),
            Some(Some(HardswishLanes::Wide(h))) => return hardswish_wide(ctx.isa, h, acc, dst),
            Some(Some(HardswishLanes::Long(h))) => return hardswish(ctx.isa, h, acc, dst),
            _ => {}
        }
        if let Some(Some(f)) = self.requant.get(oc) {
            return requant(ctx.isa, f, acc, dst);
        }
        match (&self.output, &self.table) {
            (Output::Epilogue(Epilogue::Hardswish { to_t, .. }), Some(table)) => {
                match to_t.fast(oc, bias) {
                    Some(t) if table.covers(t.qmin, t.qmax) => lookup(ctx.isa, &t, table, acc, dst),
                    _ => self.emit_each(oc, bias, acc, dst),
                }
            }
            (
                Output::Gelu {
                    to_x, gelu: k, out, ..
                },
                Some(table),
            ) => match to_x.fast(oc, bias) {
                Some(t) => {
                    // Looked up in lanes; the values past the table (rare) computed after.
                    if !lookup_within(ctx.isa, &t, table, acc, dst) {
                        for (d, &v) in dst.iter_mut().zip(acc) {
                            let x = t.apply_i32(v);
                            if table.get(x).is_none() {
                                *d = out.encode(gelu(x as i32, k), oc);
                            }
                        }
                    }
                }
                None => self.emit_each(oc, bias, acc, dst),
            },
            _ => self.emit_computed(ctx, oc, bias, acc, dst),
        }
    }

    /// [`Weighted::emit`] without a table.
    fn emit_computed(&self, ctx: Ctx, oc: usize, bias: i64, acc: &[i32], dst: &mut [i32]) {
        match &self.output {
            Output::Epilogue(e) => e.apply_slice(ctx.isa, oc, bias, acc, dst),
            Output::Logits(r) => r.apply_slice(ctx.isa, oc, bias, acc, dst),
            Output::Gelu {
                to_x,
                gelu: k,
                out: Encoder::Linear(r),
                ..
            } => match (to_x.fast(oc, bias), r.fast(oc, 0)) {
                // x is clamped to ±2^24, so x·σ < 2^39 and the 20-bit output multiplier keeps
                // the product inside i64.
                (Some(t), Some(o)) if o.m.abs() < 1 << 22 => {
                    for (d, &v) in dst.iter_mut().zip(acc) {
                        let x = t.apply(v as i64) as i32;
                        *d = o.apply(gelu(x, k)) as i32;
                    }
                }
                _ => self.emit_each(oc, bias, acc, dst),
            },
            Output::Gelu { .. } => self.emit_each(oc, bias, acc, dst),
        }
    }

    /// The definition, element by element.
    fn emit_each(&self, oc: usize, bias: i64, acc: &[i32], dst: &mut [i32]) {
        for (d, &v) in dst.iter_mut().zip(acc) {
            *d = self.emit_one(oc, v as i64 + bias);
        }
    }

    /// The code of one accumulator (bias included).
    fn emit_one(&self, oc: usize, v: i64) -> i32 {
        match &self.output {
            Output::Epilogue(e) => e.apply(v, oc),
            Output::Logits(r) => r.apply(v, oc) as i32,
            Output::Gelu {
                to_x,
                gelu: k,
                out: enc,
                ..
            } => {
                let x = to_x.apply(v, oc) as i32;
                enc.encode(gelu(x, k), oc)
            }
        }
    }

    /// Packed `B` for group `g`: the transpose of the token matrix for linear layers, the
    /// input planes for 1×1 stride-1 convs, im2col (padding = `z + u`) for the others.
    fn pack_group(&self, ctx: Ctx, x: Input, p: usize, g: usize, s: &mut Scratch) -> PackedB {
        let isa = ctx.isa;
        let k = self.k();
        let lift = self.lift;
        let buf = std::mem::take(&mut s.packed);
        let direct = self
            .patch_or_kernel()
            .is_some_and(|(conv, ..)| conv.kernel == 1 && conv.stride == 1 && conv.padding == 0);
        if let (Input::Bytes(bytes, byte_lift), true) = (x, direct) {
            // Each byte is its code plus `lift` already (the plan gives a layer's input its
            // readers' `lift`).
            debug_assert_eq!(byte_lift, lift);
            let cin_g = self.in_channels / self.groups;
            return pack_rows(isa, k, p, &bytes[g * cin_g * p..][..k * p], 0, buf);
        }
        let mut widened = Vec::new();
        let x = x.codes(ctx.isa, self.input_len(p), &mut widened);
        match self.patch_or_kernel() {
            None => pack_tokens(isa, k, p, x, lift, buf),
            Some((conv, (h, w), (oh, ow))) => {
                let cin_g = self.in_channels / self.groups;
                let xg = &x[g * cin_g * h * w..(g + 1) * cin_g * h * w];
                if direct {
                    pack_rows(isa, k, p, &xg[..k * p], lift, buf)
                } else {
                    // Every element is written below. Taken as a prefix: the scratch serves
                    // convs of other sizes too, and a length it had is not zeroed again
                    // (regrowing it to the stem's columns was 0.9 % of B1's integer time at
                    // batch 1, by `perf`).
                    let mut scratch = std::mem::take(&mut s.centred);
                    let cols = prefix_to_overwrite(&mut scratch, k * p);
                    let windows = Windows {
                        kernel: conv.kernel,
                        stride: conv.stride,
                        padding: conv.padding,
                        in_hw: (h, w),
                        out_hw: (oh, ow),
                    };
                    let taps = conv.kernel * conv.kernel * p;
                    let plane = |(ci, rows): (usize, &mut [i16])| {
                        let plane = &xg[ci * h * w..(ci + 1) * h * w];
                        let pad = (self.zero[g * cin_g + ci] + lift) as i16;
                        im2col_plane(isa, &windows, plane, lift, pad, rows);
                    };
                    // The input channels' rows on the pool's threads when there are many
                    // columns (B1's stem and DeiT's patches: at batch 1 the only work).
                    if k * p >= PARALLEL_COLUMNS {
                        cols.par_chunks_exact_mut(taps).enumerate().for_each(plane);
                    } else {
                        cols.chunks_exact_mut(taps).enumerate().for_each(plane);
                    }
                    let b = pack_rows(isa, k, p, cols, 0, buf);
                    s.centred = scratch;
                    b
                }
            }
        }
    }

    /// The scalar i64 path for weights or inputs wider than 8 bits.
    fn run_wide(&self, x: &[i32], w: &[i32], acc: &mut [i64]) {
        let (p, _) = self.positions(x);
        let k = self.k();
        let cin_g = self.in_channels / self.groups;
        let cout_g = self.out_channels / self.groups;
        for oc in 0..self.out_channels {
            let g = oc / cout_g;
            let wr = &w[oc * k..(oc + 1) * k];
            for pos in 0..p {
                let mut sum = self.bias[oc];
                match self.patch_or_kernel() {
                    None => {
                        let row = &x[pos * self.in_channels..(pos + 1) * self.in_channels];
                        for (kk, &wv) in wr.iter().enumerate() {
                            sum += wv as i64 * (row[kk] - self.zero[kk]) as i64;
                        }
                    }
                    Some((conv, (h, wd), (_, ow))) => {
                        let kz = conv.kernel;
                        let (oy, ox) = (pos / ow, pos % ow);
                        for ci in 0..cin_g {
                            let c = g * cin_g + ci;
                            for i in 0..kz {
                                for j in 0..kz {
                                    let iy =
                                        (oy * conv.stride + i) as isize - conv.padding as isize;
                                    let ix =
                                        (ox * conv.stride + j) as isize - conv.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let q = x[c * h * wd + iy as usize * wd + ix as usize];
                                    sum += wr[(ci * kz + i) * kz + j] as i64
                                        * (q - self.zero[c]) as i64;
                                }
                            }
                        }
                    }
                }
                acc[oc * p + pos] = sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::kernels::Isa;
    use super::super::super::requant::{Activation, Target};
    use super::*;
    use crate::exec::int::encoding::Encoding;
    use crate::rng::Rng;

    /// Biases of the test layers' channels.
    const BIASES: [i64; 3] = [0, 12_345, -777_777];

    /// A linear layer of three outputs with `output`; only its epilogue is used.
    fn layer(output: Output) -> Weighted {
        let channels = BIASES.len();
        Weighted {
            geometry: Geometry::Tokens { tokens: 1 },
            in_channels: 1,
            out_channels: channels,
            groups: 1,
            weights: Weights::Wide(vec![0; channels]),
            bias: BIASES.to_vec(),
            correction: vec![0; channels],
            zero: vec![0],
            lift: 0,
            table: None,
            hardswish: Vec::new(),
            requant: Vec::new(),
            token_major: None,
            output,
        }
        .with_lanes()
    }

    fn int8(scale: f64, zero: i32) -> Encoding {
        Encoding::Linear {
            scale: vec![scale],
            zero: vec![zero],
            offset: vec![0.0],
            qmin: 0,
            qmax: 255,
        }
    }

    /// Accumulators over the whole range the epilogue distinguishes and past it, for every
    /// channel (each with its bias): the layer's epilogue gives the definition's codes.
    fn check_emit(w: &Weighted) {
        let mut rng = Rng::new(9);
        let acc: Vec<i32> = (0..20_000)
            .map(|i| match i % 4 {
                0 => rng.below(1 << 20) as i32 - (1 << 19),
                1 => rng.below(1 << 28) as i32 - (1 << 27),
                _ => rng.below(1 << 14) as i32 - (1 << 13),
            })
            .collect();
        for isa in Isa::available() {
            for (oc, bias) in BIASES.into_iter().enumerate() {
                // Whole vectors, and rows that end in a part one (a 7×7 map's 49): nothing
                // past the row is written.
                for len in [acc.len(), 49, 17, 15, 1] {
                    let mut got = vec![-7; len + 16];
                    w.emit(Ctx { isa }, oc, &acc[..len], &mut got[..len]);
                    for (&v, &g) in acc.iter().zip(&got[..len]) {
                        assert_eq!(g, w.emit_one(oc, v as i64 + bias), "acc {v}, channel {oc}");
                    }
                    assert!(
                        got[len..].iter().all(|&g| g == -7),
                        "{} past {len}",
                        isa.name()
                    );
                }
            }
        }
    }

    /// Hand-worked splits, then every channel count up to B1's widest layer: blocks are a
    /// multiple of the tile height, at most `ROW_BLOCK` (or a depthwise block's bound), and
    /// the threads' rounds cover no more channels than with blocks of that bound.
    #[test]
    fn blocks_balance_the_threads() {
        // 64 on two threads: four blocks of 16, not 24 + 24 + 16 (48 channels on one).
        assert_eq!(block_rows(64, 8, 2), 16);
        // B1's 16-channel depthwise conv: two blocks of 8, not one of 16.
        assert_eq!(block_rows(16, 1, 2), 8);
        // 128 in 8-row tiles: 8 blocks of 16 (64 per thread), not 6 of 24 (72); in 6-row
        // tiles, 22 of 6 (66 per thread) where 12, 18 and 24 give 72.
        assert_eq!(block_rows(128, 8, 2), 16);
        assert_eq!(block_rows(128, 6, 2), 6);
        assert_eq!(block_rows(1, 8, 2), 8);
        for threads in [1, 2, 3, 8] {
            for align in [1, 6, 8] {
                for channels in 1..=1024 {
                    let rows = block_rows(channels, align, threads);
                    assert!(
                        rows.is_multiple_of(align) && rows <= ROW_BLOCK,
                        "{channels} {align}"
                    );
                    let covered = |r: usize| channels.div_ceil(r).div_ceil(threads) * r;
                    assert!(covered(rows) <= covered(ROW_BLOCK), "{channels} {align}");
                }
            }
        }
        // Depthwise blocks on small maps: at most `most` channels (B1's 14² and 7×7 maps'),
        // covering no more than blocks of `most` would.
        assert_eq!(block_rows_within(1024, 1, 2, 668), 512);
        for threads in [1, 2, 3, 8] {
            for most in [ROW_BLOCK, 167, 668] {
                for channels in 1..=1024 {
                    let rows = block_rows_within(channels, 1, threads, most);
                    assert!((1..=most).contains(&rows), "{channels} {most}");
                    let covered = |r: usize| channels.div_ceil(r).div_ceil(threads) * r;
                    assert!(covered(rows) <= covered(most), "{channels} {most}");
                }
            }
        }
    }

    /// A per-tensor output's Hardswish: in 32-bit lanes where every channel has them, else
    /// from its table (a channel 1,000 times coarser than the others, whose products would
    /// leave i32); either way the definition's codes.
    #[test]
    fn tabulated_hardswish_equals_the_definition() {
        for (scales, tabulated) in [
            ([0.0011, 0.0009, 0.0013], false),
            ([0.0011, 1.1, 0.0013], true),
        ] {
            let e = Epilogue::new(
                Activation::Hardswish,
                &scales,
                &[0.0, 0.01, -0.02],
                &int8(0.031, 40),
                3,
                "t",
            )
            .unwrap();
            let w = layer(Output::Epilogue(e));
            assert_eq!(w.table.is_some(), tabulated, "{scales:?}");
            match tabulated {
                true => assert!(w.hardswish.is_empty()),
                false => assert!(w.hardswish.iter().all(HardswishLanes::in_32_bits)),
            }
            check_emit(&w);
        }
    }

    /// Per-channel output scales (no table): each channel's Hardswish in 32-bit lanes gives
    /// the definition's codes; so does the i64 form of a channel whose product would leave
    /// i32 (1,000 times coarser than the finest).
    #[test]
    fn hardswish_in_lanes_equals_the_definition() {
        let scales = [1.1e-4, 0.9e-4, 1.3e-4];
        for (out_scales, lanes) in [
            ([0.031, 0.02, 0.05], [true, true, true]),
            ([0.031, 31.0, 0.05], [true, false, true]),
        ] {
            let out = Encoding::Linear {
                zero: vec![40, 0, 200],
                offset: vec![0.0; 3],
                scale: out_scales.to_vec(),
                qmin: 0,
                qmax: 255,
            };
            let e = Epilogue::new(
                Activation::Hardswish,
                &scales,
                &[0.0, 0.01, -0.02],
                &out,
                3,
                "t",
            )
            .unwrap();
            let w = layer(Output::Epilogue(e));
            assert!(w.table.is_none());
            let in_32_bits = |h: &Option<HardswishLanes>| {
                matches!(
                    h,
                    Some(HardswishLanes::Square(_) | HardswishLanes::Narrow(_))
                )
            };
            let got: Vec<bool> = w.hardswish.iter().map(in_32_bits).collect();
            assert_eq!(got, lanes);
            assert!(
                w.hardswish.iter().all(Option::is_some),
                "every channel in lanes"
            );
            check_emit(&w);
        }
    }

    /// A plain output's requantization, its constants found once per channel with the
    /// channel's bias folded in, gives the definition's codes.
    #[test]
    fn plain_requantization_in_lanes_equals_the_definition() {
        let out = Encoding::Linear {
            zero: vec![40, 0, 200],
            offset: vec![0.0; 3],
            scale: vec![0.031, 0.02, 0.05],
            qmin: 0,
            qmax: 255,
        };
        let scales = [1.1e-4, 0.9e-4, 1.3e-4];
        let e =
            Epilogue::new(Activation::None, &scales, &[0.0, 0.01, -0.02], &out, 3, "y").unwrap();
        let w = layer(Output::Epilogue(e));
        assert_eq!(w.requant.len(), 3);
        assert!(
            w.requant.iter().all(Option::is_some),
            "every channel in lanes"
        );
        check_emit(&w);
    }

    /// A linear layer with GELU on enough tokens to run token-major (its product's tiles
    /// requantize and look up), with accumulators that put about one of GELU's inputs in seven
    /// past its table: on every ISA each code is the definition's, those past the table too.
    #[test]
    fn token_major_gelu_equals_the_definition() {
        let (tokens, k, o) = (37, 64, 40);
        let mut rng = Rng::new(31);
        let weights: Vec<i8> = (0..o * k).map(|_| rng.below(41) as i8 - 20).collect();
        let x: Vec<i32> = (0..tokens * k).map(|_| rng.below(256) as i32).collect();
        let zero = vec![128; k];
        let s_g = 0.027 / 4.0;
        let gelu = GeluConstants::new(s_g).unwrap();
        // Scales that put about one sum in seven past GELU's limit.
        let unit = s_g * gelu.limit as f64 / 20_000.0;
        let scales: Vec<f64> = (0..o).map(|c| unit * (0.5 + c as f64 / o as f64)).collect();
        let offsets = vec![0.0; o];
        let output = gelu_output(&scales, &offsets, s_g);
        let Output::Gelu { to_x, .. } = &output else {
            unreachable!("a GELU output")
        };
        let w = Weighted {
            geometry: Geometry::Tokens { tokens },
            in_channels: k,
            out_channels: o,
            groups: 1,
            weights: Weights::Int8(vec![PackedA::new(&weights, o, k)]),
            bias: (0..o as i64).map(|c| 1_000 * c - 20_000).collect(),
            correction: (0..o)
                .map(|c| (0..k).map(|kk| weights[c * k + kk] as i64 * 128).sum())
                .collect(),
            zero: zero.clone(),
            lift: 0,
            table: None,
            hardswish: Vec::new(),
            requant: Vec::new(),
            token_major: None,
            output: output.clone(),
        }
        .with_lanes();
        assert!(w.token_major.is_some(), "the layer runs token-major");
        let table = w.table.as_ref().expect("a per-tensor output gets a table");
        let mut past = 0;
        let mut want = vec![0; tokens * o];
        for t in 0..tokens {
            for c in 0..o {
                let sum: i64 = (0..k)
                    .map(|kk| weights[c * k + kk] as i64 * (x[t * k + kk] - zero[kk]) as i64)
                    .sum();
                let v = sum + w.bias[c];
                past += table.get(to_x.apply(v, c)).is_none() as usize;
                want[t * o + c] = w.emit_one(c, v);
            }
        }
        assert!(
            (tokens * o / 10..tokens * o / 2).contains(&past),
            "{past} of {} values past the table",
            tokens * o
        );
        for isa in Isa::available() {
            let mut got = Buffer::default();
            w.run(Ctx { isa }, &x, &mut got, &mut Scratch::default());
            assert_eq!(&got[..], &want[..], "{}", isa.name());
        }
    }

    /// DeiT-T's patch embedding (16×16 patches of a 224² image, 192 channels) and a small
    /// one whose map leaves a border past its patches: the layer runs its patches as token
    /// rows, and on every ISA each code is the definition's — the sum over the patch's codes
    /// less their channel's zero point, plus the bias, requantized per channel.
    #[test]
    fn patch_embedding_as_token_rows_equals_the_definition() {
        let mut rng = Rng::new(17);
        for (c, k, (h, w), o) in [(3, 4, (18, 23), 24), (3, 16, (224, 224), 192)] {
            let (oh, ow) = (h / k, w / k);
            let (p, kk) = (oh * ow, c * k * k);
            let weights: Vec<i8> = (0..o * kk).map(|_| rng.below(41) as i8 - 20).collect();
            let x: Vec<i32> = (0..c * h * w).map(|_| rng.below(256) as i32).collect();
            let zero: Vec<i32> = (0..c).map(|_| rng.below(256) as i32).collect();
            let scales: Vec<f64> = (0..o).map(|i| 4e-4 * (1.0 + i as f64 / o as f64)).collect();
            let out = Encoder::new(&scales, &vec![0.0; o], &int8(0.05, 3), o, "patch").unwrap();
            let conv = Conv2d {
                in_channels: c,
                out_channels: o,
                kernel: k,
                stride: k,
                padding: 0,
                groups: 1,
                bias: true,
            };
            let weight = |oc: usize, i: usize| weights[oc * kk + i] as i64;
            let layer = Weighted {
                geometry: Geometry::Patch {
                    conv,
                    in_hw: (h, w),
                    out_hw: (oh, ow),
                },
                in_channels: c,
                out_channels: o,
                groups: 1,
                weights: Weights::Int8(vec![PackedA::new(&weights, o, kk)]),
                bias: (0..o as i64).map(|oc| 300 * oc - 5_000).collect(),
                correction: (0..o)
                    .map(|oc| {
                        (0..kk)
                            .map(|i| weight(oc, i) * zero[i / (k * k)] as i64)
                            .sum()
                    })
                    .collect(),
                zero: zero.clone(),
                lift: 0,
                table: None,
                hardswish: Vec::new(),
                requant: Vec::new(),
                token_major: None,
                output: Output::Epilogue(Epilogue::Plain(out)),
            }
            .with_lanes();
            assert!(layer.token_major.is_some(), "the patches run as token rows");
            let mut want = vec![0; p * o];
            for t in 0..p {
                let (py, px) = (t / ow, t % ow);
                for oc in 0..o {
                    let mut sum = layer.bias[oc];
                    for i in 0..kk {
                        let (ci, ky, kx) = (i / (k * k), i / k % k, i % k);
                        let q = x[ci * h * w + (py * k + ky) * w + px * k + kx];
                        sum += weight(oc, i) * (q - zero[ci]) as i64;
                    }
                    want[t * o + oc] = layer.emit_one(oc, sum);
                }
            }
            for isa in Isa::available() {
                let mut got = Buffer::from(vec![-9; p * o + 3]);
                layer.run(Ctx { isa }, &x, &mut got, &mut Scratch::default());
                assert_eq!(&got[..], &want[..], "{} {h}×{w}", isa.name());
            }
        }
    }

    /// DeiT's fc1 output: GELU's `x` at `s_g` per tensor from accumulators at `scales` per
    /// channel (plus `offsets`), its output an int8 code at 0.027 with zero point 7.
    fn gelu_output(scales: &[f64], offsets: &[f64], s_g: f64) -> Output {
        let channels = scales.len();
        let target = Target {
            scale: &[s_g],
            zero: &[0],
            offset: &[0.0],
            range: (-(1 << 24), 1 << 24),
        };
        let Encoder::Linear(out) = Encoder::new(
            &[s_g / 2f64.powi(15)],
            &[0.0],
            &int8(0.027, 7),
            channels,
            "t",
        )
        .unwrap() else {
            panic!("linear")
        };
        Output::Gelu {
            to_x: Requant::new(scales, offsets, &target, channels, "t").unwrap(),
            gelu: GeluConstants::new(s_g).unwrap(),
            out: Encoder::Linear(out.with_mantissa_bits(20)),
            unit: scales.to_vec(),
        }
    }

    #[test]
    fn tabulated_gelu_equals_the_definition() {
        let scales = [0.0011, 0.0009, 0.0013];
        let w = layer(gelu_output(&scales, &[0.0, 0.01, -0.02], 0.027 / 4.0));
        assert!(w.table.is_some(), "a per-tensor output gets a table");
        check_emit(&w);
    }
}
