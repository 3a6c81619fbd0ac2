//! Files the explorer reads and writes: project RON files, CSV and PNG exports, chosen in qvit's
//! own file dialog (or the system's, on request), and the state kept between runs (recent files,
//! the open tab; eframe keeps the window's size and position).

use std::path::{Path, PathBuf};

use crate::explorer::{Explorer, Notice, Tab};
use crate::views::file_dialog::{FileDialog, Outcome, Purpose};

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

/// Opens qvit's file dialog for `purpose`, in the project's folder (else the working folder),
/// with `name` filled in.
pub fn ask(explorer: &mut Explorer, purpose: Purpose, name: &str) {
    let folder = explorer
        .project_path
        .as_ref()
        .and_then(|p| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    explorer.dialog = Some(FileDialog::new(purpose, folder, name.into()));
}

/// Acts on what the user did in the file dialog.
pub fn dialog_outcome(explorer: &mut Explorer, outcome: Outcome) {
    let Some(dialog) = explorer.dialog.take() else {
        return;
    };
    match outcome {
        Outcome::Cancelled => {}
        Outcome::Chosen(path) => finish(explorer, dialog.purpose, path),
        Outcome::System => match system_dialog(&dialog) {
            Some(path) => finish(explorer, dialog.purpose, path),
            None => {
                explorer.notice = Some(Notice::Error(
                    "the system file dialog gave no file: it was cancelled or could not open \
                     (on Linux it needs an xdg-desktop-portal); choose the file in qvit's dialog"
                        .into(),
                ));
                explorer.dialog = Some(dialog);
            }
        },
    }
}

/// The desktop's own dialog (rfd), which returns nothing both when cancelled and when it
/// cannot open.
fn system_dialog(dialog: &FileDialog) -> Option<PathBuf> {
    let extension = dialog.purpose.extension();
    let native = rfd::FileDialog::new()
        .add_filter(extension.to_uppercase(), &[extension])
        .set_directory(&dialog.folder)
        .set_file_name(&dialog.name);
    if dialog.purpose.writes() {
        native.save_file()
    } else {
        native.pick_file()
    }
}

fn finish(explorer: &mut Explorer, purpose: Purpose, path: PathBuf) {
    match purpose {
        Purpose::OpenProject => explorer.open_project(&path),
        Purpose::SaveProject => explorer.save_project(&path),
        Purpose::ExportCostCsv => export_cost_csv(explorer, &path),
        Purpose::ExportSweepCsv => crate::views::explore::export_results(explorer, &path),
        Purpose::ExportFigure { plot } => crate::views::figures::export(explorer, &plot, &path),
    }
}

/// File → Open project…
pub fn open_dialog(explorer: &mut Explorer) {
    ask(explorer, Purpose::OpenProject, "");
}

/// File → Save project as… (also the export for headless runs: the same RON).
pub fn save_dialog(explorer: &mut Explorer) {
    let name = explorer
        .project_path
        .as_ref()
        .and_then(|p| p.file_name())
        .map_or("project.ron".into(), |n| n.to_string_lossy().into_owned());
    ask(explorer, Purpose::SaveProject, &name);
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
    ask(explorer, Purpose::ExportCostCsv, "cost.csv");
}

/// File → Export plot as figure → a plot on screen: asks for a file (SVG by default).
pub fn export_figure_dialog(explorer: &mut Explorer, plot: &str) {
    let file = format!("{}.svg", plot.replace([' ', '(', ')', '/', ','], "-"));
    ask(
        explorer,
        Purpose::ExportFigure {
            plot: plot.to_string(),
        },
        &file,
    );
}

/// Writes the screen rectangle `rect` (points) of the next frame to `path` as PNG; the result
/// shows as a notice when the screenshot has arrived (the `QVIT_PLOT_PNG` hook's picture of
/// what is on screen; figures for papers are [`crate::views::figures`]).
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
