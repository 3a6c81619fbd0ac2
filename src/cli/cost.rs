//! `qvit cost`: a model's cycles, FPS, GOPS and DSP efficiency on an accelerator.

use clap::Args;
use qvit_core::accel::{AccelConfig, Bound, CostReport, Workload, cost};
use qvit_core::graph::Graph;
use qvit_core::quant::{BitWidths, LayerBits, Override, QuantSettings, Recipe};

use super::format::{Format, emit, table, thousands};
use super::target;

/// Price a model on an accelerator: per-layer cycles and what bounds them, then latency, FPS,
/// GOPS (2 operations per MAC), DSPs and DSP efficiency.
///
/// Presets: trio-vit-zcu102 (the default: L = 8 copies of Trio-ViT's engines on a ZCU102 at
/// 200 MHz, corrected and complete model), trio-vit-reference-16 and trio-vit-reference-8 (the
/// published analytical model exactly, one copy), systolic-zcu102 (the baseline: a plain 16×16
/// systolic array per copy with as many multipliers, no depthwise engine, no fusion).
///
/// Bit widths: `--bits` for every layer and `--override` for some, or a project's `quant`
/// section (with the widths its recipe fixes, such as the 8-bit image and attention products);
/// they set bytes moved and DSP packing. Products pack per DSP48E2 four at ≤ 4 × ≤ 4
/// bits, two at ≤ 8 × ≤ 8 (so W4A8 packs as W8A8), one above; three per Versal DSP58 up to
/// 8 × 9. The datapath is built for the widest operands of any layer; an accelerator with
/// `packing: PerLayer` runs each layer at its own packing.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    /// Accelerator preset or RON file (default: the project's accelerator, else
    /// trio-vit-zcu102).
    #[arg(long)]
    accel: Option<String>,
    /// Input resolution in pixels (default: the model's own).
    #[arg(long, short)]
    resolution: Option<usize>,
    /// Weight and activation bits of every layer, as `wXaY` (2–16 bits each; default: the
    /// project's `quant` bits, else w8a8).
    #[arg(long)]
    bits: Option<BitWidths>,
    /// Bits for some layers, `PATTERN=wNaM`, as in `qvit eval` (repeatable; later ones win).
    #[arg(long = "override", value_name = "PATTERN=wNaM")]
    overrides: Vec<Override>,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn run(args: &CostArgs) -> anyhow::Result<()> {
    let mut project = target::project(args.target.as_deref())?;
    if args.resolution.is_some() {
        project.resolution = args.resolution;
    }
    let graph = Graph::build(&project.spec()?)?;
    let config = match &args.accel {
        Some(a) => AccelConfig::resolve(a)?,
        None => project.accel_config()?,
    };
    // Bit widths come from the project's quant settings when it has them, with the widths its
    // recipe fixes (the 8-bit image, attention products): what its plan quantizes to.
    let mut settings = project.quant.clone().unwrap_or_default();
    if let Some(b) = args.bits {
        settings.bits = b;
    }
    settings.overrides.extend(args.overrides.iter().cloned());
    let bits = match &project.quant {
        Some(q) => LayerBits::for_recipe(&graph, &settings, &Recipe::resolve(&q.recipe)?)?,
        None => LayerBits::resolve(&graph, &settings)?,
    };
    let workload = Workload::with_bits(&graph, |id| bits.operands(&graph, id));
    // The cost model names the accelerator by its `name`; say which file or project it is from.
    let report = cost(&workload, &config).map_err(|e| {
        let from = match (&args.accel, &args.target) {
            (Some(a), _) => a.clone(),
            (None, Some(t)) if project.accelerator.is_some() => t.clone(),
            _ => format!("preset {}", qvit_core::project::DEFAULT_ACCELERATOR),
        };
        anyhow::anyhow!("{e} (accelerator from {from})")
    })?;
    emit(&match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Table => render(&report, &settings),
    })
}

fn render(r: &CostReport, settings: &QuantSettings) -> String {
    let mut bits = settings.bits.to_string();
    for o in &settings.overrides {
        bits += &format!(", {o}");
    }
    let mut layers = table(
        &[
            "layer", "op", "MACs", "compute", "memory", "cycles", "bound", "util",
        ],
        &[2, 3, 4, 5, 7],
    );
    for l in r
        .layers
        .iter()
        .filter(|l| l.cycles > 0 || l.bound == Bound::Fused)
    {
        layers.add_row(vec![
            l.name.clone(),
            l.op.clone(),
            thousands(l.macs),
            thousands(l.compute_cycles),
            thousands(l.memory_cycles),
            thousands(l.cycles),
            format!("{:?}", l.bound).to_lowercase(),
            format!("{:.0} %", 100.0 * l.utilization),
        ]);
    }
    format!(
        "{} @ {} px, {} on {} ({}, {} MHz, {} cop{})\n\n{layers}\n\n\
         cycles       {} per image per copy\n\
         latency      {:.3} ms\n\
         throughput   {:.1} FPS · {:.1} GOPS\n\
         DSPs         {} of {} ({} multipliers for w{}a{} operands)\n\
         LUTs         {} of {} (adder trees and accumulators; {} with LUT multipliers)\n\
         efficiency   {:.4} GOPS/DSP · {:.5} FPS/DSP\n\
         utilization  {:.1} %\n\
         off-chip     {} bytes per image\n",
        r.model,
        r.resolution,
        bits,
        r.accelerator,
        r.part,
        r.clock_mhz,
        r.copies,
        if r.copies == 1 { "y" } else { "ies" },
        thousands(r.cycles),
        r.latency_ms,
        r.fps,
        r.gops,
        r.dsps,
        r.dsp_budget,
        r.multipliers,
        r.envelope_bits.0,
        r.envelope_bits.1,
        thousands(r.luts),
        thousands(r.lut_budget as u64),
        thousands(r.luts_as_lut_multipliers),
        r.gops_per_dsp,
        r.fps_per_dsp,
        100.0 * r.utilization,
        thousands(r.bytes_moved),
    )
}
