//! The stages chained for one project, as the CLI and the explorer both need them: load the
//! model with its weights, get calibration statistics (from a file or by calibrating), and
//! build the quant plan. Each step returns a value the next one takes; progress is reported
//! through a callback so that a caller can draw a bar or a UI can stream it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::data::{Dataset, Selection};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::project::{CalibrationSet, Project};
use crate::quant::{self, CalibrationStats, QuantPlan, QuantSettings};
use crate::search::Splicer;
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
        if project.weights.is_none() && !weights_path.exists() {
            return Error::field(
                &project.model,
                "weights",
                format!(
                    "qvit ships weights for the micro models only; give this model's checkpoint \
                     with --weights FILE (safetensors, or a torch .pt/.pth/.bin file as \
                     published) or `weights` in a project ({} was looked for)",
                    weights_path.display()
                ),
            );
        }
        let folded = Weights::load(&weights_path, &graph)?.fold(&graph)?;
        Ok(Self {
            graph,
            folded,
            weights_path,
        })
    }
}

/// The calibration images of a project: its own set, else the shipped Fashion-MNIST images for
/// a model that takes them. A full-size model has no default: the error says what to give.
pub fn calibration_set(given: Option<&CalibrationSet>, graph: &Graph) -> Result<CalibrationSet> {
    match given {
        Some(set) => Ok(set.clone()),
        None => CalibrationSet::default_for(&graph.model, graph.input_shape()),
    }
}

/// The chosen images of a calibration set, checked against the model.
pub fn calibration_images(set: &CalibrationSet, graph: &Graph) -> Result<(Dataset, Selection)> {
    let data = set.data.open(graph.family, graph.resolution)?;
    check_images(&data, graph)?;
    let selection = set.selection();
    if selection.count == 0 {
        return Error::field(
            &data.origin,
            "calibration images",
            "0 images asked for; give at least one",
        );
    }
    let indices = selection.indices(&data.labels);
    Ok((data.subset(&indices), selection))
}

/// The project's evaluation images, checked against the model: its `data`, else the shipped
/// Fashion-MNIST test set for a model that takes 28×28 images.
pub fn test_data(project: &Project, graph: &Graph) -> Result<Dataset> {
    given_or_shipped(
        project.data.as_ref(),
        graph,
        crate::project::DataSource::fashion_mnist_test,
        "data",
        "qvit ships test images only for the 28×28 micro models; give an ImageNet-style \
         validation folder (root/<class>/<image>) with --data DIR or `data` in the project",
    )
}

/// Held-out images for choosing bit widths (never the test set): `given`, else the shipped
/// held-out Fashion-MNIST training images for a model that takes 28×28 images.
pub fn heldout_data(given: Option<&crate::project::DataSource>, graph: &Graph) -> Result<Dataset> {
    given_or_shipped(
        given,
        graph,
        crate::project::DataSource::fashion_mnist_heldout,
        "held-out data",
        "qvit ships held-out images only for the 28×28 micro models; give training images \
         that calibration does not use (an ImageNet-style folder) with --heldout DIR",
    )
}

/// `given` images, else the shipped set for a micro model; a full-size model without images
/// gets `field`'s error saying what to give. Checked against the model either way.
fn given_or_shipped(
    given: Option<&crate::project::DataSource>,
    graph: &Graph,
    shipped: fn() -> crate::project::DataSource,
    field: &str,
    what_to_give: &str,
) -> Result<Dataset> {
    let source = match given {
        Some(d) => d.clone(),
        None if graph.input_shape() == [1, 28, 28] => shipped(),
        None => {
            return Error::field(
                &graph.model,
                field,
                format!(
                    "the model takes {:?} images and {what_to_give}",
                    graph.input_shape()
                ),
            );
        }
    };
    let data = source.open(graph.family, graph.resolution)?;
    check_images(&data, graph)?;
    Ok(data)
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
/// on the chosen images of `set` (see [`calibration_set`]), abandoned when `cancel` becomes
/// true. `progress(done, total)` counts images over both calibration passes.
pub fn statistics(
    model: &Model,
    file: Option<&Path>,
    set: Option<&CalibrationSet>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CalibrationStats> {
    if let Some(path) = file {
        let stats = CalibrationStats::load(path)?;
        stats.check_matches(&model.graph, &model.folded, &path.display().to_string())?;
        return Ok(stats);
    }
    let set = calibration_set(set, &model.graph)?;
    let (data, selection) = calibration_images(&set, &model.graph)?;
    let mut stats = quant::calibrate_until(
        &model.graph,
        &model.folded,
        &data,
        data.len(),
        CALIBRATION_BATCH,
        cancel,
        progress,
    )?;
    stats.selection = Some(selection);
    stats.image_names = (0..data.len()).map(|i| data.image_name(i)).collect();
    Ok(stats)
}

/// Statistics of a project's calibration set (see [`calibration_set`]), kept in `cache_dir`
/// under [`statistics_cache_file`]'s name: computed once, then read back without running the
/// model. A cached file that fails to read or to match is computed again and replaced.
/// Returns the statistics and the file that keeps them.
pub fn cached_statistics(
    model: &Model,
    cache_dir: &Path,
    set: Option<&CalibrationSet>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(CalibrationStats, PathBuf)> {
    let set = calibration_set(set, &model.graph)?;
    let path = statistics_cache_file(model, cache_dir, &set);
    let origin = path.display().to_string();
    // Files from before qvit kept a calibration sample are computed again.
    if let Ok(stats) = CalibrationStats::load(&path)
        && stats.sample.is_some()
        && stats
            .check_matches(&model.graph, &model.folded, &origin)
            .is_ok()
    {
        return Ok((stats, path));
    }
    let stats = statistics(model, None, Some(&set), cancel, progress)?;
    std::fs::create_dir_all(cache_dir).map_err(|source| Error::Io {
        path: cache_dir.to_path_buf(),
        source,
    })?;
    stats.save(&path)?;
    Ok((stats, path))
}

/// Where [`cached_statistics`] keeps the statistics of `model` on `set`: a name made of the
/// model, its resolution, a fingerprint of its weights and one of the set (its data, count and
/// seed).
pub fn statistics_cache_file(model: &Model, cache_dir: &Path, set: &CalibrationSet) -> PathBuf {
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
    cache_dir.join(format!(
        "{name}-{}-{:016x}-{:016x}-{}.calib.safetensors",
        model.graph.resolution,
        quant::stats::fingerprint(&model.folded),
        crate::digest::of(format!("{:?}", set.data).as_bytes()) ^ set.seed,
        set.selection().count,
    ))
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
    let searches = recipe.has(|t| matches!(t, quant::recipe::Technique::OutputSearch { .. }));
    if !(settings.search_at_base && searches && !settings.overrides.is_empty()) {
        return quant::build_reporting(
            &model.graph,
            &model.folded,
            stats,
            &recipe,
            settings,
            cancel,
            progress,
        );
    }
    // The search runs once at the global widths; the overrides are spliced in after it.
    let global = QuantSettings {
        overrides: Vec::new(),
        search_at_base: false,
        ..settings.clone()
    };
    let base = quant::build_reporting(
        &model.graph,
        &model.folded,
        stats,
        &recipe,
        &global,
        cancel,
        progress,
    )?;
    let splicer = Splicer::new(&model.graph, &model.folded, stats, &recipe, &global, base)?;
    splicer.with(&settings.overrides)
}
