//! `qvit sweep`: price a design space on every core, streaming rows to CSV.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::{Args, Subcommand};
use qvit_core::explore::sweep::{self, Progress, Shard};

use super::target;

/// Price every design of a space (a RON file, see presets/sweeps/, or a project's `sweep`
/// section) on all cores, streaming rows
/// to CSV in index order, then write beside it the Pareto front (FPS vs GOPS/DSP, and top-1
/// when the space has an `accuracy` section) and the published accelerators as reference rows.
///
/// An interrupted sweep continues with --resume and produces the file an uninterrupted one would.
/// For a cluster job array, run shard i/N in each job and join the files with `qvit sweep merge`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// The design space: a RON file (see presets/sweeps/), or a project whose `sweep` section
    /// varies the project's own accelerator and model (as the explorer saves it).
    #[arg(required = true)]
    space: Option<PathBuf>,
    /// Output CSV (default: the space's name with .csv, in the current folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only the points whose index is i modulo N (e.g. 0/4 in the first of four jobs).
    #[arg(long, value_parser = Shard::parse, default_value = "0/1")]
    shard: Shard,
    /// Worker threads (default: one per core). Rows do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Continue an interrupted sweep in --out instead of refusing to overwrite it.
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, Subcommand)]
enum SweepCommand {
    /// Join shard CSVs into one (rows in index order) and write its Pareto front.
    Merge {
        /// The shard files (`s*.csv` is fine: the `.pareto.csv` and `.published.csv` files
        /// written beside each shard, and --out itself, are skipped).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Merge even when points are missing (a shard not run yet); they are listed otherwise.
        #[arg(long)]
        partial: bool,
    },
}

pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    if let Some(SweepCommand::Merge {
        inputs,
        out,
        partial,
    }) = &args.command
    {
        let companion = |p: &PathBuf| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.ends_with(".pareto.csv") || n.ends_with(".published.csv"))
                || p == out
        };
        let shards: Vec<PathBuf> = inputs.iter().filter(|p| !companion(p)).cloned().collect();
        if shards.is_empty() {
            anyhow::bail!("no shard files among the inputs (only Pareto and published files)");
        }
        let rows = sweep::merge(&shards, out, *partial)?;
        let front = sweep::write_pareto(out)?;
        sweep::write_published(out)?;
        eprintln!(
            "merged {rows} rows into {}; {front} on the Pareto front in {}",
            out.display(),
            sweep::pareto_path(out).display()
        );
        return Ok(());
    }
    let path = args
        .space
        .as_ref()
        .expect("clap requires SPACE without a subcommand");
    let space = target::design_space(path)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.csv", space.name)));
    let points = args.shard.len(space.len());
    let bar = indicatif::ProgressBar::new(points).with_style(super::prepare::style(
        "{spinner} [{bar:30}] {pos}/{len} designs  {rate}  eta {eta}  {msg}",
    )?);
    let started = Instant::now();
    // Top-1 per bit width (a space with an `accuracy` section) is measured before any design
    // is priced; its steps show in the bar's message until the designs start.
    let never = AtomicBool::new(false);
    let go = || {
        sweep::run_until(
            &space,
            &out,
            args.shard,
            args.resume,
            &never,
            &mut |p| match p {
                Progress::Accuracy(a) => bar.set_message(a.to_string()),
                Progress::Designs(done) => {
                    bar.set_message("");
                    bar.set_position(done)
                }
            },
        )
    };
    let outcome = match args.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()?
            .install(go)?,
        None => go()?,
    };
    bar.finish_and_clear();
    if let Some(why) = &outcome.repaired {
        eprintln!(
            "{}: {why}; the file was cut before it and the sweep went on from there",
            out.display()
        );
    }
    let front = sweep::write_pareto(&out)?;
    sweep::write_published(&out)?;
    eprintln!(
        "{} designs ({} priced now, {} already there) in {:.2} s → {}; {front} on the Pareto front in {}; published accelerators in {}",
        outcome.points,
        outcome.evaluated,
        outcome.resumed,
        started.elapsed().as_secs_f64(),
        out.display(),
        sweep::pareto_path(&out).display(),
        sweep::published_path(&out).display()
    );
    Ok(())
}
