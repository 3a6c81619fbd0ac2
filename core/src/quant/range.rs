//! Range search: which clipping range a uniform quantizer gets, and the search for the other
//! quantizers' parameters. Every search scores candidates on a [`Distribution`], so it works
//! the same on raw weights and on calibration histograms.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::histogram::Distribution;
use super::quantizer::{PowerOfTwoFactor, Twin, Uniform, round_half_up_by_floor};

/// How a uniform quantizer's range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RangeMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip at the given upper percentile and its mirror (`Percentile(99.99)` keeps
    /// `[p0.01, p99.99]`).
    Percentile(f64),
    /// Minimise the mean `|x − x̂|^p` over clipping ranges `(1 − i/100)·[min, max]`, i < 100.
    /// `p = 2` is OMSE; Trio-ViT uses `p = 2.4` (from LAPQ).
    Lp(f32),
    /// Minimise the KL divergence between the histogram and its quantized version (TensorRT's
    /// entropy calibration), over the same candidate ranges.
    Kl,
}

/// Number of shrink steps tried by the searching methods.
const CANDIDATES: usize = 100;

fn candidates(lo: f32, hi: f32) -> impl Iterator<Item = (f32, f32)> {
    (0..CANDIDATES).map(move |i| {
        let f = 1.0 - i as f32 / CANDIDATES as f32;
        (lo * f, hi * f)
    })
}

/// The weighted `q`-quantile of a distribution.
pub fn quantile(dist: &Distribution, q: f64) -> f32 {
    let mut pts = dist.points.clone();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pts.iter().map(|p| p.1).sum();
    let target = q.clamp(0.0, 1.0) * total;
    let mut below = 0.0;
    for &(x, w) in &pts {
        below += w;
        if below >= target {
            return x;
        }
    }
    pts.last().map_or(0.0, |p| p.0)
}

/// The clipping range `[lo, hi]` that `method` picks for a uniform quantizer.
pub fn uniform_range(
    dist: &Distribution,
    bits: u8,
    symmetric: bool,
    method: RangeMethod,
) -> (f32, f32) {
    if dist.is_empty() {
        return (0.0, 0.0);
    }
    let (lo, hi) = (dist.min(), dist.max());
    let (lo, hi) = if symmetric {
        let m = lo.abs().max(hi.abs());
        (-m, m)
    } else {
        (lo, hi)
    };
    match method {
        RangeMethod::MinMax => (lo, hi),
        RangeMethod::Percentile(p) => {
            let up = quantile(dist, p / 100.0);
            let down = quantile(dist, 1.0 - p / 100.0);
            if symmetric {
                let m = up.abs().max(down.abs());
                (-m, m)
            } else {
                (down, up)
            }
        }
        RangeMethod::Lp(p) => best(candidates(lo, hi), |(l, h)| {
            // `Uniform::fake(x, 0)` written out with its parameters read once: the same
            // arithmetic, inlined into the AVX2 loop over every weight of every candidate.
            let (s, z) = Uniform::per_tensor(bits, symmetric, l, h).parameters(0);
            let (qmin, qmax) = Uniform::levels(bits, symmetric);
            dist.lp_error(p, |x| {
                ((round_half_up_by_floor(x / s) + z).clamp(qmin, qmax) - z) * s
            })
        }),
        RangeMethod::Kl => best(candidates(lo, hi), |(l, h)| {
            kl_divergence(dist, bits, symmetric, l, h)
        }),
    }
}

/// A per-tensor uniform quantizer calibrated on `dist`.
pub fn uniform(dist: &Distribution, bits: u8, symmetric: bool, method: RangeMethod) -> Uniform {
    let (lo, hi) = uniform_range(dist, bits, symmetric, method);
    Uniform::per_tensor(bits, symmetric, lo, hi)
}

/// One quantizer per channel (weights: per output channel), each calibrated on its own values:
/// the channels are searched in parallel, each on its own, so the result does not depend on
/// the thread count.
pub fn uniform_per_channel(
    channels: &[Distribution],
    bits: u8,
    symmetric: bool,
    method: RangeMethod,
) -> Uniform {
    let (scale, zero_point) = channels
        .par_iter()
        .map(|d| {
            let (lo, hi) = uniform_range(d, bits, symmetric, method);
            Uniform::from_range(bits, symmetric, lo, hi)
        })
        .unzip();
    Uniform {
        bits,
        symmetric,
        scale,
        zero_point,
        group: 1,
    }
}

/// The candidate with the lowest score (the first of equals, so the widest range wins ties).
/// Scores are computed in parallel and compared in order, so the choice does not depend on the
/// thread count.
fn best<C: Copy + Send + Sync>(
    cands: impl Iterator<Item = C>,
    score: impl Fn(C) -> f64 + Sync,
) -> C {
    let cands: Vec<C> = cands.collect();
    let scores: Vec<f64> = cands.par_iter().map(|&c| score(c)).collect();
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s < scores[best] {
            best = i;
        }
    }
    cands[best]
}

/// KL(P‖Q) of the distribution against its quantized version on a 2048-bin grid. P is the
/// distribution with values outside `[lo, hi]` moved to the edge bins; Q spreads each
/// quantization cell's mass evenly over the bins of that cell where P is non-zero.
fn kl_divergence(dist: &Distribution, bits: u8, symmetric: bool, lo: f32, hi: f32) -> f64 {
    const BINS: usize = 2048;
    if hi <= lo {
        return f64::INFINITY;
    }
    let width = (hi - lo) / BINS as f32;
    let mut p = vec![0.0f64; BINS];
    for &(x, w) in &dist.points {
        let b = (((x - lo) / width) as isize).clamp(0, BINS as isize - 1) as usize;
        p[b] += w;
    }
    let u = Uniform::per_tensor(bits, symmetric, lo, hi);
    // Bins are grouped by the code their centre quantizes to.
    let code_of: Vec<i64> = (0..BINS)
        .map(|b| u.code(lo + (b as f32 + 0.5) * width, 0) as i64)
        .collect();
    let mut q = vec![0.0f64; BINS];
    let mut start = 0;
    while start < BINS {
        let mut end = start;
        while end < BINS && code_of[end] == code_of[start] {
            end += 1;
        }
        let mass: f64 = p[start..end].iter().sum();
        let support = p[start..end].iter().filter(|&&v| v > 0.0).count();
        if support > 0 {
            for b in start..end {
                if p[b] > 0.0 {
                    q[b] = mass / support as f64;
                }
            }
        }
        start = end;
    }
    let total: f64 = p.iter().sum();
    p.iter()
        .zip(&q)
        .filter(|&(&pi, _)| pi > 0.0)
        .map(|(&pi, &qi)| (pi / total) * ((pi / total) / (qi / total)).ln())
        .sum()
}

/// PTQ4ViT's twin-uniform search. Post-Softmax (`signed_split = false`): the coarse step is
/// fixed at `1/2^(b−1)` so the coarse range covers `[0, 1)`, and the fine step `large/2^m` is
/// searched. Post-GELU: the coarse step of the positive range and `m` are searched together.
/// The score is the mean squared error (PTQ4ViT uses a Hessian-guided metric, which needs
/// gradients qvit's calibration does not compute).
pub fn twin(dist: &Distribution, bits: u8, signed_split: bool) -> Twin {
    let half_codes = (1u32 << (bits - 1)) as f32;
    let larges: Vec<f32> = if signed_split {
        let hi = dist.max().max(f32::MIN_POSITIVE);
        (0..CANDIDATES)
            .map(|i| hi * (1.0 - i as f32 / CANDIDATES as f32) / (half_codes - 1.0))
            .collect()
    } else {
        vec![1.0 / half_codes]
    };
    let mut cands = Vec::new();
    for &large in &larges {
        for m in 0..=12 {
            cands.push(Twin {
                bits,
                small: large / (1u32 << m) as f32,
                large,
                signed_split,
            });
        }
    }
    let i = best(0..cands.len(), |i| {
        let t = &cands[i];
        dist.lp_error(2.0, |x| t.fake(x))
    });
    cands.swap_remove(i)
}

/// FQ-ViT's power-of-two factor: the layer-wise range is the min/max over all channels, the
/// base step is that range's step divided by `2^max_alpha`, and each channel takes the factor
/// `2^α` with the lowest squared error on its own values.
pub fn power_of_two_factor(channels: &[Distribution], bits: u8, max_alpha: u8) -> PowerOfTwoFactor {
    let lo = channels
        .iter()
        .map(Distribution::min)
        .fold(0.0f32, f32::min);
    let hi = channels
        .iter()
        .map(Distribution::max)
        .fold(0.0f32, f32::max);
    let (top_scale, zero_point) = Uniform::from_range(bits, false, lo, hi);
    let mut q = PowerOfTwoFactor {
        bits,
        scale: top_scale / (1u32 << max_alpha) as f32,
        zero_point,
        alpha: Vec::with_capacity(channels.len()),
    };
    let alpha = channels
        .iter()
        .map(|d| best(0..=max_alpha, |a| d.lp_error(2.0, |x| q.fake_with(x, a))))
        .collect();
    q.alpha = alpha;
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn laplace(n: usize, b: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| {
                let u = rng.unit() - 0.5;
                -b * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln()
            })
            .collect()
    }

    /// Expected squared error of a symmetric `bits` quantizer clipped at `alpha` on a unit
    /// Laplace density, by numerical integration.
    fn laplace_mse(alpha: f32, bits: u8) -> f64 {
        let u = Uniform::per_tensor(bits, true, -alpha, alpha);
        let (dx, mut e) = (1e-3f64, 0.0);
        let mut x = -30.0f64;
        while x < 30.0 {
            let err = x - u.fake(x as f32, 0) as f64;
            e += 0.5 * (-x.abs()).exp() * err * err * dx;
            x += dx;
        }
        e
    }

    #[test]
    fn mse_search_finds_the_laplace_optimum() {
        let values = laplace(200_000, 1.0, 7);
        let dist = Distribution::from_values(&values);
        let (_, clip) = uniform_range(&dist, 4, true, RangeMethod::Lp(2.0));
        // The true optimum by integration over a fine grid of clips.
        let optimum = (200..1200)
            .map(|i| i as f32 / 100.0)
            .min_by(|&a, &b| laplace_mse(a, 4).total_cmp(&laplace_mse(b, 4)))
            .unwrap();
        assert!(
            (clip - optimum).abs() < 0.05 * optimum + dist.max() / 100.0,
            "searched clip {clip}, optimum {optimum}"
        );
        // And clipping beats min-max by a wide margin on this heavy-tailed tensor.
        let mm = uniform(&dist, 4, true, RangeMethod::MinMax);
        let lp = uniform(&dist, 4, true, RangeMethod::Lp(2.0));
        assert!(
            dist.lp_error(2.0, |x| lp.fake(x, 0)) < 0.5 * dist.lp_error(2.0, |x| mm.fake(x, 0))
        );
    }

    #[test]
    fn minmax_and_percentile_by_hand() {
        let values: Vec<f32> = (0..=1000)
            .map(|i| i as f32 / 1000.0)
            .chain([50.0])
            .collect();
        let d = Distribution::from_values(&values);
        assert_eq!(
            uniform_range(&d, 8, false, RangeMethod::MinMax),
            (0.0, 50.0)
        );
        let (lo, hi) = uniform_range(&d, 8, false, RangeMethod::Percentile(99.0));
        assert!(lo.abs() < 0.02 && (hi - 0.99).abs() < 0.02, "{lo} {hi}");
    }

    #[test]
    fn kl_clips_an_outlier() {
        let mut values = laplace(50_000, 1.0, 3);
        values.push(400.0);
        let d = Distribution::from_values(&values);
        let (_, hi) = uniform_range(&d, 8, true, RangeMethod::Kl);
        assert!(hi < 40.0, "KL kept the outlier: {hi}");
    }

    #[test]
    fn twin_uses_the_fine_range_for_small_probabilities() {
        // Softmax-like: most mass tiny, a few large values.
        let mut values: Vec<f32> = (0..1000).map(|i| i as f32 * 1e-5).collect();
        values.extend([0.5, 0.9]);
        let d = Distribution::from_values(&values);
        let t = twin(&d, 4, false);
        assert_eq!(t.large, 1.0 / 8.0);
        assert!(t.small < t.large / 8.0, "fine step {}", t.small);
        let plain = Uniform::per_tensor(4, false, 0.0, 1.0);
        assert!(d.lp_error(2.0, |x| t.fake(x)) < d.lp_error(2.0, |x| plain.fake(x, 0)));
    }

    #[test]
    fn ptf_gives_wide_channels_larger_factors() {
        let narrow = Distribution::from_values(&[-0.1, 0.0, 0.05, 0.1]);
        let wide = Distribution::from_values(&[-8.0, 0.0, 4.0, 8.0]);
        let p = power_of_two_factor(&[narrow, wide], 8, 3);
        assert_eq!(p.alpha[1], 3);
        assert_eq!(p.alpha[0], 0);
    }
}
