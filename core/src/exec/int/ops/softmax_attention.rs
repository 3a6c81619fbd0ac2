//! DeiT's attention in integers: `q·kᵀ` accumulated in i32, requantized to base-2 exponents
//! at `2^−j` (`log2 e` folded into the multiplier), the exactly normalised integer Softmax
//! ([`softmax_row`]) to probabilities at `2^−24`, encoded into the post-Softmax point by
//! thresholds; then `P·V` with the probabilities decoded to integers.

use rayon::prelude::*;

use super::super::kernels::Isa;
use super::super::kernels::dots::dots;
use super::super::kernels::requant::{Fast, requant};
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
        // Centred codes as i16, each head's keys one after another: each logit is one dot
        // product ([`dots`]); |q − z|·|k − z| ≤ 2^16, summed over d < 2^15 dims.
        let centre = |v: i32| (v - self.zero) as i16;
        let mut keys = vec![0i16; h * n * d];
        for (r, key) in keys.chunks_exact_mut(d).enumerate() {
            let (head, j) = (r / n.max(1), r % n.max(1));
            let k = &qkv[j * width + h * d + head * d..][..d];
            key.iter_mut().zip(k).for_each(|(dst, &v)| *dst = centre(v));
        }
        // The logits' requantization in i64 lanes, and the probabilities' thresholds by
        // binade, looked up once.
        let to_x = self.to_x.fast(0, 0);
        let codes = self.codes.binade_lookup();
        let row = |scratch: &mut RowScratch, (r, dst): (usize, &mut [i32])| {
            let (head, i) = (r / n, r % n);
            let RowScratch { q, acc, x, p, exps } = scratch;
            q.clear();
            q.extend(qkv[i * width + head * d..][..d].iter().map(|&v| centre(v)));
            acc.resize(n, 0);
            dots(isa, q, &keys[head * n * d..(head + 1) * n * d], acc);
            x.resize(n, 0);
            match &to_x {
                Some(f) => requant(isa, f, acc, x),
                None => {
                    for (xj, &a) in x.iter_mut().zip(acc.iter()) {
                        *xj = self.to_x.apply(a as i64, 0) as i32;
                    }
                }
            }
            p.resize(n, 0);
            softmax_row(isa, x, self.input_bits, exps, p);
            for (o, &v) in dst.iter_mut().zip(p.iter()) {
                *o = codes.encode(v as i64);
            }
        };
        if n == 0 {
            return;
        }
        // Rows of one image on the pool's threads when large (at batch 1 the only work).
        if h * n * n * d >= PARALLEL_MACS {
            out.par_chunks_mut(n)
                .enumerate()
                .for_each_init(RowScratch::default, row);
        } else {
            let mut scratch = RowScratch::default();
            out.chunks_mut(n)
                .enumerate()
                .for_each(|item| row(&mut scratch, item));
        }
    }
}

/// Attention products of at least this many multiply-accumulates run their rows in parallel.
const PARALLEL_MACS: usize = 1 << 20;

/// One attention row's buffers.
#[derive(Debug, Default)]
struct RowScratch {
    q: Vec<i16>,
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
