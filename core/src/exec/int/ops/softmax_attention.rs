//! DeiT's attention in integers: `q·kᵀ` accumulated in i32 (in tiles of queries × keys,
//! [`scores`]), requantized to base-2 exponents at `2^−j` (`log2 e` folded into the
//! multiplier), the exactly normalised integer Softmax ([`softmax_row`]) to probabilities at
//! `2^−24`, encoded into the post-Softmax point by thresholds — the three in one kernel of
//! 32-bit lanes where each has such a form ([`RowCodes`]) —; then `P·V` with the
//! probabilities decoded to integers.

use rayon::prelude::*;

use super::super::kernels::Isa;
use super::super::kernels::requant::{Fast, requant};
use super::super::kernels::scores::{
    AHEAD, NarrowTable, PackedKeys, ROWS, centred_query_pairs, decoded_pairs, prefetch, scores,
};
use super::super::kernels::scores_bytes::{self, ByteCodes, ByteKeys, query_quads, scores_bytes};
use super::super::kernels::softmax_codes::RowCodes;
use super::super::kernels::weighted_rows::weighted_rows;
use super::super::nonlinear::LevelEncoder;
use super::super::nonlinear::softmax_row;
use super::super::requant::{Encoder, Requant};
use super::Scratch;
use crate::exec::spare::{Buffer, with_kept};
use std::cell::Cell;
use std::thread::LocalKey;

/// Attention logits + Softmax, per head: `[N, 3D]` → `[heads, N, N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoresSoftmax {
    pub heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub zero: i32,
    /// What lifts the codes into `0..=255`, when they span no more (the byte product's
    /// `u`, [`scores_bytes`]); `None` for wider codes.
    pub lift: Option<i32>,
    /// Accumulator → base-2 exponent at scale `2^−input_bits`.
    pub to_x: Requant,
    pub input_bits: u32,
    /// Probability (`2^−24`, so `0..=2^24`) → the point's code: the point's encoder as
    /// thresholds, found once at compile time (exact, a binary search per element).
    pub codes: LevelEncoder,
}

impl ScoresSoftmax {
    /// Codes of the output: per head, a token × token matrix of probabilities.
    pub fn output_len(&self) -> usize {
        self.heads * self.tokens * self.tokens
    }

    pub fn run(&self, isa: Isa, qkv: &[i32], out: &mut Buffer<i32>, _: &mut Scratch) {
        let (h, d, n) = (self.heads, self.head_dim, self.tokens);
        let width = 3 * h * d;
        // Every row of every head is written below.
        let out = out.overwrite(self.output_len());
        // Bytes where the codes and the CPU allow ([`scores_bytes`]: four dimensions per
        // instruction), else centred codes as i16 (|q − z|·|k − z| ≤ 2^16, summed over
        // d < 2^15 dims); each head's keys packed for the blocked `q·kᵀ`.
        let bytes = (self.lift)
            .filter(|_| scores_bytes::available(isa))
            .map(|lift| ByteCodes {
                lift,
                zero: self.zero,
            });
        let key_row = |head: usize| move |j: usize| &qkv[j * width + h * d + head * d..][..d];
        let head_keys = |(head, recycled): (usize, Keys)| match bytes {
            Some(codes) => Keys::Bytes(ByteKeys::from_key_rows(
                n,
                d,
                codes,
                key_row(head),
                recycled.into_bytes(),
            )),
            None => Keys::Pairs(PackedKeys::from_key_rows(
                n,
                d,
                self.zero,
                key_row(head),
                recycled.into_pairs(),
            )),
        };
        // The heads on the pool's threads when large (at batch 1 the only work), each in the
        // allocations of a head this thread packed before.
        let parallel = h * n * n * d >= PARALLEL_MACS;
        let recycled = recycled(&KEPT_KEYS, h);
        let keys: Vec<Keys> = match parallel {
            true => recycled
                .into_par_iter()
                .enumerate()
                .map(head_keys)
                .collect(),
            false => recycled.into_iter().enumerate().map(head_keys).collect(),
        };
        // The logits' requantization in i64 lanes, and the probabilities' thresholds by
        // binade, looked up once.
        let to_x = self.to_x.fast(0, 0);
        let codes = self.codes.binade_lookup();
        // All three in one kernel of 32-bit lanes where each has such a form.
        let fused = RowCodes::new(isa, n, to_x.as_ref(), self.input_bits, &codes);
        // Rows `first..` of one head (a tile of queries), each then requantized, through the
        // Softmax and encoded.
        let rows = |scratch: &mut RowScratch, head: usize, first: usize, dst: &mut [i32]| {
            let RowScratch {
                q,
                terms,
                acc,
                x,
                p,
                exps,
            } = scratch;
            let count = dst.len() / n;
            q.clear();
            terms.clear();
            let query = |i: usize| &qkv[i * width + head * d..][..d];
            acc.resize(count * n, 0);
            match (&keys[head], bytes) {
                (Keys::Bytes(keys), Some(codes)) => {
                    for i in first..first + count {
                        if i + AHEAD < first + count {
                            prefetch(query(i + AHEAD));
                        }
                        terms.push(query_quads(query(i), codes, q));
                    }
                    scores_bytes(isa, q, terms, keys, acc);
                }
                (Keys::Pairs(keys), _) => {
                    for i in first..first + count {
                        if i + AHEAD < first + count {
                            prefetch(query(i + AHEAD));
                        }
                        centred_query_pairs(query(i), self.zero, q);
                    }
                    scores(isa, q, keys, acc);
                }
                (Keys::Bytes(_), None) => unreachable!("byte keys are packed for byte codes"),
            }
            if let Some(fused) = &fused {
                return fused.rows(acc, x, dst);
            }
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
        // Each thread's row buffers are kept from call to call (made per call, and per task
        // on the pool, they were allocated and grown again every time).
        if parallel {
            out.par_chunks_mut(n * n).enumerate().for_each(|(head, o)| {
                o.par_chunks_mut(tile)
                    .enumerate()
                    .for_each(|(t, dst)| with_kept(&ROW_SCRATCH, |s| rows(s, head, t * ROWS, dst)))
            });
        } else {
            with_kept(&ROW_SCRATCH, |scratch| {
                for (head, o) in out.chunks_mut(n * n).enumerate() {
                    for (t, dst) in o.chunks_mut(tile).enumerate() {
                        rows(scratch, head, t * ROWS, dst);
                    }
                }
            });
        }
        KEPT_KEYS.set(keys);
    }
}

/// `count` values that `kept` held, each taken from it or a default one: the packings of this
/// thread's last call, for the next to write over.
fn recycled<T: Default>(kept: &'static LocalKey<Cell<Vec<T>>>, count: usize) -> Vec<T> {
    let mut held = kept.take();
    (0..count).map(|_| held.pop().unwrap_or_default()).collect()
}

/// Attention products of at least this many multiply-accumulates run their rows in parallel.
const PARALLEL_MACS: usize = 1 << 20;

/// One head's keys packed for its `q·kᵀ`.
enum Keys {
    Pairs(PackedKeys),
    Bytes(ByteKeys),
}

impl Default for Keys {
    fn default() -> Self {
        Keys::Pairs(PackedKeys::default())
    }
}

impl Keys {
    /// The byte packing's allocations, for a packing to write over.
    fn into_bytes(self) -> ByteKeys {
        match self {
            Keys::Bytes(keys) => keys,
            Keys::Pairs(_) => ByteKeys::default(),
        }
    }

    /// The pair packing's allocation, for a packing to write over.
    fn into_pairs(self) -> PackedKeys {
        match self {
            Keys::Pairs(keys) => keys,
            Keys::Bytes(_) => PackedKeys::default(),
        }
    }
}

thread_local! {
    static ROW_SCRATCH: Cell<RowScratch> = Cell::default();
    static MIX_SCRATCH: Cell<MixScratch> = Cell::default();
    /// Each head's packed keys and values from this thread's last call, whose allocations the
    /// next call's packings write over (allocated and zeroed per head and call, they had been
    /// 1.2 % of DeiT-T's integer time at batch 1 in `memset`, by `perf`).
    static KEPT_KEYS: Cell<Vec<Keys>> = Cell::default();
    static KEPT_VALUES: Cell<Vec<PackedKeys>> = Cell::default();
}

/// One attention row's buffers.
#[derive(Debug, Default)]
struct RowScratch {
    /// The tile's queries as dimension pairs, or as byte quads.
    q: Vec<i32>,
    /// The byte product's term per query.
    terms: Vec<i32>,
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
    /// Codes of the output: tokens × every head's dimensions.
    pub fn output_len(&self) -> usize {
        self.tokens * self.heads * self.head_dim
    }

    /// `acc[r·d + c] += p·(v_j[c] − z)` for every probability `p` past i16 in the rows of
    /// `codes` (`p` at token `j` of row `r`, `v_j` = `values(j)`, a head's `d` codes): the
    /// terms a product over [`NarrowTable::clipped`] left out. Wrapping, as the lanes add:
    /// the compiler bounds the whole sum inside i32.
    fn add_wide_terms<'a>(
        &self,
        codes: &[i32],
        values: impl Fn(usize) -> &'a [i32],
        acc: &mut [i32],
    ) {
        let (n, d) = (self.tokens, self.head_dim);
        for (row, acc) in codes.chunks_exact(n).zip(acc.chunks_exact_mut(d)) {
            for (j, &code) in row.iter().enumerate() {
                let p = self.probability[code as usize];
                if i16::try_from(p).is_ok() {
                    continue;
                }
                for (a, &v) in acc.iter_mut().zip(values(j)) {
                    *a = a.wrapping_add(p.wrapping_mul(v.wrapping_sub(self.zero)));
                }
            }
        }
    }

    pub fn run(&self, isa: Isa, probs: &[i32], qkv: &[i32], out: &mut Buffer<i32>) {
        let (h, d, n) = (self.heads, self.head_dim, self.tokens);
        let width = 3 * h * d;
        // Every row of every head is written below, by one tile.
        let out = out.overwrite(self.output_len());
        let parallel = h * n * n * d >= PARALLEL_MACS;
        // Decoded probabilities are at most 2^15 and a row of them sums to a bounded total (the
        // Softmax's rows sum to one), so with |v − z| ≤ 255 the i32 accumulator cannot
        // overflow at any token count the compiler accepts (`mix_bound`).
        // Token `j`'s codes of head `head`'s values.
        let value_row = |head: usize, j: usize| &qkv[j * width + 2 * h * d + head * d..][..d];
        // Each head's values centred, as [token][d], for the row-by-row product.
        let centred_values = |head: usize| -> Vec<i32> {
            (0..n)
                .flat_map(|j| value_row(head, j).iter().map(|&q| q - self.zero))
                .collect()
        };
        // Each head's values packed for the blocked product ([`scores`], the values as "keys"
        // whose dimensions are the tokens) when every centred code fits in i16, packed from
        // the codes (a centred copy of every head first had been 2 % of DeiT-T's integer
        // time, by `perf`); the heads on the pool's threads when large (at batch 1 this had
        // been serial on the image's thread).
        let packed_values = |(head, recycled): (usize, PackedKeys)| {
            PackedKeys::from_dim_rows(isa, d, n, self.zero, |j| value_row(head, j), recycled)
        };
        let recycled = recycled(&KEPT_VALUES, h);
        let values: Vec<Option<PackedKeys>> = match parallel {
            true => recycled
                .into_par_iter()
                .enumerate()
                .map(packed_values)
                .collect(),
            false => recycled
                .into_iter()
                .enumerate()
                .map(packed_values)
                .collect(),
        };
        // The probabilities' values inside i16, for the blocked product; the same with those
        // past i16 read as 0, whose terms are then added one by one.
        let table = NarrowTable::new(&self.probability);
        let clipped = NarrowTable::clipped(&self.probability);
        // Each channel's requantization in i64, where the encoder is linear and it applies.
        let fast: Vec<Option<Fast>> = (0..h * d)
            .map(|c| match &self.out {
                Encoder::Linear(r) => r.fast(c, 0),
                Encoder::Levels(_) => None,
            })
            .collect();
        // One for every channel (a per-tensor output's): rows of a head in lanes.
        let shared = fast
            .first()
            .copied()
            .flatten()
            .filter(|f| fast.iter().all(|g| g.as_ref() == Some(f)));
        // The output rows of tokens `first..` (a tile), all heads.
        let tile = |scratch: &mut MixScratch, first: usize, dst: &mut [i32]| {
            let MixScratch { pairs, acc } = scratch;
            let rows = dst.len() / (h * d);
            acc.resize(rows * d, 0);
            for (head, packed) in values.iter().enumerate() {
                let codes = &probs[(head * n + first) * n..][..rows * n];
                // A probability of exactly one decodes to 2^15, past i16 (under log√2 codes,
                // every probability above 2^−¼ ≈ 0.84 does): such a tile's product runs with
                // it read as 0, and its term `2^15·(v_j − z)` is added after (the row-by-row
                // product of every such tile had been 1 % of DeiT-T's integer time, by `perf`).
                let blocked = packed.as_ref().and_then(|packed| {
                    if decoded_pairs(isa, &table, codes, n, pairs) {
                        Some((packed, false))
                    } else {
                        decoded_pairs(isa, &clipped, codes, n, pairs).then_some((packed, true))
                    }
                });
                if let Some((packed, clipped)) = blocked {
                    scores(isa, pairs, packed, acc);
                    if clipped {
                        self.add_wide_terms(codes, |j| value_row(head, j), acc);
                    }
                } else {
                    // Rare: a head whose values leave i16, or a code past the table.
                    let values = centred_values(head);
                    for (row, a) in codes.chunks_exact(n).zip(acc.chunks_exact_mut(d)) {
                        let w: Vec<i32> = row
                            .iter()
                            .map(|&code| self.probability[code as usize])
                            .collect();
                        weighted_rows(isa, &w, &values, a);
                    }
                }
                for (r, a) in acc.chunks_exact(d).enumerate() {
                    let row = &mut dst[r * h * d + head * d..][..d];
                    if let Some(f) = &shared {
                        requant(isa, f, a, row);
                        continue;
                    }
                    for (c, (o, &a)) in row.iter_mut().zip(a).enumerate() {
                        *o = match &fast[head * d + c] {
                            Some(f) => f.apply(a as i64) as i32,
                            None => self.out.encode(a as i64, head * d + c),
                        };
                    }
                }
            }
        };
        if h * d == 0 || n == 0 {
            return;
        }
        let chunk = ROWS * h * d;
        // Each thread's tile buffers are kept from call to call, as the Softmax's are.
        if parallel {
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(t, dst)| with_kept(&MIX_SCRATCH, |s| tile(s, t * ROWS, dst)));
        } else {
            with_kept(&MIX_SCRATCH, |scratch| {
                for (t, dst) in out.chunks_mut(chunk).enumerate() {
                    tile(scratch, t * ROWS, dst);
                }
            });
        }
        KEPT_VALUES.set(values.into_iter().flatten().collect());
    }
}

/// One tile's buffers for `P·V`.
#[derive(Debug, Default)]
struct MixScratch {
    /// The tile's decoded probabilities as dimension pairs.
    pairs: Vec<i32>,
    acc: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::encoding::Encoding;
    use crate::rng::Rng;

    /// `P·V` by its definition: each output the encoder's code of `Σ_j p_j·(v_j − z)`.
    fn mix_definition(m: &Mix, probs: &[i32], qkv: &[i32]) -> Vec<i32> {
        let (h, d, n) = (m.heads, m.head_dim, m.tokens);
        let mut out = vec![0; n * h * d];
        for i in 0..n {
            for head in 0..h {
                for c in 0..d {
                    let acc: i64 = (0..n)
                        .map(|j| {
                            let p = m.probability[probs[(head * n + i) * n + j] as usize];
                            let v = qkv[j * 3 * h * d + 2 * h * d + head * d + c] - m.zero;
                            p as i64 * v as i64
                        })
                        .sum();
                    out[i * h * d + head * d + c] = m.out.encode(acc, head * d + c);
                }
            }
        }
        out
    }

    /// Heads of no channels give an empty output, not a panic.
    #[test]
    fn heads_without_channels_give_nothing() {
        let out = Encoding::Linear {
            scale: vec![0.05],
            zero: vec![0],
            offset: vec![0.0],
            qmin: -128,
            qmax: 127,
        };
        let mix = Mix {
            heads: 2,
            head_dim: 0,
            tokens: 3,
            probability: vec![1, 2],
            zero: 0,
            out: Encoder::new(&[1e-5], &[0.0], &out, 1, "t").unwrap(),
        };
        for isa in Isa::available() {
            let mut got = Buffer::from(vec![-1; 3]);
            mix.run(isa, &[0; 18], &[], &mut got);
            assert!(got.is_empty(), "{}", isa.name());
        }
    }

    /// Tiles whose probabilities all decode inside i16 take the blocked product; tiles holding
    /// probabilities of one (2^15) take it with those read as 0 and their terms added; values
    /// centred past i16 take the row-by-row product: every ISA gives the definition's codes in
    /// each case, odd sizes and partial tiles included.
    #[test]
    fn mix_equals_the_definition_on_both_paths() {
        let mut rng = Rng::new(5);
        let probability: Vec<i32> = (0..16).map(|k| (1 << 15) >> k).rev().collect();
        let out = Encoding::Linear {
            scale: vec![0.05],
            zero: vec![3],
            offset: vec![0.0],
            qmin: -128,
            qmax: 127,
        };
        // (3, 64, 197): a DeiT-T head's size, whose heads and tiles go on the pool.
        let shapes = [(2, 5, 9), (3, 64, 17), (1, 16, 1), (2, 7, 6), (3, 64, 197)];
        // One requantization for every channel, then one per channel.
        for ((heads, head_dim, tokens), per_channel) in
            shapes.iter().flat_map(|&s| [(s, false), (s, true)])
        {
            let channels = heads * head_dim;
            let scale: Vec<f64> = if per_channel {
                (0..channels)
                    .map(|c| 1e-5 * (1.0 + c as f64 / 8.0))
                    .collect()
            } else {
                vec![1e-5]
            };
            let mix = Mix {
                heads,
                head_dim,
                tokens,
                probability: probability.clone(),
                zero: 7,
                out: Encoder::new(&scale, &[0.0], &out, channels, "t").unwrap(),
            };
            let cases = ["narrow", "probabilities of one", "wide values", "both"];
            for case in cases {
                // Codes 0..=14 decode below 2^15; code 15 decodes to 2^15.
                let mut probs: Vec<i32> = (0..heads * tokens * tokens)
                    .map(|_| rng.below(15) as i32)
                    .collect();
                let mut qkv: Vec<i32> = (0..tokens * 3 * channels)
                    .map(|_| rng.below(256) as i32 - 128)
                    .collect();
                if matches!(case, "probabilities of one" | "both") {
                    // One in eight, and the last row's first.
                    for p in probs.iter_mut().step_by(8) {
                        *p = 15;
                    }
                    probs[tokens * tokens.saturating_sub(1)] = 15;
                }
                if matches!(case, "wide values" | "both") {
                    qkv[2 * channels] = 40_000;
                }
                let want = mix_definition(&mix, &probs, &qkv);
                for isa in Isa::available() {
                    // Stale values in a longer buffer: every element must be written.
                    let mut got = Buffer::from(vec![-1; want.len() + 5]);
                    mix.run(isa, &probs, &qkv, &mut got);
                    assert_eq!(
                        *got,
                        want,
                        "{case}, {} {heads}×{head_dim}×{tokens}, per channel {per_channel}",
                        isa.name()
                    );
                }
            }
        }
    }
}
