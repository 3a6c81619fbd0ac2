//! The explorer's panels. Each view reads the explorer's state, draws it, and records what the
//! user changed; none computes numerics of its own.

pub mod accelerator;
pub mod distributions;
pub mod explore;
pub mod figures;
pub mod file_dialog;
pub mod menu;
pub mod model_tree;
pub mod quantization;
pub mod results;
pub mod scatter;
pub mod search;

use crate::explorer::{Explorer, Tab};

/// Lays out one frame: menu and notices on top, results along the bottom, the model tree on
/// the left, the selected tab in the middle.
pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    explorer.plots = take_plots(ui.ctx());
    egui::Panel::top("menu").show(ui, |ui| menu::show(explorer, ui));
    egui::Panel::bottom("results")
        .min_size(52.0)
        .show(ui, |ui| results::show(explorer, ui));
    egui::Panel::left("model")
        .resizable(true)
        .default_size(380.0)
        .show(ui, |ui| model_tree::show(explorer, ui));
    egui::CentralPanel::default().show(ui, |ui| {
        ui.horizontal(|ui| {
            for (tab, name) in [
                (Tab::Distributions, "Distributions"),
                (Tab::Quantization, "Quantization"),
                (Tab::Accelerator, "Accelerator"),
                (Tab::Explore, "Explore"),
                (Tab::Search, "Search"),
            ] {
                ui.selectable_value(&mut explorer.tab, tab, name);
            }
        });
        ui.separator();
        match explorer.tab {
            Tab::Distributions => distributions::show(explorer, ui),
            Tab::Quantization => quantization::show(explorer, ui),
            Tab::Accelerator => accelerator::show(explorer, ui),
            Tab::Explore => explore::show(explorer, ui),
            Tab::Search => search::show(explorer, ui),
        }
    });
    if let Some(dialog) = &mut explorer.dialog
        && let Some(outcome) = file_dialog::show(ui.ctx(), dialog)
    {
        crate::files::dialog_outcome(explorer, outcome);
    }
}

fn plots_id() -> egui::Id {
    egui::Id::unique("qvit.plots")
}

/// Remembers where a plot was drawn in this frame, so that File → Export plot can crop it from
/// a screenshot.
pub fn register_plot(ui: &egui::Ui, name: impl Into<String>, rect: egui::Rect) {
    ui.ctx().data_mut(|d| {
        d.get_temp_mut_or_default::<Vec<(String, egui::Rect)>>(plots_id())
            .push((name.into(), rect))
    });
}

/// The plots drawn in the previous frame, with their screen rectangles.
fn take_plots(ctx: &egui::Context) -> Vec<(String, egui::Rect)> {
    ctx.data_mut(|d| {
        std::mem::take(d.get_temp_mut_or_default::<Vec<(String, egui::Rect)>>(plots_id()))
    })
}

/// A dB figure for labels, `–` when unknown.
pub fn db(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1} dB"))
}

/// Text from core for egui's default fonts, which lack a few symbols (→).
pub fn plain(text: &str) -> String {
    text.replace('→', "->")
}

/// Thousands separated by thin spaces: 1 234 567.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(ch);
    }
    out
}

/// The activation point that stores layer `id`'s output (after a fused activation or norm).
pub fn output_point<'q>(
    q: &'q crate::session::Quantized,
    graph: &qvit_core::graph::Graph,
    id: qvit_core::graph::NodeId,
) -> Option<&'q str> {
    let node = qvit_core::quant::points::output_point_node(graph, id)?;
    q.plan
        .activations
        .iter()
        .find(|a| a.node == node)
        .map(|a| a.point.as_str())
}

/// The activation point feeding layer `id` (where Trio-ViT's migration and shifting act), or
/// failing that the layer's own output point.
pub fn input_point<'q>(
    q: &'q crate::session::Quantized,
    graph: &qvit_core::graph::Graph,
    id: qvit_core::graph::NodeId,
) -> Option<&'q str> {
    let inputs = &graph.node(id).inputs;
    q.plan
        .activations
        .iter()
        .find(|a| inputs.contains(&a.node))
        .or_else(|| q.plan.activations.iter().find(|a| a.node == id))
        .map(|a| a.point.as_str())
}
