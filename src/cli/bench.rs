//! `qvit bench`: whole-model throughput of the executors, on random weights.

use std::time::{Duration, Instant};

use clap::Args;
use qvit_core::arch::ArchSpec;
use qvit_core::exec::float::FloatExecutor;
use qvit_core::graph::Graph;
use qvit_core::rng::Rng;
use qvit_core::tensor::Tensor;
use qvit_core::weights::Weights;

use super::format::{Format, emit, table, thousands};

/// Measure whole-model images/s of the executors on random weights.
///
/// Each (model, batch) pair runs once to warm up, then repeatedly for at least `--seconds`; the
/// median time per batch gives images/s. Results are machine-dependent: compare figures from
/// one run.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model presets or RON files.
    #[arg(default_values_t = ["efficientvit-b1", "deit-tiny", "efficientvit-micro", "deit-micro"].map(String::from))]
    models: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    batch: Vec<usize>,
    /// Minimum measuring time per (model, batch).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    model: String,
    executor: &'static str,
    batch: usize,
    runs: usize,
    median_ms_per_batch: f64,
    images_per_second: f64,
    gmacs_per_second: f64,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.batch.contains(&0) {
        anyhow::bail!("--batch: batch sizes must be at least 1");
    }
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut rows = Vec::new();
    for name in &args.models {
        let graph = Graph::build(&ArchSpec::resolve(name)?)?;
        let folded = Weights::random(&graph, 1).fold(&graph)?;
        let exec = FloatExecutor::new(&graph, &folded)?;
        for &batch in &args.batch {
            let images = random_images(&graph, batch);
            let times = pool.install(|| measure(&exec, &images, args.seconds))?;
            let median = times[times.len() / 2].as_secs_f64();
            let per_second = batch as f64 / median;
            eprintln!("{} batch {batch}: {per_second:.1} images/s", graph.model);
            rows.push(Row {
                model: graph.model.clone(),
                executor: "fp32",
                batch,
                runs: times.len(),
                median_ms_per_batch: median * 1e3,
                images_per_second: per_second,
                gmacs_per_second: per_second * graph.macs() as f64 / 1e9,
            });
        }
    }
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "threads": threads,
                "results": rows,
            }))? + "\n"
        }
        Format::Table => {
            let mut t = table(
                &[
                    "model", "executor", "batch", "ms/batch", "images/s", "GMAC/s",
                ],
                &[2, 3, 4, 5],
            );
            for r in &rows {
                t.add_row(vec![
                    r.model.clone(),
                    r.executor.to_string(),
                    r.batch.to_string(),
                    format!("{:.2}", r.median_ms_per_batch),
                    if r.images_per_second >= 100.0 {
                        thousands(r.images_per_second.round() as u64)
                    } else {
                        format!("{:.1}", r.images_per_second)
                    },
                    format!("{:.1}", r.gmacs_per_second),
                ]);
            }
            format!("{t}\n{threads} threads, random weights, median of the timed runs\n")
        }
    };
    emit(&text)
}

fn random_images(graph: &Graph, batch: usize) -> Tensor {
    let mut rng = Rng::new(7);
    let shape: Vec<usize> = [&[batch][..], graph.input_shape()].concat();
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.normal()).collect())
}

/// Sorted durations of repeated runs after one warm-up.
fn measure(
    exec: &FloatExecutor<'_>,
    images: &Tensor,
    seconds: f64,
) -> anyhow::Result<Vec<Duration>> {
    exec.forward(images)?;
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < budget || times.len() < 3 {
        let t = Instant::now();
        exec.forward(images)?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}
