//! Per-layer quality of a quant plan: signal-to-quantization-noise ratios of weights and
//! activations, and per-channel activation boxes before and after Trio-ViT's transforms. One
//! API for the CLI's tables and the explorer's views.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::fake::FakeQuantExecutor;
use super::histogram::Histogram;
use super::plan::{QuantPlan, out_channels, weight_of};
use super::stats::{BoxStats, CalibrationStats};
use crate::error::{Error, Result};
use crate::exec::float::FloatExecutor;
use crate::exec::int::IntExecutor;
use crate::exec::int::IntProgram;
use crate::exec::int::program::PointCodes;
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::weights::FoldedWeights;

/// SQNRs above this are reported as this (a tensor quantized without error).
pub const SQNR_CAP_DB: f64 = 200.0;

/// `10·log10(Σx² / Σ(x − x̂)²)`, capped at [`SQNR_CAP_DB`].
pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        return SQNR_CAP_DB;
    }
    (10.0 * (signal / noise).log10()).min(SQNR_CAP_DB)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightQuality {
    pub layer: String,
    pub bits: u8,
    pub sqnr_db: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationQuality {
    pub point: String,
    pub bits: u8,
    /// The float network's tensor against its own quantization (this point's error alone).
    pub tensor_sqnr_db: f64,
    /// The float network's tensor against the fake-quant network's (error accumulated so far).
    pub network_sqnr_db: f64,
}

/// SQNR of every quantized layer's weights.
pub fn weight_quality(
    params: &FoldedWeights,
    quantized: &FoldedWeights,
    plan: &QuantPlan,
) -> Vec<WeightQuality> {
    plan.weights
        .iter()
        .filter_map(|wp| {
            let w = weight_of(&params.nodes[wp.node])?;
            let q = weight_of(&quantized.nodes[wp.node])?;
            let signal: f64 = w.iter().map(|&x| (x as f64).powi(2)).sum();
            let noise: f64 = w
                .iter()
                .zip(q)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum();
            Some(WeightQuality {
                layer: wp.layer.clone(),
                bits: wp.bits,
                sqnr_db: sqnr_db(signal, noise),
            })
        })
        .collect()
}

/// Every activation point's float values on `images` (per image, in layout order), with the
/// energy of the float values and of their quantization error at that point alone.
struct FloatPoints {
    values: Vec<Vec<f32>>,
    signal: Vec<f64>,
    tensor_noise: Vec<f64>,
}

fn float_points(
    graph: &Graph,
    params: &FoldedWeights,
    plan: &QuantPlan,
    images: &Tensor,
) -> Result<FloatPoints> {
    let mut at_node = vec![Vec::new(); graph.nodes().len()];
    for (i, a) in plan.activations.iter().enumerate() {
        at_node[a.node].push(i);
    }
    let n = plan.activations.len();
    let mut out = FloatPoints {
        values: vec![Vec::new(); n],
        signal: vec![0.0; n],
        tensor_noise: vec![0.0; n],
    };
    FloatExecutor::new(graph, params)?.forward_observed(images, &mut |id, t| {
        for &p in &at_node[id] {
            let a = &plan.activations[p];
            let mut kept = Vec::with_capacity(a.layout.len() * t.batch());
            for x in t.data.chunks(t.item_len()) {
                a.layout.for_each(|c, i| {
                    let v = x[i];
                    out.signal[p] += (v as f64).powi(2);
                    out.tensor_noise[p] += (v as f64 - a.fake(v, c) as f64).powi(2);
                    kept.push(v);
                });
            }
            out.values[p] = kept;
        }
    })?;
    Ok(out)
}

/// SQNR of every activation point on `images`, from one float and one fake-quant pass.
pub fn activation_quality(
    graph: &Graph,
    params: &FoldedWeights,
    executor: &FakeQuantExecutor,
    images: &Tensor,
) -> Result<Vec<ActivationQuality>> {
    let plan = executor.plan();
    let mut at_node = vec![Vec::new(); graph.nodes().len()];
    for (i, a) in plan.activations.iter().enumerate() {
        at_node[a.node].push(i);
    }
    let float = float_points(graph, params, plan, images)?;
    let mut network_noise = vec![0.0f64; plan.activations.len()];
    executor.forward_observed(images, &mut |id, t| {
        for &p in &at_node[id] {
            let a = &plan.activations[p];
            let mut k = 0;
            for x in t.data.chunks(t.item_len()) {
                a.layout.for_each(|_, i| {
                    network_noise[p] += (x[i] as f64 - float.values[p][k] as f64).powi(2);
                    k += 1;
                });
            }
        }
    })?;
    Ok(plan
        .activations
        .iter()
        .enumerate()
        .map(|(p, a)| ActivationQuality {
            point: a.point.clone(),
            bits: a.bits,
            tensor_sqnr_db: sqnr_db(float.signal[p], float.tensor_noise[p]),
            network_sqnr_db: sqnr_db(float.signal[p], network_noise[p]),
        })
        .collect())
}

/// Per activation point of `plan` (in its order), the SQNR of the integer executor's codes —
/// decoded with the compile-time scales — against the float network's tensor on `images`:
/// where integer arithmetic adds error to the fake-quant network's.
pub fn int_network_quality(
    graph: &Graph,
    params: &FoldedWeights,
    plan: &QuantPlan,
    program: &IntProgram,
    images: &Tensor,
) -> Result<Vec<f64>> {
    let float = float_points(graph, params, plan, images)?;
    let points = plan
        .activations
        .iter()
        .map(|a| {
            program
                .points
                .iter()
                .find(|p| p.name == a.point)
                .ok_or_else(|| Error::Graph {
                    model: graph.model.clone(),
                    layer: a.point.clone(),
                    message: "the integer program was compiled from another plan".into(),
                })
        })
        .collect::<Result<Vec<&PointCodes>>>()?;
    let mut kept = vec![false; graph.nodes().len()];
    for p in &points {
        kept[p.node] = true;
    }
    let int = IntExecutor::new(program);
    // Per image in parallel, summed in image order (the same sums on any thread count).
    let per_image: Vec<Vec<f64>> = (0..images.batch())
        .into_par_iter()
        .map(|b| {
            let codes = int.run_image(images.item(b), &|node| kept[node]);
            points
                .iter()
                .zip(&plan.activations)
                .enumerate()
                .map(|(p, (point, a))| {
                    let values = &codes[point.node];
                    let mut k = b * a.layout.len();
                    let mut noise = 0.0;
                    point.layout.for_each(|c, i| {
                        let v = point.encoding.value_of(values[i], c);
                        noise += (v - float.values[p][k] as f64).powi(2);
                        k += 1;
                    });
                    noise
                })
                .collect()
        })
        .collect();
    let mut noise = vec![0.0; plan.activations.len()];
    for image in per_image {
        for (total, n) in noise.iter_mut().zip(image) {
            *total += n;
        }
    }
    Ok(noise
        .iter()
        .zip(&float.signal)
        .map(|(&n, &s)| sqnr_db(s, n))
        .collect())
}

/// Per-channel boxes of one point as calibrated, and as the quantizer sees them after the
/// plan's migration or shift (the same boxes when the plan has neither).
pub fn channel_boxes(
    stats: &CalibrationStats,
    plan: &QuantPlan,
    point: &str,
) -> Option<(Vec<BoxStats>, Vec<BoxStats>)> {
    let st = stats.points.iter().find(|p| p.name == point)?;
    let a = plan.activations.iter().find(|a| a.point == point)?;
    let before: Vec<BoxStats> = (0..st.channels()).map(|c| st.channel_box(c)).collect();
    let after = if a.migration.is_some() || a.shift.is_some() {
        let t = st.transformed(a.migration.as_deref(), a.shift.as_deref());
        (0..t.channels()).map(|c| t.channel_box(c)).collect()
    } else {
        before.clone()
    };
    Some((before, after))
}

/// What the quantizer at `point` sees: the tensor's histogram after the plan's migration or
/// shift (as calibrated when it has neither), and the quantizer's levels over that range —
/// the picture of which values survive and which are clipped.
#[derive(Debug, Clone)]
pub struct QuantizerView {
    pub histogram: Histogram,
    pub levels: Vec<f32>,
    /// The histogram is of the migrated or shifted tensor.
    pub transformed: bool,
}

pub fn quantizer_view(
    stats: &CalibrationStats,
    plan: &QuantPlan,
    point: &str,
) -> Option<QuantizerView> {
    let st = stats.points.iter().find(|p| p.name == point)?;
    let a = plan.activations.iter().find(|a| a.point == point)?;
    let transformed = a.migration.is_some() || a.shift.is_some();
    let histogram = if transformed {
        st.transformed(a.migration.as_deref(), a.shift.as_deref())
            .histogram
    } else {
        st.histogram.clone()
    };
    // Per-channel quantizers (weights aside, only before a transform) are shown for channel 0.
    let levels = sampled_levels(histogram.lo, histogram.hi, |x| a.quantizer.fake(x, 0));
    Some(QuantizerView {
        histogram,
        levels,
        transformed,
    })
}

/// The distinct values the plan's quantizer at `point` produces for inputs in `[lo, hi]` of
/// channel `channel` (in the calibrated domain, migration and shift included): the levels to
/// draw over a histogram. Found by sampling the quantizer at 8,192 points, so at most that many
/// levels come back; the first and last are the clipping range within `[lo, hi]`.
pub fn activation_levels(
    plan: &QuantPlan,
    point: &str,
    channel: usize,
    lo: f32,
    hi: f32,
) -> Vec<f32> {
    let Some(a) = plan.activations.iter().find(|a| a.point == point) else {
        return Vec::new();
    };
    sampled_levels(lo, hi, |x| a.fake(x, channel))
}

/// The levels of a layer's weight quantizer for output channel `channel` within `[lo, hi]`,
/// sampled as [`activation_levels`].
pub fn weight_levels(plan: &QuantPlan, layer: &str, channel: usize, lo: f32, hi: f32) -> Vec<f32> {
    let Some(w) = plan.weights.iter().find(|w| w.layer == layer) else {
        return Vec::new();
    };
    sampled_levels(lo, hi, |x| w.quantizer.fake(x, channel))
}

fn sampled_levels(lo: f32, hi: f32, fake: impl Fn(f32) -> f32) -> Vec<f32> {
    const SAMPLES: usize = 8192;
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    let mut levels: Vec<f32> = Vec::new();
    for i in 0..=SAMPLES {
        let y = fake(lo + (hi - lo) * i as f32 / SAMPLES as f32);
        if levels.last() != Some(&y) {
            levels.push(y);
        }
    }
    levels.sort_by(f32::total_cmp);
    levels.dedup();
    levels
}

/// Per-output-channel boxes of a weighted layer's (folded) weights, or `None` for a layer
/// without weights.
pub fn weight_boxes(
    graph: &Graph,
    params: &FoldedWeights,
    plan: &QuantPlan,
    layer: &str,
) -> Option<Vec<BoxStats>> {
    let wp = plan.weights.iter().find(|w| w.layer == layer)?;
    let w = weight_of(&params.nodes[wp.node])?;
    let channels = out_channels(&graph.nodes()[wp.node].op).max(1);
    let per = w.len() / channels;
    if per == 0 || w.len() % channels != 0 {
        return None;
    }
    Some(
        w.chunks(per)
            .map(|c| {
                let mut v = c.to_vec();
                v.sort_by(f32::total_cmp);
                let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
                BoxStats {
                    min: v[0],
                    p1: q(0.01),
                    p25: q(0.25),
                    median: q(0.5),
                    p75: q(0.75),
                    p99: q(0.99),
                    max: v[v.len() - 1],
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqnr_by_hand() {
        assert!((sqnr_db(100.0, 1.0) - 20.0).abs() < 1e-12);
        assert_eq!(sqnr_db(1.0, 0.0), SQNR_CAP_DB);
    }

    #[test]
    fn sampled_levels_of_a_two_bit_quantizer() {
        // Symmetric 2 bits, step 0.5: codes −1, 0, 1 → levels −0.5, 0, 0.5 inside [−2, 2].
        let u = super::super::quantizer::Uniform::per_tensor(2, true, -0.5, 0.5);
        let levels = sampled_levels(-2.0, 2.0, |x| u.fake(x, 0));
        assert_eq!(levels, vec![-0.5, 0.0, 0.5]);
        assert!(sampled_levels(1.0, 0.0, |x| x).is_empty());
    }
}
