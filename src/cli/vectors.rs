//! `qvit vectors`: golden vectors of the integer executor for RTL testbenches.

use std::path::PathBuf;

use clap::Args;
use qvit_core::exec::int::{IntExecutor, compile, vectors};
use qvit_core::pipeline;
use qvit_core::quant::QuantExecutor;

use super::prepare;
use super::quant_args::{DataArgs, QuantArgs, project_with};

/// Write one image's golden vectors: every step's integer inputs and output, and each weighted
/// layer's integer weights, bias, multipliers, shifts and addends, as `.npy` files with a
/// `manifest.json` naming them.
///
/// The model is quantized as `qvit eval --executor int` would, with the same flags (the
/// project's `quant` section, else the family's recipe at W8A8: trio-vit for EfficientViT,
/// repq-vit for DeiT). The arithmetic the vectors follow is written down in the docs of
/// `qvit_core::exec::int`.
#[derive(Debug, Args)]
pub struct VectorsArgs {
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// Index of the test image (in the project's data, default the shipped test set).
    #[arg(long, default_value_t = 0)]
    image: usize,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    quant: QuantArgs,
}

pub fn run(args: &VectorsArgs) -> anyhow::Result<()> {
    let (project, spec) = project_with(args.target.as_deref(), &args.data, &args.quant)?;
    let model = prepare::model(&project)?;
    let data = pipeline::test_data(&project, &model.graph)?;
    if args.image >= data.len() {
        anyhow::bail!(
            "--image {}: the data has {} images ({})",
            args.image,
            data.len(),
            data.origin
        );
    }
    let settings = args
        .quant
        .settings(&project, &spec, Some(QuantExecutor::Int));
    let plan = prepare::project_plan(&model, &project, &settings, true)?;
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
