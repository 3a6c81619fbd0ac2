//! Accuracy as a sweep objective: the top-1 of each (model, bits) a design space names, measured
//! once per pair on the shipped Fashion-MNIST test set with the quantized model — an
//! accelerator's size does not change what it computes, so thousands of designs share a handful
//! of evaluations. Calibration runs once per model; every bit width is then planned from the
//! same statistics without running the float model again, or comes from files saved by
//! `qvit calibrate`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::arch::ArchSpec;
use crate::assets;
use crate::data::{Dataset, Normalize};
use crate::error::{Error, Result};
use crate::eval::{Classifier, evaluate_until};
use crate::exec::int::{IntExecutor, compile};
use crate::graph::Graph;
use crate::quant::{
    self, CalibrationStats, FakeQuantExecutor, QuantExecutor, QuantSettings, Recipe,
    calibrate_until,
};
use crate::weights::Weights;

/// The `accuracy` section of a design space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracySpec {
    /// A recipe preset or RON file.
    #[serde(default = "default_recipe")]
    pub recipe: String,
    /// Test images to evaluate (default: all 10,000).
    #[serde(default)]
    pub images: Option<usize>,
    /// Shipped calibration images to calibrate on.
    #[serde(default = "default_calibration_images")]
    pub calibration_images: usize,
    /// Saved statistics from `qvit calibrate`, one file per model in the order of `models`
    /// (default: calibrate once per model at the start of the sweep).
    #[serde(default)]
    pub calibration: Vec<std::path::PathBuf>,
    #[serde(default)]
    pub executor: QuantExecutor,
}

fn default_recipe() -> String {
    "trio-vit".into()
}

fn default_calibration_images() -> usize {
    1024
}

/// How far the accuracy phase of a sweep is: the `(model, bits)` pair being measured, what is
/// being done for it, and that step's units done of its total (images, or quantizers of an
/// output-aware range search).
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyProgress {
    /// Which pair, counted from 0, of how many.
    pub pair: usize,
    pub pairs: usize,
    /// `model bits`, e.g. `efficientvit-micro w4a8`.
    pub label: String,
    pub step: Step,
    pub done: usize,
    pub total: usize,
}

impl std::fmt::Display for AccuracyProgress {
    /// `top-1 of efficientvit-micro w4a8 (2 of 4): evaluating 1200/2000`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "top-1 of {} ({} of {}): {} {}/{}",
            self.label,
            self.pair + 1,
            self.pairs,
            self.step.name(),
            self.done,
            self.total
        )
    }
}

/// What the accuracy phase is doing for a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Calibrating,
    Searching,
    Evaluating,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Calibrating => "calibrating",
            Step::Searching => "searching activation ranges",
            Step::Evaluating => "evaluating",
        }
    }
}

/// Top-1 (%) for each `(model, bits)` of `models × bits`.
pub fn top1_table(
    spec: &AccuracySpec,
    models: &[String],
    bits: &[String],
    origin: &str,
) -> Result<HashMap<(usize, usize), f64>> {
    let never = AtomicBool::new(false);
    top1_table_until(spec, models, bits, origin, &never, &mut |_| {})
}

/// [`top1_table`], reporting each step through `progress` and given up with an error once
/// `cancel` becomes true (a partial count is never a top-1).
pub fn top1_table_until(
    spec: &AccuracySpec,
    models: &[String],
    bits: &[String],
    origin: &str,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&AccuracyProgress),
) -> Result<HashMap<(usize, usize), f64>> {
    let pairs = models.len() * bits.len();
    let recipe = Recipe::resolve(&spec.recipe)?;
    let (images, labels) = assets::fashion_mnist_test();
    let test = Dataset::idx(&images, &labels, Normalize::fashion_mnist())?;
    let (images, labels) = assets::fashion_mnist_calibration();
    let calibration = Dataset::idx(&images, &labels, Normalize::fashion_mnist())?;
    let mut out = HashMap::new();
    for (m, name) in models.iter().enumerate() {
        let path = assets::weights(name);
        if !path.is_file() {
            return Error::field(
                origin,
                "accuracy",
                format!(
                    "model `{name}` has no shipped trained weights; accuracy in sweeps is measured \
                     on the shipped micro models (efficientvit-micro, deit-micro)"
                ),
            );
        }
        let graph = Graph::build(&ArchSpec::resolve(name)?)?;
        let folded = Weights::load(&path, &graph)?.fold(&graph)?;
        let stats = match spec.calibration.get(m) {
            Some(file) => {
                let stats = CalibrationStats::load(file)?;
                stats.check_matches(&graph, &folded, &file.display().to_string())?;
                stats
            }
            None => calibrate_until(
                &graph,
                &folded,
                &calibration,
                spec.calibration_images,
                32,
                cancel,
                &mut |done, total| {
                    progress(&AccuracyProgress {
                        pair: m * bits.len(),
                        pairs,
                        label: name.clone(),
                        step: Step::Calibrating,
                        done,
                        total,
                    })
                },
            )?,
        };
        for (b, text) in bits.iter().enumerate() {
            let pair = m * bits.len() + b;
            let label = format!("{name} {text}");
            let mut report = |step, done, total| {
                progress(&AccuracyProgress {
                    pair,
                    pairs,
                    label: label.clone(),
                    step,
                    done,
                    total,
                })
            };
            let settings = QuantSettings {
                recipe: recipe.name.clone(),
                bits: text.parse()?,
                overrides: Vec::new(),
                executor: spec.executor,
                rounding: None,
                search_at_base: false,
            };
            let plan = quant::build_reporting(
                &graph,
                &folded,
                &stats,
                &recipe,
                &settings,
                cancel,
                &mut |done, total| report(Step::Searching, done, total),
            )?;
            let fake;
            let program;
            let int;
            let exec: &dyn Classifier = match spec.executor {
                QuantExecutor::Fake => {
                    fake = FakeQuantExecutor::new(&graph, &folded, &plan)?;
                    &fake
                }
                QuantExecutor::Int => {
                    program = compile(&graph, &folded, &plan)?;
                    int = IntExecutor::new(&program);
                    &int
                }
            };
            let total = spec.images.map_or(test.len(), |n| n.min(test.len()));
            let acc = evaluate_until(exec, &test, 100, spec.images, cancel, &mut |a| {
                report(Step::Evaluating, a.images, total)
            })?;
            if cancel.load(Ordering::Relaxed) {
                return Error::field(origin, "accuracy", "cancelled");
            }
            out.insert((m, b), acc.top1());
        }
    }
    Ok(out)
}
