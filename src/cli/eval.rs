//! `qvit eval`: accuracy of a model on a dataset, in FP32 or quantized (fake-quant or integer executor).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use qvit_core::eval::{Accuracy, Classifier, evaluate};
use qvit_core::exec::float::FloatExecutor;
use qvit_core::exec::int::{IntExecutor, compile};
use qvit_core::pipeline;
use qvit_core::quant::{FakeQuantExecutor, QuantExecutor, QuantPlan, diagnostics};
use serde::{Deserialize, Serialize};

use super::format::{Format, emit, table, thousands};
use super::prepare;
use super::quant_args::{DataArgs, QuantArgs, project_with};

/// Measure a model's top-1 and top-5 accuracy on a dataset, in FP32 or quantized.
///
/// With no arguments it evaluates the shipped default in FP32: the micro EfficientViT trained
/// on Fashion-MNIST, on the shipped 10,000-image test set. `--recipe`, `--bits` or
/// `--override` (or a project's `quant` section) quantize it first: calibration statistics are
/// read from `--calibration` or computed on `--calibration-data` (the shipped 1,024
/// Fashion-MNIST images for the micro models).
///
/// A full-size model takes its checkpoint and an ImageNet-style folder:
///
///   qvit eval efficientvit-b1 --weights efficientvit_b1_r224.pt --data imagenet/val
///     --calibration-data imagenet/train --recipe trio-vit --executor int
///
/// A cluster shares one evaluation with `--shard i/N --out part-i.json` per job (give every
/// job the same `--calibration FILE` from `qvit calibrate` so that none calibrates again), then
/// `qvit eval merge part-*.json` prints what a single run would.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate one share of the images, `I/N` (shards 0 to N−1 split the batches evenly);
    /// with --out, `qvit eval merge` adds the shares up.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Also write the counts (overall and per class) as JSON, for `qvit eval merge`.
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Worker threads (default: one per core). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    quant: QuantArgs,
    /// How the quantized model runs: `fake` (float arithmetic on quantized values) or `int`
    /// (integer arithmetic only, as the accelerator computes). Default: the project's, else
    /// fake. Implies quantization.
    #[arg(long, value_enum)]
    executor: Option<ExecutorArg>,
    /// Also print each layer's weight and activation SQNR (on the first 64 test images). With
    /// `--executor int` a column adds the integer executor's own tensors (decoded with the
    /// compile-time scales) against float, beside fake-quant's: where integer arithmetic adds
    /// error. In `--format json` the figures are the `layers` field of the one document.
    #[arg(long)]
    layers: bool,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Subcommand)]
enum EvalCommand {
    /// Add up the counts of `qvit eval --shard I/N --out FILE` runs into the result of one run.
    ///
    /// Every share must come from the same model, weights, data, quantization and batch size,
    /// and the shares must cover 0..N once each; what is missing or mixed is named.
    Merge {
        /// The files the shards wrote.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// One share of an evaluation, `index/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Shard {
    index: usize,
    count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 0/8"))?;
        let (index, count): (usize, usize) = (
            i.trim()
                .parse()
                .map_err(|_| format!("`{i}` is not a shard index"))?,
            n.trim()
                .parse()
                .map_err(|_| format!("`{n}` is not a shard count"))?,
        );
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: give I from 0 to N−1 and N ≥ 1"
            ));
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// This share of `total` images in batches of `batch` (≥ 1): whole batches, so that every
    /// image is computed in the same batch as in an unsharded run. In u128, so that no share of
    /// a count read from a file can wrap.
    fn range(self, total: usize, batch: usize) -> std::ops::Range<usize> {
        let (total, batch) = (total as u128, batch.max(1) as u128);
        let batches = total.div_ceil(batch);
        let count = self.count.max(1) as u128;
        let at = |i: u128| ((i * batches / count) * batch).min(total) as usize;
        at(self.index as u128)..at(self.index as u128 + 1)
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExecutorArg {
    Fake,
    Int,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    if let Some(EvalCommand::Merge { parts, format }) = &args.command {
        return merge(parts, *format);
    }
    let (project, spec) = project_with(args.target.as_deref(), &args.data, &args.quant)?;
    let model = prepare::model(&project)?;
    let graph = &model.graph;
    let data = pipeline::test_data(&project, graph)?;
    let executor_arg = args.executor.map(|e| match e {
        ExecutorArg::Fake => QuantExecutor::Fake,
        ExecutorArg::Int => QuantExecutor::Int,
    });
    let settings = args
        .quant
        .asked(&project, executor_arg)
        .then(|| args.quant.settings(&project, &spec, executor_arg));
    let plan = match &settings {
        Some(settings) => Some(prepare::project_plan(
            &model,
            &project,
            settings,
            settings.executor == QuantExecutor::Int,
        )?),
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
    if args.batch == 0 {
        anyhow::bail!("--batch 0: give at least one image per batch");
    }
    let total = args.limit.map_or(data.len(), |l| l.min(data.len()));
    let shard = args.shard.unwrap_or(Shard { index: 0, count: 1 });
    let range = shard.range(total, args.batch);
    let indices: Vec<usize> = range.clone().collect();
    let part = data.subset(&indices);
    if part.is_empty() {
        anyhow::bail!(
            "shard {}/{} of {} images in batches of {} holds no image; use fewer shards",
            shard.index,
            shard.count,
            total,
            args.batch
        );
    }

    let bar = indicatif::ProgressBar::new(part.len() as u64).with_style(prepare::style(
        "{spinner} [{bar:30}] {pos}/{len} images  {rate}  eta {eta}  {msg}",
    )?);
    let started = Instant::now();
    let run = || {
        evaluate(executor, &part, args.batch, None, &mut |acc| {
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
    let result = EvalResult {
        setup: Setup {
            model: graph.model.clone(),
            resolution: graph.resolution,
            executor: match (&int, &plan) {
                (Some(_), _) => "int",
                (None, Some(_)) => "fake-quant",
                (None, None) => "fp32",
            }
            .into(),
            recipe: plan.as_ref().map(|p| p.recipe.clone()),
            bits: plan.as_ref().map(|p| String::from(p.bits)),
            overrides: plan
                .as_ref()
                .map(|p| p.overrides.iter().map(|o| o.to_string()).collect())
                .unwrap_or_default(),
            weights: model.weights_path.display().to_string(),
            data: data.origin.clone(),
            images_in_data: total,
            batch: args.batch,
        },
        shard,
        range: (range.start, range.end),
        accuracy: acc,
        seconds,
        threads,
    };
    if let Some(out) = &args.out {
        qvit_core::ron_io::write_atomic(out, serde_json::to_string_pretty(&result)?.as_bytes())?;
    }
    let layers = match (args.layers, &fake) {
        (true, Some(fake)) => {
            let images = data.batch(0..data.len().min(64))?.images;
            Some(Layers {
                weights: diagnostics::weight_quality(&model.folded, fake.weights(), fake.plan()),
                activations: diagnostics::activation_quality(graph, &model.folded, fake, &images)?,
                int_network: match &program {
                    Some(program) => Some(diagnostics::int_network_quality(
                        graph,
                        &model.folded,
                        fake.plan(),
                        program,
                        &images,
                    )?),
                    None => None,
                },
            })
        }
        _ => None,
    };
    match args.format {
        // One JSON document: the accuracy, with the per-layer figures under `layers`.
        Format::Json => {
            let mut v = report_json(&result);
            if let Some(l) = &layers {
                v["layers"] = serde_json::json!({
                    "weights": l.weights,
                    "activations": l.activations,
                    "int_network_sqnr_db": l.int_network,
                });
            }
            emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
        }
        Format::Table => {
            emit(&report(&result, Format::Table)?)?;
            if let (Some(l), Some(fake)) = (&layers, &fake) {
                emit(&layer_table(fake.plan(), l))?;
            }
        }
    }
    Ok(())
}

/// What `--layers` measured: weight and activation SQNRs, and with the integer executor its own
/// tensors' SQNR per activation point.
struct Layers {
    weights: Vec<diagnostics::WeightQuality>,
    activations: Vec<diagnostics::ActivationQuality>,
    int_network: Option<Vec<f64>>,
}

/// What an evaluation was of: equal in every share of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Setup {
    model: String,
    resolution: usize,
    executor: String,
    recipe: Option<String>,
    bits: Option<String>,
    overrides: Vec<String>,
    weights: String,
    data: String,
    /// Images evaluated over all shares (the data's, or `--limit`).
    images_in_data: usize,
    batch: usize,
}

/// The counts of one run or share, as `--out` writes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EvalResult {
    setup: Setup,
    shard: Shard,
    /// The images `[start, end)` this share evaluated.
    range: (usize, usize),
    accuracy: Accuracy,
    seconds: f64,
    threads: usize,
}

/// `qvit eval merge`: the shares added up, after checking they are one evaluation, whole.
fn merge(parts: &[PathBuf], format: Format) -> anyhow::Result<()> {
    let mut results: Vec<(PathBuf, EvalResult)> = Vec::new();
    for path in parts {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let r: EvalResult = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a file written by `qvit eval --out` ({e})",
                path.display()
            )
        })?;
        let (shard, batch) = (r.shard, r.setup.batch);
        if shard.count == 0 || shard.index >= shard.count || batch == 0 {
            anyhow::bail!(
                "{}: shard {}/{} with batch {batch} is not one `qvit eval --shard` writes; was \
                 the file edited?",
                path.display(),
                shard.index,
                shard.count
            );
        }
        results.push((path.clone(), r));
    }
    let (first_path, first) = &results[0];
    let count = first.shard.count;
    let mut by_index: Vec<Option<&Path>> = vec![None; count];
    for (path, r) in &results {
        if r.setup != first.setup || r.shard.count != count {
            anyhow::bail!(
                "{} and {} are shares of different evaluations (model, weights, data,                  quantization, batch or shard count differ):
  {:?} {}/{}
  {:?} {}/{}",
                first_path.display(),
                path.display(),
                first.setup,
                first.shard.index,
                count,
                r.setup,
                r.shard.index,
                r.shard.count
            );
        }
        let expected = r.shard.range(r.setup.images_in_data, r.setup.batch);
        if (r.range.0, r.range.1) != (expected.start, expected.end)
            || r.accuracy.images != expected.len()
        {
            anyhow::bail!(
                "{}: shard {}/{} should hold images {}..{}, the file says {}..{} with {}                  counted; was it edited or cut short?",
                path.display(),
                r.shard.index,
                count,
                expected.start,
                expected.end,
                r.range.0,
                r.range.1,
                r.accuracy.images
            );
        }
        if let Some(other) = by_index[r.shard.index].replace(path) {
            anyhow::bail!(
                "shard {}/{count} is given twice: {} and {}",
                r.shard.index,
                other.display(),
                path.display()
            );
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|&i| by_index[i].is_none())
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "shards {} are missing; run them with `qvit eval … --shard I/{count} --out FILE`",
            missing.join(", ")
        );
    }
    let accuracy = results
        .iter()
        .fold(Accuracy::default(), |acc, (_, r)| acc.merged(&r.accuracy));
    let merged = EvalResult {
        setup: first.setup.clone(),
        shard: Shard { index: 0, count: 1 },
        range: (0, first.setup.images_in_data),
        accuracy,
        // Images per second of one job's worth of threads, over the shares' summed time.
        seconds: results.iter().map(|(_, r)| r.seconds).sum(),
        threads: results.iter().map(|(_, r)| r.threads).max().unwrap_or(1),
    };
    emit(&report(&merged, format)?)
}

fn layer_table(plan: &QuantPlan, layers: &Layers) -> String {
    let (weights, acts, int_network) = (
        &layers.weights,
        &layers.activations,
        layers.int_network.as_deref(),
    );
    let mut header = vec!["tensor", "kind", "bits", "SQNR", "network"];
    if int_network.is_some() {
        header.push("int network");
    }
    header.push("what the recipe did");
    let numeric: Vec<usize> = (2..header.len() - 1).collect();
    let mut t = table(&header, &numeric);
    for (p, (a, q)) in plan.activations.iter().zip(acts).enumerate() {
        let mut row = vec![
            a.point.clone(),
            "activation".into(),
            a.bits.to_string(),
            format!("{:.1}", q.tensor_sqnr_db),
            format!("{:.1}", q.network_sqnr_db),
        ];
        if let Some(int) = int_network {
            row.push(format!("{:.1}", int[p]));
        }
        row.push(a.note.clone());
        t.add_row(row);
    }
    for (w, q) in plan.weights.iter().zip(weights) {
        let mut row = vec![
            w.layer.clone(),
            "weights".into(),
            w.bits.to_string(),
            format!("{:.1}", q.sqnr_db),
            String::new(),
        ];
        if int_network.is_some() {
            row.push(String::new());
        }
        row.push(w.note.clone());
        t.add_row(row);
    }
    let int_note = if int_network.is_some() {
        "; int network = the integer executor's tensor against the float model's"
    } else {
        ""
    };
    format!(
        "\nper-layer SQNR (dB; network = the fake-quant network's tensor against the float \
         model's, errors accumulated{int_note})\n{t}\n"
    )
}

fn report_json(r: &EvalResult) -> serde_json::Value {
    let (setup, acc) = (&r.setup, &r.accuracy);
    let (lo, hi) = acc.top1_interval();
    serde_json::json!({
        "model": setup.model,
        "executor": setup.executor,
        "recipe": setup.recipe,
        "bits": setup.bits,
        "overrides": setup.overrides,
        "weights": setup.weights,
        "data": setup.data,
        "shard": [r.shard.index, r.shard.count],
        "images": acc.images,
        "top1_percent": acc.top1(),
        "top5_percent": acc.top5(),
        "top1_interval_95_percent": [lo, hi],
        "class_images": acc.class_images,
        "class_top1_correct": acc.class_top1_correct,
        "images_per_second": acc.images as f64 / r.seconds.max(1e-9),
        "batch": setup.batch,
        "threads": r.threads,
    })
}

fn report(r: &EvalResult, format: Format) -> anyhow::Result<String> {
    let (setup, acc) = (&r.setup, &r.accuracy);
    let (lo, hi) = acc.top1_interval();
    let per_second = acc.images as f64 / r.seconds.max(1e-9);
    let shard = (r.shard.count > 1).then(|| {
        format!(
            " (shard {}/{}, images {}..{} of {})",
            r.shard.index, r.shard.count, r.range.0, r.range.1, setup.images_in_data
        )
    });
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&report_json(r))? + "\n",
        Format::Table => format!(
            "{} ({}) on {} — {} images{}\n\
             weights  {}\n\
             top-1    {:.2} %   (95 % interval {:.2}–{:.2} %)\n\
             top-5    {:.2} %\n\
             speed    {} images/s (batch {}, {} threads)\n",
            setup.model,
            executor_name(setup),
            setup.data,
            thousands(acc.images as u64),
            shard.unwrap_or_default(),
            setup.weights,
            acc.top1(),
            lo,
            hi,
            acc.top5(),
            thousands(per_second.round() as u64),
            setup.batch,
            r.threads
        ),
    })
}

fn executor_name(setup: &Setup) -> String {
    let (Some(recipe), Some(bits)) = (&setup.recipe, &setup.bits) else {
        return "FP32".into();
    };
    let mut s = format!("{recipe} {}, {}", bits.to_uppercase(), setup.executor);
    for o in &setup.overrides {
        s += &format!(", {o}");
    }
    s
}
