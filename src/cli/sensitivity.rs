//! `qvit sensitivity`: how much each layer suffers when it alone gets other bit widths.

use std::path::PathBuf;

use clap::Args;
use qvit_core::pipeline;
use qvit_core::project::DataSource;
use qvit_core::quant::BitWidths;
use qvit_core::search::Splicer;
use qvit_core::search::sensitivity::{self, Sensitivity, SensitivityOptions};

use super::format::{Format, emit, table};
use super::prepare;
use super::quant_args::{DataArgs, QuantArgs, project_with};

/// Per-layer sensitivity: for every layer with weights and every candidate width, the damage of
/// giving that layer alone the candidate's widths (its weights, and the activation it writes)
/// while the rest keep the base widths (`--bits`, default w8a8).
///
/// Damage is measured away from the test set: the KL divergence of the logits from the float
/// model's on the calibration sample (how much the change adds to the base plan's), and top-1
/// on held-out training images (the shipped 2,000 for the micro models; `--heldout DIR` for
/// others). The recipe's own ranges are kept for every layer the change leaves alone, so a
/// recipe's range search runs once, not once per row.
///
///   qvit sensitivity efficientvit-micro-spread --recipe trio-vit
///   qvit sensitivity deit-micro --candidates w4a8,w8a4 --out deit.csv
///
/// Every (layer, width) runs in parallel; the rows do not depend on the thread count.
#[derive(Debug, Args)]
pub struct SensitivityArgs {
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    quant: QuantArgs,
    /// The widths each layer is given in turn, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "w6a8,w4a8,w3a8,w2a8,w8a6,w8a4"
    )]
    candidates: Vec<BitWidths>,
    /// Calibration-sample images for the logit KL (at most the 128 the statistics keep).
    #[arg(long, default_value_t = 128)]
    sample_images: usize,
    /// Held-out images (never the test set): an ImageNet-style folder or an IDX file of
    /// training images that calibration did not use. Default: the shipped 2,000 Fashion-MNIST
    /// training images for the micro models.
    #[arg(long, value_name = "DIR|IDX")]
    heldout: Option<PathBuf>,
    /// How many held-out images to evaluate per row (0: KL only).
    #[arg(long, default_value_t = 1000)]
    heldout_images: usize,
    /// Also write every row to this file: `.csv` (one row per layer and width) or `.json`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Worker threads (default: one per core). Rows do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn run(args: &SensitivityArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        match out.extension().and_then(|e| e.to_str()) {
            Some("csv" | "json") => {}
            _ => anyhow::bail!("--out {}: give a .csv or .json file", out.display()),
        }
    }
    if args.sample_images == 0 {
        anyhow::bail!("--sample-images 0: the KL needs at least one calibration-sample image");
    }
    if args.candidates.is_empty() {
        anyhow::bail!("--candidates: give at least one width, e.g. w4a8");
    }
    let (project, spec) = project_with(args.target.as_deref(), &args.data, &args.quant)?;
    let model = prepare::model(&project)?;
    let heldout = if args.heldout_images == 0 {
        None
    } else {
        let given = args
            .heldout
            .as_ref()
            .map(|p| {
                DataSource::from_path(p, spec.family(), spec.resolution(), args.data.crop_ratio)
            })
            .transpose()?;
        Some(pipeline::heldout_data(given.as_ref(), &model.graph)?)
    };
    let settings = args.quant.settings(&project, &spec, None);
    let (stats, recipe, base) = prepare::splice_base(
        &model,
        project.calibration.as_deref(),
        project.calibration_data.as_ref(),
        &settings,
    )?;
    let splicer = Splicer::new(
        &model.graph,
        &model.folded,
        &stats,
        &recipe,
        &settings,
        base,
    )?;
    let options = SensitivityOptions {
        candidates: args.candidates.clone(),
        sample_images: args.sample_images,
        heldout_images: args.heldout_images,
        ..Default::default()
    };
    let total = sensitivity::layers(&model.graph, &model.folded).len() * options.candidates.len();
    let bar = prepare::progress_bar(total, "layer × width")?;
    let never = std::sync::atomic::AtomicBool::new(false);
    let scan = || {
        sensitivity::scan(&splicer, heldout.as_ref(), &options, &never, &|done, _| {
            bar.set_position(done as u64)
        })
    };
    let report = match args.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()?
            .install(scan)?,
        None => scan()?,
    };
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        write(&report, out)?;
    }
    emit(&match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Table => render(&report),
    })
}

fn write(report: &Sensitivity, path: &std::path::Path) -> anyhow::Result<()> {
    let bytes = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        serde_json::to_vec_pretty(report)?
    } else {
        let mut w = csv::Writer::from_writer(Vec::new());
        for row in &report.rows {
            w.serialize(row)?;
        }
        w.into_inner()?
    };
    qvit_core::ron_io::write_atomic(path, &bytes)?;
    Ok(())
}

/// `+0.0123` nats and `−1.20` points in one cell.
fn cell(kl: f64, drop: Option<f64>) -> String {
    let kl = format!("{kl:+.4}");
    match drop {
        Some(d) => format!("{kl} · {:+.2}", -d),
        None => kl,
    }
}

fn render(r: &Sensitivity) -> String {
    let mut candidates: Vec<BitWidths> = Vec::new();
    for row in &r.rows {
        if !candidates.contains(&row.bits) {
            candidates.push(row.bits);
        }
    }
    let names: Vec<String> = candidates.iter().map(|b| b.to_string()).collect();
    let mut header = vec!["layer"];
    header.extend(names.iter().map(String::as_str));
    let numeric: Vec<usize> = (1..=candidates.len()).collect();
    let mut t = table(&header, &numeric);
    for layer in r.rows.chunks(candidates.len().max(1)) {
        let mut cells = vec![layer[0].layer.clone()];
        cells.extend(layer.iter().map(|row| cell(row.kl_increase, row.top1_drop)));
        t.add_row(cells);
    }
    let measured = match (r.base_top1, r.float_top1) {
        (Some(b), Some(f)) => format!(
            "; held-out top-1 {b:.2} % at {} (float {f:.2} %) on {} images of {}",
            r.base, r.heldout_images, r.heldout
        ),
        _ => String::new(),
    };
    let worst: Vec<String> = {
        let mut rows: Vec<_> = r.rows.iter().collect();
        rows.sort_by(|a, b| b.kl_increase.total_cmp(&a.kl_increase));
        rows.iter()
            .take(3)
            .map(|row| format!("{} at {} ({:+.4})", row.layer, row.bits, row.kl_increase))
            .collect()
    };
    format!(
        "{} under {}, every other layer at {}: KL added to the base plan's {:.4} nats \
         (calibration sample, {} images) · change of held-out top-1 in points\n\n{t}\n\n\
         base plan: logit KL {:.4}, SQNR {:.1} dB{measured}\nmost sensitive: {}\n",
        r.model,
        r.recipe,
        r.base,
        r.base_kl,
        r.sample_images,
        r.base_kl,
        r.base_sqnr_db,
        worst.join("; ")
    )
}
