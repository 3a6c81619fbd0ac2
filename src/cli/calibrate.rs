//! `qvit calibrate`: activation statistics of a model, saved for any recipe and bit width.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use qvit_core::quant::TensorKind;

use super::format::{Format, emit, table, thousands};
use super::quant_args::CalibrationArgs;
use super::{prepare, target};

/// Record a model's activation statistics on calibration images and save them.
///
/// Runs the float model twice over the images: per-channel minima and maxima, then per-tensor
/// (2,048-bin) and per-channel (128-bin) histograms of every quantized tensor. `qvit eval
/// --calibration FILE` then quantizes with any recipe and bits without running the model again.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    /// Weights (safetensors or a torch .pt/.pth checkpoint; default: the project's, or the
    /// shipped weights of a micro model).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Images to calibrate on: an ImageNet-style folder (e.g. your training set) or an IDX
    /// file. Default: the project's `calibration_data`, else the shipped 1,024 Fashion-MNIST
    /// images for the micro models.
    #[arg(long, value_name = "DIR|IDX")]
    data: Option<PathBuf>,
    /// How many images, chosen class-balanced with --seed (default: 32 from a folder, as
    /// PTQ4ViT and RepQ-ViT; 1,024 from an IDX file). The choice is recorded in the file.
    #[arg(long)]
    images: Option<usize>,
    /// Seed of the images' choice.
    #[arg(long)]
    seed: Option<u64>,
    /// For folders: the shorter side is resized to resolution / crop-ratio before the centre
    /// crop (default by family: EfficientViT 0.95, DeiT 0.9).
    #[arg(long)]
    crop_ratio: Option<f64>,
    /// Where to write the statistics (default: `<model>.calib.safetensors`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn kind_name(k: TensorKind) -> &'static str {
    match k {
        TensorKind::Image => "image",
        TensorKind::DepthwiseInput => "depthwise input",
        TensorKind::ProjectionInput => "projection input",
        TensorKind::LayerNormInput => "LayerNorm input",
        TensorKind::PostLayerNorm => "post-LayerNorm",
        TensorKind::PostSoftmax => "post-Softmax",
        TensorKind::PostGelu => "post-GELU",
        TensorKind::AttentionProduct => "attention product",
        TensorKind::AttentionKeySum => "attention key sum",
        TensorKind::AttentionDivisor => "attention divisor",
        TensorKind::Other => "",
    }
}

pub fn run(args: &CalibrateArgs) -> anyhow::Result<()> {
    let mut project = target::project(args.target.as_deref())?;
    let spec = project.spec()?;
    if let Some(w) = &args.weights {
        project.weights = Some(w.clone());
    }
    CalibrationArgs {
        calibration: None,
        calibration_data: args.data.clone(),
        calibration_images: args.images,
        calibration_seed: args.seed,
    }
    .apply(&mut project, &spec, args.crop_ratio)?;
    let model = prepare::model(&project)?;
    let started = Instant::now();
    let stats = prepare::stats(&model, None, project.calibration_data.as_ref())?;
    let seconds = started.elapsed().as_secs_f64();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.calib.safetensors", model.graph.model)));
    stats.save(&out)?;
    match args.format {
        Format::Json => emit(
            &(serde_json::to_string_pretty(&serde_json::json!({
                "model": stats.model,
                "images": stats.images,
                "data": stats.data,
                "selection": stats.selection,
                "out": out.display().to_string(),
                "seconds": seconds,
                "points": stats.points.iter().map(|p| serde_json::json!({
                    "name": p.name,
                    "kind": kind_name(p.kind),
                    "channels": p.channels(),
                    "min": p.min,
                    "max": p.max,
                    "p0.01": p.quantile(0.0001),
                    "p99.99": p.quantile(0.9999),
                    "channel_spread": p.channel_spread(),
                })).collect::<Vec<_>>(),
            }))? + "\n"),
        ),
        Format::Table => {
            let mut t = table(
                &[
                    "tensor",
                    "kind",
                    "channels",
                    "min",
                    "p0.01",
                    "p99.99",
                    "max",
                    "channel spread",
                ],
                &[2, 3, 4, 5, 6, 7],
            );
            for p in &stats.points {
                t.add_row(vec![
                    p.name.clone(),
                    kind_name(p.kind).to_string(),
                    p.channels().to_string(),
                    format!("{:.3}", p.min),
                    format!("{:.3}", p.quantile(0.0001)),
                    format!("{:.3}", p.quantile(0.9999)),
                    format!("{:.3}", p.max),
                    format!("{:.1}×", p.channel_spread()),
                ]);
            }
            emit(&format!(
                "{} — {} calibration images from {}{} in {:.1} s\n{t}\n\n\
                 channel spread = largest channel range / median channel range\n\
                 wrote {} ({} tensors)\n",
                stats.model,
                thousands(stats.images as u64),
                stats.data,
                stats
                    .selection
                    .map(|s| format!(" (chosen class-balanced, seed {})", s.seed))
                    .unwrap_or_default(),
                seconds,
                out.display(),
                stats.points.len()
            ))
        }
    }
}
