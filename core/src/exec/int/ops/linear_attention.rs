//! EfficientViT's ReLU linear attention in integers, per head of the multi-scale tensor
//! (`q`, `k`, `v` of a head share one scale and zero-point):
//!
//! 1. context: `Σ_m (v − z)·relu(k − z)` and the key sums `Σ_m relu(k − z)`, i32, each
//!    requantized to its point (8-bit uniform in Trio-ViT);
//! 2. query: dividends `Σ_j kv·relu(q − z)` and divisors `Σ_j ksum·relu(q − z)`, the divisor
//!    encoded to its point — 4-bit log2 in Trio-ViT, by threshold comparison;
//! 3. normalise: with a log2 divisor `2^(E − c)` the division is a shift by `c` folded into the
//!    dividend's requantization; with a uniform divisor it is an integer division rounded half
//!    up (what an accelerator without Trio-ViT's trick must build).

use super::super::kernels::Isa;
use super::super::kernels::axpy::{axpy, pair_rows};
use super::super::kernels::gram::{centre_i16, gram};
use super::super::kernels::pair;
use super::super::kernels::pair_products::pair_products;
use super::super::kernels::shift_divide::ShiftRow;
use super::super::requant::{Encoder, Requant};
use crate::exec::spare::{Buffer, prefix_to_overwrite, with_kept};
use rayon::prelude::*;
use std::cell::Cell;

/// One head's working rows, kept by each thread from head to head (and image to image): each
/// head had allocated and zeroed four or five vectors of its own — with their frees, 7 % of
/// B1's linear-attention time (`perf`, `cargo bench -p qvit-core --bench alternating --
/// linear avx2`). Every step writes what it reads of them first.
#[derive(Debug, Default)]
struct HeadRows {
    /// Centred keys, and values with their row of ones (context).
    keys: Vec<i16>,
    values: Vec<i16>,
    /// Sums: the context's `[d+1, d]`, the query's `[d+1, N]`.
    sums: Vec<i32>,
    /// The query's pair rows of `relu(q − z)`, and its context rows' coefficients in pairs.
    words: Vec<i32>,
    weights: Vec<i32>,
}

/// Runs `f` on this thread's [`HeadRows`].
fn with_head_rows<R>(f: impl FnOnce(&mut HeadRows) -> R) -> R {
    thread_local! {
        static KEPT: Cell<HeadRows> = Cell::default();
    }
    with_kept(&KEPT, f)
}

/// Step 1: `[heads·3d, N]` → `[heads, d+1, d]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub zero: Vec<i32>,
    pub products: Encoder,
    pub key_sums: Encoder,
}

impl Context {
    /// Codes of the output: per head, `d` rows of products and one of key sums, `d` wide.
    pub fn output_len(&self) -> usize {
        self.heads * (self.head_dim + 1) * self.head_dim
    }

    pub fn run(&self, isa: Isa, ms: &[i32], out: &mut Buffer<i32>) {
        let (d, n) = (self.head_dim, self.tokens);
        // Every element is written below (each head's products and key sums).
        let out = out.overwrite(self.output_len());
        let head_len = (d + 1) * d;
        for_each_head(self.heads * head_len * n, out, head_len, |h, o| {
            self.head(isa, h, &ms[h * 3 * d * n..(h + 1) * 3 * d * n], o)
        });
    }

    /// One head's products and key sums from its `[3d, N]` slice of the multi-scale tensor.
    fn head(&self, isa: Isa, h: usize, head: &[i32], o: &mut [i32]) {
        let (d, n) = (self.head_dim, self.tokens);
        let z = self.zero[h];
        let (keys, values) = (&head[d * n..2 * d * n], &head[2 * d * n..]);
        with_head_rows(|rows| {
            let k = prefix_to_overwrite(&mut rows.keys, d * n);
            // The values' rows and a row of ones: its products with the keys are the key sums.
            let v = prefix_to_overwrite(&mut rows.values, (d + 1) * n);
            v[d * n..].fill(1);
            let sums = prefix_to_overwrite(&mut rows.sums, (d + 1) * d);
            // Codes less their zero-point fit i16 when they have at most 16 bits (8-bit ones
            // always): the sums then run as i16 pairs. Wider ones take i32 rows.
            let narrow = centre_i16(isa, keys, z, 0, k)
                & centre_i16(isa, values, z, i32::MIN, &mut v[..d * n]);
            if narrow {
                gram(isa, v, k, n, sums);
            } else {
                sums_i32(keys, values, z, d, n, sums);
            }
            let (products, key_sums) = sums.split_at(d * d);
            let (o_products, o_key_sums) = o.split_at_mut(d * d);
            self.products.encode_slice(isa, h, products, o_products);
            self.key_sums.encode_slice(isa, h, key_sums, o_key_sums);
        })
    }
}

/// Heads at least this much work (multiply-adds) in total run on the pool's threads.
const PARALLEL_WORK: usize = 1 << 18;

/// `f(h, head h's output)` for every head, the output cut in runs of `head_len`: on the pool's
/// threads when the heads are `work` multiply-adds in all and that is enough (at batch 1 the
/// attention had been serial on the image's thread). Each head writes only its own output, so
/// the answer is the same either way.
fn for_each_head(
    work: usize,
    out: &mut [i32],
    head_len: usize,
    f: impl Fn(usize, &mut [i32]) + Sync,
) {
    if head_len == 0 {
        return;
    }
    if work >= PARALLEL_WORK {
        out.par_chunks_mut(head_len)
            .enumerate()
            .for_each(|(h, o)| f(h, o));
    } else {
        out.chunks_mut(head_len)
            .enumerate()
            .for_each(|(h, o)| f(h, o));
    }
}

/// The context's sums from i32 rows (codes too wide for i16): the products `[d, d]`, then the
/// key sums `[d]`. Inside i32 by the compiler's bound on tokens × span².
fn sums_i32(keys: &[i32], values: &[i32], z: i32, d: usize, n: usize, out: &mut [i32]) {
    let k: Vec<i32> = keys.iter().map(|&q| (q - z).max(0)).collect();
    let v: Vec<i32> = values.iter().map(|&q| q - z).collect();
    let (products, key_sums) = out.split_at_mut(d * d);
    for (vi, o) in v.chunks_exact(n).zip(products.chunks_exact_mut(d)) {
        for (kj, o) in k.chunks_exact(n).zip(o) {
            *o = vi.iter().zip(kj).map(|(&a, &b)| a * b).sum();
        }
    }
    for (kj, o) in k.chunks_exact(n).zip(key_sums) {
        *o = kj.iter().sum();
    }
}

/// Step 2: (`[heads·3d, N]`, context) → `[heads, d+1, N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub zero: Vec<i32>,
    pub product_zero: i32,
    pub key_sum_zero: i32,
    pub dividends: Encoder,
    pub divisors: Encoder,
}

impl Query {
    /// Codes of the output: per head, `d` rows of dividends and one of divisors, a token wide.
    pub fn output_len(&self) -> usize {
        self.heads * (self.head_dim + 1) * self.tokens
    }

    pub fn run(&self, isa: Isa, ms: &[i32], context: &[i32], out: &mut Buffer<i32>) {
        let (d, n) = (self.head_dim, self.tokens);
        // Every element is written below (each row's encode).
        let out = out.overwrite(self.output_len());
        let head_len = (d + 1) * n;
        for_each_head(self.heads * head_len * d, out, head_len, |h, o| {
            let head = &ms[h * 3 * d * n..(h + 1) * 3 * d * n];
            let ctx = &context[h * (d + 1) * d..(h + 1) * (d + 1) * d];
            self.head(isa, h, head, ctx, o)
        });
    }

    /// One head's dividends and divisors `[d+1, N]` from its `[3d, N]` slice of the
    /// multi-scale tensor and its context `[d+1, d]`.
    fn head(&self, isa: Isa, h: usize, head: &[i32], ctx: &[i32], o: &mut [i32]) {
        let (d, n) = (self.head_dim, self.tokens);
        let pairs = d.div_ceil(2);
        let z = self.zero[h];
        let query_rows = |j: usize| &head[j * n..(j + 1) * n];
        // Each context row's zero-point: the products' rows, then the key sums'.
        let row_zero = |i: usize| match i < d {
            true => self.product_zero,
            false => self.key_sum_zero,
        };
        with_head_rows(|rows| {
            let sums = prefix_to_overwrite(&mut rows.sums, (d + 1) * n);
            // relu(q − z) of dimensions 2p and 2p + 1 as i16 pairs, each context row's two
            // coefficients (less the row's zero-point) likewise: all d + 1 rows of sums from
            // one pass over the pairs, a `vpmaddwd` per two dimensions (codes of up to 16
            // bits fit; wider ones, or wider coefficients, take i32 rows and `axpy`).
            let words = prefix_to_overwrite(&mut rows.words, pairs * n);
            let mut narrow = true;
            for (p, w) in words.chunks_exact_mut(n.max(1)).enumerate() {
                let second = (2 * p + 1 < d).then(|| query_rows(2 * p + 1));
                narrow &= pair_rows(isa, query_rows(2 * p), second, z, &mut w[..n]);
            }
            let weights = prefix_to_overwrite(&mut rows.weights, (d + 1) * pairs);
            let coefficients = ctx[..(d + 1) * d].chunks_exact(d.max(1));
            for (i, (row, w)) in coefficients
                .zip(weights.chunks_exact_mut(pairs.max(1)))
                .enumerate()
            {
                narrow &= coefficient_pairs(row, row_zero(i), w);
            }
            if narrow {
                pair_products(isa, words, n, weights, sums);
            } else {
                let q: Vec<i32> = head[..d * n].iter().map(|&v| (v - z).max(0)).collect();
                let coefficients = ctx[..(d + 1) * d].chunks_exact(d.max(1));
                for (i, (acc, row)) in sums
                    .chunks_exact_mut(n.max(1))
                    .zip(coefficients)
                    .enumerate()
                {
                    acc.fill(0);
                    for (qj, &c) in q.chunks_exact(n.max(1)).zip(row) {
                        axpy(isa, acc, c - row_zero(i), qj);
                    }
                }
            }
            let (dividends, divisors) = (self.dividends.channel(h), self.divisors.channel(h));
            for (i, acc) in sums.chunks_exact(n.max(1)).enumerate().take(d + 1) {
                let enc = if i < d { &dividends } else { &divisors };
                enc.encode_slice(isa, acc, &mut o[i * n..(i + 1) * n]);
            }
        })
    }
}

/// `out[p] = pair(row[2p] − zero, row[2p + 1] − zero)` (an odd row's last with 0), and whether
/// every difference fit i16, in one pass: a first form that made the differences into a
/// vector of their own, then checked and paired them one by one, was most of the query step's
/// own time outside its kernels (`perf`: the step's closure 8.9 % of the linear attention's
/// samples before, 4.6 % after).
fn coefficient_pairs(row: &[i32], zero: i32, out: &mut [i32]) -> bool {
    // In i64: a difference past i32 is not mistaken for a small one.
    let centred = |c: i32| i64::from(c) - i64::from(zero);
    let fits = |c: i64| i64::from(c as i16) == c;
    let mut all = true;
    let whole = row.chunks_exact(2);
    let last = whole.remainder().first().copied();
    for (w, c) in out.iter_mut().zip(whole) {
        let (lo, hi) = (centred(c[0]), centred(c[1]));
        all &= fits(lo) & fits(hi);
        *w = pair(lo as i16, hi as i16);
    }
    if let (Some(c), Some(w)) = (last, out.last_mut()) {
        all &= fits(centred(c));
        *w = pair(centred(c) as i16, 0);
    }
    all
}

/// How step 3 divides.
#[derive(Debug, Clone, PartialEq)]
pub enum Divide {
    /// Log2 divisor codes `c` mean `2^(E − c)`: `(x·m) << c` then the shift of the requant.
    Shift,
    /// Uniform (or non-power-of-two) divisors: each code's integer value at one scale.
    Integer { divisor: Vec<i64> },
}

/// Step 3: `[heads, d+1, N]` → `[heads·d, H, W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub heads: usize,
    pub head_dim: usize,
    pub tokens: usize,
    pub dividend_zero: i32,
    pub divide: Divide,
    /// Per output channel: dividend × its scale / (divisor unit × output scale), zero-point
    /// folded; with `Shift` the divisor's `2^−E` too.
    pub out: Requant,
    /// Output zero-point per channel (the integer division adds it after rounding).
    pub out_zero: Vec<i32>,
}

impl Normalize {
    /// Codes of the output: per head, `d` rows a token wide.
    pub fn output_len(&self) -> usize {
        self.heads * self.head_dim * self.tokens
    }

    pub fn run(&self, isa: Isa, x: &[i32], out: &mut Buffer<i32>) {
        let (d, n) = (self.head_dim, self.tokens);
        // Every element is written below (by the row in lanes or token by token).
        let out = out.overwrite(self.output_len());
        // Each output is a 64-bit product, shift and clamp: counted as 8 multiply-adds.
        for_each_head(8 * self.heads * d * n, out, d * n, |h, o| {
            self.head(isa, h, &x[h * (d + 1) * n..(h + 1) * (d + 1) * n], o)
        });
    }

    /// One head's `d` output channels `[d, N]` from its dividends and divisors `[d+1, N]`.
    fn head(&self, isa: Isa, h: usize, head: &[i32], out: &mut [i32]) {
        let (d, n) = (self.head_dim, self.tokens);
        let r = &self.out;
        let divisors = &head[d * n..];
        for c in 0..d {
            let ch = h * d + c;
            let dm = r.multiplier[ch];
            let k = dm.k as u32;
            let o = &mut out[c * n..(c + 1) * n];
            // The shift's sum in i64 when it provably fits: `|num·2^code| < 2^60`,
            // `|addend| < 2^61`, so with the rounding half it stays below 2^63.
            let addend = i64::try_from(r.addend[ch])
                .ok()
                .filter(|a| a.unsigned_abs() < 1 << 61 && (1..=62).contains(&k));
            // The whole row in lanes when every value is inside that reach.
            if let (Divide::Shift, Some(addend)) = (&self.divide, addend) {
                let row = ShiftRow {
                    zero: self.dividend_zero,
                    m: dm.m,
                    addend,
                    k,
                    range: (r.qmin, r.qmax),
                };
                if row.run(isa, &head[c * n..(c + 1) * n], divisors, o) {
                    continue;
                }
            }
            for t in 0..n {
                let code = divisors[t];
                if let (Divide::Shift, Some(a)) = (&self.divide, addend) {
                    let num = (head[c * n + t] - self.dividend_zero) as i64 * dm.m as i64;
                    if (0..=60).contains(&code) && num.unsigned_abs() < (1u64 << 60) >> code {
                        let p = (num << code) + a;
                        o[t] = ((p + (1i64 << (k - 1))) >> k).clamp(r.qmin, r.qmax) as i32;
                        continue;
                    }
                }
                let num = (head[c * n + t] - self.dividend_zero) as i128 * dm.m as i128;
                let y = match &self.divide {
                    Divide::Shift => {
                        let p = (num << code) + r.addend[ch];
                        (p + (1i128 << (k - 1))) >> k
                    }
                    Divide::Integer { divisor } => {
                        let den = divisor[code as usize] as i128;
                        let zero = self.out_zero[ch] as i128;
                        if den <= 0 {
                            match num.signum() {
                                1 => r.qmax as i128,
                                -1 => r.qmin as i128,
                                _ => zero,
                            }
                        } else {
                            let den = den << k;
                            (2 * num + den).div_euclid(2 * den) + zero
                        }
                    }
                };
                o[t] = y.clamp(r.qmin as i128, r.qmax as i128) as i32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::requant::Target;
    use super::*;
    use crate::rng::Rng;

    /// The encoder of `heads` channels `acc ↦ round(acc·scale / 0.5)`, clamped to ±2^24 (wide
    /// enough that the tests compare sums, not a clamp).
    fn encoder(heads: usize, scale: f64) -> Encoder {
        let target = Target {
            scale: &[0.5],
            zero: &[0],
            offset: &[0.0],
            range: (-(1 << 24), 1 << 24),
        };
        Encoder::Linear(
            Requant::new(
                &vec![scale; heads],
                &vec![0.0; heads],
                &target,
                heads,
                "test",
            )
            .unwrap(),
        )
    }

    /// The context at B1's sizes (head dim 16, 14×14 tokens, and a token count that fills no
    /// lane block) against its definition in i64: products and key sums through the encoders.
    #[test]
    fn context_equals_the_definition() {
        let mut rng = Rng::new(21);
        // 8-bit codes (the products as i16 pairs), and codes too wide for i16 on one token
        // (i32 rows; the compiler's bound allows such spans only on a token or two).
        for (heads, d, n, codes) in [
            (2, 16, 196, 256),
            // Enough work for the heads to run on the pool.
            (6, 16, 196, 256),
            (1, 8, 13, 256),
            (3, 4, 1, 256),
            (1, 3, 1, 40_000),
        ] {
            // The wide case's codes all past i16 once centred.
            let least = if codes > 256 { 33_000 } else { 0 };
            let encoder = |scale| encoder(heads, scale);
            let ctx = Context {
                heads,
                head_dim: d,
                tokens: n,
                zero: (0..heads).map(|h| 100 + 7 * h as i32).collect(),
                products: encoder(0.25),
                key_sums: encoder(1.0),
            };
            let ms: Vec<i32> = (0..heads * 3 * d * n)
                .map(|_| (least + rng.below(codes - least)) as i32)
                .collect();
            for isa in Isa::available() {
                // A stale buffer longer than the output: every element must be written.
                let mut got = Buffer::from(vec![-7; heads * (d + 1) * d + 5]);
                ctx.run(isa, &ms, &mut got);
                check_context(&ctx, &ms, &got, isa);
            }
        }
    }

    /// `got` against the definition, in i64.
    fn check_context(ctx: &Context, ms: &[i32], got: &[i32], isa: Isa) {
        let (heads, d, n) = (ctx.heads, ctx.head_dim, ctx.tokens);
        assert_eq!(got.len(), heads * (d + 1) * d);
        for h in 0..heads {
            let (head, z) = (&ms[h * 3 * d * n..], ctx.zero[h] as i64);
            let k = |j: usize, t: usize| (head[(d + j) * n + t] as i64 - z).max(0);
            let v = |i: usize, t: usize| head[(2 * d + i) * n + t] as i64 - z;
            for i in 0..d {
                for j in 0..d {
                    let want: i64 = (0..n).map(|t| v(i, t) * k(j, t)).sum();
                    let want = ctx.products.encode(want, h);
                    assert_eq!(
                        got[h * (d + 1) * d + i * d + j],
                        want,
                        "{}: {heads}×{d}×{n}: head {h}, ({i}, {j})",
                        isa.name()
                    );
                }
            }
            for j in 0..d {
                let want = ctx.key_sums.encode((0..n).map(|t| k(j, t)).sum(), h);
                assert_eq!(
                    got[h * (d + 1) * d + d * d + j],
                    want,
                    "key sum {j} of head {h}"
                );
            }
        }
    }

    /// The query step against its definition in i64 on every ISA: 8-bit codes at B1's head
    /// size (the rows as i16 pairs, an odd head size's last pair half empty), a context row too
    /// wide for i16, and query codes too wide (both: every row of the head from i32 rows).
    #[test]
    fn query_equals_the_definition() {
        let mut rng = Rng::new(13);
        for (heads, d, n, codes, wide_context) in [
            (2, 16, 196, 256, false),
            // Enough work for the heads to run on the pool.
            (6, 16, 196, 256, false),
            (1, 5, 37, 256, false),
            (1, 4, 9, 256, true),
            (1, 3, 2, 40_000, false),
        ] {
            let encoder = |scale| encoder(heads, scale);
            let query = Query {
                heads,
                head_dim: d,
                tokens: n,
                zero: (0..heads).map(|h| 90 + 3 * h as i32).collect(),
                product_zero: 7,
                key_sum_zero: -3,
                dividends: encoder(0.125),
                divisors: encoder(0.25),
            };
            let least = if codes > 256 { 33_000 } else { 0 };
            let ms: Vec<i32> = (0..heads * 3 * d * n)
                .map(|_| (least + rng.below(codes - least)) as i32)
                .collect();
            let mut context: Vec<i32> = (0..heads * (d + 1) * d)
                .map(|_| rng.below(256) as i32 - 128)
                .collect();
            if wide_context {
                context[d + 1] = 40_000;
            }
            for isa in Isa::available() {
                let mut got = Buffer::from(vec![-9; heads * (d + 1) * n + 3]);
                query.run(isa, &ms, &context, &mut got);
                assert_eq!(got.len(), heads * (d + 1) * n);
                for h in 0..heads {
                    let z = query.zero[h] as i64;
                    let q = |j: usize, t: usize| (ms[h * 3 * d * n + j * n + t] as i64 - z).max(0);
                    for i in 0..=d {
                        let (zero, enc) = if i < d {
                            (query.product_zero, &query.dividends)
                        } else {
                            (query.key_sum_zero, &query.divisors)
                        };
                        let c = |j: usize| (context[h * (d + 1) * d + i * d + j] - zero) as i64;
                        for t in 0..n {
                            let want = enc.encode((0..d).map(|j| c(j) * q(j, t)).sum(), h);
                            assert_eq!(
                                got[h * (d + 1) * n + i * n + t],
                                want,
                                "{}: {heads}×{d}×{n}, head {h}, row {i}, token {t}",
                                isa.name()
                            );
                        }
                    }
                }
            }
        }
    }

    /// Normalisation by log2 divisors (a shift): the i64 fast path gives the i128 definition's
    /// codes, including codes and addends where it must fall back.
    #[test]
    fn shift_division_equals_the_definition() {
        let mut rng = Rng::new(8);
        // The second shape is enough work for the heads to run on the pool.
        for (heads, d, n) in [(2, 16, 50), (3, 16, 700)] {
            let scale: Vec<f64> = (0..heads * d)
                .map(|_| (1 + rng.below(1000)) as f64 * 1e-6)
                .collect();
            let offset: Vec<f64> = (0..heads * d).map(|c| c as f64 * 0.01).collect();
            let target = Target {
                scale: &[0.02],
                zero: &[5],
                offset: &[0.0],
                range: (-128, 127),
            };
            let norm = Normalize {
                heads,
                head_dim: d,
                tokens: n,
                dividend_zero: 3,
                divide: Divide::Shift,
                out: Requant::new(&scale, &offset, &target, heads * d, "n").unwrap(),
                out_zero: vec![5; heads * d],
            };
            // Divisor codes within the i64 path's reach for these products (|(q − z)·m| < 2^46:
            // codes up to 13), then codes past it in one head (every row of it falls back).
            for past in [false, true] {
                let x: Vec<i32> = (0..heads * (d + 1) * n)
                    .map(|i| {
                        if i % ((d + 1) * n) >= d * n {
                            let codes = [0, 1, 7, 15, 40, 61];
                            codes[rng.below(if past && i < (d + 1) * n { 6 } else { 3 })]
                        } else {
                            rng.below(1 << 16) as i32 - (1 << 15)
                        }
                    })
                    .collect();
                for isa in Isa::available() {
                    let mut got = Buffer::from(vec![-7; x.len() + 5]);
                    norm.run(isa, &x, &mut got);
                    assert_normalized(&norm, &x, &got);
                }
            }
        }
    }

    /// `got` is, value by value, the i128 definition of the shift division.
    fn assert_normalized(norm: &Normalize, x: &[i32], got: &[i32]) {
        let (heads, d, n) = (norm.heads, norm.head_dim, norm.tokens);
        let r = &norm.out;
        for h in 0..heads {
            let head = &x[h * (d + 1) * n..(h + 1) * (d + 1) * n];
            for c in 0..d {
                let ch = h * d + c;
                let dm = r.multiplier[ch];
                for t in 0..n {
                    let num = (head[c * n + t] - norm.dividend_zero) as i128 * dm.m as i128;
                    let p = (num << head[d * n + t]) + r.addend[ch];
                    let want = ((p + (1i128 << (dm.k - 1))) >> dm.k)
                        .clamp(r.qmin as i128, r.qmax as i128)
                        as i32;
                    assert_eq!(got[ch * n + t], want, "head {h}, channel {c}, token {t}");
                }
            }
        }
    }
}
