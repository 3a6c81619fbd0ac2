//! Rounding an integer to one of a few non-uniform levels (log2, log√2) by comparison with
//! precomputed thresholds — a leading-one detector and a comparator in hardware. The
//! thresholds are where the float quantizer changes its code, converted once to the integer's
//! scale, so the integer and float quantizers agree except on values within one integer step of
//! a threshold.

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
