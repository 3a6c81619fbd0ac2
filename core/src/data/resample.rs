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
    weights: Vec<Vec<i32>>,
}

impl Taps {
    /// The input indices that some output reads: from the first output's first to the last
    /// one's end.
    fn reads(&self) -> std::ops::Range<usize> {
        let start = self.first.first().copied().unwrap_or(0);
        let end = self
            .first
            .iter()
            .zip(&self.weights)
            .map(|(f, w)| f + w.len())
            .max()
            .unwrap_or(start);
        start..end.max(start)
    }
}

/// The taps of outputs `outputs` of an axis resized from `in_size` to `out_size` (each
/// output's window depends only on its own position, so a range of them is the same as
/// those outputs of the whole axis).
fn taps(in_size: usize, out_size: usize, filter: Filter, outputs: std::ops::Range<usize>) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let one = f64::from(1u32 << PRECISION_BITS);
    let mut first = Vec::with_capacity(outputs.len());
    let mut weights = Vec::with_capacity(outputs.len());
    for out in outputs {
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
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect();
        first.push(lo);
        weights.push(fixed);
    }
    Taps { first, weights }
}

/// A weighted sum's 8-bit result. Pillow's arithmetic is 32-bit (`INT32` sums of 8-bit
/// samples times the weights), which its 2 spare bits keep from overflowing; the sums here
/// wrap as its do.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Half of one in the weights' fixed point: every sum starts from it, to round.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// The part of a resized image that is kept (a crop of it): columns `x..x + width` and rows
/// `y..y + height` of the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Resizes an interleaved 8-bit image of `channels` channels from `width × height` to
/// `new_width × new_height`. Sizes must be non-zero (callers check).
pub fn resize(
    pixels: &[u8],
    size: (usize, usize),
    channels: usize,
    (new_width, new_height): (usize, usize),
    filter: Filter,
) -> Vec<u8> {
    let whole = Window {
        x: 0,
        y: 0,
        width: new_width,
        height: new_height,
    };
    resize_window(
        pixels,
        size,
        channels,
        (new_width, new_height),
        filter,
        whole,
    )
}

/// [`resize`], computing only the pixels of `window` (which must lie inside the resized
/// image): an evaluation's centre crop keeps about two thirds of a 500×375 image's resized
/// columns, and the rows the window's rows read are the only ones resampled across. Every
/// pixel is computed as in the whole image, so the window equals that crop of [`resize`]'s
/// result.
pub fn resize_window(
    pixels: &[u8],
    (width, height): (usize, usize),
    channels: usize,
    (new_width, new_height): (usize, usize),
    filter: Filter,
    window: Window,
) -> Vec<u8> {
    assert!(
        window.x + window.width <= new_width && window.y + window.height <= new_height,
        "the window lies inside the resized image"
    );
    let (columns, rows) = (
        window.x..window.x + window.width,
        window.y..window.y + window.height,
    );
    let along_height =
        (new_height != height).then(|| taps(height, new_height, filter, rows.clone()));
    // The input rows the window needs across: those its rows read, or its own.
    let needed = along_height.as_ref().map_or(rows, Taps::reads);
    let line = window.width * channels;
    let mut across = vec![0u8; needed.len() * line];
    if new_width != width {
        let t = taps(width, new_width, filter, columns);
        let row_len = width * channels;
        let rows = pixels[needed.start * row_len..needed.end * row_len].chunks_exact(row_len);
        horizontal(rows, &t, channels, &mut across);
    } else {
        for (out, y) in across.chunks_exact_mut(line.max(1)).zip(needed.clone()) {
            let start = (y * width + window.x) * channels;
            out.copy_from_slice(&pixels[start..start + line]);
        }
    }
    let Some(t) = along_height else {
        return across;
    };
    let mut out = vec![0u8; window.height * line];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, just checked.
        #[allow(unsafe_code)]
        unsafe {
            vertical_avx2(&across, needed.start, &t, &mut out)
        };
        return out;
    }
    vertical(&across, needed.start, &t, &mut out);
    out
}

/// The vertical pass: each line of `out` the weighted sum of the lines of `across` (which
/// start at input row `first_read`) that its taps read, all of a line's samples side by side.
#[inline(always)]
fn vertical(across: &[u8], first_read: usize, t: &Taps, out: &mut [u8]) {
    let line = out.len() / t.first.len().max(1);
    let mut sums = vec![0i32; line];
    for (row, (&first, weights)) in out
        .chunks_exact_mut(line.max(1))
        .zip(t.first.iter().zip(&t.weights))
    {
        sums.fill(HALF);
        for (k, &w) in weights.iter().enumerate() {
            let start = (first + k - first_read) * line;
            for (s, &p) in sums.iter_mut().zip(&across[start..start + line]) {
                *s = s.wrapping_add(i32::from(p).wrapping_mul(w));
            }
        }
        for (o, &s) in row.iter_mut().zip(&sums) {
            *o = clip8(s);
        }
    }
}

/// [`vertical`] compiled for AVX2, whose 32-bit multiplies the compiler puts in lanes (the
/// baseline x86-64 has none).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_avx2(across: &[u8], first_read: usize, t: &Taps, out: &mut [u8]) {
    vertical(across, first_read, t, out)
}

/// Rows resampled along their width into `out` (the window's columns, `channels` samples per
/// pixel, one line per row): RGB in AVX2 lanes where the CPU has them, else each pixel's sums
/// in registers.
fn horizontal<'a>(rows: impl Iterator<Item = &'a [u8]>, t: &Taps, channels: usize, out: &mut [u8]) {
    let line = t.first.len() * channels;
    let lines = out.chunks_exact_mut(line.max(1));
    match channels {
        #[cfg(target_arch = "x86_64")]
        3 if std::arch::is_x86_feature_detected!("avx2") => {
            let pairs = lanes::Pairs::new(t);
            for (row, out) in rows.zip(lines) {
                // SAFETY: the CPU has AVX2, just checked.
                #[allow(unsafe_code)]
                unsafe {
                    lanes::rgb_avx2(row, t, &pairs, out)
                };
            }
        }
        1 => rows
            .zip(lines)
            .for_each(|(r, o)| horizontal_of::<1>(r, t, o)),
        3 => rows
            .zip(lines)
            .for_each(|(r, o)| horizontal_of::<3>(r, t, o)),
        4 => rows
            .zip(lines)
            .for_each(|(r, o)| horizontal_of::<4>(r, t, o)),
        _ => {
            for (row, out) in rows.zip(lines) {
                let taps = t.first.iter().zip(&t.weights);
                for (pixel, (&first, weights)) in out.chunks_exact_mut(channels).zip(taps) {
                    for (c, o) in pixel.iter_mut().enumerate() {
                        let sum = weights.iter().enumerate().fold(HALF, |s, (k, &w)| {
                            let v = i32::from(row[(first + k) * channels + c]);
                            s.wrapping_add(v.wrapping_mul(w))
                        });
                        *o = clip8(sum);
                    }
                }
            }
        }
    }
}

/// One row of [`horizontal`] for `C` channels, each pixel's sums in registers.
fn horizontal_of<const C: usize>(row: &[u8], t: &Taps, out: &mut [u8]) {
    let taps = t.first.iter().zip(&t.weights);
    for (pixel, (&first, weights)) in out.chunks_exact_mut(C).zip(taps) {
        let mut sums = [HALF; C];
        let read = &row[first * C..(first + weights.len()) * C];
        for (p, &w) in read.chunks_exact(C).zip(weights) {
            for (s, &v) in sums.iter_mut().zip(p) {
                *s = s.wrapping_add(i32::from(v).wrapping_mul(w));
            }
        }
        for (o, s) in pixel.iter_mut().zip(sums) {
            *o = clip8(s);
        }
    }
}

/// RGB rows in AVX2 lanes: two taps of a pixel per register, as `[R G B · R G B ·]` of 32-bit
/// lanes (one 8-byte load, a byte shuffle and a widening) times `[w w w w w' w' w' w']`.
/// The sums wrap modulo 2³² as Pillow's 32-bit ones do, and addition modulo 2³² does not depend
/// on its order, so the lanes' sums (the second tap's lanes added to the first's at the end,
/// the rounding half last) are the same bits as one sum in order.
#[cfg(target_arch = "x86_64")]
mod lanes {
    #![allow(unsafe_code)]

    use std::arch::x86_64::*;

    use super::{HALF, PRECISION_BITS, Taps};

    /// Each output's weights in pairs of taps, each weight four times (`[w w w w w' w' w' w']`,
    /// a zero weight after an odd last tap), and where each output's pairs start.
    pub(super) struct Pairs {
        weights: Vec<i32>,
        starts: Vec<usize>,
    }

    impl Pairs {
        pub(super) fn new(t: &Taps) -> Self {
            let mut weights = Vec::new();
            let mut starts = vec![0];
            for w in &t.weights {
                for pair in w.chunks(2) {
                    let second = pair.get(1).copied().unwrap_or(0);
                    weights.extend([pair[0]; 4]);
                    weights.extend([second; 4]);
                }
                starts.push(weights.len());
            }
            Pairs { weights, starts }
        }
    }

    /// One RGB row of [`super::horizontal`].
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn rgb_avx2(row: &[u8], t: &Taps, pairs: &Pairs, out: &mut [u8]) {
        // Bytes 0–2 and 3–5 of the load into lanes 0–2 and 4–6 (their low bytes; `-1` zeroes).
        let spread = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        for (x, pixel) in out.chunks_exact_mut(3).enumerate() {
            let weights = &pairs.weights[pairs.starts[x]..pairs.starts[x + 1]];
            let mut sums = _mm256_setzero_si256();
            let mut at = t.first[x] * 3;
            for w in weights.chunks_exact(8) {
                // Two pixels from `at` (which is inside the row); past its end, zeros.
                let bytes = match row.get(at..at + 8) {
                    Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
                    None => {
                        let mut b = [0u8; 8];
                        let n = row.len() - at;
                        b[..n].copy_from_slice(&row[at..]);
                        u64::from_le_bytes(b)
                    }
                };
                // SAFETY: AVX2 is the caller's promise; `w` holds 8 i32.
                unsafe {
                    let v = _mm_shuffle_epi8(_mm_cvtsi64_si128(bytes as i64), spread);
                    let w = _mm256_loadu_si256(w.as_ptr().cast());
                    sums = _mm256_add_epi32(sums, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(v), w));
                }
                at += 6;
            }
            let rgb = {
                let both = _mm_add_epi32(
                    _mm256_castsi256_si128(sums),
                    _mm256_extracti128_si256::<1>(sums),
                );
                let both = _mm_add_epi32(both, _mm_set1_epi32(HALF));
                // `clip8` in lanes: the shifted sums lie in −512..512, which the two
                // saturating packs clamp to 0..=255 (the first to 0..512, inside i16).
                let shifted = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(both);
                let words = _mm_packus_epi32(shifted, shifted);
                _mm_cvtsi128_si32(_mm_packus_epi16(words, words)) as u32
            };
            pixel.copy_from_slice(&rgb.to_le_bytes()[..3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(500, 236), (97, 236), (236, 236), (3, 1), (1, 7)] {
            for f in [Filter::Bicubic, Filter::Bilinear] {
                let t = taps(i, o, f, 0..o);
                for w in &t.weights {
                    let s: i64 = w.iter().map(|&w| i64::from(w)).sum();
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

    /// The definition as first written here: the whole image, 64-bit sums, each output pixel
    /// and channel summed on its own.
    fn by_definition(
        pixels: &[u8],
        (width, height): (usize, usize),
        channels: usize,
        (new_width, new_height): (usize, usize),
        filter: Filter,
    ) -> Vec<u8> {
        // One output sample: the weighted sum of the samples its taps read, rounded, clamped.
        let weighted = |weights: &[i32], sample: &dyn Fn(usize) -> u8| {
            let sum: i64 = (weights.iter().enumerate())
                .map(|(k, &w)| i64::from(sample(k)) * i64::from(w))
                .sum();
            ((sum + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS).clamp(0, 255) as u8
        };
        let mut image = pixels.to_vec();
        let mut w = width;
        if new_width != width {
            let t = taps(width, new_width, filter, 0..new_width);
            let mut out = vec![0u8; new_width * height * channels];
            for y in 0..height {
                let row = &image[y * width * channels..(y + 1) * width * channels];
                for x in 0..new_width {
                    for c in 0..channels {
                        let sample = |k: usize| row[(t.first[x] + k) * channels + c];
                        out[(y * new_width + x) * channels + c] = weighted(&t.weights[x], &sample);
                    }
                }
            }
            image = out;
            w = new_width;
        }
        if new_height != height {
            let t = taps(height, new_height, filter, 0..new_height);
            let stride = w * channels;
            let mut out = vec![0u8; new_height * stride];
            for y in 0..new_height {
                for i in 0..stride {
                    let sample = |k: usize| image[(t.first[y] + k) * stride + i];
                    out[y * stride + i] = weighted(&t.weights[y], &sample);
                }
            }
            image = out;
        }
        image
    }

    /// Whole images and windows of them equal the definition's pixels, over shrinking,
    /// growing and unchanged axes, 1 to 5 channels, both filters, windows anywhere
    /// (ImageNet's 500×375 to MIT's 314×236 and its 224 crop among them).
    #[test]
    fn windows_equal_the_definition() {
        let mut rng = crate::rng::Rng::new(21);
        let mut cases = vec![((500, 375), 3, (314, 236), Filter::Bicubic)];
        for _ in 0..60 {
            let size = |rng: &mut crate::rng::Rng| 1 + rng.below(60);
            let (w, h) = (size(&mut rng), size(&mut rng));
            let new_w = if rng.below(5) == 0 { w } else { size(&mut rng) };
            let new_h = if rng.below(5) == 0 { h } else { size(&mut rng) };
            let channels = 1 + rng.below(5);
            let filter = [Filter::Bicubic, Filter::Bilinear][rng.below(2)];
            cases.push(((w, h), channels, (new_w, new_h), filter));
        }
        for ((w, h), channels, (nw, nh), filter) in cases {
            let image: Vec<u8> = (0..w * h * channels)
                .map(|_| rng.below(256) as u8)
                .collect();
            let want = by_definition(&image, (w, h), channels, (nw, nh), filter);
            let case = format!("{w}×{h}×{channels} → {nw}×{nh} {filter:?}");
            assert_eq!(
                resize(&image, (w, h), channels, (nw, nh), filter),
                want,
                "{case}"
            );
            for _ in 0..4 {
                let x = rng.below(nw);
                let y = rng.below(nh);
                let width = 1 + rng.below(nw - x);
                let height = 1 + rng.below(nh - y);
                let window = Window {
                    x,
                    y,
                    width,
                    height,
                };
                let got = resize_window(&image, (w, h), channels, (nw, nh), filter, window);
                let crop: Vec<u8> = (y..y + height)
                    .flat_map(|r| {
                        want[(r * nw + x) * channels..(r * nw + x + width) * channels].to_vec()
                    })
                    .collect();
                assert_eq!(got, crop, "{case}, {window:?}");
            }
        }
    }
}
