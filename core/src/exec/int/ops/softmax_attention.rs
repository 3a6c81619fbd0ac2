//! DeiT's attention in integers: `q·kᵀ` accumulated in i32 (in tiles of queries × keys,
//! [`scores`]), requantized to base-2 exponents at `2^−j` (`log2 e` folded into the
//! multiplier), the exactly normalised integer Softmax ([`softmax_row`]) to probabilities at
//! `2^−24`, encoded into the post-Softmax point by thresholds; then `P·V` with the
//! probabilities decoded to integers.

use rayon::prelude::*;

use super::super::kernels::Isa;
use super::super::kernels::requant::{Fast, requant};
use super::super::kernels::scores::{PackedKeys, ROWS, query_pairs, scores};
use super::super::kernels::weighted_rows::weighted_rows;
use super::super::nonlinear::LevelEncoder;
use super::super::nonlinear::softmax_row;
use super::super::requant::{Encoder, Requant};
use super::Scratch;

/// Attention logits + Softmax, per head: `[N, 3D]` → `[heads, N, N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoresSoftmax {
    pub heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub zero: i32,
    /// Accumulator → base-2 exponent at scale `2^−input_bits`.
    pub to_x: Requant,
    pub input_bits: u32,
    /// Probability (`2^−24`, so `0..=2^24`) → the point's code: the point's encoder as
    /// thresholds, found once at compile time (exact, a binary search per element).
    pub codes: LevelEncoder,
}

impl ScoresSoftmax {
    pub fn run(&self, isa: Isa, qkv: &[i32], out: &mut Vec<i32>, _: &mut Scratch) {
        let (h, d, n) = (self.heads, self.head_dim, self.tokens);
        let width = 3 * h * d;
        out.clear();
        out.resize(h * n * n, 0);
        // Centred codes as i16 (|q − z|·|k − z| ≤ 2^16, summed over d < 2^15 dims), each
        // head's keys packed for the blocked `q·kᵀ` ([`scores`]).
        let centre = |v: i32| (v - self.zero) as i16;
        let keys: Vec<PackedKeys> = (0..h)
            .map(|head| {
                PackedKeys::pack(n, d, |j, c| centre(qkv[j * width + h * d + head * d + c]))
            })
            .collect();
        // The logits' requantization in i64 lanes, and the probabilities' thresholds by
        // binade, looked up once.
        let to_x = self.to_x.fast(0, 0);
        let codes = self.codes.binade_lookup();
        // Rows `first..` of one head (a tile of queries), each then requantized, through the
        // Softmax and encoded.
        let rows = |scratch: &mut RowScratch, head: usize, first: usize, dst: &mut [i32]| {
            let RowScratch { q, acc, x, p, exps } = scratch;
            let count = dst.len() / n;
            q.clear();
            for i in first..first + count {
                let row = &qkv[i * width + head * d..][..d];
                query_pairs(row.iter().map(|&v| centre(v)), q);
            }
            acc.resize(count * n, 0);
            scores(isa, q, &keys[head], acc);
            x.resize(n, 0);
            p.resize(n, 0);
            for (dst, acc) in dst.chunks_exact_mut(n).zip(acc.chunks_exact(n)) {
                match &to_x {
                    Some(f) => requant(isa, f, acc, x),
                    None => {
                        for (xj, &a) in x.iter_mut().zip(acc) {
                            *xj = self.to_x.apply(a as i64, 0) as i32;
                        }
                    }
                }
                softmax_row(isa, x, self.input_bits, exps, p);
                codes.encode_all(isa, p, dst);
            }
        };
        if n == 0 {
            return;
        }
        // Tiles of one image on the pool's threads when large (at batch 1 the only work).
        let tile = ROWS * n;
        if h * n * n * d >= PARALLEL_MACS {
            out.par_chunks_mut(n * n).enumerate().for_each(|(head, o)| {
                o.par_chunks_mut(tile)
                    .enumerate()
                    .for_each_init(RowScratch::default, |s, (t, dst)| {
                        rows(s, head, t * ROWS, dst)
                    })
            });
        } else {
            let mut scratch = RowScratch::default();
            for (head, o) in out.chunks_mut(n * n).enumerate() {
                for (t, dst) in o.chunks_mut(tile).enumerate() {
                    rows(&mut scratch, head, t * ROWS, dst);
                }
            }
        }
    }
}

/// Attention products of at least this many multiply-accumulates run their rows in parallel.
const PARALLEL_MACS: usize = 1 << 20;

/// One attention row's buffers.
#[derive(Debug, Default)]
struct RowScratch {
    /// The tile's queries as dimension pairs.
    q: Vec<i32>,
    acc: Vec<i32>,
    x: Vec<i32>,
    p: Vec<i32>,
    exps: Vec<i64>,
}

/// `P·V`: probabilities decoded by a table (code → integer at one scale), values centred.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    pub heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub probability: Vec<i32>,
    pub zero: i32,
    pub out: Encoder,
}

impl Mix {
    pub fn run(&self, isa: Isa, probs: &[i32], qkv: &[i32], out: &mut Vec<i32>) {
        let (h, d, n) = (self.heads, self.head_dim, self.tokens);
        let width = 3 * h * d;
        out.clear();
        out.resize(n * h * d, 0);
        // Decoded probabilities are at most 2^15 and a row of them sums to a bounded total (the
        // Softmax's rows sum to one), so with |v − z| ≤ 255 the i32 accumulator cannot
        // overflow at any token count the compiler accepts (`mix_bound`).
        // Each head's values centred, [head][token][d].
        let mut v = vec![0i32; h * n * d];
        for (r, dst) in v.chunks_exact_mut(d.max(1)).enumerate().take(h * n) {
            let (head, j) = (r / n, r % n);
            let src = &qkv[j * width + 2 * h * d + head * d..][..d];
            dst.iter_mut()
                .zip(src)
                .for_each(|(o, &q)| *o = q - self.zero);
        }
        // Each channel's requantization in i64, where the encoder is linear and it applies.
        let fast: Vec<Option<Fast>> = (0..h * d)
            .map(|c| match &self.out {
                Encoder::Linear(r) => r.fast(c, 0),
                Encoder::Levels(_) => None,
            })
            .collect();
        // One token's output row, all heads.
        let token = |scratch: &mut (Vec<i32>, Vec<i32>), (i, dst): (usize, &mut [i32])| {
            let (weights, acc) = scratch;
            weights.resize(n, 0);
            acc.resize(d, 0);
            for head in 0..h {
                let codes = &probs[(head * n + i) * n..(head * n + i + 1) * n];
                for (w, &code) in weights.iter_mut().zip(codes) {
                    *w = self.probability[code as usize];
                }
                weighted_rows(isa, weights, &v[head * n * d..(head + 1) * n * d], acc);
                let row = &mut dst[head * d..(head + 1) * d];
                for (c, (o, &a)) in row.iter_mut().zip(acc.iter()).enumerate() {
                    *o = match &fast[head * d + c] {
                        Some(f) => f.apply(a as i64) as i32,
                        None => self.out.encode(a as i64, head * d + c),
                    };
                }
            }
        };
        if h * d == 0 {
            return;
        }
        if h * n * n * d >= PARALLEL_MACS {
            out.par_chunks_mut(h * d)
                .enumerate()
                .for_each_init(Default::default, token);
        } else {
            let mut scratch = Default::default();
            out.chunks_mut(h * d)
                .enumerate()
                .for_each(|item| token(&mut scratch, item));
        }
    }
}
