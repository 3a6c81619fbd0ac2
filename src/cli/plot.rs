//! `qvit plot`: a sweep drawn as a figure for a paper.

use std::path::PathBuf;

use clap::Args;
use qvit_core::accel::published;
use qvit_core::explore::scatter::{self, Axis, DesignScatter};
use qvit_core::explore::sweep;
use qvit_core::figure::{self, Size};

/// Draw a sweep's designs as a figure for a paper: two of FPS, GOPS, GOPS/DSP and top-1
/// as axes, the Pareto front marked, and the published accelerators of the same model (or
/// of its family, where the paper names no variant) as labelled points, or as reference
/// lines where they report one of the axes; with a title, axis titles and a legend.
///
/// The format follows the name given to --out: SVG keeps text as text and scales; PNG is
/// drawn at the pixels per inch of --dpi. The explorer's Explore tab writes the same figure
/// of what it shows (Export figure…).
///
/// Examples:
///   qvit sweep presets/sweeps/trio-vit-zcu102.ron --out sweep.csv
///   qvit plot sweep.csv --out front.svg                      FPS against GOPS/DSP
///   qvit plot sweep.csv --y top1 --out front.png --dpi 300   top-1, for print
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PlotArgs {
    /// A CSV that `qvit sweep` wrote (its Pareto front is recomputed from its rows).
    csv: PathBuf,
    /// The x axis: fps, gops, gops-per-dsp or top1.
    #[arg(long, default_value = "fps")]
    x: Axis,
    /// The y axis: fps, gops, gops-per-dsp or top1 (top1 needs a sweep that measured accuracy).
    #[arg(long, default_value = "gops-per-dsp")]
    y: Axis,
    /// The figure: a .svg or .png file.
    #[arg(long)]
    out: PathBuf,
    /// The title (default: the models, how many designs and how many on the front).
    #[arg(long)]
    title: Option<String>,
    /// Width×height in CSS pixels (1/96 inch; an SVG's own units).
    #[arg(long, default_value = "960x640", value_parser = parse_size)]
    size: (u32, u32),
    /// Pixels per inch of a PNG (96: one pixel per unit; 300 for print).
    #[arg(long, default_value_t = 192.0)]
    dpi: f64,
    /// Leave out the published accelerators.
    #[arg(long)]
    no_published: bool,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not WIDTHxHEIGHT (e.g. 960x640)");
    let (w, h) = text.split_once(['x', '×']).ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    // A wrong name is said before the CSV is read.
    figure::Format::of(&args.out)?;
    let designs = sweep::read_designs(&args.csv)?;
    if designs.is_empty() {
        anyhow::bail!(
            "{}: no feasible design to draw (every row is over budget or failed)",
            args.csv.display()
        );
    }
    let published = match args.no_published {
        false => published::all()?,
        true => Vec::new(),
    };
    let view = DesignScatter::new(&designs, args.x, args.y, &published);
    let drawn = view.others.len() + view.front.len();
    let shown_published = view.published.len();
    let on_front = designs.iter().filter(|d| d.pareto).count();
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| scatter::title(&designs));
    let (width, height) = args.size;
    let size = Size {
        width,
        height,
        dpi: args.dpi,
    };
    figure::write(&figure::Figure::Scatter(view), &title, &args.out, size)?;
    eprintln!(
        "{} written: {} against {}, {} designs ({on_front} on the front), {} published figures",
        args.out.display(),
        args.y.name(),
        args.x.name(),
        drawn,
        shown_published
    );
    Ok(())
}
