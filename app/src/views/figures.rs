//! Every plot the explorer draws, as a figure for a paper (`qvit_core::figure`): the same data
//! with a title, axis titles and a legend, written as SVG or PNG by File → Export plot as
//! figure… and by the Explore tab's Export figure….

use std::path::Path;

use qvit_core::accel::Bound;
use qvit_core::accel::published::PublishedAccelerator;
use qvit_core::explore::scatter::{self, DesignScatter};
use qvit_core::figure::{self, BarSeries, Bars, Boxes, Figure, Lines};
use qvit_core::quant::stats::BoxStats;

use crate::explorer::{Explorer, Notice};

/// The plots' names, as the views register them and the File menu lists them.
pub const SCATTER: &str = "design scatter";
pub const CYCLES: &str = "per-layer cycles";
pub const HISTOGRAM: &str = "histogram and quantizer levels";
pub const CALIBRATED: &str = "channel boxes (calibrated)";
pub const MIGRATED: &str = "channel boxes (as quantized, after migration / shift)";
pub const WEIGHTS: &str = "channel boxes (weights)";

/// Colours shared with the views, as RGB.
pub const COMPUTE: [u8; 3] = [70, 130, 200];
pub const MEMORY: [u8; 3] = [220, 120, 50];

/// Writes plot `plot` as a figure to `path` and says how it went.
pub fn export(explorer: &mut Explorer, plot: &str, path: &Path) {
    let written = match of(explorer, plot) {
        Some((title, f)) => figure::write(&f, &title, path, figure::Size::default()),
        None => Err(qvit_core::Error::InvalidField {
            origin: path.display().to_string(),
            field: "figure".into(),
            message: format!("the plot `{plot}` is not on screen any more"),
        }),
    };
    explorer.notice = Some(match written {
        Ok(()) => Notice::Info(format!("wrote {}", path.display())),
        Err(e) => Notice::Error(format!("could not export the figure: {e}")),
    });
}

/// The title and data of plot `plot` as the explorer shows it now.
fn of(explorer: &mut Explorer, plot: &str) -> Option<(String, Figure)> {
    let model = explorer.project.model.clone();
    match plot {
        SCATTER => {
            let published: Vec<PublishedAccelerator> =
                explorer.explore.published().unwrap_or_default();
            let s = &explorer.explore;
            let view = DesignScatter::new(&s.designs, s.x, s.y, &published);
            Some((scatter::title(&s.designs), Figure::Scatter(view)))
        }
        CYCLES => {
            let cost = explorer.cost.as_ref().ok()?;
            let config = explorer.project.accelerator.as_ref()?;
            let layers: Vec<_> = cost.layers.iter().filter(|l| l.cycles > 0).collect();
            let series = |name: &str, colour, memory: bool| BarSeries {
                name: name.into(),
                colour,
                bars: layers
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| (l.bound == Bound::Memory) == memory)
                    .map(|(i, l)| [i as f64, l.cycles as f64])
                    .collect(),
            };
            let title = format!(
                "{model} on {} ({}, {} MHz, {} copies): cycles per layer",
                config.name, config.part, config.clock_mhz, config.copies
            );
            Some((
                title,
                Figure::Bars(Bars {
                    x_label: "layer, in network order (those that take time)".into(),
                    y_label: "cycles per image per copy".into(),
                    width: 0.8,
                    series: vec![
                        series("compute-bound", COMPUTE, false),
                        series("memory-bound", MEMORY, true),
                    ],
                    lines: Vec::new(),
                    x_ticks: None,
                }),
            ))
        }
        HISTOGRAM | CALIBRATED | MIGRATED | WEIGHTS => distributions(explorer, plot),
        _ => None,
    }
}

/// The Distributions view's plots of the selected layer.
fn distributions(explorer: &Explorer, plot: &str) -> Option<(String, Figure)> {
    let d = explorer.distributions.as_ref()?;
    let graph = explorer.graph.as_ref().ok()?;
    let layer = &graph.node(d.layer).name;
    let point = d.point.as_deref().unwrap_or("–");
    let bits = &d.quantized.plan.bits;
    // Boxes in the order the view draws them: the input's by its calibrated ranges (so the
    // migrated boxes line up with them), the weights' by their own.
    let boxes = |title: String, y: &str, b: &[BoxStats], ranked: &[BoxStats]| {
        let channels = super::distributions::channel_order(ranked, explorer.sort_by_range);
        let sorted = channels.iter().enumerate().any(|(i, &c)| i != c);
        let figure = Figure::Boxes(Boxes {
            x_label: if sorted {
                "channel (widest range first)".into()
            } else {
                "channel".into()
            },
            y_label: y.into(),
            boxes: channels.iter().map(|&c| b[c]).collect(),
            channels,
        });
        (title, figure)
    };
    match plot {
        CALIBRATED => {
            let (before, _) = d.boxes.as_ref()?;
            Some(boxes(
                format!("{point}: channels as calibrated"),
                "value",
                before,
                before,
            ))
        }
        MIGRATED => {
            let (before, after) = d.boxes.as_ref()?;
            Some(boxes(
                format!("{point}: channels after migration / shift"),
                "value",
                after,
                before,
            ))
        }
        WEIGHTS => {
            let weights = d.weights.as_ref()?;
            Some(boxes(
                format!("{layer}: weights per output channel"),
                "weight",
                weights,
                weights,
            ))
        }
        HISTOGRAM => {
            let view = d.quantizer.as_ref()?;
            let h = &view.histogram;
            let levels = &view.levels;
            let step = levels
                .len()
                .div_ceil(super::distributions::MAX_LEVEL_LINES)
                .max(1);
            let ends: Vec<f64> = [levels.first(), levels.last()]
                .into_iter()
                .flatten()
                .map(|&l| f64::from(l))
                .collect();
            let title = format!(
                "{point} at {bits}: {} calibration values, {} levels",
                h.total(),
                levels.len()
            );
            Some((
                title,
                Figure::Bars(Bars {
                    x_label: if view.transformed {
                        "value after migration / shift".into()
                    } else {
                        "value".into()
                    },
                    y_label: "count".into(),
                    width: f64::from(h.width()),
                    series: vec![BarSeries {
                        name: "values".into(),
                        colour: [200, 90, 70],
                        bars: (0..h.bins())
                            .filter(|&b| h.counts[b] > 0)
                            .map(|b| [f64::from(h.center(b)), h.counts[b] as f64])
                            .collect(),
                    }],
                    lines: vec![
                        Lines {
                            name: if step > 1 {
                                format!("levels (every {step}th)")
                            } else {
                                "levels".into()
                            },
                            colour: [150, 180, 230],
                            at: levels.iter().step_by(step).map(|&l| f64::from(l)).collect(),
                        },
                        Lines {
                            name: "clipping range".into(),
                            colour: [220, 30, 30],
                            at: ends,
                        },
                    ],
                    x_ticks: None,
                }),
            ))
        }
        _ => None,
    }
}
