//! What the explorer computes for the open project, as values: the loaded model with its
//! calibration statistics and test set, and a quantization of it with its per-layer quality.
//! Each is produced by one function that runs on a background job; the UI only reads them.

use std::path::Path;
use std::sync::Arc;

use qvit_core::cache::{self, Store};
use qvit_core::data::Dataset;
use qvit_core::eval::{Accuracy, Classifier, evaluate_until};
use qvit_core::exec::int::{IntExecutor, compile};
use qvit_core::graph::NodeId;
use qvit_core::pipeline::{self, Model};
use qvit_core::project::Project;
use qvit_core::quant::diagnostics::{self, ActivationQuality, WeightQuality};
use qvit_core::quant::stats::BoxStats;
use qvit_core::quant::{
    CalibrationStats, FakeQuantExecutor, QuantExecutor, QuantPlan, QuantSettings,
};

use crate::jobs::{Counts, Reporter};

/// Shipped calibration images a sweep's accuracy phase calibrates on (the set has 1,024).
pub const CALIBRATION_IMAGES: usize = 1024;
/// Test images whose activations give the per-layer SQNR.
pub const SQNR_IMAGES: usize = 64;
/// Images per evaluation batch: small enough that accuracy streams in often.
const EVAL_BATCH: usize = 100;

/// A model ready to quantize: weights, calibration statistics and the test set.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub stats: CalibrationStats,
    pub test: Dataset,
    /// Digests of the statistics and the test set, which key cached plans and accuracies.
    pub stats_digest: u64,
    pub test_digest: u64,
    /// The file the statistics were read from or kept in (none for a fresh calibration without
    /// a cache folder), which a sweep's accuracy phase reads instead of calibrating again.
    pub stats_file: Option<std::path::PathBuf>,
}

/// Loads the project's model and test set and calibrates it: reads the project's statistics
/// file, or the cached statistics in `cache` from an earlier run, or calibrates (and caches).
pub fn load(
    project: &Project,
    cache: Option<&Path>,
    reporter: &Reporter<Counts>,
) -> Result<Loaded, String> {
    let go = || -> qvit_core::Result<Loaded> {
        let model = Model::load(project)?;
        let test = pipeline::test_data(project, &model.graph)?;
        let cancel = reporter.cancel_flag();
        let mut progress = |done: usize, total: usize| {
            reporter.report(Counts {
                done: done as u64,
                total: total as u64,
            })
        };
        let (stats, stats_file) = match (&project.calibration, cache) {
            (None, Some(dir)) => {
                let (stats, file) = pipeline::cached_statistics(
                    &model,
                    dir,
                    project.calibration_data.as_ref(),
                    cancel,
                    &mut progress,
                )?;
                (stats, Some(file))
            }
            (file, _) => {
                let stats = pipeline::statistics(
                    &model,
                    file.as_deref(),
                    project.calibration_data.as_ref(),
                    cancel,
                    &mut progress,
                )?;
                (stats, file.clone())
            }
        };
        Ok(Loaded {
            stats_digest: stats.digest(),
            test_digest: test.digest(),
            model,
            stats,
            test,
            stats_file,
        })
    };
    go().map_err(|e| e.to_string())
}

/// A quant plan with the quality of every layer.
#[derive(Debug, Clone)]
pub struct Quantized {
    pub settings: QuantSettings,
    /// What the plan depends on ([`cache::plan_key`]).
    pub key: u64,
    pub plan: QuantPlan,
    /// True when the plan was read from the cache rather than built.
    pub cached: bool,
    pub weights: Vec<WeightQuality>,
    pub activations: Vec<ActivationQuality>,
}

impl Quantized {
    /// Weight SQNR of a layer.
    pub fn weight_sqnr(&self, layer: &str) -> Option<f64> {
        self.weights
            .iter()
            .find(|w| w.layer == layer)
            .map(|w| w.sqnr_db)
    }

    /// Tensor SQNR of an activation point.
    pub fn activation_sqnr(&self, point: &str) -> Option<f64> {
        self.activations
            .iter()
            .find(|a| a.point == point)
            .map(|a| a.tensor_sqnr_db)
    }
}

/// Reads the plan from `store` when it holds one for these statistics and settings, or builds
/// it from the saved statistics (no float pass over the calibration set; a recipe's
/// output-aware range search runs the quantized model on the calibration sample, reported
/// through `reporter` in quantizers) and stores it; then measures weight and activation SQNR
/// on the first test images.
pub fn quantize(
    loaded: &Loaded,
    settings: &QuantSettings,
    store: Option<&Store>,
    reporter: &Reporter<Counts>,
) -> Result<Quantized, String> {
    let go = || -> qvit_core::Result<Quantized> {
        let key = cache::plan_key(loaded.stats_digest, settings)?;
        let stored = store.and_then(|s| s.plan(key, &loaded.model.graph));
        let cached = stored.is_some();
        let plan = match stored {
            Some(plan) => plan,
            None => {
                let plan = pipeline::plan(
                    &loaded.model,
                    &loaded.stats,
                    settings,
                    reporter.cancel_flag(),
                    &mut |done, total| {
                        reporter.report(Counts {
                            done: done as u64,
                            total: total as u64,
                        })
                    },
                )?;
                if let Some(Err(e)) = store.map(|s| s.put_plan(key, &plan)) {
                    // The plan stands; only the next run's shortcut is lost.
                    eprintln!("qvit: the plan was not cached: {e}");
                }
                plan
            }
        };
        let fake = FakeQuantExecutor::new(&loaded.model.graph, &loaded.model.folded, &plan)?;
        let weights = diagnostics::weight_quality(&loaded.model.folded, fake.weights(), &plan);
        let images = loaded
            .test
            .batch(0..loaded.test.len().min(SQNR_IMAGES))?
            .images;
        let activations = diagnostics::activation_quality(
            &loaded.model.graph,
            &loaded.model.folded,
            &fake,
            &images,
        )?;
        drop(fake);
        Ok(Quantized {
            settings: settings.clone(),
            key,
            plan,
            cached,
            weights,
            activations,
        })
    };
    go().map_err(|e| e.to_string())
}

/// Top-1 of the quantized model on the test set (its first `limit` images), streamed batch by batch through `reporter`
/// (running counts); stops early when cancelled.
pub fn evaluate(
    loaded: &Loaded,
    quantized: &Arc<Quantized>,
    limit: Option<usize>,
    reporter: &Reporter<Accuracy>,
) -> Result<Accuracy, String> {
    let graph = &loaded.model.graph;
    let folded = &loaded.model.folded;
    let plan = &quantized.plan;
    let go = || -> qvit_core::Result<Accuracy> {
        let fake;
        let program;
        let int;
        let executor: &dyn Classifier = match quantized.settings.executor {
            QuantExecutor::Fake => {
                fake = FakeQuantExecutor::new(graph, folded, plan)?;
                &fake
            }
            QuantExecutor::Int => {
                program = compile(graph, folded, plan)?;
                int = IntExecutor::new(&program);
                &int
            }
        };
        evaluate_until(
            executor,
            &loaded.test,
            EVAL_BATCH,
            limit,
            reporter.cancel_flag(),
            &mut |acc| reporter.report(acc.clone()),
        )
    };
    go().map_err(|e| e.to_string())
}

/// What the Distributions view draws for one layer under one quantization, computed once per
/// selection (the transformed histograms and sorted weights take longer than a frame should).
#[derive(Debug)]
pub struct LayerDistributions {
    pub layer: NodeId,
    /// The quantization it was computed for.
    pub quantized: Arc<Quantized>,
    /// The activation point feeding the layer.
    pub point: Option<String>,
    /// Per-channel boxes of that point as calibrated, and as the quantizer sees them.
    pub boxes: Option<(Vec<BoxStats>, Vec<BoxStats>)>,
    pub quantizer: Option<diagnostics::QuantizerView>,
    /// Per-output-channel boxes of the layer's weights.
    pub weights: Option<Vec<BoxStats>>,
}

impl LayerDistributions {
    pub fn compute(
        loaded: &Loaded,
        quantized: &Arc<Quantized>,
        layer: NodeId,
        point: Option<String>,
    ) -> Self {
        let (stats, plan, graph) = (&loaded.stats, &quantized.plan, &loaded.model.graph);
        let name = &graph.node(layer).name;
        Self {
            layer,
            quantized: quantized.clone(),
            boxes: point
                .as_deref()
                .and_then(|p| diagnostics::channel_boxes(stats, plan, p)),
            quantizer: point
                .as_deref()
                .and_then(|p| diagnostics::quantizer_view(stats, plan, p)),
            weights: diagnostics::weight_boxes(graph, &loaded.model.folded, plan, name),
            point,
        }
    }

    /// Still valid for this layer and quantization.
    pub fn is_for(&self, layer: NodeId, quantized: &Arc<Quantized>) -> bool {
        self.layer == layer && Arc::ptr_eq(&self.quantized, quantized)
    }
}
