//! Per-layer sensitivity: for each weighted layer and each candidate width, the damage of
//! giving that layer alone the candidate's widths (its weights, and the activation it writes)
//! while every other layer keeps the base widths.
//!
//! Two measures, both away from the test set: the logits' KL divergence from the float model's
//! (and their SQNR) on the calibration sample the statistics keep, and top-1 on held-out
//! training images. Each (layer, width) is independent and runs in parallel; rows come back in
//! layer order, so the report is the same for any thread count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::metrics::{mean_kl, sqnr_db};
use super::splice::Splicer;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{evaluate, rank_of};
use crate::exec::float::{FloatExecutor, PartialForward};
use crate::explore::Shard;
use crate::graph::{Graph, NodeId};
use crate::quant::fake::{
    fake_quantize_layer, fake_quantized_weights, points_by_node, quantize_output,
};
use crate::quant::plan::weight_of;
use crate::quant::{BitWidths, Override, QuantPlan};
use crate::tensor::Tensor;
use crate::weights::FoldedWeights;

/// Images per held-out evaluation batch.
const BATCH: usize = 100;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityOptions {
    /// The widths each layer is given in turn.
    pub candidates: Vec<BitWidths>,
    /// Calibration-sample images for the logit KL and SQNR (at most the sample's size).
    pub sample_images: usize,
    /// Held-out images for top-1 (none: no accuracy column).
    pub heldout_images: usize,
    /// The layers scanned: those whose index in network order is in the shard (all by
    /// default), so that a scan can be split over machines.
    pub shard: Shard,
}

impl Default for SensitivityOptions {
    fn default() -> Self {
        Self {
            candidates: ["w6a8", "w4a8", "w3a8", "w2a8", "w8a6", "w8a4"]
                .iter()
                .map(|b| b.parse().expect("a valid width"))
                .collect(),
            sample_images: 128,
            heldout_images: 1000,
            shard: Shard::ALL,
        }
    }
}

/// One layer at one candidate width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    pub layer: String,
    pub bits: BitWidths,
    /// Mean KL(float ‖ quantized) of the softmax over the sample, in nats.
    pub kl: f64,
    /// `kl` minus the base plan's: the damage this change adds.
    pub kl_increase: f64,
    pub sqnr_db: f64,
    /// Top-1 (%) on the held-out images, when measured.
    pub top1: Option<f64>,
    /// The base plan's held-out top-1 minus `top1`, in points.
    pub top1_drop: Option<f64>,
}

/// A sensitivity scan of one model under one recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    pub model: String,
    pub recipe: String,
    /// The widths every other layer keeps.
    pub base: BitWidths,
    pub sample_images: usize,
    /// Where the held-out images come from, and how many were used (0: none).
    pub heldout: String,
    pub heldout_images: usize,
    pub base_kl: f64,
    pub base_sqnr_db: f64,
    pub base_top1: Option<f64>,
    pub float_top1: Option<f64>,
    /// One row per (layer, candidate), layers in network order, candidates in the given order.
    pub rows: Vec<SensitivityRow>,
}

/// The layers a scan or a search gives widths to: every layer with weights, in network order.
pub fn layers(graph: &Graph, params: &FoldedWeights) -> Vec<String> {
    graph
        .nodes()
        .iter()
        .enumerate()
        .filter(|(id, _)| weight_of(&params.nodes[*id]).is_some())
        .map(|(_, node)| node.name.clone())
        .collect()
}

/// A plan ready to run part of a pass: its fake-quantized weights and points by node.
struct Prepared {
    plan: QuantPlan,
    weights: FoldedWeights,
    at_node: Vec<Vec<usize>>,
}

impl Prepared {
    fn new(graph: &Graph, params: &FoldedWeights, plan: QuantPlan) -> Self {
        Self {
            weights: fake_quantized_weights(graph, params, &plan),
            at_node: points_by_node(graph, &plan),
            plan,
        }
    }

    /// `plan`, a variant of `base`'s: only the layers whose weight plans differ are quantized
    /// again (at full size, quantizing every weight per variant would dominate a scan).
    fn variant(graph: &Graph, params: &FoldedWeights, base: &Prepared, plan: QuantPlan) -> Self {
        let mut weights = base.weights.clone();
        for (wp, was) in plan.weights.iter().zip(&base.plan.weights) {
            if wp != was {
                fake_quantize_layer(graph, params, wp, &mut weights);
            }
        }
        Self {
            weights,
            at_node: points_by_node(graph, &plan),
            plan,
        }
    }

    fn advance(&self, graph: &Graph, pass: &mut PartialForward, until: NodeId) -> Result<()> {
        FloatExecutor::new(graph, &self.weights)?.advance(pass, until, &mut |id, t| {
            quantize_output(&self.plan, &self.at_node[id], t)
        });
        Ok(())
    }

    fn finish(&self, graph: &Graph, pass: &mut PartialForward) -> Result<Tensor> {
        Ok(
            FloatExecutor::new(graph, &self.weights)?.finish(pass, &mut |id, t| {
                quantize_output(&self.plan, &self.at_node[id], t)
            }),
        )
    }
}

/// The first node where `plan` quantizes differently from `base`: every node before it runs
/// the same in both.
fn first_change(base: &QuantPlan, plan: &QuantPlan) -> NodeId {
    let weights = base
        .weights
        .iter()
        .zip(&plan.weights)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.node);
    let points = base
        .activations
        .iter()
        .zip(&plan.activations)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.node);
    weights.chain(points).min().unwrap_or(NodeId::MAX)
}

/// What each of `variants` does on the sample and the held-out images, running the part of
/// the network before their first change once, with `base`, for all of them.
fn measure(
    graph: &Graph,
    base: &Prepared,
    variants: &[Prepared],
    sample: (&Tensor, &Tensor),
    heldout: Option<(&Dataset, usize)>,
) -> Result<Vec<Measured>> {
    let shared = variants
        .iter()
        .map(|v| first_change(&base.plan, &v.plan))
        .min()
        .unwrap_or(0);
    let float = FloatExecutor::new(graph, &base.weights)?;
    let continued = |images: &Tensor| -> Result<Vec<Tensor>> {
        let mut pass = float.start(images)?;
        base.advance(graph, &mut pass, shared)?;
        variants
            .iter()
            .map(|v| v.finish(graph, &mut pass.clone()))
            .collect()
    };
    let logits = continued(sample.0)?;
    let mut correct = vec![0usize; variants.len()];
    if let Some((data, n)) = heldout {
        for start in (0..n).step_by(BATCH) {
            let batch = data.batch(start..(start + BATCH).min(n))?;
            for (v, out) in continued(&batch.images)?.iter().enumerate() {
                for (i, &label) in batch.labels.iter().enumerate() {
                    if rank_of(out.item(i), label as usize) == 0 {
                        correct[v] += 1;
                    }
                }
            }
        }
    }
    Ok(logits
        .iter()
        .zip(&correct)
        .map(|(l, &c)| Measured {
            kl: mean_kl(sample.1, l),
            sqnr_db: sqnr_db(sample.1, l),
            top1: heldout.map(|(_, n)| 100.0 * c as f64 / n as f64),
        })
        .collect())
}

/// What a plan does on the sample and the held-out images.
struct Measured {
    kl: f64,
    sqnr_db: f64,
    top1: Option<f64>,
}

fn first(images: &Tensor, n: usize) -> Tensor {
    let n = n.min(images.batch());
    let mut shape = images.shape.clone();
    shape[0] = n;
    Tensor::new(shape, images.data[..n * images.item_len()].to_vec())
}

/// Scans every layer of [`layers`] at every candidate of `options`. `splicer` holds the model,
/// its statistics (with the calibration sample) and the base plan; `heldout` the held-out images (checked by the caller against the model); `progress`
/// is called with (done, total) as each (layer, width) finishes, from any thread; the scan
/// stops with an error once `cancel` becomes true.
pub fn scan(
    splicer: &Splicer,
    heldout: Option<&Dataset>,
    options: &SensitivityOptions,
    cancel: &AtomicBool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Sensitivity> {
    let (graph, params, base) = (splicer.graph(), splicer.params(), splicer.base());
    let Some(sample) = &splicer.stats().sample else {
        return Error::field(
            &base.model,
            "calibration sample",
            "the statistics keep no calibration sample (written by an older qvit); run `qvit \
             calibrate` again",
        );
    };
    if options.candidates.is_empty() {
        return Error::field(&base.model, "candidates", "give at least one width");
    }
    if options.sample_images == 0 {
        return Error::field(&base.model, "sample images", "give at least one image");
    }
    let images = first(&sample.images, options.sample_images);
    let float = first(&sample.logits, options.sample_images);
    let heldout = match heldout {
        Some(d) if options.heldout_images > 0 => {
            if d.is_empty() {
                return Error::field(&d.origin, "held-out images", "the set has no images");
            }
            Some((d, options.heldout_images.min(d.len())))
        }
        _ => None,
    };
    let float_top1 = match heldout {
        Some((data, n)) => {
            let float = FloatExecutor::new(graph, params)?;
            Some(evaluate(&float, data, BATCH, Some(n), &mut |_| {})?.top1())
        }
        None => None,
    };
    let prepared_base = Prepared::new(graph, params, base.clone());
    let at_base = measure(
        graph,
        &prepared_base,
        &[Prepared::new(graph, params, base.clone())],
        (&images, &float),
        heldout,
    )?
    .remove(0);

    // One unit of work per layer: its candidates share the pass up to the layer.
    let names: Vec<String> = layers(graph, params)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 % options.shard.count == options.shard.index)
        .map(|(_, name)| name)
        .collect();
    let total = names.len() * options.candidates.len();
    let done = AtomicUsize::new(0);
    let per_layer = names
        .par_iter()
        .map(|layer| -> Result<Vec<SensitivityRow>> {
            if cancel.load(Ordering::Relaxed) {
                return Error::field(&base.model, "sensitivity", "cancelled");
            }
            let variants = options
                .candidates
                .iter()
                .map(|&bits| {
                    let plan = splicer.with(&[Override {
                        layers: layer.clone(),
                        bits,
                    }])?;
                    Ok(Prepared::variant(graph, params, &prepared_base, plan))
                })
                .collect::<Result<Vec<_>>>()?;
            let measured = measure(graph, &prepared_base, &variants, (&images, &float), heldout)?;
            progress(
                done.fetch_add(variants.len(), Ordering::Relaxed) + variants.len(),
                total,
            );
            Ok(options
                .candidates
                .iter()
                .zip(measured)
                .map(|(&bits, m)| SensitivityRow {
                    layer: layer.clone(),
                    bits,
                    kl: m.kl,
                    kl_increase: m.kl - at_base.kl,
                    sqnr_db: m.sqnr_db,
                    top1_drop: m.top1.zip(at_base.top1).map(|(t, b)| b - t),
                    top1: m.top1,
                })
                .collect())
        })
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<SensitivityRow> = per_layer.into_iter().flatten().collect();
    Ok(Sensitivity {
        model: base.model.clone(),
        recipe: base.recipe.clone(),
        base: base.bits,
        sample_images: images.batch(),
        heldout: heldout.map_or(String::new(), |(d, _)| d.origin.clone()),
        heldout_images: heldout.map_or(0, |(_, n)| n),
        base_kl: at_base.kl,
        base_sqnr_db: at_base.sqnr_db,
        base_top1: at_base.top1,
        float_top1,
        rows,
    })
}
