//! Resizing 8-bit images exactly as Pillow's `Image.resize` does, which is what torchvision's
//! `Resize` calls on the PIL images of the official evaluation code: so that qvit's input
//! tensors equal those the published accuracies were measured on.
//!
//! The method (Pillow's convolution resampler): for each output pixel, a filter centred on the
//! pixel's centre mapped into the input, stretched by the scale factor when shrinking (so that
//! it averages over the pixels it covers); its weights are normalised to sum to one, then turned
//! into fixed-point integers with 22 fractional bits. The image is resampled horizontally
//! first, rounded and clamped to 8 bits, then vertically, rounded and clamped again.

/// Fractional bits of the fixed-point weights (32-bit accumulators, 8-bit samples, 2 spare).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The interpolation filters Pillow offers that evaluation transforms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Keys' cubic convolution with a = −0.5 (Pillow's BICUBIC), support 2.
    Bicubic,
    /// The triangle filter (Pillow's BILINEAR), support 1.
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x).max(0.0),
        }
    }
}

/// For each output position along one axis: the first input index read and the fixed-point
/// weights of the inputs from there on.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i64>>,
}

fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let one = f64::from(1u32 << PRECISION_BITS);
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for out in 0..out_size {
        let centre = (out as f64 + 0.5) * scale;
        // Truncation toward zero, then clamping, as Pillow bounds the window.
        let lo = ((centre - support + 0.5) as i64).max(0) as usize;
        let hi = ((centre + support + 0.5) as i64).min(in_size as i64) as usize;
        let raw: Vec<f64> = (lo..hi.max(lo))
            .map(|i| filter.weight((i as f64 - centre + 0.5) / filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|w| {
                let w = if total != 0.0 { w / total } else { *w };
                // Rounded half away from zero, then truncated: Pillow's conversion.
                if w < 0.0 {
                    (-0.5 + w * one) as i64
                } else {
                    (0.5 + w * one) as i64
                }
            })
            .collect();
        first.push(lo);
        weights.push(fixed);
    }
    Taps { first, weights }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved 8-bit image of `channels` channels from `width × height` to
/// `new_width × new_height`. Sizes must be non-zero (callers check).
pub fn resize(
    pixels: &[u8],
    (width, height): (usize, usize),
    channels: usize,
    (new_width, new_height): (usize, usize),
    filter: Filter,
) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut image = pixels.to_vec();
    let mut w = width;
    if new_width != width {
        let t = taps(width, new_width, filter);
        let mut out = vec![0u8; new_width * height * channels];
        for y in 0..height {
            let row = &image[y * width * channels..(y + 1) * width * channels];
            for x in 0..new_width {
                for c in 0..channels {
                    let acc = t.weights[x]
                        .iter()
                        .enumerate()
                        .map(|(k, wt)| i64::from(row[(t.first[x] + k) * channels + c]) * wt)
                        .sum::<i64>();
                    out[(y * new_width + x) * channels + c] = clip8(half + acc);
                }
            }
        }
        image = out;
        w = new_width;
    }
    if new_height != height {
        let t = taps(height, new_height, filter);
        let stride = w * channels;
        let mut out = vec![0u8; new_height * stride];
        for y in 0..new_height {
            for i in 0..stride {
                let acc = t.weights[y]
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| i64::from(image[(t.first[y] + k) * stride + i]) * wt)
                    .sum::<i64>();
                out[y * stride + i] = clip8(half + acc);
            }
        }
        image = out;
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(500, 236), (97, 236), (236, 236), (3, 1), (1, 7)] {
            for f in [Filter::Bicubic, Filter::Bilinear] {
                let t = taps(i, o, f);
                for w in &t.weights {
                    let s: i64 = w.iter().sum();
                    assert!(
                        (s - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                        "{i}->{o}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_constant_image_stays_constant_and_identity_is_exact() {
        let img = vec![77u8; 31 * 17 * 3];
        assert!(
            resize(&img, (31, 17), 3, (224, 9), Filter::Bicubic)
                .iter()
                .all(|&v| v == 77)
        );
        let ramp: Vec<u8> = (0..40 * 30).map(|i| (i % 251) as u8).collect();
        assert_eq!(resize(&ramp, (40, 30), 1, (40, 30), Filter::Bicubic), ramp);
    }

    #[test]
    fn halving_a_two_pixel_pattern_by_hand() {
        // Bilinear 2 → 1: centre 1.0 in input coordinates, filter stretched to support 2;
        // both pixels at distance 0.5 / 2 get weight 0.75, normalised to 0.5 each.
        assert_eq!(resize(&[10, 20], (2, 1), 1, (1, 1), Filter::Bilinear), [15]);
        // Bicubic 4 → 2: output 0 is centred at 1.0, the filter stretched by 2; inputs 0..4
        // sit at −0.25, 0.25, 0.75, 1.25 after scaling, weighing k = 0.8671875, 0.8671875,
        // 0.2265625, −0.0703125 (sum 1.890625): [0, 100, 0, 0] gives 100·0.8671875/1.890625
        // = 45.87 → 46.
        assert_eq!(
            resize(&[0, 100, 0, 0], (4, 1), 1, (2, 1), Filter::Bicubic)[0],
            46
        );
    }
}
