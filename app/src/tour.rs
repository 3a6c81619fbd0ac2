//! A tour of the tabs for the docs' screenshots (`QVIT_SCREENSHOTS=DIR`, see
//! `tools/explorer/screenshots.sh`): once the first accuracy is in, each tab is shown in turn
//! and the window saved as `DIR/<tab>.png` when its jobs have finished (Explore runs its sweep
//! first, Search its quick search of the first shipped space), then the window closes. Without the variable the tour never starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::explorer::{Explorer, Notice, Tab};

/// The tabs in the order shown, with their file names.
const TABS: [(Tab, &str); 5] = [
    (Tab::Distributions, "distributions"),
    (Tab::Quantization, "quantization"),
    (Tab::Accelerator, "accelerator"),
    (Tab::Explore, "explore"),
    (Tab::Search, "search"),
];

/// Frames drawn on a tab before its screenshot, so plots have laid out and bounds settled.
const SETTLE_FRAMES: u32 = 5;

#[derive(Debug)]
pub struct Tour {
    dir: PathBuf,
    /// Index into [`TABS`] of the tab being shown.
    next: usize,
    settle: u32,
    /// Set by the screenshot callback once the file is written.
    saved: Option<Arc<AtomicBool>>,
    /// Explore's sweep is started once; a sweep that fails is pictured with its error.
    swept: bool,
    /// Likewise Search's search.
    searched: bool,
}

impl Tour {
    pub fn from_env() -> Option<Self> {
        std::env::var_os("QVIT_SCREENSHOTS").map(|dir| Self {
            dir: PathBuf::from(dir),
            next: 0,
            settle: SETTLE_FRAMES,
            saved: None,
            swept: false,
            searched: false,
        })
    }
}

/// Advances the tour by one frame, once the explorer has its first full accuracy.
pub fn step(explorer: &mut Explorer) {
    let ready = explorer.accuracy_complete() && explorer.quantized.is_some();
    let Some(tour) = explorer.tour.as_mut().filter(|_| ready) else {
        return;
    };
    explorer.ctx.request_repaint();
    if let Some(saved) = &tour.saved {
        if !saved.load(Ordering::Acquire) {
            return;
        }
        tour.saved = None;
        tour.next += 1;
        tour.settle = SETTLE_FRAMES;
    }
    let Some(&(tab, name)) = TABS.get(tour.next) else {
        explorer.ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        return;
    };
    explorer.tab = tab;
    if tab == Tab::Explore && !tour.swept {
        tour.swept = true;
        crate::views::explore::start_sweep(explorer);
        return;
    }
    if tab == Tab::Search && !tour.searched {
        tour.searched = true;
        crate::views::search::start_search(explorer);
        return;
    }
    if explorer.busy() {
        return;
    }
    let Some(tour) = explorer.tour.as_mut() else {
        return;
    };
    if tour.settle > 0 {
        tour.settle -= 1;
        return;
    }
    let saved = Arc::new(AtomicBool::new(false));
    tour.saved = Some(saved.clone());
    let path = tour.dir.join(format!("{name}.png"));
    let notices = explorer.late_notices.clone();
    let callback = egui::ScreenshotCallback::new(move |image| {
        let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
        let [w, h] = image.size;
        if let Err(e) = qvit_core::export::write_png(&path, w, h, &rgba) {
            eprintln!("qvit: {e}");
            if let Ok(mut n) = notices.lock() {
                n.push(Notice::Error(format!("could not save the screenshot: {e}")));
            }
        }
        saved.store(true, Ordering::Release);
    });
    explorer
        .ctx
        .send_viewport_cmd(egui::ViewportCommand::Screenshot(callback));
}
