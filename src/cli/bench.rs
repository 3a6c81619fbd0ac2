//! `qvit bench`: whole-model throughput of the fp32, fake-quant and integer executors, on
//! random weights and random images.

use std::time::{Duration, Instant};

use clap::Args;
use qvit_core::arch::{ArchSpec, Family};
use qvit_core::data::{Dataset, Normalize};
use qvit_core::eval::Classifier;
use qvit_core::exec::cpu::float_lanes;
use qvit_core::exec::float::FloatExecutor;
use qvit_core::exec::int::kernels::{Isa, products_on_amx};
use qvit_core::exec::int::{IntExecutor, compile};
use qvit_core::exec::peak::{Peak, fp32_peak, int8_peak};
use qvit_core::exec::step_time::StepTime;
use qvit_core::graph::Graph;
use qvit_core::quant::{self, FakeQuantExecutor, QuantSettings, Recipe, calibrate};
use qvit_core::rng::Rng;
use qvit_core::tensor::Tensor;
use qvit_core::weights::Weights;

use super::format::{Format, emit, table, thousands};

/// Measure whole-model images/s of the executors on random weights.
///
/// Each (model, batch) warms every executor up once, then runs them in turn, one run each per
/// round, for about `--seconds` per executor; the median time per batch gives images/s. The quantized executors use W8A8 with
/// the family's recipe (trio-vit for EfficientViT, repq-vit for DeiT) calibrated on 4 random
/// images. Results are machine-dependent: compare figures from one run (the `vs fp32` column).
///
/// The `of peak` column is each executor's multiply-accumulates per second as a share of the
/// machine's peak, measured on the same threads before the runs and after them (the larger of
/// the two): register-only FMA loops for fp32 and fake-quant (both compute in f32), the int8
/// kernels' own instruction for int (AMX's `tdpbsud` where the int8 products run on AMX tiles,
/// `vpdpbusd` with AVX-512 VNNI, `vpmaddwd` with AVX2; none for the scalar kernels).
///
/// `QVIT_ISA=avx2` runs every kernel, the `gemm` crate's f32 products included, as on a CPU
/// without AVX-512 (`QVIT_ISA=avx512vnni` as on one without AMX, and `QVIT_ISA=scalar` in
/// portable code), to measure such a machine on this one.
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
    /// Executors to measure, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [Which::Fp32, Which::Fake, Which::Int])]
    executors: Vec<Which>,
    /// Also time the executors' steps on one image — the integer executor's program steps,
    /// the fp32 executor's graph nodes: the time by kind of step and the map or tokens it
    /// works on, and the slowest steps (where to look before making one faster, or to read
    /// beside a peer's per-node profile). Needs `int` or `fp32` among `--executors`.
    #[arg(long)]
    steps: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Fp32,
    Fake,
    Int,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Fp32 => "fp32",
            Which::Fake => "fake-quant",
            Which::Int => "int",
        }
    }
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
    /// images/s over the fp32 executor's on the same model and batch.
    vs_fp32: Option<f64>,
    /// GMAC/s over the peak of the arithmetic the executor runs (see [`Peaks`]).
    share_of_peak: Option<f64>,
}

/// The machine's peaks on the bench's threads: fp32 for the fp32 and fake-quant executors,
/// int8 (of the kernels in use) for the integer one.
#[derive(Debug, serde::Serialize)]
struct Peaks {
    fp32: Option<Peak>,
    int8: Option<Peak>,
}

impl Peaks {
    fn measure() -> Self {
        Peaks {
            fp32: fp32_peak(),
            int8: int8_peak(Isa::detect()),
        }
    }

    /// Each peak the larger of two measurements: one taken while something else ran on the
    /// machine reads low (a shared two-core machine once gave half its fp32 peak, and the
    /// fp32 executor "127 % of peak").
    fn larger(self, other: Peaks) -> Peaks {
        let larger = |a: Option<Peak>, b: Option<Peak>| match (a, b) {
            (Some(a), Some(b)) => Some(if b.gmacs > a.gmacs { b } else { a }),
            (a, b) => a.or(b),
        };
        Peaks {
            fp32: larger(self.fp32, other.fp32),
            int8: larger(self.int8, other.int8),
        }
    }

    fn of(&self, which: Which) -> Option<&Peak> {
        match which {
            Which::Fp32 | Which::Fake => self.fp32.as_ref(),
            Which::Int => self.int8.as_ref(),
        }
    }

    /// One line for the table's footer.
    fn describe(&self) -> String {
        let one = |name: &str, p: &Option<Peak>, without: &str| match p {
            Some(p) => format!("{name} {:.1} GMAC/s ({})", p.gmacs, p.instruction),
            None => format!("{name} none ({without})"),
        };
        format!(
            "peaks on these threads: {}, {}",
            one("fp32", &self.fp32, "no FMA"),
            one("int8", &self.int8, "scalar int kernels")
        )
    }
}

/// The int kernels in use: their ISA, and AMX where the products run on its tiles.
fn kernels_name() -> String {
    match products_on_amx() {
        true => format!("{} + amx", Isa::detect().name()),
        false => Isa::detect().name().to_string(),
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.batch.contains(&0) {
        anyhow::bail!("--batch: batch sizes must be at least 1");
    }
    if args.steps && !args.executors.iter().any(|&w| w != Which::Fake) {
        anyhow::bail!(
            "--steps times the int and fp32 executors' steps: add `int` or `fp32` to --executors"
        );
    }
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    // The peaks before the runs and again after them (see `Peaks::larger`).
    let peaks_before = pool.install(Peaks::measure);
    let mut rows = Vec::new();
    let mut executors = Vec::new();
    let mut step_reports = Vec::new();
    for name in &args.models {
        let graph = Graph::build(&ArchSpec::resolve(name)?)?;
        let folded = Weights::random(&graph, 1).fold(&graph)?;
        let data = random_data(&graph, args.batch.iter().copied().max().unwrap_or(1).max(4))?;
        let needs_plan = args.executors.iter().any(|&w| w != Which::Fp32);
        let plan = if needs_plan {
            let recipe = Recipe::preset(match graph.family {
                Family::EfficientVit => "trio-vit",
                Family::Deit => "repq-vit",
            })?;
            let stats = pool.install(|| calibrate(&graph, &folded, &data, 4, 4, &mut |_, _| {}))?;
            let settings = QuantSettings {
                recipe: recipe.name.clone(),
                ..QuantSettings::default()
            };
            Some(quant::build(&graph, &folded, &stats, &recipe, &settings)?)
        } else {
            None
        };
        let program = match &plan {
            Some(p) if args.executors.contains(&Which::Int) => Some(compile(&graph, &folded, p)?),
            _ => None,
        };
        let float = FloatExecutor::new(&graph, &folded)?;
        let fake = match &plan {
            Some(p) => Some(FakeQuantExecutor::new(&graph, &folded, p)?),
            None => None,
        };
        let int = program.as_ref().map(IntExecutor::new);
        let execs: Vec<(Which, &dyn Classifier)> = args
            .executors
            .iter()
            .map(|&which| -> (Which, &dyn Classifier) {
                match which {
                    Which::Fp32 => (which, &float),
                    Which::Fake => (which, fake.as_ref().expect("planned")),
                    Which::Int => (which, int.as_ref().expect("compiled")),
                }
            })
            .collect();
        if args.steps {
            let image = data.batch(0..1)?.images;
            // Not fake-quant: its nodes are the fp32 executor's, with quantizers between them.
            for &(which, _) in execs.iter().filter(|(w, _)| *w != Which::Fake) {
                let time = |rounds| match which {
                    Which::Int => Ok(int
                        .as_ref()
                        .expect("compiled")
                        .time_steps(&image.data, rounds)),
                    _ => float.time_nodes(&image, rounds),
                };
                let report = pool.install(|| time_steps(&graph.model, which, time, args.seconds));
                step_reports.push(report?);
            }
        }
        for &batch in &args.batch {
            let images = data.batch(0..batch)?.images;
            let times = pool.install(|| measure(&execs, &images, args.seconds))?;
            let mut fp32_rate = None;
            for ((which, _), times) in execs.iter().zip(times) {
                let median = times[times.len() / 2].as_secs_f64();
                let per_second = batch as f64 / median;
                let gmacs = per_second * graph.macs() as f64 / 1e9;
                if *which == Which::Fp32 {
                    fp32_rate = Some(per_second);
                }
                eprintln!(
                    "{} {} batch {batch}: {per_second:.1} images/s",
                    graph.model,
                    which.name()
                );
                rows.push(Row {
                    model: graph.model.clone(),
                    executor: which.name(),
                    batch,
                    runs: times.len(),
                    median_ms_per_batch: median * 1e3,
                    images_per_second: per_second,
                    gmacs_per_second: gmacs,
                    vs_fp32: fp32_rate.map(|f| per_second / f),
                    share_of_peak: None,
                });
                executors.push(*which);
            }
        }
    }
    let peaks = peaks_before.larger(pool.install(Peaks::measure));
    for (r, &which) in rows.iter_mut().zip(&executors) {
        r.share_of_peak = peaks.of(which).map(|p| r.gmacs_per_second / p.gmacs);
    }
    if rows
        .iter()
        .any(|r| r.share_of_peak.is_some_and(|s| s > 1.0))
    {
        eprintln!(
            "warning: a share of peak above 100 % means the peak was measured low both times \
             (other work on these cores?): read the `vs fp32` column, or run again"
        );
    }
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "threads": threads,
                "int_kernels": kernels_name(),
                "float_kernels": float_lanes().name(),
                "peaks": peaks,
                "results": rows,
                "steps": step_reports,
            }))? + "\n"
        }
        Format::Table => {
            let mut t = table(
                &[
                    "model", "executor", "batch", "ms/batch", "images/s", "GMAC/s", "vs fp32",
                    "of peak",
                ],
                &[2, 3, 4, 5, 6, 7],
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
                    r.vs_fp32.map_or(String::new(), |v| format!("{v:.2}×")),
                    r.share_of_peak
                        .map_or(String::new(), |v| format!("{:.1} %", v * 100.0)),
                ]);
            }
            let steps: String = step_reports.iter().map(StepReport::table).collect();
            format!(
                "{t}\n{threads} threads, random weights, median of the timed runs; int kernels: {}, \
                 float kernels: {}\n{}\n{steps}",
                kernels_name(),
                float_lanes().name(),
                peaks.describe()
            )
        }
    };
    emit(&text)
}

/// An executor's steps timed on one image (`--steps`).
#[derive(Debug, serde::Serialize)]
struct StepReport {
    model: String,
    executor: &'static str,
    rounds: usize,
    steps: Vec<StepTime>,
}

/// Times every step of an executor (`time(rounds)`) for about `seconds` (3 rounds at least).
fn time_steps(
    model: &str,
    which: Which,
    time: impl Fn(usize) -> qvit_core::error::Result<Vec<StepTime>>,
    seconds: f64,
) -> anyhow::Result<StepReport> {
    let one = Instant::now();
    time(1)?;
    let rounds = (seconds / one.elapsed().as_secs_f64().max(1e-6)).clamp(3.0, 1000.0) as usize;
    Ok(StepReport {
        model: model.to_string(),
        executor: which.name(),
        rounds,
        steps: time(rounds)?,
    })
}

/// Steps of one kind on one map or token count.
struct Group<'a> {
    key: (&'a str, &'a str),
    steps: usize,
    seconds: f64,
    macs: u64,
}

impl StepReport {
    /// Two tables: the time by kind of step and what it works on (beside its share of the
    /// weighted layers' MACs), and the slowest steps.
    fn table(&self) -> String {
        let total: f64 = self.steps.iter().map(|s| s.seconds).sum();
        let share = |t: f64| format!("{:.1} %", 100.0 * t / total.max(f64::MIN_POSITIVE));
        let all_macs: u64 = self.steps.iter().map(|s| s.macs).sum();
        let mut groups: Vec<Group> = Vec::new();
        for s in &self.steps {
            let key = (s.kind, s.shape.as_str());
            match groups.iter_mut().find(|g| g.key == key) {
                Some(g) => {
                    (g.steps, g.seconds, g.macs) =
                        (g.steps + 1, g.seconds + s.seconds, g.macs + s.macs)
                }
                None => groups.push(Group {
                    key,
                    steps: 1,
                    seconds: s.seconds,
                    macs: s.macs,
                }),
            }
        }
        groups.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let mut by_kind = table(
            &["step kind", "on", "steps", "ms", "share", "of MACs"],
            &[2, 3, 4, 5],
        );
        for g in &groups {
            let of_macs = match g.macs {
                0 => String::new(),
                m => format!("{:.1} %", 100.0 * m as f64 / all_macs.max(1) as f64),
            };
            by_kind.add_row(vec![
                g.key.0.to_string(),
                g.key.1.to_string(),
                g.steps.to_string(),
                format!("{:.3}", g.seconds * 1e3),
                share(g.seconds),
                of_macs,
            ]);
        }
        let mut slowest: Vec<&StepTime> = self.steps.iter().collect();
        slowest.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let mut top = table(&["step", "kind", "on", "ms", "share"], &[3, 4]);
        for s in slowest.iter().take(12) {
            let ms = format!("{:.3}", s.seconds * 1e3);
            top.add_row(vec![
                s.name.clone(),
                s.kind.into(),
                s.shape.clone(),
                ms,
                share(s.seconds),
            ]);
        }
        format!(
            "\n{}: the {} executor's {} steps on one image, {:.2} ms (medians of {} rounds)\n{by_kind}\nslowest steps:\n{top}\n",
            self.model,
            self.executor,
            self.steps.len(),
            total * 1e3,
            self.rounds
        )
    }
}

/// Random 8-bit images (as a dataset, so calibration and the timed batches see the same data).
fn random_data(graph: &Graph, n: usize) -> anyhow::Result<Dataset> {
    let mut rng = Rng::new(7);
    let shape = graph.input_shape();
    let bytes = (0..n * shape.iter().product::<usize>())
        .map(|_| rng.below(256) as u8)
        .collect();
    let normalize = if shape[0] == 3 {
        Normalize::imagenet()
    } else {
        Normalize::fashion_mnist()
    };
    Ok(Dataset::from_bytes(
        "random images",
        [shape[0], shape[1], shape[2]],
        bytes,
        vec![0; n],
        normalize,
    )?)
}

/// Sorted durations of each executor's runs after one warm-up each. The executors take turns,
/// one run each per round, so a machine whose speed drifts affects all of them alike and their
/// ratios stay comparable.
fn measure(
    execs: &[(Which, &dyn Classifier)],
    images: &Tensor,
    seconds: f64,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    for (_, e) in execs {
        e.logits(images)?;
    }
    let budget = Duration::from_secs_f64(seconds * execs.len() as f64);
    let started = Instant::now();
    let mut times = vec![Vec::new(); execs.len()];
    while started.elapsed() < budget || times[0].len() < 3 {
        for ((_, e), t) in execs.iter().zip(&mut times) {
            let s = Instant::now();
            e.logits(images)?;
            t.push(s.elapsed());
        }
    }
    times.iter_mut().for_each(|t| t.sort());
    Ok(times)
}
