//! qvit's own file dialog, drawn by egui: a folder listing and a file-name field. It works on
//! every desktop, including those where the system dialog cannot open (Linux without an
//! xdg-desktop-portal, or with one whose backend cannot reach the display), where rfd returns
//! nothing and says nothing. "System dialog…" still offers the native one.

use std::path::{Path, PathBuf};

/// What the chosen file is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    OpenProject,
    SaveProject,
    ExportCostCsv,
    ExportSweepCsv,
    /// A plot on screen, by name, as a figure for a paper (SVG, or PNG by the file's name).
    ExportFigure {
        plot: String,
    },
}

impl Purpose {
    fn title(&self) -> String {
        match self {
            Purpose::OpenProject => "Open project".into(),
            Purpose::SaveProject => "Save project as".into(),
            Purpose::ExportCostCsv => "Export per-layer cost as CSV".into(),
            Purpose::ExportSweepCsv => "Export sweep results as CSV".into(),
            Purpose::ExportFigure { plot } => {
                format!("Export \u{201c}{plot}\u{201d} as a figure (.svg or .png)")
            }
        }
    }

    /// Files of this kind end in this extension.
    pub fn extension(&self) -> &'static str {
        match self {
            Purpose::OpenProject | Purpose::SaveProject => "ron",
            Purpose::ExportCostCsv | Purpose::ExportSweepCsv => "csv",
            Purpose::ExportFigure { .. } => "svg",
        }
    }

    /// Whether the file is written (else read: it must exist).
    pub fn writes(&self) -> bool {
        !matches!(self, Purpose::OpenProject)
    }
}

/// An open dialog.
#[derive(Debug, Clone)]
pub struct FileDialog {
    pub purpose: Purpose,
    pub folder: PathBuf,
    /// The file name (or a whole path) typed or clicked.
    pub name: String,
    /// Why the last choice was not accepted.
    pub problem: Option<String>,
}

/// What the user did this frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Chosen(PathBuf),
    Cancelled,
    /// Asked for the system's dialog instead.
    System,
}

impl FileDialog {
    /// Starts in `folder` with `name` filled in.
    pub fn new(purpose: Purpose, folder: PathBuf, name: String) -> Self {
        Self {
            purpose,
            folder,
            name,
            problem: None,
        }
    }

    /// The path the name stands for: itself when absolute, else inside the folder; the
    /// purpose's extension is added when the name has none.
    pub fn path(&self) -> PathBuf {
        let mut path = self.folder.join(self.name.trim());
        if path.extension().is_none() {
            path.set_extension(self.purpose.extension());
        }
        path
    }

    /// The path, or why it cannot be used.
    fn check(&self) -> Result<PathBuf, String> {
        if self.name.trim().is_empty() {
            return Err("type a file name or click a file".into());
        }
        let path = self.path();
        if self.purpose.writes() {
            match path.parent() {
                Some(dir) if dir.as_os_str().is_empty() || dir.is_dir() => Ok(path),
                _ => Err(format!("the folder of {} does not exist", path.display())),
            }
        } else if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} is not a file", path.display()))
        }
    }
}

/// The folder's subfolders and the files of the dialog's kind, sorted, hidden ones left out.
fn listing(folder: &Path, extension: &str) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let mut folders = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            folders.push(name);
        } else if path.extension().is_some_and(|e| e == extension) {
            files.push(name);
        }
    }
    folders.sort();
    files.sort();
    Ok((folders, files))
}

/// Draws the dialog; returns what the user chose, if anything, this frame.
pub fn show(ctx: &egui::Context, dialog: &mut FileDialog) -> Option<Outcome> {
    let mut outcome = None;
    let mut open = true;
    let action = if dialog.purpose.writes() {
        "Save"
    } else {
        "Open"
    };
    egui::Window::new(dialog.purpose.title())
        .id(egui::Id::unique("qvit.file_dialog"))
        .open(&mut open)
        .collapsible(false)
        .default_size([560.0, 420.0])
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .show(ctx, |ui| {
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(dialog.folder.parent().is_some(), egui::Button::new("Up"))
                    .on_hover_text("the folder above")
                    .clicked()
                    && let Some(up) = dialog.folder.parent()
                {
                    dialog.folder = up.to_path_buf();
                }
                ui.label(format!("folder: {}", dialog.folder.display()));
            });
            ui.separator();
            let extension = dialog.purpose.extension();
            egui::ScrollArea::vertical()
                .max_height(260.0)
                .auto_shrink([false, false])
                .show(ui, |ui| match listing(&dialog.folder, extension) {
                    Ok((folders, files)) => {
                        for name in folders {
                            if ui.selectable_label(false, format!("{name}/")).clicked() {
                                dialog.folder = dialog.folder.join(&name);
                            }
                        }
                        for name in files {
                            let response = ui.selectable_label(dialog.name == name, &name);
                            if response.clicked() || response.double_clicked() {
                                dialog.name = name;
                            }
                            if response.double_clicked() {
                                outcome = Some(Outcome::Chosen(dialog.path()));
                            }
                        }
                    }
                    Err(e) => {
                        ui.colored_label(
                            ui.visuals().error_fg_color,
                            format!("cannot list {}: {e}", dialog.folder.display()),
                        );
                    }
                });
            ui.separator();
            ui.horizontal(|ui| {
                ui.label("file name");
                let field = ui.add(
                    egui::TextEdit::singleline(&mut dialog.name)
                        .hint_text(format!("name.{extension}, or a whole path"))
                        .desired_width(320.0),
                );
                if field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                    outcome = Some(Outcome::Chosen(dialog.path()));
                }
            });
            if let Some(problem) = &dialog.problem {
                ui.colored_label(ui.visuals().error_fg_color, problem);
            }
            ui.horizontal(|ui| {
                if ui.button(action).clicked() {
                    outcome = Some(Outcome::Chosen(dialog.path()));
                }
                if ui.button("Cancel").clicked() {
                    outcome = Some(Outcome::Cancelled);
                }
                if ui
                    .button("System dialog…")
                    .on_hover_text("the desktop's own file dialog, where one is available")
                    .clicked()
                {
                    outcome = Some(Outcome::System);
                }
            });
        });
    if !open {
        return Some(Outcome::Cancelled);
    }
    // A choice that cannot be used keeps the dialog open and says why.
    if let Some(Outcome::Chosen(_)) = &outcome {
        match dialog.check() {
            Ok(path) => return Some(Outcome::Chosen(path)),
            Err(problem) => {
                dialog.problem = Some(problem);
                return None;
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_paths_with_the_kinds_extension() {
        let d = FileDialog::new(Purpose::SaveProject, "/tmp".into(), "mine".into());
        assert_eq!(d.path(), PathBuf::from("/tmp/mine.ron"));
        let d = FileDialog::new(Purpose::ExportCostCsv, "/tmp".into(), "/x/cost.csv".into());
        assert_eq!(d.path(), PathBuf::from("/x/cost.csv"));
        assert!(d.check().unwrap_err().contains("/x"), "no such folder");
        let d = FileDialog::new(Purpose::OpenProject, "/tmp".into(), "".into());
        assert!(d.check().is_err());
    }
}
