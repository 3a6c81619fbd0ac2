//! DeiT's attention in integers: `q·kᵀ` accumulated in i32, requantized to base-2 exponents
//! at `2^−j` (`log2 e` folded into the multiplier), the exactly normalised integer Softmax
//! ([`softmax_row`]) to probabilities at `2^−24`, encoded into the post-Softmax point by
//! thresholds; then `P·V` with the probabilities decoded to integers.

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
    pub fn run(&self, isa: Isa, qkv: &[i32], out: &mut Vec<i32>, s: &mut Scratch) {
        let (h, d, n) = (self.heads, self.head_dim, self.tokens);
        let width = 3 * h * d;
        out.clear();
        out.resize(h * n * n, 0);
        // Centred codes as i16, keys one after another: each logit is one dot product
        // ([`dots`]); |q − z|·|k − z| ≤ 2^16, summed over d < 2^15 dims.
        let mut q = vec![0i16; d];
        let mut keys = vec![0i16; n * d];
        let mut acc = vec![0i32; n];
        let mut x = vec![0i32; n];
        let mut p = vec![0i32; n];
        // The logits' requantization in i64 lanes, and the probabilities' thresholds by
        // binade, looked up once.
        let to_x = self.to_x.fast(0, 0);
        let codes = self.codes.binade_lookup();
        for head in 0..h {
            for (j, key) in keys.chunks_exact_mut(d).enumerate() {
                let k = &qkv[j * width + h * d + head * d..][..d];
                for (dst, &v) in key.iter_mut().zip(k) {
                    *dst = (v - self.zero) as i16;
                }
            }
            for i in 0..n {
                let row = &qkv[i * width + head * d..][..d];
                for (dst, &v) in q.iter_mut().zip(row) {
                    *dst = (v - self.zero) as i16;
                }
                dots(isa, &q, &keys, &mut acc);
                match &to_x {
                    Some(f) => requant(isa, f, &acc, &mut x),
                    None => {
                        for (xj, &a) in x.iter_mut().zip(&acc) {
                            *xj = self.to_x.apply(a as i64, 0) as i32;
                        }
                    }
                }
                softmax_row(&x, self.input_bits, &mut s.wide, &mut p);
                let row = &mut out[(head * n + i) * n..(head * n + i + 1) * n];
                for (o, &v) in row.iter_mut().zip(&p) {
                    *o = codes.encode(v as i64);
                }
            }
        }
    }
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
        let mut v = vec![0i32; n * d];
        let mut acc = vec![0i32; d];
        let mut weights = vec![0i32; n];
        // Each channel's requantization in i64, where the encoder is linear and it applies.
        let fast: Vec<Option<Fast>> = (0..h * d)
            .map(|c| match &self.out {
                Encoder::Linear(r) => r.fast(c, 0),
                Encoder::Levels(_) => None,
            })
            .collect();
        for head in 0..h {
            for j in 0..n {
                let src = &qkv[j * width + 2 * h * d + head * d..][..d];
                for (dst, &q) in v[j * d..(j + 1) * d].iter_mut().zip(src) {
                    *dst = q - self.zero;
                }
            }
            for i in 0..n {
                let codes = &probs[(head * n + i) * n..(head * n + i + 1) * n];
                for (w, &code) in weights.iter_mut().zip(codes) {
                    *w = self.probability[code as usize];
                }
                weighted_rows(isa, &weights, &v, &mut acc);
                let row = &mut out[i * h * d + head * d..][..d];
                for (c, (o, &a)) in row.iter_mut().zip(&acc).enumerate() {
                    *o = match &fast[head * d + c] {
                        Some(f) => f.apply(a as i64) as i32,
                        None => self.out.encode(a as i64, head * d + c),
                    };
                }
            }
        }
    }
}
