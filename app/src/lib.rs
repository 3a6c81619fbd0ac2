//! # qvit-app
//!
//! The qvit desktop explorer. This crate only presents: every number it shows comes from
//! `qvit-core`. For now it opens on the default model and shows its structure; the quantization,
//! accelerator and Pareto views arrive with the explorer issue.

use qvit_core::arch::ArchSpec;
use qvit_core::graph::{Graph, GraphSummary};
use qvit_core::project::DEFAULT_MODEL;

/// Opens the explorer window and blocks until it is closed.
pub fn run() -> eframe::Result {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("qvit explorer")
            .with_inner_size([1280.0, 800.0]),
        ..Default::default()
    };
    eframe::run_native(
        "qvit",
        options,
        Box::new(|_cc| Ok(Box::new(Explorer::new(DEFAULT_MODEL)))),
    )
}

/// The explorer's state.
#[derive(Debug)]
pub struct Explorer {
    model: Result<GraphSummary, String>,
}

impl Explorer {
    /// An explorer showing the preset `model`; a model that fails to build shows its error.
    pub fn new(model: &str) -> Self {
        let model = ArchSpec::preset(model)
            .and_then(|spec| Graph::build(&spec))
            .map(|g| g.summary())
            .map_err(|e| e.to_string());
        Self { model }
    }
}

impl eframe::App for Explorer {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::Panel::top("title").show(ui, |ui| {
            ui.heading("qvit explorer");
        });
        egui::CentralPanel::default().show(ui, |ui| match &self.model {
            Err(message) => {
                ui.colored_label(ui.visuals().error_fg_color, message);
            }
            Ok(summary) => model_overview(ui, summary),
        });
    }
}

fn model_overview(ui: &mut egui::Ui, s: &GraphSummary) {
    ui.label(format!(
        "{} — {} at {}×{} px, {} classes",
        s.model, s.family, s.resolution, s.resolution, s.num_classes
    ));
    ui.label(format!(
        "{} parameters · {} MACs per image · {} checkpoint tensors",
        s.params, s.macs, s.state_dict_entries
    ));
    ui.separator();
    egui::Grid::new("stages").striped(true).show(ui, |ui| {
        ui.strong("stage");
        ui.strong("layers");
        ui.strong("MACs");
        ui.strong("share");
        ui.end_row();
        for g in &s.by_stage {
            ui.label(&g.name);
            ui.label(g.layers.to_string());
            ui.label(g.macs.to_string());
            ui.add(
                egui::ProgressBar::new((g.mac_share / 100.0) as f32)
                    .desired_width(240.0)
                    .text(format!("{:.1} %", g.mac_share)),
            );
            ui.end_row();
        }
    });
}
