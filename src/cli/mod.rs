//! The command line: one module per subcommand.

mod bench;
mod calibrate;
mod cost;
mod eval;
mod export;
mod format;
mod info;
mod plot;
mod prepare;
mod ptq_table;
mod quant_args;
mod search;
mod sensitivity;
mod sweep;
mod target;
mod vectors;

use clap::{Parser, Subcommand};

/// Co-design quantized vision transformers and their FPGA accelerators.
///
/// Run with no command to open the desktop explorer on the shipped default (the micro
/// EfficientViT trained on Fashion-MNIST). Every command below also works headless.
#[derive(Debug, Parser)]
#[command(name = "qvit", version, about, long_about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

const EXAMPLES: &str = "\
Examples:
  qvit                                        open the explorer
  qvit explore my-project.ron                 open the explorer on a saved project
  qvit info efficientvit-b1                   layers, shapes, parameters and MACs
  qvit info efficientvit-b2 --resolution 288  the same model at another input size
  qvit info my-model.ron --format json        a model spec of your own, as JSON
  qvit eval                                   FP32 accuracy of the shipped default model
  qvit eval deit-micro --limit 1000           another shipped model, on the first 1,000 images
  qvit eval efficientvit-b1 --weights efficientvit_b1_r224.pt --data imagenet/val
                                              FP32 top-1 of a published checkpoint (.pt, .pth, safetensors)
  qvit eval efficientvit-b1 --weights efficientvit_b1_r224.pt --data imagenet/val \\
      --calibration-data imagenet/train --recipe trio-vit --executor int
                                              quantized, calibrated on 32 class-balanced training images
  qvit eval … --shard 3/16 --out part3.json   one job of a cluster array; then `qvit eval merge part*.json`
  qvit calibrate --out micro.calib.safetensors  activation statistics for any recipe and bits
  qvit eval --recipe trio-vit --bits w8a8     quantized (fake-quant) accuracy of the default model
  qvit eval --bits w4a8 --override 'stages.3.*=w8a8' --layers   mixed precision, per-layer SQNR
  qvit ptq-table                              the method × bits table of docs/results/
  qvit eval --recipe trio-vit --executor int  the same in integer arithmetic only
  qvit vectors --image 0 --out golden/        integer golden vectors (.npy + manifest) for RTL
  qvit export --format onnx --out micro.onnx --samples 16
                                              the float model as ONNX, with inputs and logits to check it
  qvit bench                                  images/s of the fp32, fake-quant and int executors
  qvit sensitivity efficientvit-micro-spread  per-layer damage of fewer bits (held-out images)
  qvit cost efficientvit-b1 --resolution 224  cycles, FPS, GOPS and DSP efficiency on Trio-ViT/ZCU102
  qvit sweep presets/sweeps/trio-vit-zcu102.ron  a design space on every core, CSV + Pareto front
  qvit plot trio-vit-zcu102.csv --out front.svg  that sweep as a figure for a paper
  qvit search presets/searches/micro-spread.ron  per-layer widths × accelerator designs, one front";

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the desktop explorer (the default when no command is given), optionally on a
    /// project file.
    Explore {
        /// A project RON file (as the explorer saves it).
        project: Option<std::path::PathBuf>,
    },
    Info(info::InfoArgs),
    Calibrate(calibrate::CalibrateArgs),
    Eval(eval::EvalArgs),
    Sensitivity(sensitivity::SensitivityArgs),
    PtqTable(ptq_table::PtqTableArgs),
    Bench(bench::BenchArgs),
    Cost(cost::CostArgs),
    Sweep(sweep::SweepArgs),
    Search(search::SearchArgs),
    Plot(plot::PlotArgs),
    Vectors(vectors::VectorsArgs),
    Export(export::ExportArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Explore { project: None }) {
        Command::Explore { project } => {
            // A project that cannot be read is said here, before a window opens on the default.
            if let Some(path) = &project {
                let p = qvit_core::project::Project::load(path)?;
                p.spec()?;
            }
            qvit_app::run(project).map_err(|e| {
                anyhow::anyhow!(
                    "could not open the explorer window: {e}\n\
                     (it needs a display; headless commands such as `qvit info` work without one)"
                )
            })
        }
        Command::Info(args) => info::run(&args),
        Command::Calibrate(args) => calibrate::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::PtqTable(args) => ptq_table::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Cost(args) => cost::run(&args),
        Command::Sweep(args) => sweep::run(&args),
        Command::Sensitivity(args) => sensitivity::run(&args),
        Command::Search(args) => search::run(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Vectors(args) => vectors::run(&args),
        Command::Export(args) => export::run(&args),
    }
}
