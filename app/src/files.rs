//! Files the explorer reads and writes: project RON files through the system's file dialogs,
//! CSV and PNG exports, and the state kept between runs (recent files, the open tab; eframe keeps the
//! window's size and position).

use std::path::{Path, PathBuf};

use crate::explorer::{Explorer, Notice, Tab};

const RECENT_KEY: &str = "qvit.recent";
const TAB_KEY: &str = "qvit.tab";

/// Restores the recent files and the tab of the last run.
pub fn restore_state(explorer: &mut Explorer, storage: Option<&dyn eframe::Storage>) {
    let Some(storage) = storage else { return };
    if let Some(recent) = eframe::get_value::<Vec<PathBuf>>(storage, RECENT_KEY) {
        explorer.recent = recent;
    }
    if let Some(tab) = eframe::get_value::<Tab>(storage, TAB_KEY) {
        explorer.tab = tab;
    }
}

pub fn save_state(explorer: &Explorer, storage: &mut dyn eframe::Storage) {
    eframe::set_value(storage, RECENT_KEY, &explorer.recent);
    eframe::set_value(storage, TAB_KEY, &explorer.tab);
}

fn ron_dialog() -> rfd::FileDialog {
    rfd::FileDialog::new().add_filter("qvit project", &["ron"])
}

/// File → Open project…
pub fn open_dialog(explorer: &mut Explorer) {
    if let Some(path) = ron_dialog().pick_file() {
        explorer.open_project(&path);
    }
}

/// File → Save project as… (also the export for headless runs: the same RON).
pub fn save_dialog(explorer: &mut Explorer) {
    let name = explorer
        .project_path
        .as_ref()
        .and_then(|p| p.file_name())
        .map_or("project.ron".into(), |n| n.to_string_lossy().into_owned());
    if let Some(path) = ron_dialog().set_file_name(name).save_file() {
        explorer.save_project(&path);
    }
}

/// File → Save project: to its file, or through the dialog when it has none.
pub fn save(explorer: &mut Explorer) {
    match explorer.project_path.clone() {
        Some(path) => explorer.save_project(&path),
        None => save_dialog(explorer),
    }
}

/// Writes the per-layer cost report as CSV.
pub fn export_cost_csv(explorer: &mut Explorer, path: &Path) {
    let result = match &explorer.cost {
        Ok(report) => qvit_core::accel::write_layers_csv(report, path).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    explorer.notice = Some(match result {
        Ok(()) => Notice::Info(format!("wrote {}", path.display())),
        Err(e) => Notice::Error(format!("could not export the cost table: {e}")),
    });
}

/// File → Export per-layer cost as CSV…
pub fn export_cost_dialog(explorer: &mut Explorer) {
    if let Some(path) = rfd::FileDialog::new()
        .add_filter("CSV", &["csv"])
        .set_file_name("cost.csv")
        .save_file()
    {
        export_cost_csv(explorer, &path);
    }
}

/// File → Export plot as PNG → a plot on screen: asks for a file, then takes a screenshot of
/// the next frame and writes the plot's rectangle of it.
pub fn export_plot_dialog(explorer: &mut Explorer, name: &str, rect: egui::Rect) {
    let file = format!("{}.png", name.replace([' ', '(', ')', '/'], "-"));
    if let Some(path) = rfd::FileDialog::new()
        .add_filter("PNG", &["png"])
        .set_file_name(file)
        .save_file()
    {
        export_plot(explorer, rect, path);
    }
}

/// Writes the screen rectangle `rect` (points) of the next frame to `path` as PNG; the result
/// shows as a notice when the screenshot has arrived.
pub fn export_plot(explorer: &Explorer, rect: egui::Rect, path: PathBuf) {
    let ctx = explorer.ctx.clone();
    let notices = explorer.late_notices.clone();
    let pixels_per_point = ctx.pixels_per_point();
    let callback = egui::ScreenshotCallback::new(move |image| {
        let plot = image.region(&rect, Some(pixels_per_point));
        let rgba: Vec<u8> = plot.pixels.iter().flat_map(|c| c.to_array()).collect();
        let [w, h] = plot.size;
        let notice = match qvit_core::export::write_png(&path, w, h, &rgba) {
            Ok(()) => Notice::Info(format!("wrote {} ({w}×{h} px)", path.display())),
            Err(e) => Notice::Error(format!("could not export the plot: {e}")),
        };
        if let Ok(mut n) = notices.lock() {
            n.push(notice);
        }
        ctx.request_repaint();
    });
    explorer
        .ctx
        .send_viewport_cmd(egui::ViewportCommand::Screenshot(callback));
}
