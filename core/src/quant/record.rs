//! What one calibration pass records of a quantization point, batch by batch: per-channel
//! extremes (pass 1), then per-channel and whole-tensor histograms over them (pass 2).
//!
//! Both walk each image's tensor in memory order, run by run ([`Layout::runs_of`]), so
//! a channels-last row is read once rather than once per channel at a stride; the images of a
//! batch are split between threads, each filling its own partial record, and the partials are
//! merged. Extremes merge by min/max and histograms by adding integer counts, so the result is
//! the same whatever the split or the thread count.

use rayon::prelude::*;

use super::histogram::Histogram;
use super::points::{Layout, Run};
use crate::tensor::TensorMut;

/// Each channel's minimum and maximum so far, and whether it has seen a NaN (which `f32::min`
/// would drop: calibration refuses it instead).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRanges {
    lo: Vec<f32>,
    hi: Vec<f32>,
    nan: Vec<bool>,
}

impl ChannelRanges {
    pub fn new(channels: usize) -> Self {
        Self {
            lo: vec![f32::INFINITY; channels],
            hi: vec![f32::NEG_INFINITY; channels],
            nan: vec![false; channels],
        }
    }

    /// Widens the ranges to every element `layout` owns in every image of `batch`.
    pub fn record(&mut self, layout: &Layout, batch: &TensorMut) {
        let merged = in_parallel(
            batch,
            || Self::new(layout.channels),
            Self::merge,
            |r, x| r.record_image(layout, x),
        );
        if let Some(part) = merged {
            self.merge_from(&part);
        }
    }

    fn record_image(&mut self, layout: &Layout, item: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was checked just above.
            #[allow(unsafe_code)]
            unsafe {
                self.record_image_avx2(layout, item)
            };
            return;
        }
        self.record_image_portable(layout, item);
    }

    /// [`ChannelRanges::record_image_portable`] compiled for AVX2, once per image: the runs of
    /// a small map are a few dozen values, too short to pay for a dispatch each.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn record_image_avx2(&mut self, layout: &Layout, item: &[f32]) {
        self.record_image_portable(layout, item)
    }

    #[inline(always)]
    fn record_image_portable(&mut self, layout: &Layout, item: &[f32]) {
        for (run, xs) in layout.runs_of(item) {
            match run {
                // Element-wise over the row, as comparisons (see [`extremes`]): vectorised.
                Run::Row => {
                    let n = xs.len();
                    let extremes = self.lo[..n].iter_mut().zip(&mut self.hi[..n]);
                    for (((lo, hi), nan), &x) in extremes.zip(&mut self.nan[..n]).zip(xs) {
                        *lo = if x < *lo { x } else { *lo };
                        *hi = if x > *hi { x } else { *hi };
                        *nan |= x.is_nan();
                    }
                }
                Run::Channel(c) => {
                    let (lo, hi, nan) = extremes(xs, self.lo[c], self.hi[c]);
                    self.lo[c] = lo;
                    self.hi[c] = hi;
                    self.nan[c] |= nan;
                }
            }
        }
    }

    fn merge(mut self, other: Self) -> Self {
        self.merge_from(&other);
        self
    }

    fn merge_from(&mut self, other: &Self) {
        for c in 0..self.lo.len() {
            self.lo[c] = self.lo[c].min(other.lo[c]);
            self.hi[c] = self.hi[c].max(other.hi[c]);
            self.nan[c] |= other.nan[c];
        }
    }

    /// `(min, max)` per channel: `(NaN, NaN)` for a channel that saw a NaN, `(∞, −∞)` for one
    /// that saw nothing.
    pub fn ranges(&self) -> Vec<(f32, f32)> {
        (0..self.lo.len())
            .map(|c| {
                if self.nan[c] {
                    (f32::NAN, f32::NAN)
                } else {
                    (self.lo[c], self.hi[c])
                }
            })
            .collect()
    }
}

/// Lanes of [`extremes`]: two SSE registers or one AVX2 register.
const EXTREME_LANES: usize = 8;

/// `(min, max)` of `xs` and of `lo`, `hi` (neither NaN), and whether `xs` holds a NaN.
///
/// A NaN fails every comparison, so it never replaces an extreme: the NaN-skipping
/// `f32::min`/`max` per element (whose NaN handling kept the loop scalar), written as
/// comparisons the compiler turns into `minps`/`maxps` over [`EXTREME_LANES`] running extremes.
#[inline(always)]
fn extremes(xs: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    const L: usize = EXTREME_LANES;
    let (mut lows, mut highs, mut nans) = ([lo; L], [hi; L], [false; L]);
    let mut blocks = xs.chunks_exact(L);
    for block in &mut blocks {
        for i in 0..L {
            let x = block[i];
            lows[i] = if x < lows[i] { x } else { lows[i] };
            highs[i] = if x > highs[i] { x } else { highs[i] };
            nans[i] |= x.is_nan();
        }
    }
    for (i, &x) in blocks.remainder().iter().enumerate() {
        lows[i] = if x < lows[i] { x } else { lows[i] };
        highs[i] = if x > highs[i] { x } else { highs[i] };
        nans[i] |= x.is_nan();
    }
    let low = lows.into_iter().fold(lo, |m, x| if x < m { x } else { m });
    let high = highs.into_iter().fold(hi, |m, x| if x > m { x } else { m });
    (low, high, nans.contains(&true))
}

/// A point's per-channel histograms and its whole-tensor histogram, counted together.
#[derive(Debug, Clone, PartialEq)]
pub struct PointHistograms {
    pub channels: Vec<Histogram>,
    pub whole: Histogram,
}

impl PointHistograms {
    /// Adds every element `layout` owns in every image of `batch` to its channel's histogram
    /// and to the whole tensor's.
    pub fn record(&mut self, layout: &Layout, batch: &TensorMut) {
        let rules = Rules::of(self);
        let empty = || Counts {
            channels: vec![0; rules.channels.len() * rules.stride],
            whole: vec![0; WHOLE_COPIES * self.whole.bins()],
        };
        let merged = in_parallel(batch, empty, Counts::merge, |counts, x| {
            counts.record_image(&rules, layout, x)
        });
        let Some(counts) = merged else {
            return;
        };
        for (h, part) in self
            .channels
            .iter_mut()
            .zip(counts.channels.chunks_exact(rules.stride))
        {
            for (a, b) in h.counts.iter_mut().zip(part) {
                *a += b;
            }
        }
        for copy in counts.whole.chunks_exact(self.whole.bins()) {
            for (a, b) in self.whole.counts.iter_mut().zip(copy) {
                *a += b;
            }
        }
    }
}

/// [`Histogram::bin_of`] of one histogram, its width computed once, in a form that vectorises:
/// the same bin for every value, NaN included.
#[derive(Debug, Clone, Copy)]
struct Bins {
    lo: f32,
    width: f32,
    /// The last bin as a float; 0 when the width is 0, so that every value lands in bin 0.
    last: f32,
}

impl Bins {
    fn of(h: &Histogram) -> Self {
        let width = h.width();
        Self {
            lo: h.lo,
            width,
            last: if width > 0.0 {
                (h.bins() - 1) as f32
            } else {
                0.0
            },
        }
    }

    /// Truncating after the clamp is the same as clamping the truncated value; `f32::max`
    /// sends a NaN to 0, as `NaN as isize` does.
    #[inline(always)]
    fn bin(self, x: f32) -> u32 {
        ((x - self.lo) / self.width).max(0.0).min(self.last) as u32
    }
}

/// The bin rules of a point's histograms: the whole tensor's, and each channel's, whose counts
/// sit `stride` apart in [`Counts::channels`].
struct Rules {
    channels: Vec<Bins>,
    stride: usize,
    whole: Bins,
}

impl Rules {
    fn of(h: &PointHistograms) -> Self {
        Self {
            channels: h.channels.iter().map(Bins::of).collect(),
            stride: h.channels.iter().map(Histogram::bins).max().unwrap_or(1),
            whole: Bins::of(&h.whole),
        }
    }
}

/// One thread's counts.
struct Counts {
    /// Channel `c`'s bin `b` at `c * stride + b`.
    channels: Vec<u64>,
    /// [`WHOLE_COPIES`] copies of the whole tensor's counts, one after another.
    whole: Vec<u64>,
}

/// Copies of the whole-tensor histogram that consecutive values are counted in, in turn: most
/// values fall in a few bins near the middle, and an increment that waits for the one before
/// it to the same bin stalls the loop; four copies keep four increments in flight. The copies
/// are added up at the end, so the counts are the same.
const WHOLE_COPIES: usize = 4;

/// Values binned at a time: their bins are computed in vector registers, then counted.
const CHUNK: usize = 64;

impl Counts {
    fn record_image(&mut self, rules: &Rules, layout: &Layout, item: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was checked just above.
            #[allow(unsafe_code)]
            unsafe {
                self.record_image_avx2(rules, layout, item)
            };
            return;
        }
        self.record_image_portable(rules, layout, item);
    }

    /// [`Counts::record_image_portable`] compiled for AVX2 (the bins of a chunk in vector
    /// registers: the x86-64 baseline has no vector float-to-integer conversion with
    /// saturation), once per image, as [`ChannelRanges::record_image`] is.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn record_image_avx2(&mut self, rules: &Rules, layout: &Layout, item: &[f32]) {
        self.record_image_portable(rules, layout, item)
    }

    #[inline(always)]
    fn record_image_portable(&mut self, rules: &Rules, layout: &Layout, item: &[f32]) {
        let (mut at, mut whole) = ([0u32; CHUNK], [0u32; CHUNK]);
        let bins = self.whole.len() / WHOLE_COPIES;
        for (run, xs) in layout.runs_of(item) {
            match run {
                Run::Row => {
                    for (k, xs) in xs.chunks(CHUNK).enumerate() {
                        let first = k * CHUNK;
                        let channels = &rules.channels[first..first + xs.len()];
                        for ((b, &x), rule) in at.iter_mut().zip(xs).zip(channels) {
                            *b = rule.bin(x);
                        }
                        for (b, &x) in whole.iter_mut().zip(xs) {
                            *b = rules.whole.bin(x);
                        }
                        for i in 0..xs.len() {
                            self.channels[(first + i) * rules.stride + at[i] as usize] += 1;
                            self.whole[i % WHOLE_COPIES * bins + whole[i] as usize] += 1;
                        }
                    }
                }
                Run::Channel(c) => {
                    let (rule, base) = (rules.channels[c], c * rules.stride);
                    for xs in xs.chunks(CHUNK) {
                        for (b, &x) in at.iter_mut().zip(xs) {
                            *b = rule.bin(x);
                        }
                        for (b, &x) in whole.iter_mut().zip(xs) {
                            *b = rules.whole.bin(x);
                        }
                        for i in 0..xs.len() {
                            self.channels[base + at[i] as usize] += 1;
                            self.whole[i % WHOLE_COPIES * bins + whole[i] as usize] += 1;
                        }
                    }
                }
            }
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for (a, b) in self.channels.iter_mut().zip(&other.channels) {
            *a += b;
        }
        for (a, b) in self.whole.iter_mut().zip(&other.whole) {
            *a += b;
        }
        self
    }
}

/// Folds the images of `batch` into records, one per thread's share of the images, and merges
/// them: `None` for an empty batch.
fn in_parallel<R: Send>(
    batch: &TensorMut,
    empty: impl Fn() -> R + Send + Sync,
    merge: impl Fn(R, R) -> R + Send + Sync,
    record_image: impl Fn(&mut R, &[f32]) + Send + Sync,
) -> Option<R> {
    let item = batch.item_len();
    let images = batch.shape.first().copied().unwrap_or(0);
    if item == 0 || images == 0 {
        return None;
    }
    let share = images.div_ceil(rayon::current_num_threads()).max(1);
    batch.data[..images * item]
        .par_chunks(share * item)
        .map(|images| {
            let mut r = empty();
            for x in images.chunks_exact(item) {
                record_image(&mut r, x);
            }
            r
        })
        .reduce_with(merge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    /// Channel `c`'s elements of one image, the slow way: every `(outer, c, inner)` index.
    fn channel_values(l: &Layout, item: &[f32], c: usize) -> Vec<f32> {
        let mut v = Vec::new();
        for o in 0..l.outer {
            for j in l.take.clone() {
                v.push(item[(o * l.channels + c) * l.inner + j]);
            }
        }
        v
    }

    fn batch(images: usize, l: &Layout, seed: u32) -> Tensor {
        let item = l.outer * l.channels * l.inner;
        let data = (0..images * item)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                (h % 20_011) as f32 / 1000.0 - 7.0 + (i % 5) as f32
            })
            .collect();
        Tensor::new(vec![images, item], data)
    }

    fn layouts() -> Vec<Layout> {
        vec![
            // Channels-last rows (DeiT's tokens × channels).
            Layout {
                outer: 13,
                channels: 7,
                inner: 1,
                take: 0..1,
            },
            // Rows longer than a chunk of binned values.
            Layout {
                outer: 3,
                channels: 150,
                inner: 1,
                take: 0..1,
            },
            // Channels-first planes (a conv's output).
            Layout {
                outer: 1,
                channels: 5,
                inner: 9,
                take: 0..9,
            },
            // One part of a linear-attention product.
            Layout {
                outer: 3,
                channels: 4,
                inner: 6,
                take: 2..5,
            },
        ]
    }

    /// The lane-wise extremes against `f32::min`/`max` element by element, over lengths that
    /// fill no block, whole blocks and partial ones, with NaNs and infinities among the values.
    #[test]
    fn extremes_equal_the_element_by_element_fold() {
        let mut rng = crate::rng::Rng::new(17);
        for len in 0..=41usize {
            for nan_at in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                let mut xs: Vec<f32> = (0..len).map(|_| 3.0 * rng.normal()).collect();
                if len > 2 {
                    xs[1] = f32::INFINITY;
                    xs[len - 2] = f32::NEG_INFINITY;
                }
                if let (Some(i), true) = (nan_at, len > 0) {
                    xs[i] = f32::NAN;
                }
                for (lo, hi) in [(f32::INFINITY, f32::NEG_INFINITY), (-0.5, 0.25)] {
                    let want = xs.iter().fold((lo, hi, false), |(l, h, n), &x| {
                        (l.min(x), h.max(x), n | x.is_nan())
                    });
                    assert_eq!(extremes(&xs, lo, hi), want, "{xs:?} from ({lo}, {hi})");
                }
            }
        }
    }

    #[test]
    fn ranges_and_histograms_equal_the_element_by_element_definition() {
        for l in layouts() {
            let batches = [batch(5, &l, 1), batch(1, &l, 2), batch(8, &l, 3)];
            let mut ranges = ChannelRanges::new(l.channels);
            for b in &batches {
                ranges.record(&l, &b.clone().view_mut());
            }
            let values = |c: usize| -> Vec<f32> {
                batches
                    .iter()
                    .flat_map(|b| b.data.chunks(b.item_len()))
                    .flat_map(|x| channel_values(&l, x, c))
                    .collect()
            };
            let got = ranges.ranges();
            for (c, &(lo, hi)) in got.iter().enumerate() {
                let v = values(c);
                assert_eq!(lo, v.iter().copied().fold(f32::INFINITY, f32::min));
                assert_eq!(hi, v.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            }

            let (lo, hi) = got.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |a, r| {
                (a.0.min(r.0), a.1.max(r.1))
            });
            let mut hist = PointHistograms {
                channels: got.iter().map(|r| Histogram::new(r.0, r.1, 16)).collect(),
                whole: Histogram::new(lo, hi, 64),
            };
            for b in &batches {
                hist.record(&l, &b.clone().view_mut());
            }
            let mut whole = Histogram::new(lo, hi, 64);
            for (c, h) in hist.channels.iter().enumerate() {
                let mut expected = Histogram::new(got[c].0, got[c].1, 16);
                for x in values(c) {
                    expected.add(x);
                    whole.add(x);
                }
                assert_eq!(h, &expected, "{l:?} channel {c}");
            }
            assert_eq!(hist.whole, whole, "{l:?}");
        }
    }

    #[test]
    fn bins_are_histogram_bins_for_every_value() {
        let values = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1e30,
            1e30,
            -3.0,
            -2.0,
            0.0,
            0.999_999,
            1.0,
            2.5,
            4.0,
            4.000_001,
        ];
        for h in [
            Histogram::new(-2.0, 4.0, 6),
            Histogram::new(1.0, 1.0, 128),
            Histogram::new(-1e-30, 1e-30, 2048),
        ] {
            for x in values {
                assert_eq!(Bins::of(&h).bin(x) as usize, h.bin_of(x), "{x} in {h:?}");
            }
        }
    }

    #[test]
    fn a_nan_is_kept_for_its_channel_only() {
        let l = &layouts()[0];
        let mut b = batch(3, l, 4);
        b.data[l.channels + 2] = f32::NAN;
        let mut ranges = ChannelRanges::new(l.channels);
        ranges.record(l, &b.clone().view_mut());
        let got = ranges.ranges();
        assert!(got[2].0.is_nan() && got[2].1.is_nan());
        assert!(
            got.iter()
                .enumerate()
                .all(|(c, r)| c == 2 || r.0.is_finite())
        );
    }

    #[test]
    fn records_do_not_depend_on_the_thread_count() {
        let l = &layouts()[2];
        let b = batch(11, l, 5);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut r = ChannelRanges::new(l.channels);
                r.record(l, &b.clone().view_mut());
                let mut h = PointHistograms {
                    channels: r
                        .ranges()
                        .iter()
                        .map(|r| Histogram::new(r.0, r.1, 32))
                        .collect(),
                    whole: Histogram::new(-7.0, 20.0, 128),
                };
                h.record(l, &b.clone().view_mut());
                (r, h)
            })
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }
}
