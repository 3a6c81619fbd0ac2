//! Fixed-range histograms: what calibration keeps of a tensor, fine enough for percentile,
//! L_p and KL range searches without the raw values.

use serde::{Deserialize, Serialize};

/// Counts of values in `bins` equal-width bins over `[lo, hi]` (the last bin includes `hi`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u64>,
}

impl Histogram {
    pub fn new(lo: f32, hi: f32, bins: usize) -> Self {
        Self {
            lo,
            hi: hi.max(lo),
            counts: vec![0; bins.max(1)],
        }
    }

    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    pub fn width(&self) -> f32 {
        (self.hi - self.lo) / self.bins() as f32
    }

    /// The bin `x` falls in; values outside the range go to the end bins.
    #[inline]
    pub fn bin_of(&self, x: f32) -> usize {
        let w = self.width();
        if w <= 0.0 {
            return 0;
        }
        (((x - self.lo) / w) as isize).clamp(0, self.bins() as isize - 1) as usize
    }

    #[inline]
    pub fn add(&mut self, x: f32) {
        let b = self.bin_of(x);
        self.counts[b] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn center(&self, bin: usize) -> f32 {
        self.lo + (bin as f32 + 0.5) * self.width()
    }

    /// The value below which a fraction `q` of the mass lies, interpolated inside its bin.
    /// A constant tensor returns its value.
    pub fn quantile(&self, q: f64) -> f32 {
        let total = self.total();
        if total == 0 || self.width() <= 0.0 {
            return self.lo;
        }
        let target = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            let next = below + c as f64;
            if next >= target && c > 0 {
                let frac = ((target - below) / c as f64).clamp(0.0, 1.0) as f32;
                return self.lo + (i as f32 + frac) * self.width();
            }
            below = next;
        }
        self.hi
    }

    /// Adds another histogram's mass into this one, each source bin mapped through `f` at its
    /// centre (used to see a tensor after per-channel migration or shifting).
    pub fn add_mapped(&mut self, other: &Histogram, f: impl Fn(f32) -> f32) {
        for (i, &c) in other.counts.iter().enumerate() {
            if c > 0 {
                let b = self.bin_of(f(other.center(i)));
                self.counts[b] += c;
            }
        }
    }
}

/// Weighted sample points standing for a distribution: raw values (weight 1 each) or histogram
/// bin centres weighted by their counts, with the true extremes (bin centres lie inside them).
/// Range searches score candidate quantizers on these.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Distribution {
    pub points: Vec<(f32, f64)>,
    pub lo: f32,
    pub hi: f32,
}

impl Distribution {
    pub fn from_values(values: &[f32]) -> Self {
        Self {
            points: values.iter().map(|&v| (v, 1.0)).collect(),
            lo: values.iter().copied().fold(f32::INFINITY, f32::min),
            hi: values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        }
    }

    pub fn from_histogram(h: &Histogram) -> Self {
        let points = if h.width() <= 0.0 {
            vec![(h.lo, h.total() as f64)]
        } else {
            h.counts
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(i, &c)| (h.center(i), c as f64))
                .collect()
        };
        Self {
            points,
            lo: h.lo,
            hi: h.hi,
        }
    }

    /// The smallest value.
    pub fn min(&self) -> f32 {
        self.lo
    }

    /// The largest value.
    pub fn max(&self) -> f32 {
        self.hi
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Mean `|x − q(x)|^p` ([`super::lp_error`]).
    pub fn lp_error(&self, p: f32, q: impl Fn(f32) -> f32) -> f64 {
        super::lp_error::lp_error(&self.points, p, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binning_and_quantiles() {
        let mut h = Histogram::new(0.0, 10.0, 10);
        for v in 0..10 {
            h.add(v as f32 + 0.5);
        }
        h.add(10.0); // the top edge belongs to the last bin
        h.add(-3.0); // below the range: first bin
        assert_eq!(h.counts, vec![2, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        assert_eq!(h.total(), 12);
        assert!((h.quantile(0.5) - 5.0).abs() < 1e-6);
        assert_eq!(h.quantile(0.0), 0.0);
        assert_eq!(h.quantile(1.0), 10.0);
    }

    #[test]
    fn constant_tensor() {
        let mut h = Histogram::new(2.0, 2.0, 16);
        h.add(2.0);
        h.add(2.0);
        assert_eq!(h.quantile(0.9), 2.0);
        assert_eq!(Distribution::from_histogram(&h).points, vec![(2.0, 2.0)]);
        assert_eq!(Distribution::from_histogram(&h).max(), 2.0);
    }

    #[test]
    fn mapped_merge_moves_mass() {
        let mut src = Histogram::new(0.0, 4.0, 4);
        src.add(3.5);
        let mut dst = Histogram::new(0.0, 4.0, 4);
        dst.add_mapped(&src, |x| x / 2.0);
        assert_eq!(dst.counts, vec![0, 1, 0, 0]);
    }
}
