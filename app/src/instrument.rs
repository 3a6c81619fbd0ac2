//! Hooks for scripts that watch the explorer from outside (`tools/explorer/`), switched on by
//! environment variables and otherwise inert:
//!
//! - `QVIT_READY_FILE=PATH`: once the first accuracy result over the whole test set is in,
//!   write its top-1 to PATH (the screenshot script waits for it);
//! - `QVIT_PLOT_PNG=PATH`: with the ready file, save the first plot on screen to PATH as it
//!   looks (a screenshot of the next frame, cropped to the plot);
//! - `QVIT_FRAME_TIMES=PATH`: append one line per frame, `ui_ms cpu_ms interval_ms`: the time
//!   the explorer's own `ui` took (state and views), the CPU time eframe measured for the
//!   previous frame (UI, tessellation and, with software OpenGL, part of the rendering), and
//!   the wall time since the previous frame began.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Instruments {
    ready_file: Option<PathBuf>,
    plot_png: Option<PathBuf>,
    frame_times: Option<BufWriter<File>>,
    last_frame: Option<Instant>,
    ui_started: Option<Instant>,
}

impl Instruments {
    pub fn from_env() -> Self {
        Self {
            ready_file: std::env::var_os("QVIT_READY_FILE").map(PathBuf::from),
            plot_png: std::env::var_os("QVIT_PLOT_PNG").map(PathBuf::from),
            frame_times: std::env::var_os("QVIT_FRAME_TIMES")
                .and_then(|p| File::create(p).ok())
                .map(BufWriter::new),
            last_frame: None,
            ui_started: None,
        }
    }

    /// Marks the start of the explorer's `ui`.
    pub fn frame_begin(&mut self) {
        self.ui_started = Some(Instant::now());
    }

    /// Records one frame's timing at the end of the explorer's `ui`.
    pub fn frame_end(&mut self, cpu_seconds: Option<f32>) {
        let now = Instant::now();
        let Some(started) = self.ui_started.take() else {
            return;
        };
        if let Some(log) = &mut self.frame_times {
            let interval = self
                .last_frame
                .map_or(0.0, |t| started.duration_since(t).as_secs_f64() * 1e3);
            let ui = now.duration_since(started).as_secs_f64() * 1e3;
            let cpu = cpu_seconds.unwrap_or(0.0) * 1e3;
            let _ = writeln!(log, "{ui:.3} {cpu:.3} {interval:.3}");
            let _ = log.flush();
        }
        self.last_frame = Some(started);
    }

    /// Announces the first complete accuracy result (once); returns where to export a plot,
    /// if asked.
    pub fn accuracy_ready(&mut self, top1: f64) -> Option<PathBuf> {
        if let Some(path) = self.ready_file.take() {
            let _ = qvit_core::ron_io::write_atomic(&path, format!("{top1:.2}\n").as_bytes());
        }
        self.plot_png.take()
    }
}
