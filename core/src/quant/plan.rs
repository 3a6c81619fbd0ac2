//! The quant plan: a recipe resolved against one model's calibration statistics and weights —
//! for every activation point and every weighted layer its quantizer, bits, scales,
//! zero-points and any migration, shift or reparameterisation factors, with a note of what the
//! recipe did there. Plans are plain data (RON-serialisable); building one never runs the model.

use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::bits::BitWidths;
use super::histogram::Distribution;
use super::output_search;
use super::points::{Layout, TensorKind, points, readers};
use super::prepared::PreparedPoint;
use super::quantizer::{Log, Quantizer, Rounding, Uniform};
use super::range;
use super::recipe::{Granularity, Recipe, Technique};
use super::settings::{LayerBits, Override, QuantSettings};
use super::stats::{CalibrationStats, PointStats};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Op};
use crate::weights::{FoldedWeights, NodeParams};

/// How one activation tensor is quantized: `x̂ = s_c·Q((x − z_c)/s_c) + z_c` with `s_c` the
/// migration factors (1 without) and `z_c` the shifts (0 without).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationPlan {
    pub point: String,
    pub node: NodeId,
    pub kind: TensorKind,
    pub layout: Layout,
    pub bits: u8,
    pub quantizer: Quantizer,
    /// Trio-ViT channel-wise migration factors `s_c` (the depthwise weights are multiplied by them).
    pub migration: Option<Vec<f32>>,
    /// Trio-ViT filter-wise shifts `z_c` (compensated in the next layer's bias).
    pub shift: Option<Vec<f32>>,
    /// How ties are rounded (the recipe's setting).
    #[serde(default)]
    pub rounding: Rounding,
    /// What the recipe did here.
    pub note: String,
}

impl ActivationPlan {
    #[inline]
    pub fn fake(&self, x: f32, channel: usize) -> f32 {
        let s = self.migration.as_ref().map_or(1.0, |m| m[channel]);
        let z = self.shift.as_ref().map_or(0.0, |m| m[channel]);
        s * self
            .quantizer
            .fake_rounded((x - z) / s, channel, self.rounding)
            + z
    }

    /// Fake-quantizes this point's elements of one image's tensor in place: the same
    /// arithmetic as [`ActivationPlan::fake`], bit for bit. For many images, prepare once
    /// ([`PreparedPoint`]) and apply that.
    pub fn apply(&self, item: &mut [f32]) {
        PreparedPoint::new(self).apply(item)
    }
}

/// How one layer's weights are quantized: `Q(W ⊙ r)/r`, with `r` the input-channel factors a
/// technique moved into the weights (1 without).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightPlan {
    pub layer: String,
    pub node: NodeId,
    pub bits: u8,
    /// Symmetric uniform, one scale per output channel (or group, or tensor).
    pub quantizer: Uniform,
    /// Per input channel: Trio-ViT migration factors or RepQ-ViT reparameterisation factors.
    pub input_scale: Option<Vec<f32>>,
    pub note: String,
}

/// A resolved quantization of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantPlan {
    pub model: String,
    pub recipe: String,
    pub bits: BitWidths,
    pub overrides: Vec<Override>,
    pub activations: Vec<ActivationPlan>,
    pub weights: Vec<WeightPlan>,
}

impl QuantPlan {
    /// Refuses a plan made for another model, naming it.
    pub fn check_model(&self, graph: &Graph) -> Result<()> {
        if self.model == graph.model {
            return Ok(());
        }
        Err(Error::Graph {
            model: graph.model.clone(),
            layer: "(all)".into(),
            message: format!("the quant plan is for model `{}`", self.model),
        })
    }
}

/// Input channel read by weight element `e` of a conv or linear layer.
pub fn input_channel(op: &Op, e: usize) -> usize {
    match op {
        Op::Conv2d(c) | Op::PatchEmbed(c) => {
            let in_per_group = c.in_channels / c.groups;
            let per_out = in_per_group * c.kernel * c.kernel;
            let o = e / per_out;
            let ci = (e % per_out) / (c.kernel * c.kernel);
            (o / (c.out_channels / c.groups)) * in_per_group + ci
        }
        Op::Linear(l) => e % l.in_features,
        _ => 0,
    }
}

/// Output channels of a weighted op.
pub fn out_channels(op: &Op) -> usize {
    match op {
        Op::Conv2d(c) | Op::PatchEmbed(c) => c.out_channels,
        Op::Linear(l) => l.out_features,
        _ => 1,
    }
}

/// The weight tensor of a weighted node.
pub fn weight_of(params: &NodeParams) -> Option<&[f32]> {
    match params {
        NodeParams::Conv { weight, .. } | NodeParams::Linear { weight, .. } => Some(weight),
        _ => None,
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

fn minmax(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

/// Resolves `recipe` with `settings` on a model: `stats` from [`super::calibrate`] (checked
/// against the graph and weights by the caller), `params` the folded float weights.
pub fn build(
    graph: &Graph,
    params: &FoldedWeights,
    stats: &CalibrationStats,
    recipe: &Recipe,
    settings: &QuantSettings,
) -> Result<QuantPlan> {
    let never = AtomicBool::new(false);
    build_reporting(
        graph,
        params,
        stats,
        recipe,
        settings,
        &never,
        &mut |_, _| {},
    )
}

/// [`build`], with `progress(done, total)` over the quantizers of an output-aware range search
/// (the one step that takes long: it runs the quantized model on the calibration sample),
/// given up with an error once `cancel` becomes true.
pub fn build_reporting(
    graph: &Graph,
    params: &FoldedWeights,
    stats: &CalibrationStats,
    recipe: &Recipe,
    settings: &QuantSettings,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantPlan> {
    build_with(
        graph, params, stats, recipe, settings, None, cancel, progress,
    )
}

/// [`build`], taking from `earlier` (a plan of the same recipe, rounding, statistics and weights)
/// every activation entry whose requested bits are the same and every weight quantizer whose
/// bits and input factors are the same: range searches over per-channel statistics and weights
/// are most of a plan's cost at full size, and a plan that changes a few layers' widths needs
/// only theirs. The result equals [`build`]'s (tested for every recipe family).
pub fn build_reusing(
    graph: &Graph,
    params: &FoldedWeights,
    stats: &CalibrationStats,
    recipe: &Recipe,
    settings: &QuantSettings,
    earlier: &QuantPlan,
) -> Result<QuantPlan> {
    let never = AtomicBool::new(false);
    build_with(
        graph,
        params,
        stats,
        recipe,
        settings,
        Some(earlier),
        &never,
        &mut |_, _| {},
    )
}

#[allow(clippy::too_many_arguments)]
fn build_with(
    graph: &Graph,
    params: &FoldedWeights,
    stats: &CalibrationStats,
    recipe: &Recipe,
    settings: &QuantSettings,
    earlier: Option<&QuantPlan>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantPlan> {
    recipe.check_family(graph.family, &graph.model)?;
    let pts = points(graph);
    if pts.len() != stats.points.len() {
        return Error::field(
            &format!("calibration of `{}`", stats.model),
            "points",
            format!(
                "the statistics list {} points, model `{}` has {}",
                stats.points.len(),
                graph.model,
                pts.len()
            ),
        );
    }
    let LayerBits {
        weights: w_bits,
        activations: a_bits,
    } = LayerBits::resolve(graph, settings)?;
    let n = graph.nodes().len();

    let act = &recipe.activations;
    let mut input_scale: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut weight_note: Vec<String> = vec![String::new(); n];
    let mut activations = Vec::with_capacity(pts.len());
    // The activation bits `earlier` was built with, to know which of its entries still hold.
    let earlier_bits = earlier
        .map(|e| {
            LayerBits::resolve(
                graph,
                &QuantSettings {
                    bits: e.bits,
                    overrides: e.overrides.clone(),
                    ..settings.clone()
                },
            )
        })
        .transpose()?;
    let rounding = settings.rounding.unwrap_or(recipe.rounding);
    for (i, (p, st)) in pts.iter().zip(&stats.points).enumerate() {
        if p.name != st.name {
            return Error::field(
                &format!("calibration of `{}`", stats.model),
                "points",
                format!(
                    "expected point `{}`, found `{}`; run `qvit calibrate` again",
                    p.name, st.name
                ),
            );
        }
        let bits = a_bits[p.node];
        let reusable = earlier.zip(earlier_bits.as_ref()).and_then(|(e, b)| {
            e.activations
                .get(i)
                .filter(|a| a.point == p.name && a.rounding == rounding)
                .filter(|_| b.activations[p.node] == bits)
        });
        if let Some(entry) = reusable {
            reader_effects(graph, recipe, entry, &mut input_scale, &mut weight_note);
            activations.push(entry.clone());
            continue;
        }
        let uniform = |s: &PointStats, bits: u8| {
            Quantizer::Uniform(range::uniform(
                &s.distribution(),
                bits,
                act.symmetric,
                act.range,
            ))
        };
        let mut entry = ActivationPlan {
            point: p.name.clone(),
            node: p.node,
            kind: p.kind,
            layout: p.layout.clone(),
            bits,
            quantizer: uniform(st, bits),
            migration: None,
            shift: None,
            rounding,
            note: String::new(),
        };
        let technique =
            |f: &dyn Fn(&Technique) -> bool| recipe.techniques.iter().find(|t| f(t)).cloned();
        match p.kind {
            TensorKind::Image => {
                entry.bits = 8;
                entry.quantizer = Quantizer::Uniform(Uniform::per_tensor(8, false, st.min, st.max));
                entry.note = "8-bit image (min-max)".into();
            }
            TensorKind::DepthwiseInput => {
                if let Some(Technique::ChannelMigration { quantile, min, max }) =
                    technique(&|t| matches!(t, Technique::ChannelMigration { .. }))
                {
                    let r = st.quantile(quantile).max(mean(&st.channel_max));
                    let s: Vec<f32> = st
                        .channel_max
                        .iter()
                        .map(|&m| (m / r.max(f32::MIN_POSITIVE)).clamp(min, max))
                        .collect();
                    let migrated = st.transformed(Some(&s), None);
                    entry.quantizer = uniform(&migrated, bits);
                    let (lo, hi) = minmax(&s);
                    entry.note = format!(
                        "channel-wise migration: s_c in {lo:.2}–{hi:.2}, channel spread {:.1}× → {:.1}×",
                        st.channel_spread(),
                        migrated.channel_spread()
                    );
                    entry.migration = Some(s);
                }
            }
            TensorKind::ProjectionInput => {
                if recipe.has(|t| matches!(t, Technique::FilterShift)) {
                    let z: Vec<f32> = st
                        .channel_min
                        .iter()
                        .zip(&st.channel_max)
                        .map(|(lo, hi)| (lo + hi) / 2.0)
                        .collect();
                    let shifted = st.transformed(None, Some(&z));
                    entry.quantizer = uniform(&shifted, bits);
                    let (lo, hi) = minmax(&z);
                    entry.note = format!("filter-wise shift: z_c in {lo:.3}–{hi:.3}");
                    entry.shift = Some(z);
                }
            }
            TensorKind::AttentionDivisor => {
                if let Some(Technique::LogDivisor { bits }) =
                    technique(&|t| matches!(t, Technique::LogDivisor { .. }))
                {
                    let top = if st.max > 0.0 {
                        st.max.log2().round()
                    } else {
                        0.0
                    };
                    entry.bits = bits;
                    entry.quantizer = Quantizer::Log(Log {
                        bits,
                        root: 1,
                        scale: top.exp2(),
                        zero_code: false,
                    });
                    entry.note = format!(
                        "{bits}-bit log2 divisor: 2^{} … 2^{}, division by shift",
                        top - ((1u32 << bits) - 1) as f32,
                        top
                    );
                } else if let Some(Technique::UniformAttention { bits }) =
                    technique(&|t| matches!(t, Technique::UniformAttention { .. }))
                {
                    entry.bits = bits;
                    entry.quantizer = uniform(st, bits);
                }
            }
            TensorKind::AttentionProduct | TensorKind::AttentionKeySum => {
                if let Some(Technique::UniformAttention { bits }) =
                    technique(&|t| matches!(t, Technique::UniformAttention { .. }))
                {
                    entry.bits = bits;
                    entry.quantizer = uniform(st, bits);
                    entry.note = format!("{bits}-bit uniform attention matmul");
                }
            }
            TensorKind::PostSoftmax => {
                if let Some(Technique::LogAttention { bits }) =
                    technique(&|t| matches!(t, Technique::LogAttention { .. }))
                {
                    entry.bits = bits;
                    entry.quantizer = Quantizer::Log(Log {
                        bits,
                        root: 1,
                        scale: 1.0,
                        zero_code: true,
                    });
                    entry.note = format!("{bits}-bit log2 attention (Log-Int-Softmax)");
                } else if recipe.has(|t| matches!(t, Technique::LogSqrt2Attention)) {
                    entry.quantizer = Quantizer::Log(Log {
                        bits,
                        root: 2,
                        scale: st.max.clamp(f32::MIN_POSITIVE, 1.0),
                        zero_code: true,
                    });
                    entry.note = "log√2 attention (reparameterised to shifts)".into();
                } else if recipe.has(|t| matches!(t, Technique::TwinUniform)) {
                    let t = range::twin(&st.distribution(), bits, false);
                    entry.note = format!(
                        "twin-uniform: steps 1/{:.0} and 1/{:.0}",
                        1.0 / t.small,
                        1.0 / t.large
                    );
                    entry.quantizer = Quantizer::Twin(t);
                }
            }
            TensorKind::PostGelu => {
                if recipe.has(|t| matches!(t, Technique::TwinUniform)) {
                    let t = range::twin(&st.distribution(), bits, true);
                    entry.note = format!(
                        "twin-uniform: negative step {:.2e}, positive {:.2e}",
                        t.small, t.large
                    );
                    entry.quantizer = Quantizer::Twin(t);
                }
            }
            TensorKind::LayerNormInput => {
                if let Some(Technique::PowerOfTwoFactor { max_alpha }) =
                    technique(&|t| matches!(t, Technique::PowerOfTwoFactor { .. }))
                {
                    let dists: Vec<Distribution> = (0..st.channels())
                        .map(|c| st.channel_distribution(c))
                        .collect();
                    let q = range::power_of_two_factor(&dists, bits, max_alpha);
                    let counts = (0..=max_alpha)
                        .map(|a| format!("{}×2^{a}", q.alpha.iter().filter(|&&x| x == a).count()))
                        .collect::<Vec<_>>()
                        .join(" ");
                    entry.note = format!("power-of-two factors: {counts}");
                    entry.quantizer = Quantizer::PowerOfTwoFactor(q);
                }
            }
            TensorKind::PostLayerNorm => {
                if recipe.has(|t| matches!(t, Technique::RepqLayerNorm)) {
                    let dists: Vec<Distribution> = (0..st.channels())
                        .map(|c| st.channel_distribution(c))
                        .collect();
                    let mut q = range::uniform_per_channel(&dists, bits, false, act.range);
                    q.symmetric = false;
                    let s_mean = mean(&q.scale);
                    let r: Vec<f32> = q.scale.iter().map(|s| s / s_mean).collect();
                    let (lo, hi) = minmax(&r);
                    entry.note = format!(
                        "per-channel scales reparameterised to one (r in {lo:.2}–{hi:.2}) through the LayerNorm affine"
                    );
                    entry.quantizer = Quantizer::Uniform(q);
                }
            }
            TensorKind::Other => {}
        }
        if entry.note.is_empty() {
            entry.note = format!("{}-bit {}", entry.bits, entry.quantizer.describe());
        }
        reader_effects(graph, recipe, &entry, &mut input_scale, &mut weight_note);
        activations.push(entry);
    }

    let mut weights = Vec::new();
    for (id, node) in graph.nodes().iter().enumerate() {
        let Some(w) = weight_of(&params.nodes[id]) else {
            continue;
        };
        let bits = w_bits[id];
        let reusable = earlier.and_then(|e| {
            e.weights
                .iter()
                .find(|p| p.node == id && p.bits == bits && p.input_scale == input_scale[id])
        });
        let outs = out_channels(&node.op);
        let per_out = w.len() / outs;
        let rule = &recipe.weights;
        let quantizer = match reusable {
            Some(p) => p.quantizer.clone(),
            None => weight_quantizer(
                w,
                &node.op,
                input_scale[id].as_deref(),
                bits,
                rule,
                outs,
                per_out,
            ),
        };
        let mut note = format!(
            "{bits}-bit {}",
            Quantizer::Uniform(quantizer.clone()).describe()
        );
        if !weight_note[id].is_empty() {
            note = format!("{note}; {}", weight_note[id]);
        }
        weights.push(WeightPlan {
            layer: node.name.clone(),
            node: id,
            bits,
            quantizer,
            input_scale: input_scale[id].clone(),
            note,
        });
    }

    let mut plan = QuantPlan {
        model: graph.model.clone(),
        recipe: recipe.name.clone(),
        bits: settings.bits,
        overrides: settings.overrides.clone(),
        activations,
        weights,
    };
    if let Some(Technique::OutputSearch { images }) = recipe
        .techniques
        .iter()
        .find(|t| matches!(t, Technique::OutputSearch { .. }))
    {
        let Some(sample) = &stats.sample else {
            return Error::field(
                &format!("calibration of `{}` ({})", stats.model, stats.data),
                "sample",
                format!(
                    "recipe `{}` searches activation ranges on the calibration sample, which \
                     these statistics do not keep (written by an older qvit); run `qvit \
                     calibrate` again",
                    recipe.name
                ),
            );
        };
        output_search::search(graph, params, &mut plan, sample, *images, cancel, progress)?;
    }
    Ok(plan)
}

/// What an activation point's technique does to the layers that read it: Trio-ViT's migration
/// factors and RepQ-ViT's reparameterisation factors scale their weights' input channels, and
/// the filter-wise shift is compensated in their biases. Derived from the finished entry, so a
/// reused entry has the same effects as a computed one.
fn reader_effects(
    graph: &Graph,
    recipe: &Recipe,
    entry: &ActivationPlan,
    input_scale: &mut [Option<Vec<f32>>],
    weight_note: &mut [String],
) {
    let (factors, note): (Option<Vec<f32>>, String) = match (entry.kind, &entry.quantizer) {
        (TensorKind::DepthwiseInput, _) if entry.migration.is_some() => (
            entry.migration.clone(),
            format!(
                "weights × s_c of `{}` (channel-wise migration)",
                entry.point
            ),
        ),
        (TensorKind::ProjectionInput, _) if entry.shift.is_some() => (
            None,
            format!("bias += Σ_i z_i·w_(j,i) for the shift of `{}`", entry.point),
        ),
        (TensorKind::PostLayerNorm, Quantizer::Uniform(q))
            if recipe.has(|t| matches!(t, Technique::RepqLayerNorm)) =>
        {
            let s_mean = mean(&q.scale);
            (
                Some(q.scale.iter().map(|s| s / s_mean).collect()),
                format!(
                    "weights × r of `{}` (RepQ-ViT reparameterisation)",
                    entry.point
                ),
            )
        }
        _ => return,
    };
    for c in readers(graph, entry.node) {
        weight_note[c] = note.clone();
        if factors.is_some() {
            input_scale[c] = factors.clone();
        }
    }
}

/// The weight quantizer of one layer: `w` scaled by its input factors, per tensor, channel or
/// group as the recipe's rule says.
fn weight_quantizer(
    w: &[f32],
    op: &Op,
    input_scale: Option<&[f32]>,
    bits: u8,
    rule: &super::recipe::WeightRule,
    outs: usize,
    per_out: usize,
) -> Uniform {
    let scaled: Vec<f32> = match input_scale {
        Some(r) => w
            .iter()
            .enumerate()
            .map(|(e, &x)| x * r[input_channel(op, e)])
            .collect(),
        None => w.to_vec(),
    };
    match rule.granularity {
        Granularity::PerTensor => {
            range::uniform(&Distribution::from_values(&scaled), bits, true, rule.range)
        }
        Granularity::PerChannel | Granularity::PerGroup(_) => {
            let group = match rule.granularity {
                Granularity::PerGroup(g) => g.min(outs),
                _ => 1,
            };
            let dists: Vec<Distribution> = scaled
                .chunks(per_out * group)
                .map(Distribution::from_values)
                .collect();
            Uniform {
                group,
                ..range::uniform_per_channel(&dists, bits, true, rule.range)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_channels_of_grouped_convs() {
        use crate::graph::Conv2d;
        // Grouped 1×1: 12 in, 6 out, 3 groups → each output reads 4 inputs of its group.
        let op = Op::Conv2d(Conv2d::same(12, 6, 1, 1).with_groups(3));
        assert_eq!(input_channel(&op, 0), 0);
        assert_eq!(input_channel(&op, 3), 3);
        assert_eq!(input_channel(&op, 2 * 4), 4); // output 2 is in group 1
        let dw = Op::Conv2d(Conv2d::depthwise(5, 3, 1));
        assert_eq!(input_channel(&dw, 4 * 9 + 8), 4);
    }

    /// `apply` (flat per-channel arrays, one rounding branch) is `fake` element by element, on
    /// channels-last and channels-first layouts, a partial `take`, every quantizer kind (and
    /// a scale with no reciprocal for the lanes), with and without migration and shift, under
    /// both roundings; elements it does not own keep their values.
    #[test]
    fn apply_equals_fake_on_every_element() {
        use crate::quant::quantizer::{PowerOfTwoFactor, Twin};
        let mut rng = crate::rng::Rng::new(5);
        let c = 6;
        let per_channel = Uniform {
            bits: 4,
            symmetric: false,
            scale: (0..c).map(|i| 0.05 + 0.03 * i as f32).collect(),
            zero_point: (0..c).map(|i| i as f32).collect(),
            group: 1,
        };
        let quantizers = [
            Quantizer::Uniform(Uniform::per_tensor(8, true, -2.0, 2.0)),
            Quantizer::Uniform(per_channel.clone()),
            // A scale below the range of the lanes' reciprocals (2⁻¹⁰⁰): whole short channels
            // then take per-element parameters and the lanes that divide.
            Quantizer::Uniform(Uniform {
                scale: (0..c).map(|i| if i == 2 { 1e-31 } else { 0.05 }).collect(),
                ..per_channel.clone()
            }),
            Quantizer::Uniform(Uniform {
                group: 4,
                scale: vec![0.1, 0.2],
                zero_point: vec![3.0, 5.0],
                ..per_channel
            }),
            Quantizer::Log(Log {
                bits: 4,
                root: 2,
                scale: 1.0,
                zero_code: true,
            }),
            Quantizer::Twin(Twin {
                bits: 4,
                small: 1.0 / 64.0,
                large: 1.0 / 8.0,
                signed_split: true,
            }),
            Quantizer::PowerOfTwoFactor(PowerOfTwoFactor {
                bits: 4,
                scale: 0.25,
                zero_point: 8.0,
                alpha: (0..c as u8).map(|i| i % 3).collect(),
            }),
        ];
        let layouts = [(5, c, 1, 0..1), (2, c, 7, 0..7), (3, c, 8, 2..5)];
        for quantizer in &quantizers {
            for (outer, channels, inner, take) in layouts.clone() {
                for (migrate, rounding) in [
                    (false, Rounding::HalfUp),
                    (true, Rounding::HalfUp),
                    (false, Rounding::HalfEven),
                    (true, Rounding::HalfEven),
                ] {
                    let plan = ActivationPlan {
                        point: "p".into(),
                        node: 0,
                        kind: TensorKind::Other,
                        layout: Layout {
                            outer,
                            channels,
                            inner,
                            take: take.clone(),
                        },
                        bits: quantizer.bits(),
                        quantizer: quantizer.clone(),
                        migration: migrate.then(|| (0..c).map(|i| 0.5 + 0.25 * i as f32).collect()),
                        shift: migrate.then(|| (0..c).map(|i| 0.1 * i as f32 - 0.2).collect()),
                        rounding,
                        note: String::new(),
                    };
                    let item: Vec<f32> = (0..outer * channels * inner)
                        .map(|_| rng.uniform(-1.5, 1.5))
                        .collect();
                    let mut got = item.clone();
                    plan.apply(&mut got);
                    for (i, (&g, &x)) in got.iter().zip(&item).enumerate() {
                        let (ch, j) = ((i / inner) % channels, i % inner);
                        let want = if take.contains(&j) {
                            plan.fake(x, ch)
                        } else {
                            x
                        };
                        assert_eq!(g.to_bits(), want.to_bits(), "{quantizer:?} at {i}");
                    }
                }
            }
        }
    }
}
