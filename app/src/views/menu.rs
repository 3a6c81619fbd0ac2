//! The menu bar (files, recent projects) and the notice line under it.

use crate::explorer::{Explorer, Notice};
use crate::files;

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| {
            if ui.button("Open project…").clicked() {
                files::open_dialog(explorer);
            }
            ui.menu_button("Open recent", |ui| {
                if explorer.recent.is_empty() {
                    ui.label("no recent projects");
                }
                for path in explorer.recent.clone() {
                    if ui.button(path.display().to_string()).clicked() {
                        explorer.open_project(&path);
                    }
                }
            });
            ui.separator();
            if ui.button("Save project").clicked() {
                files::save(explorer);
            }
            if ui.button("Save project as… (runs headless)").clicked() {
                files::save_dialog(explorer);
            }
            if ui.button("Export per-layer cost as CSV…").clicked() {
                files::export_cost_dialog(explorer);
            }
            ui.menu_button("Export plot as figure (SVG/PNG)", |ui| {
                if explorer.plots.is_empty() {
                    ui.label("no plot on screen");
                }
                for (name, _) in explorer.plots.clone() {
                    if ui.button(&name).clicked() {
                        files::export_figure_dialog(explorer, &name);
                    }
                }
            });
        });
        ui.separator();
        let title = match &explorer.project_path {
            Some(p) => p.display().to_string(),
            None => "unsaved project".into(),
        };
        ui.label(format!("{} · {}", explorer.project.model, title));
    });
    let mut dismiss = false;
    match &explorer.notice {
        Some(Notice::Error(message)) => {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, format!("error: {message}"));
                dismiss = ui.small_button("dismiss").clicked();
            });
        }
        Some(Notice::Info(message)) => {
            ui.horizontal(|ui| {
                ui.label(message);
                dismiss = ui.small_button("dismiss").clicked();
            });
        }
        None => {}
    }
    if dismiss {
        explorer.notice = None;
    }
}
