//! `qvit eval`: FP32 accuracy of a model on a dataset.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use qvit_core::arch::Family;
use qvit_core::data::{Dataset, EvalTransform, Normalize};
use qvit_core::eval::{Accuracy, evaluate};
use qvit_core::exec::float::FloatExecutor;
use qvit_core::graph::Graph;
use qvit_core::project::{DataSource, Project};
use qvit_core::weights::Weights;

use super::format::{Format, emit, thousands};
use super::target;

/// Measure a model's FP32 top-1 and top-5 accuracy on a dataset.
///
/// With no arguments it evaluates the shipped default: the micro EfficientViT trained on
/// Fashion-MNIST, on the shipped 10,000-image test set.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    /// Weights (safetensors, official names; f32, f16 or bf16). Default: the project's, or the
    /// shipped weights of a micro model.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Images: an IDX file (`…-images-idx3-ubyte[.gz]`, labels found beside it) or an
    /// ImageNet-style folder `root/<class>/<image>.{jpg,png}`. Default: the project's, or the
    /// shipped Fashion-MNIST test set.
    #[arg(long)]
    data: Option<PathBuf>,
    /// For folder data: the shorter side is resized to ceil(resolution / crop-ratio) before the
    /// centre crop (EfficientViT B1: 0.95, B2/B3: 1.0; DeiT: 0.9, the default by family).
    #[arg(long)]
    crop_ratio: Option<f64>,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Worker threads (default: one per core). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn data_source(path: &Path, family: Family, resolution: usize, crop: Option<f64>) -> DataSource {
    if path.is_dir() {
        DataSource::ImageFolder {
            root: path.to_path_buf(),
            transform: EvalTransform::efficientvit(
                resolution,
                crop.unwrap_or(match family {
                    Family::EfficientVit => 0.95,
                    Family::Deit => 0.9,
                }),
            ),
            normalize: Normalize::imagenet(),
        }
    } else {
        DataSource::Idx {
            images: path.to_path_buf(),
            labels: Dataset::idx_labels_path(path),
            normalize: Normalize::fashion_mnist(),
        }
    }
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let mut project: Project = target::project(args.target.as_deref())?;
    if let Some(w) = &args.weights {
        project.weights = Some(w.clone());
    }
    let spec = project.spec()?;
    if let Some(d) = &args.data {
        project.data = Some(data_source(
            d,
            spec.family(),
            spec.resolution(),
            args.crop_ratio,
        ));
    }
    let graph = Graph::build(&spec)?;
    let weights_path = project.weights_path();
    let weights = Weights::load(&weights_path, &graph)?;
    let folded = weights.fold(&graph)?;
    let data = project.data_source().open()?;
    let expected = graph.input_shape();
    if data.image_shape[..] != *expected {
        anyhow::bail!(
            "{}: images are {:?} but model `{}` takes {:?}",
            data.origin,
            data.image_shape,
            graph.model,
            expected
        );
    }
    let executor = FloatExecutor::new(&graph, &folded)?;
    let total = args.limit.map_or(data.len(), |l| l.min(data.len()));

    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {pos}/{len} images  {per_sec}  {msg}",
        )?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let run = || {
        evaluate(&executor, &data, args.batch, args.limit, &mut |acc| {
            bar.set_position(acc.images as u64);
            bar.set_message(format!("top-1 {:.2} %", acc.top1()));
        })
    };
    let acc = match args.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()?
            .install(run)?,
        None => run()?,
    };
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    emit(&report(
        args,
        &graph,
        &weights_path,
        &data,
        &acc,
        seconds,
        threads,
    )?)
}

fn report(
    args: &EvalArgs,
    graph: &Graph,
    weights: &Path,
    data: &Dataset,
    acc: &Accuracy,
    seconds: f64,
    threads: usize,
) -> anyhow::Result<String> {
    let (lo, hi) = acc.top1_interval();
    let per_second = acc.images as f64 / seconds.max(1e-9);
    Ok(match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "model": graph.model,
                "executor": "fp32",
                "weights": weights.display().to_string(),
                "data": data.origin,
                "images": acc.images,
                "top1_percent": acc.top1(),
                "top5_percent": acc.top5(),
                "top1_interval_95_percent": [lo, hi],
                "images_per_second": per_second,
                "batch": args.batch,
                "threads": threads,
            }))? + "\n"
        }
        Format::Table => format!(
            "{} (FP32) on {} — {} images\n\
             weights  {}\n\
             top-1    {:.2} %   (95 % interval {:.2}–{:.2} %)\n\
             top-5    {:.2} %\n\
             speed    {} images/s (batch {}, {} threads)\n",
            graph.model,
            data.origin,
            thousands(acc.images as u64),
            weights.display(),
            acc.top1(),
            lo,
            hi,
            acc.top5(),
            thousands(per_second.round() as u64),
            args.batch,
            threads
        ),
    })
}
