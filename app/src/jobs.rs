//! Background work: calibration, quantization, evaluation and sweeps run on their own threads
//! (their numerics use rayon inside), report progress through shared state, and hand back one
//! result. The UI thread only polls, so it never blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::sync::{Arc, Mutex};

/// Progress as counts: `done` of `total` units (images, designs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub done: u64,
    pub total: u64,
}

impl Counts {
    pub fn fraction(&self) -> f32 {
        if self.total == 0 {
            0.0
        } else {
            self.done as f32 / self.total as f32
        }
    }
}

/// What a running job's closure uses to report progress and notice a cancel.
#[derive(Debug)]
pub struct Reporter<P> {
    progress: Arc<Mutex<P>>,
    cancel: Arc<AtomicBool>,
    ctx: egui::Context,
}

impl<P> Reporter<P> {
    /// Publishes the latest progress and asks the UI for a frame to show it.
    pub fn report(&self, progress: P) {
        if let Ok(mut p) = self.progress.lock() {
            *p = progress;
        }
        self.ctx.request_repaint();
    }

    /// The flag the job's numerics poll to stop early.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// A job that produces one `T`, reporting progress `P` while it runs.
#[derive(Debug)]
pub struct Job<T, P = Counts> {
    /// What the job is doing, for the status line.
    pub what: String,
    result: Receiver<Result<T, String>>,
    progress: Arc<Mutex<P>>,
    cancel: Arc<AtomicBool>,
}

impl<T: Send + 'static, P: Clone + Default + Send + 'static> Job<T, P> {
    /// Starts `work` on a new thread.
    pub fn spawn(
        ctx: &egui::Context,
        what: impl Into<String>,
        work: impl FnOnce(&Reporter<P>) -> Result<T, String> + Send + 'static,
    ) -> Self {
        let (tx, result) = channel();
        let progress = Arc::new(Mutex::new(P::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        let reporter = Reporter {
            progress: progress.clone(),
            cancel: cancel.clone(),
            ctx: ctx.clone(),
        };
        std::thread::spawn(move || {
            let out = work(&reporter);
            // The receiver is gone when the job was superseded; nothing to deliver then.
            let _ = tx.send(out);
            reporter.ctx.request_repaint();
        });
        Self {
            what: what.into(),
            result,
            progress,
            cancel,
        }
    }

    /// The result once the job has finished (then the job is spent), else `None`.
    pub fn poll(&mut self) -> Option<Result<T, String>> {
        match self.result.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                Some(Err(format!("{} stopped unexpectedly", self.what)))
            }
        }
    }

    /// The latest progress reported.
    pub fn progress(&self) -> P {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Asks the job to stop at its next check; its result (partial or an error) still arrives.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl<T, P> Drop for Job<T, P> {
    /// A dropped job is not waited for, but it is told to stop so it frees the cores.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}
