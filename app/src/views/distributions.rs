//! Distributions of the selected layer: per-channel boxes of its input activation as
//! calibrated and as the quantizer sees it after Trio-ViT's migration or shifting, the
//! tensor's histogram with the quantizer's levels and clipping range, and per-filter boxes of
//! its weights.

use egui_plot::{Bar, BarChart, BoxElem, BoxPlot, BoxSpread, Legend, Plot, VLine};
use std::sync::Arc;

use qvit_core::figure;
use qvit_core::quant::diagnostics;
use qvit_core::quant::stats::BoxStats;

use super::{db, figures};
use crate::explorer::Explorer;
use crate::session::LayerDistributions;

/// Levels drawn at most; denser quantizers show every k-th level.
pub const MAX_LEVEL_LINES: usize = 64;
/// The smallest plot height (points) at which ticks and boxes stay readable.
const MIN_PLOT_HEIGHT: f32 = 140.0;

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let (Some(loaded), Some(q), Ok(graph)) = (
        explorer.loaded.clone(),
        explorer.quantized.clone(),
        explorer.graph.clone(),
    ) else {
        ui.label(
            if explorer.jobs.load.is_some() || explorer.jobs.quantize.is_some() {
                "Calibrating… the distributions appear when the statistics are ready."
            } else {
                "No statistics: the model could not be loaded or quantized (see the error above)."
            },
        );
        return;
    };
    let Some(id) = explorer
        .selected
        .or_else(|| first_migrated_layer(&q, &graph))
    else {
        ui.label("Select a layer in the tree.");
        return;
    };
    explorer.selected = Some(id);
    let d = match &explorer.distributions {
        Some(d) if d.is_for(id, &q) => d.clone(),
        _ => {
            let point = super::input_point(&q, &graph, id).map(str::to_string);
            let d = Arc::new(LayerDistributions::compute(&loaded, &q, id, point));
            explorer.distributions = Some(d.clone());
            d
        }
    };
    let layer = &graph.node(id).name;
    ui.horizontal(|ui| {
        ui.strong(layer);
        ui.checkbox(&mut explorer.sort_by_range, "sort channels by range");
    });
    let Some(point) = &d.point else {
        ui.label("This layer has no quantized input.");
        return;
    };
    let act = q.plan.activations.iter().find(|a| a.point == *point);
    ui.label(format!(
        "input {point}: {} · activation SQNR {}",
        act.map_or(String::new(), |a| super::plain(&a.note)),
        db(q.activation_sqnr(point))
    ));
    // The plots share the height left after their captions and axes, measured in the frame
    // before (it depends on fonts and on which plots the layer has); below the smallest
    // readable height the view scrolls instead of cutting the last plot off.
    let memory = egui::Id::unique("qvit.distributions.layout");
    let line = ui.text_style_height(&egui::TextStyle::Body) + ui.spacing().item_spacing.y;
    let (rows, overhead) = ui
        .data(|d| d.get_temp::<(usize, f32)>(memory))
        .unwrap_or((3, 10.0 * line));
    let height = ((ui.available_height() - overhead) / rows.max(1) as f32).max(MIN_PLOT_HEIGHT);
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            let top = ui.cursor().top();
            let rows = plots(ui, &d, &q, layer, explorer.sort_by_range, height);
            let used = ui.cursor().top() - top;
            let overhead = (used - rows as f32 * height).max(0.0);
            ui.data_mut(|d| d.insert_temp(memory, (rows, overhead)));
        });
}

/// The boxes, the histogram and the weights' boxes, each `height` tall; returns how many rows
/// of plots it drew.
fn plots(
    ui: &mut egui::Ui,
    d: &LayerDistributions,
    q: &crate::session::Quantized,
    layer: &str,
    sort_by_range: bool,
    height: f32,
) -> usize {
    let mut rows = 0;
    if let Some((before, after)) = &d.boxes {
        rows += 1;
        let order = channel_order(before, sort_by_range);
        let transformed = before != after;
        ui.columns(if transformed { 2 } else { 1 }, |cols| {
            let calibrated = Shown {
                plot: figures::CALIBRATED,
                title: "calibrated",
                id: "before",
            };
            boxes(&mut cols[0], calibrated, before, &order, height);
            if transformed {
                let migrated = Shown {
                    plot: figures::MIGRATED,
                    title: "as quantized (after migration / shift)",
                    id: "after",
                };
                boxes(&mut cols[1], migrated, after, &order, height);
            }
        });
    }
    if let Some(view) = &d.quantizer {
        rows += 1;
        histogram(ui, view, height);
    }
    if let Some(weights) = &d.weights {
        ui.label(format!(
            "weights, one box per output channel · weight SQNR {}",
            db(q.weight_sqnr(layer))
        ));
        let order = channel_order(weights, sort_by_range);
        rows += 1;
        let shown = Shown {
            plot: figures::WEIGHTS,
            title: "weights",
            id: "weights",
        };
        boxes(ui, shown, weights, &order, height);
    }
    rows
}

fn histogram(ui: &mut egui::Ui, view: &diagnostics::QuantizerView, height: f32) {
    let (h, levels) = (&view.histogram, &view.levels);
    ui.label(format!(
        "histogram of {} calibration values{} · {} levels in range, clipping range {}",
        h.total(),
        if view.transformed {
            " after migration / shift"
        } else {
            ""
        },
        levels.len(),
        match (levels.first(), levels.last()) {
            (Some(lo), Some(hi)) => format!("[{lo:.4}, {hi:.4}]"),
            _ => "–".into(),
        }
    ));
    let bars: Vec<Bar> = (0..h.bins())
        .filter(|&b| h.counts[b] > 0)
        .map(|b| Bar::new(h.center(b) as f64, h.counts[b] as f64).width(h.width() as f64))
        .collect();
    let shown = Plot::new("histogram")
        .height(height)
        .x_axis_label(if view.transformed {
            "value after migration / shift"
        } else {
            "value"
        })
        .y_axis_label("count")
        .legend(Legend::default())
        .show(ui, |plot| {
            plot.bar_chart(BarChart::new("values", bars));
            let step = levels.len().div_ceil(MAX_LEVEL_LINES).max(1);
            for &l in levels.iter().step_by(step).skip(1) {
                plot.vline(
                    VLine::new("levels", l as f64)
                        .color(egui::Color32::from_rgba_unmultiplied(90, 140, 220, 90)),
                );
            }
            for l in [levels.first(), levels.last()].into_iter().flatten() {
                plot.vline(VLine::new("clipping range", *l as f64).color(egui::Color32::RED));
            }
        });
    super::register_plot(ui, super::figures::HISTOGRAM, shown.response.rect);
}

/// The first layer whose input the plan migrates or shifts (the most telling default view).
fn first_migrated_layer(
    q: &crate::session::Quantized,
    graph: &qvit_core::graph::Graph,
) -> Option<usize> {
    let point = q
        .plan
        .activations
        .iter()
        .find(|a| a.migration.is_some())
        .or_else(|| q.plan.activations.first())?;
    graph
        .consumers(point.node)
        .into_iter()
        .find(|&c| graph.node(c).macs > 0)
}

/// Channel indices in display order: as numbered, or widest range first.
pub fn channel_order(boxes: &[BoxStats], by_range: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    if by_range {
        order.sort_by(|&a, &b| {
            let r = |i: usize| boxes[i].max - boxes[i].min;
            r(b).total_cmp(&r(a))
        });
    }
    order
}

/// A box plot as the view shows it: the name it is exported by, its caption, its egui id.
struct Shown {
    plot: &'static str,
    title: &'static str,
    id: &'static str,
}

fn boxes(ui: &mut egui::Ui, shown: Shown, boxes: &[BoxStats], order: &[usize], height: f32) {
    let Shown { plot, title, id } = shown;
    ui.label(format!(
        "{title} · {} channels (whiskers p1–p99, dots min/max)",
        boxes.len()
    ));
    let elems: Vec<BoxElem> = order
        .iter()
        .enumerate()
        .map(|(x, &c)| {
            let b = &boxes[c];
            BoxElem::new(
                x as f64,
                BoxSpread::new(
                    b.p1 as f64,
                    b.p25 as f64,
                    b.median as f64,
                    b.p75 as f64,
                    b.p99 as f64,
                ),
            )
            .name(format!("channel {c}"))
            .box_width(0.7)
        })
        .collect();
    let extremes: Vec<[f64; 2]> = order
        .iter()
        .enumerate()
        .flat_map(|(x, &c)| {
            [
                [x as f64, boxes[c].min as f64],
                [x as f64, boxes[c].max as f64],
            ]
        })
        .collect();
    let sorted = order.iter().enumerate().any(|(rank, &c)| rank != c);
    let ticks = order.to_vec();
    let shown = Plot::new(format!("boxes-{id}"))
        .height(height)
        .x_axis_label(if sorted {
            "channel (widest range first)"
        } else {
            "channel"
        })
        .y_axis_label(if id == "weights" { "weight" } else { "value" })
        .x_axis_formatter(move |mark, _| figure::channel_tick(&ticks, mark.value))
        .show(ui, |plot| {
            plot.box_plot(BoxPlot::new(title, elems));
            plot.points(egui_plot::Points::new("min / max", extremes).radius(1.5));
        });
    super::register_plot(ui, plot, shown.response.rect);
}
