//! The results bar, always visible: top-1 (streamed while the test set runs, with its 95 %
//! interval), FPS, GOPS, DSPs and DSP efficiency, and the change against a pinned baseline.

use crate::explorer::{Explorer, Snapshot};

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let now = explorer.snapshot();
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        accuracy(explorer, ui);
        ui.separator();
        match &explorer.cost {
            Ok(c) => {
                let figures: [Figure; 5] = [
                    ("FPS", format!("{:.1}", c.fps), c.fps, |b| b.fps),
                    ("GOPS", format!("{:.1}", c.gops), c.gops, |b| b.gops),
                    (
                        "DSPs",
                        format!("{} of {}", c.dsps, c.dsp_budget),
                        c.dsps as f64,
                        |b| b.dsps as f64,
                    ),
                    (
                        "GOPS/DSP",
                        format!("{:.4}", c.gops_per_dsp),
                        c.gops_per_dsp,
                        |b| b.gops_per_dsp,
                    ),
                    (
                        "FPS/DSP",
                        format!("{:.3}", c.fps_per_dsp),
                        c.fps_per_dsp,
                        |b| b.fps_per_dsp,
                    ),
                ];
                for (name, shown, value, of_baseline) in figures {
                    let base = explorer.baseline.as_ref().map(of_baseline);
                    figure(ui, name, shown, delta(base, value));
                }
                ui.label(format!("latency {:.3} ms", c.latency_ms));
            }
            Err(e) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("cost: {e}"));
            }
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if explorer.baseline.is_some() && ui.button("Clear baseline").clicked() {
                explorer.baseline = None;
            }
            if ui
                .add_enabled(now.is_some(), egui::Button::new("Pin as baseline"))
                .on_hover_text("Compare every later configuration against this one")
                .clicked()
            {
                explorer.baseline = now;
            }
        });
    });
    if let Some((what, counts)) = explorer.activity() {
        ui.horizontal(|ui| {
            ui.spinner();
            let bar = egui::ProgressBar::new(counts.fraction()).desired_width(260.0);
            ui.add(bar.text(if counts.total > 0 {
                format!("{what} {}/{}", counts.done, counts.total)
            } else {
                what
            }));
            if let Some(job) = &explorer.jobs.load
                && ui.small_button("cancel").clicked()
            {
                job.cancel();
            }
        });
    }
}

/// A headline figure: its name, the value as shown, the value now, and how to read it from
/// a baseline.
type Figure = (&'static str, String, f64, fn(&Snapshot) -> f64);

fn accuracy(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let total = explorer.eval_total();
    let running = explorer.jobs.evaluate.is_some();
    match (
        &explorer.accuracy,
        &explorer.accuracy_error,
        &explorer.quant_error,
    ) {
        (_, _, Some(e)) | (_, Some(e), _) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("top-1: {e}"))
                .on_hover_text(e.clone());
        }
        (Some(acc), _, _) => {
            let (lo, hi) = acc.top1_interval();
            ui.label(egui::RichText::new(format!("top-1 {:.2} %", acc.top1())).strong());
            let base = explorer.baseline.as_ref().and_then(|b| b.top1.as_ref());
            if let (Some(base), Some(now)) = (base, explorer.top1_of(acc)) {
                if base.comparable(&now) {
                    ui.label(format!("{:+.2} points", now.percent - base.percent));
                } else {
                    // Top-1 on other images (a shorter run, another folder) is no comparison.
                    ui.weak(format!(
                        "baseline {:.2} % on {} images",
                        base.percent, base.images
                    ))
                    .on_hover_text(format!(
                        "The baseline's top-1 was measured on {} images of {}, this one on {} \
                         images of {}: no difference is shown until both are on the same images.",
                        base.images, base.data, now.images, now.data
                    ));
                }
            }
            ui.label(format!("95 % CI {lo:.2}–{hi:.2}"));
            if running {
                ui.add(
                    egui::ProgressBar::new(acc.images as f32 / total.max(1) as f32)
                        .desired_width(120.0)
                        .text(format!("{}/{} images", acc.images, total)),
                );
                if ui.small_button("stop").clicked()
                    && let Some(j) = &explorer.jobs.evaluate
                {
                    j.cancel();
                }
            } else if explorer.accuracy_cached {
                ui.label(format!("on {} test images, remembered", acc.images))
                    .on_hover_text(
                        "Measured earlier for these settings, statistics and test images, and \
                         kept in qvit's cache beside the calibration statistics",
                    );
            } else {
                ui.label(format!("on {} test images", acc.images));
            }
        }
        (None, None, None) => {
            ui.label("top-1 …");
        }
    }
}

/// One headline figure: `name value` and, against a baseline, the relative change.
fn figure(ui: &mut egui::Ui, name: &str, value: String, change: Option<f64>) {
    ui.label(egui::RichText::new(format!("{name} {value}")).strong());
    if let Some(d) = change {
        let colour = if d >= 0.0 {
            egui::Color32::from_rgb(60, 160, 80)
        } else {
            egui::Color32::from_rgb(200, 80, 60)
        };
        ui.colored_label(colour, format!("{d:+.1} %"));
    }
}

fn delta(base: Option<f64>, now: f64) -> Option<f64> {
    base.filter(|b| *b != 0.0)
        .map(|b| 100.0 * (now - b) / b.abs())
}
