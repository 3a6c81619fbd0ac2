//! Loading what the accuracy commands share: the model with its weights, and calibration
//! statistics (from a file, or computed on the spot with a progress bar).

use std::path::Path;

use anyhow::Context;
use qvit_core::data::{Dataset, Normalize};
use qvit_core::graph::Graph;
use qvit_core::project::Project;
use qvit_core::quant::{CalibrationStats, calibrate};
use qvit_core::weights::{FoldedWeights, Weights};
use qvit_core::{assets, quant};

/// A model ready to run.
pub struct Model {
    pub graph: Graph,
    pub folded: FoldedWeights,
    pub weights_path: std::path::PathBuf,
}

pub fn model(project: &Project) -> anyhow::Result<Model> {
    let graph = Graph::build(&project.spec()?)?;
    let weights_path = project.weights_path();
    let folded = Weights::load(&weights_path, &graph)?.fold(&graph)?;
    Ok(Model {
        graph,
        folded,
        weights_path,
    })
}

/// The shipped calibration images (1,024 Fashion-MNIST training images), or an IDX file.
pub fn calibration_data(path: Option<&Path>) -> anyhow::Result<Dataset> {
    let (images, labels) = match path {
        Some(p) => (
            p.to_path_buf(),
            Dataset::idx_labels_path(p).with_context(|| {
                format!(
                    "{}: cannot infer the labels file from this name",
                    p.display()
                )
            })?,
        ),
        None => assets::fashion_mnist_calibration(),
    };
    if images.is_dir() {
        anyhow::bail!(
            "{}: calibration from an image folder is not supported yet; give an IDX file",
            images.display()
        );
    }
    Ok(Dataset::idx(&images, &labels, Normalize::fashion_mnist())?)
}

pub fn progress_bar(total: usize, what: &str) -> anyhow::Result<indicatif::ProgressBar> {
    Ok(indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}}  {{msg}}"
        ))?
        .progress_chars("=> "),
    ))
}

/// Refuses images of another shape than the model takes, naming both.
pub fn check_images(data: &Dataset, graph: &Graph) -> anyhow::Result<()> {
    if data.image_shape[..] != *graph.input_shape() {
        anyhow::bail!(
            "{}: images are {:?} but model `{}` takes {:?}",
            data.origin,
            data.image_shape,
            graph.model,
            graph.input_shape()
        );
    }
    Ok(())
}

/// Runs calibration with a progress bar over both passes.
pub fn calibrate_with_progress(
    model: &Model,
    data: &Dataset,
    images: usize,
) -> anyhow::Result<CalibrationStats> {
    let n = images.min(data.len());
    let bar = progress_bar(2 * n, "calibrating")?;
    let stats = calibrate(
        &model.graph,
        &model.folded,
        data,
        images,
        32,
        &mut |done, _| bar.set_position(done as u64),
    );
    bar.finish_and_clear();
    Ok(stats?)
}

/// Statistics for a model: the file named (checked against the model), or a fresh calibration.
pub fn stats(
    model: &Model,
    file: Option<&Path>,
    data: Option<&Path>,
    images: usize,
) -> anyhow::Result<CalibrationStats> {
    match file {
        Some(path) => {
            let stats = CalibrationStats::load(path)?;
            stats.check_matches(&model.graph, &model.folded, &path.display().to_string())?;
            Ok(stats)
        }
        None => {
            let data = calibration_data(data)?;
            check_images(&data, &model.graph)?;
            calibrate_with_progress(model, &data, images)
        }
    }
}

/// Resolves the recipe and builds the plan.
pub fn plan(
    model: &Model,
    stats: &CalibrationStats,
    settings: &quant::QuantSettings,
) -> anyhow::Result<quant::QuantPlan> {
    let recipe = quant::Recipe::resolve(&settings.recipe)?;
    Ok(quant::build(
        &model.graph,
        &model.folded,
        stats,
        &recipe,
        settings,
    )?)
}
