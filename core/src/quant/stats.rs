//! Calibration statistics: what the float model's activations look like on calibration images,
//! kept so that any recipe and any bit widths can be applied later without running the model.
//!
//! Two passes over the images: the first finds every point's per-channel minimum and maximum,
//! the second fills histograms over those ranges — 2,048 bins per tensor and 128 per channel,
//! enough for percentile, L_p and KL range search and for the explorer's per-channel boxes.
//! Per-channel histograms are also what lets a recipe see a tensor *after* migration or
//! shifting (each channel's mass is moved, then re-binned) without the raw values.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::histogram::{Distribution, Histogram};
use super::points::{Layout, QuantPoint, TensorKind, points};
use super::record::{ChannelRanges, PointHistograms};
use crate::data::Dataset;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::exec::float::FloatExecutor;
use crate::graph::Graph;
use crate::tensor::{Tensor, TensorMut};
use crate::weights::{FoldedWeights, NodeParams};

pub const TENSOR_BINS: usize = 2048;
pub const CHANNEL_BINS: usize = 128;
/// Calibration images kept, with their float logits, as the [`Sample`].
pub const SAMPLE_IMAGES: usize = 128;
/// At most this many f32 values of sample images (16 MiB): 128 Fashion-MNIST images, 27 at
/// 224 × 224 × 3.
pub const SAMPLE_VALUES: usize = 1 << 22;

/// Box-plot figures of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxStats {
    pub min: f32,
    pub p1: f32,
    pub p25: f32,
    pub median: f32,
    pub p75: f32,
    pub p99: f32,
    pub max: f32,
}

/// Statistics of one quantization point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointStats {
    pub name: String,
    pub kind: TensorKind,
    pub layout: Layout,
    pub min: f32,
    pub max: f32,
    pub channel_min: Vec<f32>,
    pub channel_max: Vec<f32>,
    /// Over `[min, max]`, [`TENSOR_BINS`] bins.
    #[serde(skip)]
    pub histogram: Histogram,
    /// One per channel over that channel's `[min, max]`, [`CHANNEL_BINS`] bins.
    #[serde(skip)]
    pub channel_histograms: Vec<Histogram>,
}

impl PointStats {
    pub fn channels(&self) -> usize {
        self.channel_min.len()
    }

    /// The whole tensor as weighted points for range search.
    pub fn distribution(&self) -> Distribution {
        Distribution::from_histogram(&self.histogram)
    }

    pub fn channel_distribution(&self, c: usize) -> Distribution {
        Distribution::from_histogram(&self.channel_histograms[c])
    }

    /// The value below which fraction `q` of the tensor lies.
    pub fn quantile(&self, q: f64) -> f32 {
        self.histogram.quantile(q)
    }

    pub fn channel_box(&self, c: usize) -> BoxStats {
        let h = &self.channel_histograms[c];
        BoxStats {
            min: self.channel_min[c],
            p1: h.quantile(0.01),
            p25: h.quantile(0.25),
            median: h.quantile(0.5),
            p75: h.quantile(0.75),
            p99: h.quantile(0.99),
            max: self.channel_max[c],
        }
    }

    /// Largest channel range over the median channel range: how much the channels differ.
    pub fn channel_spread(&self) -> f32 {
        let largest = self
            .channel_min
            .iter()
            .zip(&self.channel_max)
            .map(|(lo, hi)| hi - lo)
            .fold(0.0, f32::max);
        largest / self.median_channel_range().max(f32::MIN_POSITIVE)
    }

    /// The median over channels of max − min (0 without channels).
    pub fn median_channel_range(&self) -> f32 {
        let mut ranges: Vec<f32> = self
            .channel_min
            .iter()
            .zip(&self.channel_max)
            .map(|(lo, hi)| hi - lo)
            .collect();
        ranges.sort_by(f32::total_cmp);
        ranges.get(ranges.len() / 2).copied().unwrap_or(0.0)
    }

    /// The statistics of `(x − shift_c) / scale_c`: the tensor after Trio-ViT's filter-wise
    /// shifting (`scale = 1`) or channel-wise migration (`shift = 0`).
    pub fn transformed(&self, scale: Option<&[f32]>, shift: Option<&[f32]>) -> PointStats {
        let f = |c: usize, x: f32| (x - shift.map_or(0.0, |s| s[c])) / scale.map_or(1.0, |s| s[c]);
        let channel_min: Vec<f32> = (0..self.channels())
            .map(|c| f(c, self.channel_min[c]).min(f(c, self.channel_max[c])))
            .collect();
        let channel_max: Vec<f32> = (0..self.channels())
            .map(|c| f(c, self.channel_min[c]).max(f(c, self.channel_max[c])))
            .collect();
        let min = channel_min.iter().copied().fold(f32::INFINITY, f32::min);
        let max = channel_max
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let mut histogram = Histogram::new(min, max, TENSOR_BINS);
        let channel_histograms = (0..self.channels())
            .map(|c| {
                let src = &self.channel_histograms[c];
                histogram.add_mapped(src, |x| f(c, x));
                let mut h = Histogram::new(channel_min[c], channel_max[c], CHANNEL_BINS);
                h.add_mapped(src, |x| f(c, x));
                h
            })
            .collect();
        PointStats {
            name: self.name.clone(),
            kind: self.kind,
            layout: self.layout.clone(),
            min,
            max,
            channel_min,
            channel_max,
            histogram,
            channel_histograms,
        }
    }
}

/// Everything calibration learned about one model with one set of weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationStats {
    pub model: String,
    pub resolution: usize,
    /// Fingerprint of the weights the statistics were taken with (see [`fingerprint`]).
    pub weights_fingerprint: u64,
    /// Where the calibration images came from, and how many were used.
    pub data: String,
    pub images: usize,
    /// How the images were chosen from `data` (absent in files from before qvit recorded it,
    /// and when the caller chose them).
    #[serde(default)]
    pub selection: Option<crate::data::Selection>,
    /// The images used, in order: paths below a folder's root, or indices into an IDX file.
    #[serde(default)]
    pub image_names: Vec<String>,
    pub points: Vec<PointStats>,
    /// The first calibration images and the float model's logits on them (absent in files
    /// written before qvit kept them).
    #[serde(skip)]
    pub sample: Option<Sample>,
}

/// A few calibration images and the float model's logits on them: what an output-aware range
/// search compares the quantized model against, so that re-quantizing never runs the float
/// model again.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `[N, C, H, W]`, normalised as the model reads them.
    pub images: Tensor,
    /// `[N, classes]`.
    pub logits: Tensor,
}

/// FNV-1a over every run-time parameter: statistics taken with other weights are refused.
pub fn fingerprint(params: &FoldedWeights) -> u64 {
    let mut digest = Digest::new();
    let mut eat = |v: &[f32]| {
        digest.f32s(v);
    };
    for p in &params.nodes {
        match p {
            NodeParams::Conv { weight, bias } => {
                eat(weight);
                eat(bias);
            }
            NodeParams::Linear { weight, bias } => {
                eat(weight);
                eat(bias.as_deref().unwrap_or(&[]));
            }
            NodeParams::ChannelAffine { scale, shift } => {
                eat(scale);
                eat(shift);
            }
            NodeParams::LayerNorm { weight, bias } => {
                eat(weight);
                eat(bias);
            }
            NodeParams::ClassTokenPosEmbed { cls, pos } => {
                eat(cls);
                eat(pos);
            }
            NodeParams::None | NodeParams::Folded => {}
        }
    }
    digest.finish()
}

/// Runs the float model over the first `images` images of `data` (batches of `batch`) and
/// records every quantization point. `progress(done, total)` counts images over both passes.
pub fn calibrate(
    graph: &Graph,
    params: &FoldedWeights,
    data: &Dataset,
    images: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CalibrationStats> {
    let never = std::sync::atomic::AtomicBool::new(false);
    calibrate_until(graph, params, data, images, batch, &never, progress)
}

/// [`calibrate`], giving up with an error after the batch during which `cancel` becomes true
/// (a UI's cancel button; partial statistics would be wrong, so none are returned).
pub fn calibrate_until(
    graph: &Graph,
    params: &FoldedWeights,
    data: &Dataset,
    images: usize,
    batch: usize,
    cancel: &std::sync::atomic::AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CalibrationStats> {
    let n = images.min(data.len());
    if n == 0 {
        return Error::field(
            &data.origin,
            "calibration images",
            "the calibration set is empty; give at least one image",
        );
    }
    let executor = FloatExecutor::new(graph, params)?;
    let pts = points(graph);
    let mut at_node: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, p) in pts.iter().enumerate() {
        at_node.entry(p.node).or_default().push(i);
    }
    let batch = batch.max(1);

    // One pass of the float model over the images, handing each point's tensor to `record`.
    let mut pass = |first: usize, record: &mut dyn FnMut(usize, &TensorMut)| -> Result<()> {
        for start in (0..n).step_by(batch) {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Error::field(&data.origin, "calibration", "cancelled");
            }
            let b = data.batch(start..(start + batch).min(n))?;
            executor.forward_observed(&b.images, &mut |id, t| {
                for &i in at_node.get(&id).map_or(&[][..], Vec::as_slice) {
                    record(i, t);
                }
            })?;
            progress(first + start + b.labels.len(), 2 * n);
        }
        Ok(())
    };

    // Pass 1: per-channel ranges.
    let mut recorded: Vec<ChannelRanges> = pts
        .iter()
        .map(|p| ChannelRanges::new(p.layout.channels))
        .collect();
    pass(0, &mut |i, t| recorded[i].record(&pts[i].layout, t))?;
    let ranges: Vec<Vec<(f32, f32)>> = recorded.iter().map(ChannelRanges::ranges).collect();
    for (p, r) in pts.iter().zip(&ranges) {
        if let Some((lo, hi)) = r
            .iter()
            .find(|(lo, hi)| !(lo.is_finite() && hi.is_finite()))
        {
            return Error::field(
                &data.origin,
                &p.name,
                format!(
                    "the float model's activations reach [{lo}, {hi}] here on the calibration \
                     images (NaN stands for a NaN seen); check the weights and the input \
                     normalisation"
                ),
            );
        }
    }

    // Pass 2: histograms over those ranges.
    let mut stats: Vec<PointStats> = pts
        .iter()
        .zip(&ranges)
        .map(|(p, r)| empty_stats(p, r))
        .collect();
    let mut histograms: Vec<PointHistograms> = stats
        .iter_mut()
        .map(|s| PointHistograms {
            channels: std::mem::take(&mut s.channel_histograms),
            whole: std::mem::take(&mut s.histogram),
        })
        .collect();
    pass(n, &mut |i, t| histograms[i].record(&pts[i].layout, t))?;
    for (s, h) in stats.iter_mut().zip(histograms) {
        (s.channel_histograms, s.histogram) = (h.channels, h.whole);
    }

    let item: usize = graph.input_shape().iter().product();
    let kept = n.min(SAMPLE_IMAGES).min((SAMPLE_VALUES / item).max(1));
    let images = data.batch(0..kept)?.images;
    let logits = executor.forward(&images)?;
    Ok(CalibrationStats {
        model: graph.model.clone(),
        resolution: graph.resolution,
        weights_fingerprint: fingerprint(params),
        data: data.origin.clone(),
        images: n,
        selection: None,
        image_names: Vec::new(),
        points: stats,
        sample: Some(Sample { images, logits }),
    })
}

fn empty_stats(p: &QuantPoint, ranges: &[(f32, f32)]) -> PointStats {
    let min = ranges.iter().map(|r| r.0).fold(f32::INFINITY, f32::min);
    let max = ranges.iter().map(|r| r.1).fold(f32::NEG_INFINITY, f32::max);
    PointStats {
        name: p.name.clone(),
        kind: p.kind,
        layout: p.layout.clone(),
        min,
        max,
        channel_min: ranges.iter().map(|r| r.0).collect(),
        channel_max: ranges.iter().map(|r| r.1).collect(),
        histogram: Histogram::new(min, max, TENSOR_BINS),
        channel_histograms: ranges
            .iter()
            .map(|r| Histogram::new(r.0, r.1, CHANNEL_BINS))
            .collect(),
    }
}

const METADATA_KEY: &str = "qvit.calibration";
const SAMPLE_IMAGES_TENSOR: &str = "qvit.sample.images";
const SAMPLE_LOGITS_TENSOR: &str = "qvit.sample.logits";

impl CalibrationStats {
    /// A digest of everything a quant plan can read from these statistics: the serialized
    /// fields, every histogram and the calibration sample. Two statistics with one digest give
    /// the same plan for the same settings.
    pub fn digest(&self) -> u64 {
        let mut d = Digest::new();
        // Serializing plain data cannot fail; the digest of an error message would still differ.
        d.str(&ron::to_string(self).unwrap_or_else(|e| e.to_string()));
        let histogram = |d: &mut Digest, h: &Histogram| {
            d.f32s(&[h.lo, h.hi]);
            for &c in &h.counts {
                d.u64(c);
            }
        };
        for p in &self.points {
            histogram(&mut d, &p.histogram);
            for h in &p.channel_histograms {
                histogram(&mut d, h);
            }
        }
        if let Some(sample) = &self.sample {
            d.f32s(&sample.images.data).f32s(&sample.logits.data);
        }
        d.finish()
    }

    /// Checks that these statistics were taken on `graph` with `params`.
    pub fn check_matches(&self, graph: &Graph, params: &FoldedWeights, origin: &str) -> Result<()> {
        if self.model != graph.model || self.resolution != graph.resolution {
            return Error::field(
                origin,
                "model",
                format!(
                    "the statistics are of `{}` at {} px, not `{}` at {} px; run `qvit calibrate` for this model",
                    self.model, self.resolution, graph.model, graph.resolution
                ),
            );
        }
        if self.weights_fingerprint != fingerprint(params) {
            return Error::field(
                origin,
                "weights",
                "the statistics were taken with different weights; run `qvit calibrate` again",
            );
        }
        let expected = points(graph);
        if self.points.len() != expected.len() {
            return Error::field(
                origin,
                "points",
                "the statistics do not list this model's quantization points; run `qvit calibrate` again",
            );
        }
        for (p, e) in self.points.iter().zip(&expected) {
            if p.name != e.name || p.layout != e.layout || p.channels() != e.layout.channels {
                return Error::field(
                    origin,
                    &p.name,
                    format!(
                        "the statistics hold `{}` with {} channels where the model has `{}` with \
                         {}; run `qvit calibrate` again",
                        p.name,
                        p.channels(),
                        e.name,
                        e.layout.channels
                    ),
                );
            }
        }
        if let Some(sample) = &self.sample
            && sample.images.shape[1..] != *graph.input_shape()
        {
            return Error::field(
                origin,
                "sample",
                format!(
                    "the sample images are {:?}, model `{}` takes {:?}; run `qvit calibrate` again",
                    &sample.images.shape[1..],
                    graph.model,
                    graph.input_shape()
                ),
            );
        }
        Ok(())
    }

    /// The statistics as a safetensors file: histograms and channel ranges as tensors named
    /// `<point>.histogram`, `<point>.channel_histograms`, `<point>.channel_min|max`; everything
    /// else as JSON in the header's metadata.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let bytes_u64 = |v: &mut dyn Iterator<Item = u64>| -> Vec<u8> {
            v.flat_map(u64::to_le_bytes).collect()
        };
        for p in &self.points {
            let c = p.channels();
            tensors.push((
                format!("{}.histogram", p.name),
                safetensors::Dtype::U64,
                vec![TENSOR_BINS],
                bytes_u64(&mut p.histogram.counts.iter().copied()),
            ));
            tensors.push((
                format!("{}.channel_histograms", p.name),
                safetensors::Dtype::U64,
                vec![c, CHANNEL_BINS],
                bytes_u64(
                    &mut p
                        .channel_histograms
                        .iter()
                        .flat_map(|h| h.counts.iter().copied()),
                ),
            ));
        }
        if let Some(sample) = &self.sample {
            for (name, t) in [
                (SAMPLE_IMAGES_TENSOR, &sample.images),
                (SAMPLE_LOGITS_TENSOR, &sample.logits),
            ] {
                tensors.push((
                    name.to_string(),
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ));
            }
        }
        let meta = serde_json::to_string(self).map_err(|e| Error::InvalidField {
            origin: self.model.clone(),
            field: "calibration".into(),
            message: e.to_string(),
        })?;
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (name.as_str(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidField {
                origin: self.model.clone(),
                field: "calibration".into(),
                message: e.to_string(),
            })?;
        safetensors::serialize(
            views,
            Some(HashMap::from([(METADATA_KEY.to_string(), meta)])),
        )
        .map_err(|e| Error::InvalidField {
            origin: self.model.clone(),
            field: "calibration".into(),
            message: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::ron_io::write_atomic(path, &self.to_safetensors()?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors(&bytes, &path.display().to_string())
    }

    pub fn from_safetensors(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |field: &str, message: String| Error::InvalidField {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            bad(
                "safetensors",
                format!("not a readable safetensors file: {e}"),
            )
        })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad("safetensors", e.to_string()))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| {
                bad(
                    METADATA_KEY,
                    "no calibration metadata; this is not a file written by `qvit calibrate`"
                        .into(),
                )
            })?;
        let mut stats: CalibrationStats =
            serde_json::from_str(meta).map_err(|e| bad(METADATA_KEY, e.to_string()))?;
        for p in &mut stats.points {
            let read = |suffix: &str, len: usize| -> Result<Vec<u64>> {
                let name = format!("{}.{suffix}", p.name);
                let t = file
                    .tensor(&name)
                    .map_err(|_| bad(&name, "missing".into()))?;
                if t.dtype() != safetensors::Dtype::U64 || t.data().len() != len * 8 {
                    return Err(bad(
                        &name,
                        format!(
                            "expected {len} u64 counts, got {:?} {:?}",
                            t.dtype(),
                            t.shape()
                        ),
                    ));
                }
                Ok(t.data()
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect())
            };
            let c = p.channels();
            if p.channel_max.len() != c {
                return Err(bad(
                    &p.name,
                    "channel minima and maxima differ in length".into(),
                ));
            }
            p.histogram = Histogram {
                lo: p.min,
                hi: p.max.max(p.min),
                counts: read("histogram", TENSOR_BINS)?,
            };
            let all = read("channel_histograms", c * CHANNEL_BINS)?;
            p.channel_histograms = all
                .chunks(CHANNEL_BINS)
                .enumerate()
                .map(|(i, counts)| Histogram {
                    lo: p.channel_min[i],
                    hi: p.channel_max[i].max(p.channel_min[i]),
                    counts: counts.to_vec(),
                })
                .collect();
        }
        stats.sample = read_sample(&file, &stats, origin)?;
        stats.validate(origin)?;
        Ok(stats)
    }

    /// Refuses values calibration cannot have produced: non-finite or reversed ranges, channel
    /// ranges outside the tensor's, magnitudes beyond [`MAX_MAGNITUDE`], empty histograms, and
    /// a sample that is not finite.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let sane = |v: f32| v.is_finite() && v.abs() <= MAX_MAGNITUDE;
        for p in &self.points {
            let bad = |message: String| Error::field(origin, &p.name, message);
            if !(sane(p.min) && sane(p.max) && p.min <= p.max) {
                return bad(format!(
                    "range [{}, {}] is not an ordered pair of finite values within ±{MAX_MAGNITUDE:e}; \
                     the file is damaged: run `qvit calibrate` again",
                    p.min, p.max
                ));
            }
            if let Some(c) = (0..p.channels()).find(|&c| {
                let (lo, hi) = (p.channel_min[c], p.channel_max[c]);
                !(sane(lo) && sane(hi) && lo <= hi && lo >= p.min && hi <= p.max)
            }) {
                return bad(format!(
                    "channel {c}'s range [{}, {}] is not inside the tensor's [{}, {}]; the file is \
                     damaged: run `qvit calibrate` again",
                    p.channel_min[c], p.channel_max[c], p.min, p.max
                ));
            }
            if p.histogram.counts.iter().all(|&n| n == 0) {
                return bad(
                    "the histogram is empty; the file is damaged: run `qvit calibrate` again"
                        .into(),
                );
            }
        }
        if let Some(sample) = &self.sample
            && let Some(i) = sample
                .images
                .data
                .iter()
                .chain(&sample.logits.data)
                .position(|v| !v.is_finite())
        {
            return Error::field(
                origin,
                SAMPLE_IMAGES_TENSOR,
                format!("value {i} of the sample is not finite; run `qvit calibrate` again"),
            );
        }
        Ok(())
    }
}

/// Largest activation magnitude a statistics file may hold: far beyond any trained network's
/// (ViT outliers reach thousands), and small enough for the integer program's zero points and
/// scales to stay exact.
pub const MAX_MAGNITUDE: f32 = 1e9;

/// The sample of a statistics file: none in files from before qvit kept one, else images of
/// the model's input shape and as many logit rows.
fn read_sample(
    file: &safetensors::SafeTensors,
    stats: &CalibrationStats,
    origin: &str,
) -> Result<Option<Sample>> {
    let read = |name: &str| -> Result<Option<Tensor>> {
        let Ok(t) = file.tensor(name) else {
            return Ok(None);
        };
        if t.dtype() != safetensors::Dtype::F32
            || t.data().len() != 4 * t.shape().iter().product::<usize>()
        {
            return Error::field(
                origin,
                name,
                format!("expected f32 values, got {:?} {:?}", t.dtype(), t.shape()),
            );
        }
        let data = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Ok(Some(Tensor::new(t.shape().to_vec(), data)))
    };
    match (read(SAMPLE_IMAGES_TENSOR)?, read(SAMPLE_LOGITS_TENSOR)?) {
        (None, None) => Ok(None),
        (Some(images), Some(logits))
            if images.shape.len() == 4
                && images.shape[2..] == [stats.resolution, stats.resolution]
                && logits.shape.len() == 2
                && logits.shape[0] == images.shape[0]
                && images.shape[0] > 0 =>
        {
            Ok(Some(Sample { images, logits }))
        }
        _ => Error::field(
            origin,
            SAMPLE_IMAGES_TENSOR,
            "the sample needs images [N, C, H, W] at the model's resolution and logits [N, \
             classes]; run `qvit calibrate` again",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(channel_min: Vec<f32>, channel_max: Vec<f32>) -> PointStats {
        PointStats {
            name: "x".into(),
            kind: TensorKind::DepthwiseInput,
            layout: Layout {
                outer: 1,
                channels: channel_min.len(),
                inner: 1,
                take: 0..1,
            },
            min: 0.0,
            max: 0.0,
            channel_min,
            channel_max,
            histogram: Histogram::default(),
            channel_histograms: Vec::new(),
        }
    }

    #[test]
    fn channel_spread_is_largest_over_median_range() {
        // Ranges 1, 8, 2: median 2, largest 8.
        let p = point(vec![0.0, -4.0, 1.0], vec![1.0, 4.0, 3.0]);
        assert_eq!(p.median_channel_range(), 2.0);
        assert_eq!(p.channel_spread(), 4.0);
        // No channels: nothing to compare, and no panic.
        let empty = point(Vec::new(), Vec::new());
        assert_eq!(empty.median_channel_range(), 0.0);
        assert_eq!(empty.channel_spread(), 0.0);
    }
}
