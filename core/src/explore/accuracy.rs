//! Accuracy as a sweep objective: the top-1 of each (model, bits) a design space names, measured
//! once per pair on the shipped Fashion-MNIST test set with the quantized model — an
//! accelerator's size does not change what it computes, so thousands of designs share a handful
//! of evaluations. Calibration runs once per model; every bit width is then planned from the
//! same statistics without running the float model again, or comes from files saved by
//! `qvit calibrate`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::arch::ArchSpec;
use crate::assets;
use crate::data::{Dataset, Normalize};
use crate::error::{Error, Result};
use crate::eval::{Classifier, evaluate};
use crate::exec::int::{IntExecutor, compile};
use crate::graph::Graph;
use crate::quant::{
    self, CalibrationStats, FakeQuantExecutor, QuantExecutor, QuantSettings, Recipe, calibrate,
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

/// Top-1 (%) for each `(model, bits)` of `models × bits`.
pub fn top1_table(
    spec: &AccuracySpec,
    models: &[String],
    bits: &[String],
    origin: &str,
) -> Result<HashMap<(usize, usize), f64>> {
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
            None => calibrate(
                &graph,
                &folded,
                &calibration,
                spec.calibration_images,
                32,
                &mut |_, _| {},
            )?,
        };
        for (b, text) in bits.iter().enumerate() {
            let settings = QuantSettings {
                recipe: recipe.name.clone(),
                bits: text.parse()?,
                overrides: Vec::new(),
                executor: spec.executor,
                rounding: None,
            };
            let plan = quant::build(&graph, &folded, &stats, &recipe, &settings)?;
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
            let acc = evaluate(exec, &test, 100, spec.images, &mut |_| {})?;
            out.insert((m, b), acc.top1());
        }
    }
    Ok(out)
}
