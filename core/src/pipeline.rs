//! The stages chained for one project, as the CLI and the explorer both need them: load the
//! model with its weights, get calibration statistics (from a file or by calibrating), and
//! build the quant plan. Each step returns a value the next one takes; progress is reported
//! through a callback so that a caller can draw a bar or a UI can stream it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::assets;
use crate::data::{Dataset, Normalize};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::project::Project;
use crate::quant::{self, CalibrationStats, QuantPlan, QuantSettings};
use crate::weights::{FoldedWeights, Weights};

/// Images per calibration batch.
const CALIBRATION_BATCH: usize = 32;

/// A model ready to run: its graph and its weights with batch norms folded.
#[derive(Debug)]
pub struct Model {
    pub graph: Graph,
    pub folded: FoldedWeights,
    pub weights_path: PathBuf,
}

impl Model {
    /// Builds the project's graph and loads its weights (checked against the graph).
    pub fn load(project: &Project) -> Result<Self> {
        let graph = Graph::build(&project.spec()?)?;
        let weights_path = project.weights_path();
        let folded = Weights::load(&weights_path, &graph)?.fold(&graph)?;
        Ok(Self {
            graph,
            folded,
            weights_path,
        })
    }
}

/// The shipped calibration images (1,024 Fashion-MNIST training images), or an IDX file.
pub fn calibration_data(path: Option<&Path>) -> Result<Dataset> {
    let (images, labels) = match path {
        Some(p) => {
            let labels = Dataset::idx_labels_path(p).ok_or_else(|| Error::InvalidField {
                origin: p.display().to_string(),
                field: "calibration data".into(),
                message: "cannot infer the labels file from this name; give an IDX images file \
                          named `…-images-idx3-ubyte[.gz]` with its labels beside it"
                    .into(),
            })?;
            (p.to_path_buf(), labels)
        }
        None => assets::fashion_mnist_calibration(),
    };
    if images.is_dir() {
        return Error::field(
            &images.display().to_string(),
            "calibration data",
            "calibration from an image folder is not supported yet; give an IDX file",
        );
    }
    Dataset::idx(&images, &labels, Normalize::fashion_mnist())
}

/// Refuses images of another shape than the model takes, naming both.
pub fn check_images(data: &Dataset, graph: &Graph) -> Result<()> {
    if data.image_shape[..] == *graph.input_shape() {
        return Ok(());
    }
    Error::field(
        &data.origin,
        "images",
        format!(
            "images are {:?} but model `{}` takes {:?}",
            data.image_shape,
            graph.model,
            graph.input_shape()
        ),
    )
}

/// Statistics for a model: the file named (checked against the model), or a fresh calibration
/// on `images` images of `data` (the shipped calibration set when `None`), abandoned when
/// `cancel` becomes true. `progress(done, total)` counts images over both calibration passes.
pub fn statistics(
    model: &Model,
    file: Option<&Path>,
    data: Option<&Path>,
    images: usize,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CalibrationStats> {
    if let Some(path) = file {
        let stats = CalibrationStats::load(path)?;
        stats.check_matches(&model.graph, &model.folded, &path.display().to_string())?;
        return Ok(stats);
    }
    let data = calibration_data(data)?;
    check_images(&data, &model.graph)?;
    quant::calibrate_until(
        &model.graph,
        &model.folded,
        &data,
        images,
        CALIBRATION_BATCH,
        cancel,
        progress,
    )
}

/// Statistics of the shipped calibration set (its first `images` images), kept in `cache_dir`
/// under a name made of the model, its resolution, a fingerprint of its weights and the image
/// count: computed once, then read back without running the model. A cached file that fails
/// to read or to match is computed again and replaced.
pub fn cached_statistics(
    model: &Model,
    cache_dir: &Path,
    images: usize,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CalibrationStats> {
    let name: String = model
        .graph
        .model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = cache_dir.join(format!(
        "{name}-{}-{:016x}-{images}.calib.safetensors",
        model.graph.resolution,
        quant::stats::fingerprint(&model.folded)
    ));
    let origin = path.display().to_string();
    // Files from before qvit kept a calibration sample are computed again.
    if let Ok(stats) = CalibrationStats::load(&path)
        && stats.sample.is_some()
        && stats
            .check_matches(&model.graph, &model.folded, &origin)
            .is_ok()
    {
        return Ok(stats);
    }
    let stats = statistics(model, None, None, images, cancel, progress)?;
    std::fs::create_dir_all(cache_dir).map_err(|source| Error::Io {
        path: cache_dir.to_path_buf(),
        source,
    })?;
    stats.save(&path)?;
    Ok(stats)
}

/// Resolves the settings' recipe and builds the plan from saved statistics (no float pass).
/// `progress(done, total)` counts quantizers of an output-aware range search (the quantized
/// model on the calibration sample), if the recipe has one; `cancel` abandons it.
pub fn plan(
    model: &Model,
    stats: &CalibrationStats,
    settings: &QuantSettings,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QuantPlan> {
    let recipe = quant::Recipe::resolve(&settings.recipe)?;
    quant::build_reporting(
        &model.graph,
        &model.folded,
        stats,
        &recipe,
        settings,
        cancel,
        progress,
    )
}
