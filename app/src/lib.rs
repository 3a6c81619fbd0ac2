//! # qvit-app
//!
//! The qvit desktop explorer. This crate only presents and orchestrates: every number it shows
//! comes from `qvit-core`, computed on background jobs ([`jobs`]) or, for the cost model, in the
//! frame that changed it.
//!
//! - [`explorer`]: the state of one open project and how it reacts to a change;
//! - [`session`]: the values computed for it (loaded model, quantization, accuracy);
//! - [`answers`]: those values kept by what they depend on, to show again at once;
//! - [`views`]: the panels — model tree, distributions, quantization, accelerator, explore,
//!   results bar;
//! - [`files`]: project files, exports and the state kept between runs;
//! - [`instrument`] and [`tour`]: hooks for the screenshot and frame-time scripts.

pub mod answers;
pub mod explorer;
pub mod files;
pub mod instrument;
pub mod jobs;
pub mod session;
pub mod tour;
pub mod views;

use std::path::PathBuf;

pub use explorer::Explorer;

/// Opens the explorer window on `project` (the shipped default when `None`) and blocks until
/// it is closed.
pub fn run(project: Option<PathBuf>) -> eframe::Result {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("qvit explorer")
            .with_inner_size([1400.0, 900.0]),
        ..Default::default()
    };
    eframe::run_native(
        "qvit",
        options,
        Box::new(move |cc| Ok(Box::new(create(cc, project)))),
    )
}

/// The explorer as eframe creates it: the last run's state restored, then `project` (or the
/// shipped default) opened. With persistent storage (a real window, not a test harness),
/// calibration statistics are cached beside it, so a model opened before opens at once.
pub fn create(cc: &eframe::CreationContext<'_>, project: Option<PathBuf>) -> Explorer {
    let cache = cc
        .storage
        .and_then(|_| eframe::storage_dir("qvit"))
        .map(|dir| dir.join("calibration"));
    let mut explorer = Explorer::new(&cc.egui_ctx, Explorer::default_project(), None, cache);
    files::restore_state(&mut explorer, cc.storage);
    if let Some(path) = project {
        explorer.open_project(&path);
    }
    explorer
}
