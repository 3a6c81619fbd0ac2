//! Rounding an integer to one of a few non-uniform levels (log2, log√2) by comparison with
//! precomputed thresholds — a leading-one detector and a comparator in hardware. The
//! thresholds are where the float quantizer changes its code, converted once to the integer's
//! scale, so the integer and float quantizers agree except on values within one integer step of
//! a threshold.
#![allow(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::exec::int::kernels::{Isa, Width, width};

/// Codes for an integer `v`: `codes[i]` where `i` counts the thresholds `v` exceeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelEncoder {
    /// Ascending.
    pub thresholds: Vec<i64>,
    /// One more than the thresholds: the code of each interval, smallest real level first.
    pub codes: Vec<i32>,
}

impl LevelEncoder {
    /// From the real boundaries between consecutive levels (ascending) for an integer whose real
    /// value is `scale·v + offset`: `v` exceeds boundary `b` when `v > ⌊(b − offset)/scale⌋`.
    pub fn new(boundaries: &[f64], codes: Vec<i32>, scale: f64, offset: f64) -> Self {
        debug_assert_eq!(boundaries.len() + 1, codes.len());
        let thresholds = boundaries
            .iter()
            .map(|b| {
                let t = ((b - offset) / scale).floor();
                t.clamp(i64::MIN as f64 / 2.0, i64::MAX as f64 / 2.0) as i64
            })
            .collect();
        Self { thresholds, codes }
    }

    /// The thresholds of a non-decreasing step function `code(v)` over `lo..=hi`, found by
    /// bisection between its changes: an exact table of any monotone encoder (a uniform
    /// requantization included) on a bounded input, searched with one comparison per level.
    pub fn from_monotone(code: impl Fn(i64) -> i32, lo: i64, hi: i64) -> Self {
        let mut thresholds = Vec::new();
        let mut codes = vec![code(lo)];
        let mut from = lo;
        let last = code(hi);
        while codes[codes.len() - 1] != last {
            let current = codes[codes.len() - 1];
            // code(a) == current, code(b) != current.
            let (mut a, mut b) = (from, hi);
            while b - a > 1 {
                let mid = a + (b - a) / 2;
                if code(mid) == current {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            thresholds.push(a);
            codes.push(code(b));
            from = b;
        }
        Self { thresholds, codes }
    }

    #[inline]
    pub fn encode(&self, v: i64) -> i32 {
        self.codes[self.thresholds.partition_point(|&t| v > t)]
    }
}

/// A [`LevelEncoder`] indexed by bit length, for many non-negative inputs (probabilities): an
/// input's leading-zero count gives the few thresholds of its binade, searched alone.
#[derive(Debug, Clone)]
pub struct BinadeLookup<'a> {
    encoder: &'a LevelEncoder,
    /// `first[b]`: how many thresholds lie below the smallest input of bit length `b` (0 for
    /// `b = 0`, else `2^(b−1)`); `first[b + 1]` bounds the ones it must compare with.
    first: [usize; 65],
    /// For inputs in i32, when no binade holds more than two thresholds (a log encoder's
    /// do not): each binade's two, the absent ones `i32::MAX`, which no input exceeds.
    pairs: Option<Box<[[i32; 2]; 32]>>,
}

impl LevelEncoder {
    pub fn binade_lookup(&self) -> BinadeLookup<'_> {
        let below = |v: i64| self.thresholds.partition_point(|&t| t < v);
        let mut first = [0; 65];
        first[0] = below(0);
        for (b, f) in first.iter_mut().enumerate().skip(1) {
            *f = if b == 64 {
                self.thresholds.len()
            } else {
                below(1i64 << (b - 1))
            };
        }
        // Binade `b` of an i32 input (b ≤ 31) holds thresholds `first[b]..first[b + 1]`, all
        // below 2^b, so they fit in i32.
        let pairs = (0..32)
            .map(|b| {
                let inside = &self.thresholds[first[b]..first[b + 1]];
                let at = |i: usize| inside.get(i).map_or(Some(i32::MAX), |&t| t.try_into().ok());
                (inside.len() <= 2).then_some([at(0)?, at(1)?])
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.try_into().ok());
        BinadeLookup {
            encoder: self,
            first,
            pairs,
        }
    }
}

impl BinadeLookup<'_> {
    /// [`LevelEncoder::encode`], exactly.
    #[inline]
    pub fn encode(&self, v: i64) -> i32 {
        if v < 0 {
            return self.encoder.encode(v);
        }
        let b = (64 - v.leading_zeros()) as usize;
        // Every threshold below the binade's smallest input is exceeded; the rest of those
        // below the next binade are compared.
        let (lo, hi) = (self.first[b], self.first[(b + 1).min(64)]);
        // A log encoder's binade holds a threshold or two: counting them costs less than a
        // search; a uniform encoder's top binades hold many, which are searched.
        let candidates = &self.encoder.thresholds[lo..hi];
        let inside = if candidates.len() <= 8 {
            candidates.iter().filter(|&&t| v > t).count()
        } else {
            candidates.partition_point(|&t| v > t)
        };
        self.encoder.codes[lo + inside]
    }

    /// `out[i] = encode(p[i])` for many inputs: without a branch per element where every
    /// binade holds at most two thresholds and every input is non-negative (probabilities),
    /// compiled for AVX2 and AVX-512 where the CPU has them; else one by one.
    pub fn encode_all(&self, isa: Isa, p: &[i32], out: &mut [i32]) {
        assert_eq!(p.len(), out.len(), "as many codes as inputs");
        let pairs = match &self.pairs {
            Some(pairs) if p.iter().all(|&v| v >= 0) => pairs,
            _ => {
                return out
                    .iter_mut()
                    .zip(p)
                    .for_each(|(o, &v)| *o = self.encode(v as i64));
            }
        };
        let codes = &self.encoder.codes;
        match width(isa) {
            // SAFETY (both): `width` found the features the function is compiled for.
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => unsafe { encode_avx512(&self.first, pairs, codes, p, out) },
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => unsafe { encode_avx2(&self.first, pairs, codes, p, out) },
            _ => encode_portable(&self.first, pairs, codes, p, out),
        }
    }
}

/// [`BinadeLookup::encode`] of non-negative i32 inputs through each binade's (at most) two
/// thresholds: `codes[first[b] + (v > t0) + (v > t1)]`.
#[inline(always)]
fn encode_portable(
    first: &[usize; 65],
    pairs: &[[i32; 2]; 32],
    codes: &[i32],
    p: &[i32],
    out: &mut [i32],
) {
    for (o, &v) in out.iter_mut().zip(p) {
        let b = (32 - v.leading_zeros()) as usize & 31;
        let [t0, t1] = pairs[b];
        *o = codes[first[b] + usize::from(v > t0) + usize::from(v > t1)];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn encode_avx2(
    first: &[usize; 65],
    pairs: &[[i32; 2]; 32],
    codes: &[i32],
    p: &[i32],
    out: &mut [i32],
) {
    encode_portable(first, pairs, codes, p, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn encode_avx512(
    first: &[usize; 65],
    pairs: &[[i32; 2]; 32],
    codes: &[i32],
    p: &[i32],
    out: &mut [i32],
) {
    encode_portable(first, pairs, codes, p, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binade_lookup_equals_the_search() {
        // log√2 levels of probabilities at 2^−24 (thresholds near 2^(24 − k/2)), a uniform
        // table with many thresholds per binade, and thresholds at powers of two and below 0.
        let sqrt2: Vec<f64> = (1..40)
            .rev()
            .map(|k| 2f64.powf(-(k as f64 - 0.5) / 2.0))
            .collect();
        let codes: Vec<i32> = (0..=sqrt2.len() as i32).rev().collect();
        let encoders = [
            LevelEncoder::new(&sqrt2, codes, 1.0 / (1 << 24) as f64, 0.0),
            LevelEncoder::from_monotone(|v| ((v + 5) / 10).clamp(0, 255) as i32, 0, 3000),
            LevelEncoder {
                thresholds: vec![-5, 0, 1, 2, 3, 4, 7, 8, 1 << 40],
                codes: (0..10).collect(),
            },
        ];
        // The log and hand-made tables take the branch-free path; the uniform one cannot.
        let branch_free: Vec<bool> = encoders
            .iter()
            .map(|e| e.binade_lookup().pairs.is_some())
            .collect();
        assert_eq!(branch_free, [true, false, true]);
        for enc in &encoders {
            let lookup = enc.binade_lookup();
            let mut probes: Vec<i64> = (-20..5000).collect();
            probes.extend(enc.thresholds.iter().flat_map(|&t| [t - 1, t, t + 1]));
            probes.extend((0..63).map(|b| 1i64 << b).chain([i64::MAX, i64::MIN]));
            for &v in &probes {
                assert_eq!(lookup.encode(v), enc.encode(v), "v = {v}");
            }
            // Many at once (in i32): every ISA, with and without a negative input.
            let mut many: Vec<i32> = probes.iter().filter_map(|&v| v.try_into().ok()).collect();
            for negative in [false, true] {
                if !negative {
                    many.retain(|&v| v >= 0);
                }
                let want: Vec<i32> = many.iter().map(|&v| enc.encode(v as i64)).collect();
                for isa in Isa::available() {
                    let mut got = vec![-1; many.len()];
                    lookup.encode_all(isa, &many, &mut got);
                    assert_eq!(got, want, "{}", isa.name());
                }
                many.push(-3);
            }
        }
    }

    #[test]
    fn log2_divisor_by_hand() {
        // Levels 1, 2, 4 (codes 2, 1, 0 of a log2 quantizer with Δ = 4); geometric midpoints
        // √2 and 2√2. Integer at scale 0.5: thresholds ⌊2.83⌋ = 2 and ⌊5.66⌋ = 5.
        let b = [2f64.sqrt(), 8f64.sqrt()];
        let enc = LevelEncoder::new(&b, vec![2, 1, 0], 0.5, 0.0);
        assert_eq!(enc.thresholds, [2, 5]);
        let codes: Vec<i32> = (0..8).map(|v| enc.encode(v)).collect();
        // real 0, 0.5, 1, 1.5 → level 1 (code 2); 2, 2.5 → level 2; 3, 3.5 → level 4.
        assert_eq!(codes, [2, 2, 2, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn a_monotone_function_becomes_its_thresholds() {
        // Rounding v/10 half up, clamped to 0..=3, over 0..=100.
        let f = |v: i64| ((v + 5) / 10).min(3) as i32;
        let enc = LevelEncoder::from_monotone(f, 0, 100);
        assert_eq!(enc.thresholds, [4, 14, 24]);
        assert_eq!(enc.codes, [0, 1, 2, 3]);
        assert!((0..=100).all(|v| enc.encode(v) == f(v)));
        let flat = LevelEncoder::from_monotone(|_| 7, 0, 100);
        assert!(flat.thresholds.is_empty() && flat.encode(50) == 7);
    }
}
