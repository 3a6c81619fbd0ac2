//! `qvit search`: per-layer widths and accelerator designs searched together.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::Args;
use qvit_core::accel::packing::Packing;
use qvit_core::explore::Shard;
use qvit_core::quant::QuantExecutor;
use qvit_core::search::job;
use qvit_core::search::job::ShardStep;
use qvit_core::search::run::{Method, Outcome, Progress, Row};
use qvit_core::search::space::SearchSpace;

use super::prepare;

/// Search per-layer bit widths and accelerator designs together for the best trade-offs of
/// top-1, FPS and GOPS/DSP.
///
/// Each layer's damage at each width is measured alone (logit KL on the calibration sample);
/// allocations are proposed from it — every uniform width, a greedy path that narrows the
/// layer adding the least damage per hardware cost saved, and a lowest-sensitivity-first
/// baseline — and priced on every design of the space. The Pareto front of (proxy, FPS,
/// GOPS/DSP) is confirmed with the integer executor (or `executor: Fake`) on held-out training
/// images, the front taken again on their top-1, and only then reported on the test set.
///
///   qvit search presets/searches/micro-spread.ron --out front.csv
///     --report docs/results/search-micro-spread.md
///
/// The CSV has one row per front design and, as reference rows, the best (most FPS) design of
/// each uniform width, with the per-layer widths in run-length form (`w8a8*3 w4a4 …`, one per
/// layer or group in network order).
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The search space (see presets/searches/).
    space: PathBuf,
    /// Output CSV (default: the space's name with .csv, in the current folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a Markdown report (the fronts, the comparison with uniform widths and with
    /// the baseline allocation, and the time each stage took).
    #[arg(long, value_name = "FILE.md")]
    report: Option<PathBuf>,
    /// Calibration statistics from `qvit calibrate` (default: calibrate now).
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Also write each CSV row as a project file in this folder (`row-001.ron`, … in CSV
    /// order, named in the CSV's `project` column) that `qvit eval FILE --limit N` (N: the
    /// test images of the search) and `qvit cost FILE` reproduce; `qvit explore FILE` opens it.
    #[arg(long, value_name = "DIR")]
    projects: Option<PathBuf>,
    /// Keep every stage's results in this folder and read back what an earlier run on the
    /// same inputs kept there: an interrupted search resumes where it stopped.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Do only this shard's share of each stage (layers i, i+N, … of the sensitivity;
    /// allocations i, i+N, … of the held-out and test top-1) into `--state`, stopping at the
    /// first stage the other shards have not finished. Run every shard (on as many machines,
    /// sharing the folder) until all are through; the run that finds every share there
    /// writes the results.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse, requires = "state")]
    shard: Option<Shard>,
    /// Worker threads (default: one per core). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: &SearchArgs) -> anyhow::Result<()> {
    let space = SearchSpace::load(&args.space)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.csv", space.name)));
    if out.extension().and_then(|e| e.to_str()) != Some("csv") {
        anyhow::bail!("--out {}: give a .csv file", out.display());
    }
    if let Some(r) = &args.report
        && r.extension().and_then(|e| e.to_str()) != Some("md")
    {
        anyhow::bail!("--report {}: give a .md file", r.display());
    }
    let search = || search(&space, args);
    let found = match args.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()?
            .install(search)?,
        None => search()?,
    };
    let Some((searched, seconds)) = found else {
        return Ok(());
    };
    let projects = match &args.projects {
        Some(dir) => write_projects(args, &searched, dir)?,
        None => Vec::new(),
    };
    let outcome = searched.outcome;
    write_csv(&space, &outcome, &projects, &out)?;
    eprintln!(
        "wrote {} ({} front designs, {} uniform references) in {:.0} s",
        out.display(),
        outcome
            .rows
            .iter()
            .filter(|r| r.on_front && !r.reference)
            .count(),
        outcome.rows.iter().filter(|r| r.reference).count(),
        seconds
    );
    if let Some(path) = &args.report {
        let text = report(&space, args, &outcome, seconds);
        qvit_core::ron_io::write_atomic(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The search, or `None` when this is a shard that has done its share of a stage the other
/// shards have not finished (it says so).
fn search(space: &SearchSpace, args: &SearchArgs) -> anyhow::Result<Option<(job::Searched, f64)>> {
    let bar = StageBar::new()?;
    let never = AtomicBool::new(false);
    let (calibration, state) = (args.calibration.as_deref(), args.state.as_deref());
    let Some(shard) = args.shard else {
        let searched = job::search(space, calibration, state, &never, &|p| bar.report(p))?;
        return Ok(Some((searched, bar.finish())));
    };
    let step = job::search_shard(space, calibration, state, shard, &never, &|p| bar.report(p))?;
    let seconds = bar.finish();
    match step {
        ShardStep::Done(searched) => Ok(Some((*searched, seconds))),
        ShardStep::Waiting { stage, key } => {
            let dir = state.unwrap_or(Path::new("?")).display();
            eprintln!(
                "shard {}/{} kept its share of the {stage} stage in {dir} (inputs {key:016x}); \
                 run every shard again once all have got this far (sensitivity, then held-out \
                 top-1, then test top-1); the run that finds every share there writes the \
                 results, as does `qvit search {} --state {dir}`",
                shard.index,
                shard.count,
                args.space.display(),
            );
            Ok(None)
        }
    }
}

/// A search's progress on the terminal: one bar for the running stage, and each stage named
/// with its elapsed time as it starts, for logs where no bar is drawn.
struct StageBar {
    clock: Instant,
    bar: indicatif::ProgressBar,
    stage: std::sync::Mutex<&'static str>,
}

impl StageBar {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            clock: Instant::now(),
            bar: prepare::progress_bar(1, "")?,
            stage: std::sync::Mutex::new(""),
        })
    }

    fn report(&self, p: Progress) {
        let (what, done, total) = p.stage();
        let mut current = self.stage.lock().unwrap_or_else(|e| e.into_inner());
        if *current != what {
            *current = what;
            let seconds = self.clock.elapsed().as_secs_f64();
            self.bar
                .suspend(|| eprintln!("{seconds:>5.0} s  {what}: {total}"));
        }
        self.bar.set_message(what);
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }

    /// Clears the bar; the seconds since it was made.
    fn finish(self) -> f64 {
        self.bar.finish_and_clear();
        self.clock.elapsed().as_secs_f64()
    }
}

const HEADER: [&str; 22] = [
    "method",
    "widths",
    "uniform",
    "on_front",
    "reference",
    "proxy_kl",
    "heldout_top1",
    "top1",
    "fps",
    "gops_per_dsp",
    "fps_per_dsp",
    "dsps",
    "luts",
    "cycles",
    "mat_pes",
    "mat_lanes",
    "rmac_pes",
    "rmac_lanes",
    "copies",
    "packing",
    "accelerator",
    "project",
];

/// A row's design as `[P_m, L_m, P_r, L_r, L]` (a search's designs are Trio-ViT's: the space
/// refuses any other base).
fn engines(o: &Outcome, r: &Row) -> [usize; 5] {
    let c = &o.designs[r.design];
    c.engines().map_or([0, 0, 0, 0, c.copies], |e| {
        [e.mat_pes, e.mat_lanes, e.rmac_pes, e.rmac_lanes, c.copies]
    })
}

fn packing(p: Packing) -> &'static str {
    match p {
        Packing::Envelope => "envelope",
        Packing::PerLayer => "per-layer",
    }
}

fn write_csv(
    space: &SearchSpace,
    o: &Outcome,
    projects: &[String],
    path: &Path,
) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)?;
    for (i, r) in o.rows.iter().enumerate() {
        let e = engines(o, r);
        let design = &o.designs[r.design];
        w.write_record([
            r.method.name().to_string(),
            r.allocation.compact(),
            r.allocation.is_uniform().to_string(),
            r.on_front.to_string(),
            r.reference.to_string(),
            format!("{:.6}", r.proxy_kl),
            format!("{:.2}", r.heldout_top1),
            format!("{:.2}", r.top1),
            format!("{:.3}", r.totals.fps),
            format!("{:.6}", r.totals.gops_per_dsp),
            format!("{:.8}", r.totals.fps_per_dsp),
            r.totals.dsps.to_string(),
            r.totals.luts.to_string(),
            r.totals.cycles.to_string(),
            e[0].to_string(),
            e[1].to_string(),
            e[2].to_string(),
            e[3].to_string(),
            e[4].to_string(),
            packing(design.packing).to_string(),
            space.accelerator.base.clone(),
            projects.get(i).cloned().unwrap_or_default(),
        ])?;
    }
    qvit_core::ron_io::write_atomic(path, &w.into_inner()?)?;
    Ok(())
}

/// Writes each row as a project in `dir` (made if missing; see [`job::Searched::row_project`]),
/// with every path absolute. Returns the file names in row order.
fn write_projects(
    args: &SearchArgs,
    searched: &job::Searched,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("--projects {}: {e}", dir.display()))?;
    let limit = searched
        .space
        .stages
        .test_images
        .map_or(String::new(), |n| format!(" --limit {n}"));
    let mut names = Vec::with_capacity(searched.outcome.rows.len());
    for (i, r) in searched.outcome.rows.iter().enumerate() {
        let name = format!("row-{:03}.ron", i + 1);
        let project = searched.row_project(i).with_absolute_paths()?;
        let path = dir.join(&name);
        let text = format!(
            "// Row {} of `qvit search {}`: {} widths `{}`, test top-1 {:.2} %, {:.1} FPS.\n\
             //   qvit eval {}{limit}\n//   qvit cost {}\n{}",
            i + 1,
            args.space.display(),
            r.method.name(),
            r.allocation.compact(),
            r.top1,
            r.totals.fps,
            path.display(),
            path.display(),
            qvit_core::ron_io::to_string(&project)?
        );
        qvit_core::ron_io::write_atomic(&path, text.as_bytes())?;
        names.push(name);
    }
    eprintln!("wrote {} projects to {}", names.len(), dir.display());
    Ok(names)
}

/// The CPU this ran on, from /proc/cpuinfo where there is one.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    format!("{model}, {} threads", rayon::current_num_threads())
}

/// `a` dominates `b` on (test top-1, FPS): at least as good on both, better on one.
fn dominates(a: &Row, b: &Row) -> bool {
    (a.top1 > b.top1 && a.totals.fps >= b.totals.fps)
        || (a.totals.fps > b.totals.fps && a.top1 >= b.top1)
}

fn table_rows(o: &Outcome, rows: &[&Row]) -> String {
    let mut t = String::from(
        "| method | widths (per layer, network order) | test top-1 % | held-out top-1 % | proxy KL | FPS | GOPS/DSP | DSPs | engines (P_m×L_m, P_r×L_r, L) | packing |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let e = engines(o, r);
        let _ = writeln!(
            t,
            "| {} | `{}` | {:.2} | {:.2} | {:.4} | {:.1} | {:.3} | {} | {}×{}, {}×{}, {} | {} |",
            r.method.name(),
            r.allocation.compact(),
            r.top1,
            r.heldout_top1,
            r.proxy_kl,
            r.totals.fps,
            r.totals.gops_per_dsp,
            r.totals.dsps,
            e[0],
            e[1],
            e[2],
            e[3],
            e[4],
            packing(o.designs[r.design].packing)
        );
    }
    t
}

fn report(space: &SearchSpace, args: &SearchArgs, o: &Outcome, seconds: f64) -> String {
    let front: Vec<&Row> = o
        .rows
        .iter()
        .filter(|r| r.on_front && !r.reference)
        .collect();
    let uniform: Vec<&Row> = o.rows.iter().filter(|r| r.reference).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Joint search: {} on {}\n\nGenerated by `qvit search {}{}{}` in {:.0} s on {} \
         (sensitivity {:.0} s, allocations {:.0} s, pricing {:.0} s, held-out confirmation {:.0} s, test set {:.0} s).\n",
        space.model,
        space.accelerator.base,
        args.space.display(),
        args.out
            .as_ref()
            .map_or(String::new(), |o| format!(" --out {}", o.display())),
        args.report
            .as_ref()
            .map_or(String::new(), |r| format!(" --report {}", r.display())),
        seconds,
        machine(),
        o.timings.sensitivity,
        o.timings.allocations,
        o.timings.pricing,
        o.timings.confirmation,
        o.timings.test
    );
    let widths: Vec<String> = space
        .widths()
        .iter()
        .map(|b| b.to_string().to_lowercase())
        .collect();
    let _ = writeln!(
        t,
        "**Space.** {} units (layers with weights{}) at {} widths each ({}), recipe `{}` from {} \
         everywhere; {} accelerator designs ({} copies × engines × packing). Candidates: {}. \
         {} (allocation, design) pairs priced, {} fit the part{}. The proxy (the base plan's \
         logit KL on {} calibration-sample images plus what each layer adds at its width, measured \
         alone) chose {} allocations, confirmed with the {} executor on {} held-out training \
         images; the final front is taken on held-out top-1 and only then evaluated on {} test \
         images.\n",
        o.units.len(),
        if space.groups.is_empty() {
            String::new()
        } else {
            format!(
                ", {} group{}",
                space.groups.len(),
                if space.groups.len() == 1 { "" } else { "s" }
            )
        },
        widths.len(),
        widths.join(", "),
        o.sensitivity.recipe,
        space.base.to_string().to_lowercase(),
        o.designs.len(),
        space.accelerator.copies.len(),
        o.candidates
            .iter()
            .map(|(m, n)| format!("{n} {}", m.name()))
            .collect::<Vec<_>>()
            .join(", "),
        o.priced,
        o.feasible,
        space
            .constraints
            .max_dsps
            .map_or(String::new(), |d| format!(" and at most {d} DSPs")),
        o.sensitivity.sample_images,
        o.confirmed,
        match space.stages.executor {
            QuantExecutor::Int => "integer",
            QuantExecutor::Fake => "fake-quant",
        },
        space.stages.heldout_images,
        space
            .stages
            .test_images
            .map_or("all".to_string(), |n| n.to_string()),
    );
    let _ = writeln!(
        t,
        "A mixed allocation sets the widths of the layers with weights and of the activations \
         they write; every other activation (residual sums, attention outputs) keeps the base \
         width {}, and the layers the allocation leaves at the base keep the base plan's searched \
         ranges. A uniform allocation is the recipe's own plan at its width, everywhere. \
         `--projects DIR` writes each row as a project that `qvit eval` and `qvit cost` \
         reproduce.\n",
        space.base.to_string().to_lowercase()
    );
    let _ = writeln!(
        t,
        "## The front\n\nTop-1, FPS and GOPS/DSP, most FPS first{}:\n\n{}",
        space
            .constraints
            .min_top1
            .map_or(String::new(), |m| format!(", held-out top-1 ≥ {m} %")),
        table_rows(o, &front)
    );
    let _ = writeln!(
        t,
        "## The best uniform designs\n\nFor each uniform width, the design of the space with the \
         most FPS (then GOPS/DSP) that fits:\n\n{}",
        table_rows(o, &uniform)
    );
    // Which uniform designs a mixed front design dominates on the test set.
    let mut findings = Vec::new();
    for u in &uniform {
        let better: Vec<&&Row> = front
            .iter()
            .filter(|f| !f.allocation.is_uniform() && dominates(f, u))
            .collect();
        if let Some(best) = better.iter().max_by(|a, b| a.top1.total_cmp(&b.top1)) {
            findings.push(format!(
                "- `{}` ({:.2} %, {:.1} FPS) is dominated by {} mixed front design{}, e.g. `{}` \
                 ({}): {:.2} % at {:.1} FPS.",
                u.allocation.0[0].to_string().to_lowercase(),
                u.top1,
                u.totals.fps,
                better.len(),
                if better.len() == 1 { "" } else { "s" },
                best.allocation.compact(),
                best.method.name(),
                best.top1,
                best.totals.fps
            ));
        } else {
            findings.push(format!(
                "- `{}` ({:.2} %, {:.1} FPS) is dominated by no mixed front design.",
                u.allocation.0[0].to_string().to_lowercase(),
                u.top1,
                u.totals.fps
            ));
        }
    }
    let _ = writeln!(
        t,
        "## Mixed against uniform\n\nOn the test set, higher top-1 at no less FPS or more FPS at \
         no less top-1:\n\n{}\n",
        findings.join("\n")
    );
    let by = |m: Method| front.iter().filter(|r| r.method == m).count();
    let _ = writeln!(
        t,
        "## Greedy against the baseline\n\nOf the {} front designs, {} come from the greedy path, \
         {} from the lowest-sensitivity-first baseline and {} are uniform.\n",
        front.len(),
        by(Method::Greedy),
        by(Method::Baseline),
        by(Method::Uniform)
    );
    t
}
