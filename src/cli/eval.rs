//! `qvit eval`: accuracy of a model on a dataset, in FP32 or quantized (fake-quant or integer executor).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use qvit_core::arch::Family;
use qvit_core::data::{Dataset, EvalTransform, Normalize};
use qvit_core::eval::{Accuracy, Classifier, evaluate};
use qvit_core::exec::float::FloatExecutor;
use qvit_core::exec::int::{IntExecutor, compile};
use qvit_core::graph::Graph;
use qvit_core::project::{DataSource, Project};
use qvit_core::quant::{
    BitWidths, FakeQuantExecutor, Override, QuantExecutor, QuantPlan, QuantSettings, diagnostics,
};

use super::format::{Format, emit, table, thousands};
use super::prepare;
use super::target;

/// Measure a model's top-1 and top-5 accuracy on a dataset, in FP32 or quantized.
///
/// With no arguments it evaluates the shipped default in FP32: the micro EfficientViT trained
/// on Fashion-MNIST, on the shipped 10,000-image test set. `--recipe`, `--bits` or
/// `--override` (or a project's `quant` section) quantize it first: calibration statistics are
/// read from `--calibration` or computed on the shipped 1,024 calibration images.
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
    /// Quantize with this recipe: minmax, percentile, omse, ptq4vit, fq-vit, repq-vit,
    /// trio-vit, or a recipe RON file (default with --bits: trio-vit).
    #[arg(long)]
    recipe: Option<String>,
    /// Weight and activation bits of every layer, e.g. `w8a8`, `w4a8` (default: w8a8).
    #[arg(long)]
    bits: Option<BitWidths>,
    /// Bits for some layers, `PATTERN=wNaM` (`*` and `?` wildcards; a pattern may match a
    /// name from any `.`): `--override 'stages.3.*=w4a8'`. Repeatable; later ones win.
    #[arg(long = "override", value_name = "PATTERN=wNaM")]
    overrides: Vec<Override>,
    /// How the quantized model runs: `fake` (float arithmetic on quantized values) or `int`
    /// (integer arithmetic only, as the accelerator computes). Default: the project's, else
    /// fake. Implies quantization.
    #[arg(long, value_enum)]
    executor: Option<ExecutorArg>,
    /// Calibration statistics from `qvit calibrate` (default: calibrate now).
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// IDX images to calibrate on (default: the shipped 1,024 Fashion-MNIST training images).
    #[arg(long, value_name = "IDX")]
    calibration_data: Option<PathBuf>,
    /// Calibrate on the first N images.
    #[arg(long, default_value_t = 1024)]
    calibration_images: usize,
    /// Also print each layer's weight and activation SQNR (on the first 64 test images).
    #[arg(long)]
    layers: bool,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExecutorArg {
    Fake,
    Int,
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
    let model = prepare::model(&project)?;
    let graph = &model.graph;
    let data = project.data_source().open()?;
    prepare::check_images(&data, graph)?;
    let settings = quant_settings(args, &project);
    let plan = match &settings {
        Some(settings) => {
            let calibration = args.calibration.clone().or(project.calibration.clone());
            let stats = prepare::stats(
                &model,
                calibration.as_deref(),
                args.calibration_data.as_deref(),
                args.calibration_images,
            )?;
            Some(prepare::plan(&model, &stats, settings)?)
        }
        None => None,
    };
    let float = FloatExecutor::new(graph, &model.folded)?;
    let fake = match &plan {
        Some(p) => Some(FakeQuantExecutor::new(graph, &model.folded, p)?),
        None => None,
    };
    let executor_kind = settings.as_ref().map(|s| s.executor);
    let program = match (&plan, executor_kind) {
        (Some(p), Some(QuantExecutor::Int)) => Some(compile(graph, &model.folded, p)?),
        _ => None,
    };
    let int = program.as_ref().map(IntExecutor::new);
    let executor: &dyn Classifier = match (&int, &fake) {
        (Some(i), _) => i,
        (None, Some(f)) => f,
        (None, None) => &float,
    };
    let total = args.limit.map_or(data.len(), |l| l.min(data.len()));

    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {pos}/{len} images  {per_sec}  {msg}",
        )?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let run = || {
        evaluate(executor, &data, args.batch, args.limit, &mut |acc| {
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
    let run = Run {
        graph,
        weights: &model.weights_path,
        data: &data,
        acc: &acc,
        seconds,
        threads,
        plan: plan.as_ref(),
        executor: match (&int, &plan) {
            (Some(_), _) => "int",
            (None, Some(_)) => "fake-quant",
            (None, None) => "fp32",
        },
    };
    emit(&report(args, &run)?)?;
    if let (true, Some(fake)) = (args.layers, &fake) {
        let images = data.batch(0..data.len().min(64))?.images;
        let weights = diagnostics::weight_quality(&model.folded, fake.weights(), fake.plan());
        let acts = diagnostics::activation_quality(graph, &model.folded, fake, &images)?;
        emit(&layer_table(fake.plan(), &weights, &acts, args.format)?)?;
    }
    Ok(())
}

/// The quantization asked for: the project's `quant` section with the flags applied over it.
fn quant_settings(args: &EvalArgs, project: &Project) -> Option<QuantSettings> {
    let asked = args.recipe.is_some()
        || args.bits.is_some()
        || !args.overrides.is_empty()
        || args.executor.is_some();
    if !asked && project.quant.is_none() {
        return None;
    }
    let mut s = project.quant.clone().unwrap_or_default();
    if let Some(r) = &args.recipe {
        s.recipe = r.clone();
    }
    if let Some(b) = args.bits {
        s.bits = b;
    }
    s.overrides.extend(args.overrides.iter().cloned());
    if let Some(e) = args.executor {
        s.executor = match e {
            ExecutorArg::Fake => QuantExecutor::Fake,
            ExecutorArg::Int => QuantExecutor::Int,
        };
    }
    Some(s)
}

struct Run<'a> {
    graph: &'a Graph,
    weights: &'a Path,
    data: &'a Dataset,
    acc: &'a Accuracy,
    seconds: f64,
    threads: usize,
    plan: Option<&'a QuantPlan>,
    executor: &'static str,
}

fn layer_table(
    plan: &QuantPlan,
    weights: &[diagnostics::WeightQuality],
    acts: &[diagnostics::ActivationQuality],
    format: Format,
) -> anyhow::Result<String> {
    if let Format::Json = format {
        return Ok(serde_json::to_string_pretty(&serde_json::json!({
            "weights": weights,
            "activations": acts,
        }))? + "\n");
    }
    let mut t = table(
        &[
            "tensor",
            "kind",
            "bits",
            "SQNR",
            "network",
            "what the recipe did",
        ],
        &[2, 3, 4],
    );
    for (a, q) in plan.activations.iter().zip(acts) {
        t.add_row(vec![
            a.point.clone(),
            "activation".into(),
            a.bits.to_string(),
            format!("{:.1}", q.tensor_sqnr_db),
            format!("{:.1}", q.network_sqnr_db),
            a.note.clone(),
        ]);
    }
    for (w, q) in plan.weights.iter().zip(weights) {
        t.add_row(vec![
            w.layer.clone(),
            "weights".into(),
            w.bits.to_string(),
            format!("{:.1}", q.sqnr_db),
            String::new(),
            w.note.clone(),
        ]);
    }
    Ok(format!(
        "\nper-layer SQNR (dB; network = against the float model's tensor, errors accumulated)\n{}\n",
        t
    ))
}

fn report(args: &EvalArgs, run: &Run) -> anyhow::Result<String> {
    let Run {
        graph,
        weights,
        data,
        acc,
        seconds,
        threads,
        plan,
        executor,
    } = *run;
    let (lo, hi) = acc.top1_interval();
    let per_second = acc.images as f64 / seconds.max(1e-9);
    Ok(match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "model": graph.model,
                "executor": executor,
                "recipe": plan.map(|p| p.recipe.clone()),
                "bits": plan.map(|p| String::from(p.bits)),
                "overrides": plan.map(|p| p.overrides.iter().map(|o| o.to_string()).collect::<Vec<_>>()),
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
            "{} ({}) on {} — {} images\n\
             weights  {}\n\
             top-1    {:.2} %   (95 % interval {:.2}–{:.2} %)\n\
             top-5    {:.2} %\n\
             speed    {} images/s (batch {}, {} threads)\n",
            graph.model,
            match plan {
                Some(p) => executor_name(p, executor),
                None => "FP32".into(),
            },
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

fn executor_name(plan: &QuantPlan, executor: &str) -> String {
    let mut s = format!("{} {}, {executor}", plan.recipe, plan.bits);
    for o in &plan.overrides {
        s += &format!(", {o}");
    }
    s
}
