//! `qvit vectors`: golden vectors of the integer executor for RTL testbenches.

use std::path::PathBuf;

use clap::Args;
use qvit_core::exec::int::{IntExecutor, compile, vectors};

use super::{prepare, target};

/// Write one image's golden vectors: every step's integer inputs and output, and each weighted
/// layer's integer weights, bias, multipliers, shifts and addends, as `.npy` files with a
/// `manifest.json` naming them.
///
/// The model is quantized as `qvit eval --executor int` would (the project's `quant` section,
/// or trio-vit W8A8 by default; calibration on the shipped images unless `--calibration`).
/// The arithmetic the vectors follow is written down in the docs of `qvit_core::exec::int`.
#[derive(Debug, Args)]
pub struct VectorsArgs {
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    /// Index of the test image (in the project's data, default the shipped test set).
    #[arg(long, default_value_t = 0)]
    image: usize,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Calibration statistics from `qvit calibrate` (default: calibrate now).
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Calibrate on the first N shipped calibration images.
    #[arg(long, default_value_t = 1024)]
    calibration_images: usize,
}

pub fn run(args: &VectorsArgs) -> anyhow::Result<()> {
    let project = target::project(args.target.as_deref())?;
    let model = prepare::model(&project)?;
    let data = project.data_source().open()?;
    prepare::check_images(&data, &model.graph)?;
    if args.image >= data.len() {
        anyhow::bail!(
            "--image {}: the data has {} images ({})",
            args.image,
            data.len(),
            data.origin
        );
    }
    let settings = project.quant.clone().unwrap_or_default();
    let calibration = args.calibration.clone().or(project.calibration.clone());
    let stats = prepare::stats(
        &model,
        calibration.as_deref(),
        None,
        args.calibration_images,
    )?;
    let plan = prepare::plan(&model, &stats, &settings)?;
    let program = compile(&model.graph, &model.folded, &plan)?;
    let exec = IntExecutor::new(&program);
    let batch = data.batch(args.image..args.image + 1)?;
    let manifest = vectors::write(&model.graph, &exec, batch.images.item(0), &args.out)?;
    eprintln!(
        "{} steps of {} ({} {}) for image {} (label {}) written to {}",
        manifest.steps.len(),
        manifest.model,
        plan.recipe,
        plan.bits,
        args.image,
        batch.labels[0],
        args.out.join("manifest.json").display()
    );
    Ok(())
}
