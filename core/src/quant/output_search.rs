//! Output-aware range search: each activation quantizer's step chosen by what it does to the
//! network's logits, not to its own tensor.
//!
//! Trio-ViT's reference code learns every activation step size Δ by block reconstruction
//! (BRECQ: Adam on an L_2.4 loss between quantized and float block outputs). qvit has no
//! gradients, so it searches instead, greedily and in network order: for each uniform
//! activation quantizer, with the ones before it already settled, it tries Δ·α for every α in
//! [`SCALES`] and keeps the α whose quantized model gives logits closest (mean squared error)
//! to the float model's on the calibration [`Sample`]. α = 1, the statistics' own choice, is
//! tried first and kept on ties, so the sample's error never grows. Scaling Δ with the zero
//! point fixed scales the clipping range `[lo, hi]` by α. A quantizer is searched only when
//! leaving its tensor in float would lower the sample error by more than [`NEGLIGIBLE`]: on
//! the micro EfficientViT under percentile W8A8, 9 of its 48 are (printed by `cargo test
//! --release -p qvit-core --test quant output_search -- --nocapture`), so most quantizers cost
//! one trial instead of eleven.
//!
//! The pass up to the quantizer's node is run once and copied for every α, so each trial runs
//! only the rest of the network; the sample runs in groups of images ([`GroupedForward`]), and a
//! trial stops after the first groups whose errors alone already reach the error to beat (the
//! sum of squares only grows): such a trial could not have been chosen, so the search chooses
//! as it would with every trial run to the end, 1.1–1.6× as fast on the micro EfficientViT
//! (BENCHMARKS.md). The image (lossless at 8 bits) and non-uniform quantizers (log2 divisors,
//! twin-uniform) keep their ranges.

use std::sync::atomic::{AtomicBool, Ordering};

use super::fake::{
    PreparedNodes, convs_may_fuse, fake_quantized_weights, points_by_node, quantize_output,
};
use super::plan::QuantPlan;
use super::points::TensorKind;
use super::quantizer::Quantizer;
use super::stats::Sample;
use crate::error::{Error, Result};
use crate::exec::float::{FloatExecutor, GroupedForward};
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::weights::FoldedWeights;

/// The step multipliers tried: 2^(k/4) for k = 0, −8, …, −1, 1, 2 (0.25–1.41, α = 1 first).
/// Percentile ranges of attention products are often 2–4× wider than the network needs;
/// ranges wider than √2× the calibration's rarely help.
pub const SCALES: [f32; 11] = {
    let mut s = [1.0f32; 11];
    let mut i = 1;
    while i < 11 {
        // k = −8..=−1, then 1, 2
        let k = if i <= 8 { i as i32 - 9 } else { i as i32 - 8 };
        s[i] = pow2_quarter(k);
        i += 1;
    }
    s
};

/// 2^(k/4) in a const context (k in −8..=2).
const fn pow2_quarter(k: i32) -> f32 {
    const QUARTER: f32 = 1.189_207_1; // 2^(1/4)
    let mut x = 1.0f32;
    let mut i = 0;
    while i < k.abs() {
        x *= QUARTER;
        i += 1;
    }
    if k < 0 { 1.0 / x } else { x }
}

/// A quantizer is searched only if leaving its tensor in float would lower the sample error by
/// more than this fraction.
pub const NEGLIGIBLE: f64 = 0.003;

/// What the search did to one activation quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Searched {
    /// Index into the plan's activations.
    pub point: usize,
    /// Whether its factors were tried (it was not negligible).
    pub searched: bool,
    pub alpha: f32,
    /// Mean squared logit error on the sample after this quantizer was settled.
    pub error: f64,
}

/// Rescales the uniform activation steps of `plan` by the output-aware search on the first
/// `images` images of `sample`; `progress(done, total)` counts quantizers, and the search
/// gives up with an error after the quantizer during which `cancel` becomes true. Returns the
/// initial sample error and what was chosen for each quantizer.
pub fn search(
    graph: &Graph,
    params: &FoldedWeights,
    plan: &mut QuantPlan,
    sample: &Sample,
    images: usize,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(f64, Vec<Searched>)> {
    let n = images.clamp(1, sample.images.batch());
    let item = sample.images.item_len();
    let classes = sample.logits.item_len();
    let mut shape = sample.images.shape.clone();
    shape[0] = n;
    let images = Tensor::new(shape, sample.images.data[..n * item].to_vec());
    let target = &sample.logits.data[..n * classes];

    // Activation steps do not change the weights: quantize them once.
    let weights = fake_quantized_weights(graph, params, plan);
    let float = FloatExecutor::new(graph, &weights)?;
    let at_node = points_by_node(graph, plan);
    let searchable: Vec<usize> = (0..plan.activations.len())
        .filter(|&p| {
            let a = &plan.activations[p];
            a.kind != TensorKind::Image && matches!(a.quantizer, Quantizer::Uniform(_))
        })
        .collect();

    // The sample error with the settled plan, except that quantizer `bypass` (if any) leaves
    // its tensor in float; run from a copy of `pass`. `None` once the groups run so far show
    // that it is at least `losing_from` (the sum of squares only grows, and rounds up or down
    // with it), without running the rest: a trial that cannot win is dropped, and every kept
    // error is the whole sample's, summed in the order `mean_squared_error` sums (a NaN one
    // too, which never stops a trial and never wins).
    let error = |plan: &QuantPlan,
                 pass: &GroupedForward,
                 bypass: Option<usize>,
                 losing_from: Option<f64>| {
        let prepared = PreparedNodes::new(plan, &at_node, pass.next(), bypass);
        let mut sum = SquaredErrors::default();
        let mut rest = target;
        let whole = float.finish_grouped_while(pass, &|id, t| prepared.apply(id, t), |logits| {
            let (group, after) = rest.split_at(logits.data.len().min(rest.len()));
            sum.add(&logits.data, group);
            rest = after;
            let mean = sum.mean(target.len());
            losing_from.is_none_or(|bound| mean < bound || mean.is_nan())
        });
        whole.then(|| sum.mean(target.len()))
    };
    let start = match convs_may_fuse(&float, &at_node) {
        true => float.start_grouped_fused(&images)?,
        false => float.start_grouped(&images)?,
    };
    let initial = error(plan, &start, None, None).expect("runs to the end without a bound");

    let mut pass = start;
    let mut current = initial;
    let mut chosen = Vec::with_capacity(searchable.len());
    for (done, &p) in searchable.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Error::field(&plan.model, "output-aware range search", "cancelled");
        }
        let node = plan.activations[p].node;
        let settled: &QuantPlan = plan;
        float.advance_grouped(&mut pass, node, &|id, t| {
            quantize_output(settled, &at_node[id], t)
        });
        let mut best = Searched {
            point: p,
            searched: false,
            alpha: 1.0,
            error: current,
        };
        // A quantizer whose removal would barely lower the error has little to gain from a
        // new range: leave it (most are; this is what keeps the search fast).
        let worth_it = current * (1.0 - NEGLIGIBLE);
        if error(plan, &pass, Some(p), Some(worth_it)).is_some_and(|e| e < worth_it) {
            best.searched = true;
            let base = step(plan, p).to_vec();
            for &alpha in &SCALES[1..] {
                set_step(plan, p, &base, alpha);
                let Some(e) = error(plan, &pass, None, Some(best.error)) else {
                    continue;
                };
                if e < best.error {
                    best = Searched {
                        alpha,
                        error: e,
                        ..best
                    };
                }
            }
            set_step(plan, p, &base, best.alpha);
        }
        if best.alpha != 1.0 {
            let a = &mut plan.activations[p];
            a.note = format!(
                "{}; Δ × {:.2} by output-aware search on {n} images",
                a.note, best.alpha
            );
        }
        current = best.error;
        chosen.push(best);
        progress(done + 1, searchable.len());
    }
    Ok((initial, chosen))
}

fn step(plan: &QuantPlan, p: usize) -> &[f32] {
    match &plan.activations[p].quantizer {
        Quantizer::Uniform(u) => &u.scale,
        _ => unreachable!("only uniform quantizers are searched"),
    }
}

fn set_step(plan: &mut QuantPlan, p: usize, base: &[f32], alpha: f32) {
    if let Quantizer::Uniform(u) = &mut plan.activations[p].quantizer {
        u.scale = base.iter().map(|s| s * alpha).collect();
    }
}

/// Mean of `(a − b)²`, summed in f64 in one fixed order (deterministic whatever the threads).
pub fn mean_squared_error(a: &[f32], b: &[f32]) -> f64 {
    let mut sum = SquaredErrors::default();
    sum.add(a, b);
    sum.mean(a.len())
}

/// A running sum of squared differences in f64, added in order from +0.
#[derive(Debug, Default, Clone, Copy)]
struct SquaredErrors(f64);

impl SquaredErrors {
    fn add(&mut self, a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            self.0 += (f64::from(*x) - f64::from(*y)).powi(2);
        }
    }

    /// The mean over `n` values (what is summed so far over all of them).
    fn mean(&self, n: usize) -> f64 {
        self.0 / n.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_quarter_powers_of_two_with_one_first() {
        assert_eq!(SCALES[0], 1.0);
        let mut sorted = SCALES;
        sorted.sort_by(f32::total_cmp);
        for (i, s) in sorted.iter().enumerate() {
            let k = i as i32 - 8;
            assert!(
                (s - 2f32.powf(k as f32 / 4.0)).abs() < 1e-6,
                "{s} vs 2^({k}/4)"
            );
        }
    }

    #[test]
    fn mean_squared_error_by_hand() {
        assert_eq!(
            mean_squared_error(&[1.0, 2.0, 3.0], &[1.0, 0.0, 6.0]),
            13.0 / 3.0
        );
        assert_eq!(mean_squared_error(&[], &[]), 0.0);
    }
}
