//! Explore: a sweep of engine sizes, copies and bit widths around the open configuration, run
//! in the background with progress and cancel; a scatter of accuracy, FPS or DSP efficiency
//! with the Pareto front highlighted and published accelerators as labelled reference points.
//! Clicking a design loads it.

use std::path::PathBuf;

use qvit_core::accel::published::{self, PublishedAccelerator};
use qvit_core::explore::accuracy::AccuracySpec;
use qvit_core::explore::scatter::{Axis, DesignScatter};
use qvit_core::explore::sweep::{self, Design, Progress};
use qvit_core::explore::{DesignSpace, Sampling, Shard};
use qvit_core::quant::BitWidths;

use crate::explorer::{Explorer, Notice};
use crate::jobs::Job;

/// Images per bit width when the sweep measures accuracy (a quick estimate; the headless
/// `qvit sweep` defaults to the full test set).
const ACCURACY_IMAGES: usize = 2000;

/// The axes of the explorer's sweep, as the user typed them.
#[derive(Debug, Clone)]
pub struct ExploreState {
    pub mat_pes: String,
    pub mat_lanes: String,
    pub rmac_pes: String,
    pub rmac_lanes: String,
    pub copies: String,
    pub bits: String,
    pub accuracy: bool,
    pub x: Axis,
    pub y: Axis,
    pub designs: Vec<Design>,
    /// Designs the last sweep priced; those over the DSP budget are not among `designs`.
    pub priced: u64,
    /// The published reference points, read once (or why they could not be).
    published: Option<Result<Vec<PublishedAccelerator>, String>>,
}

impl Default for ExploreState {
    fn default() -> Self {
        Self {
            mat_pes: "8, 16, 32".into(),
            mat_lanes: "4, 8, 16".into(),
            rmac_pes: "8, 16, 32".into(),
            rmac_lanes: "4, 8, 16".into(),
            copies: "1, 2, 4, 8".into(),
            bits: "w8a8, w4a8".into(),
            accuracy: true,
            x: Axis::Fps,
            y: Axis::Top1,
            designs: Vec::new(),
            priced: 0,
            published: None,
        }
    }
}

impl ExploreState {
    /// The published reference points, read once.
    pub fn published(&mut self) -> Result<Vec<PublishedAccelerator>, String> {
        self.published
            .get_or_insert_with(|| published::all().map_err(|e| e.to_string()))
            .clone()
    }

    /// The design space these axes describe around the explorer's project.
    pub fn space(&self, explorer: &Explorer) -> Result<DesignSpace, String> {
        let list = |field: &str, text: &str| -> Result<Vec<usize>, String> {
            text.split(',')
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("{field}: `{v}` is not a whole number"))
                })
                .collect()
        };
        let bits: Vec<String> = self
            .bits
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        for b in &bits {
            b.parse::<BitWidths>().map_err(|e| format!("bits: {e}"))?;
        }
        let settings = explorer.project.quant.clone().unwrap_or_default();
        let mut space = DesignSpace {
            name: "explorer".into(),
            base: String::new(),
            base_config: None,
            models: vec![explorer.project.model.clone()],
            resolutions: Vec::new(),
            mat_pes: list("P_m", &self.mat_pes)?,
            mat_lanes: list("L_m", &self.mat_lanes)?,
            rmac_pes: list("P_r", &self.rmac_pes)?,
            rmac_lanes: list("L_r", &self.rmac_lanes)?,
            copies: list("L", &self.copies)?,
            clock_mhz: Vec::new(),
            bits,
            accuracy: self.accuracy.then(|| AccuracySpec {
                recipe: settings.recipe.clone(),
                images: Some(ACCURACY_IMAGES),
                calibration_images: crate::session::CALIBRATION_IMAGES,
                // The statistics the explorer already has, rather than a calibration of its own.
                calibration: explorer
                    .loaded
                    .as_ref()
                    .and_then(|l| l.stats_file.clone())
                    .into_iter()
                    .collect(),
                executor: settings.executor,
            }),
            sampling: Sampling::Grid,
        };
        let origin = "the Explore tab";
        space.base_config = Some(explorer.project.accel_config().map_err(|e| e.to_string())?);
        space.validate(origin).map_err(|e| e.to_string())?;
        Ok(space)
    }
}

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    axes(explorer, ui);
    ui.horizontal(|ui| {
        match &explorer.jobs.sweep {
            Some(job) => {
                ui.spinner();
                let (fraction, text) = job.progress().describe(&job.what);
                ui.add(
                    egui::ProgressBar::new(fraction)
                        .desired_width(560.0)
                        .text(text),
                );
                if ui.button("Cancel sweep").clicked() {
                    job.cancel();
                }
            }
            None => {
                if ui.button("Run sweep").clicked() {
                    start_sweep(explorer);
                }
            }
        }
        if !explorer.explore.designs.is_empty() && ui.button("Export results as CSV…").clicked() {
            crate::files::ask(
                explorer,
                super::file_dialog::Purpose::ExportSweepCsv,
                "sweep.csv",
            );
        }
        if !explorer.explore.designs.is_empty()
            && ui
                .button("Export figure…")
                .on_hover_text(
                    "The scatter as drawn here, with a title, axis titles and a legend, as SVG \
                     or PNG for a paper (`qvit plot` draws the same from a sweep CSV)",
                )
                .clicked()
        {
            crate::files::ask(
                explorer,
                super::file_dialog::Purpose::ExportFigure {
                    plot: super::figures::SCATTER.into(),
                },
                "design-scatter.svg",
            );
        }
        if ui
            .button("Keep this space in the project")
            .on_hover_text("Saved with the project, so `qvit sweep PROJECT.ron` runs it headless")
            .clicked()
            && let Err(e) = keep_in_project(explorer)
        {
            explorer.notice = Some(Notice::Error(e));
        }
    });
    scatter(explorer, ui);
}

/// Stores the Explore tab's space as the project's `sweep` section, relative to the project:
/// no base (the project's accelerator) and no models (the project's model), so the saved file
/// sweeps whatever accelerator and model it holds.
pub fn keep_in_project(explorer: &mut Explorer) -> Result<(), String> {
    let mut space = explorer.explore.space(explorer)?;
    space.base_config = None;
    space.models.clear();
    // The explorer's statistics file is a cache of this machine: a headless run calibrates.
    if let Some(accuracy) = &mut space.accuracy {
        accuracy.calibration.clear();
    }
    explorer.project.sweep = Some(space);
    Ok(())
}

fn axes(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let s = &mut explorer.explore;
    let field = |ui: &mut egui::Ui, label: &str, text: &mut String| {
        ui.label(label);
        ui.add(egui::TextEdit::singleline(text).desired_width(140.0));
    };
    ui.horizontal(|ui| {
        field(ui, "P_m", &mut s.mat_pes);
        field(ui, "L_m", &mut s.mat_lanes);
        field(ui, "P_r", &mut s.rmac_pes);
        field(ui, "L_r", &mut s.rmac_lanes);
    });
    ui.horizontal(|ui| {
        field(ui, "L (copies)", &mut s.copies);
        field(ui, "bits", &mut s.bits);
        ui.weak("comma-separated values per axis; every combination is priced");
    });
    ui.horizontal(|ui| {
        ui.checkbox(
            &mut s.accuracy,
            format!("measure top-1 per bit width ({ACCURACY_IMAGES} test images)"),
        );
        ui.separator();
        for (label, axis) in [("x", &mut s.x), ("y", &mut s.y)] {
            ui.label(label);
            egui::ComboBox::from_id_salt(label)
                .selected_text(axis.name())
                .show_ui(ui, |ui| {
                    for a in [Axis::Fps, Axis::Gops, Axis::GopsPerDsp, Axis::Top1] {
                        ui.selectable_value(axis, a, a.name());
                    }
                });
        }
    });
}

fn results_path() -> PathBuf {
    std::env::temp_dir().join(format!("qvit-explore-{}.csv", std::process::id()))
}

/// A running sweep's progress: how many designs it prices, and its last report.
#[derive(Debug, Clone, Default)]
pub struct SweepProgress {
    pub designs: u64,
    pub now: Option<Progress>,
}

impl SweepProgress {
    /// The bar's fraction and text: top-1 per bit width first (each pair's calibration, range
    /// search and evaluation counted), then the designs priced.
    pub fn describe(&self, what: &str) -> (f32, String) {
        match &self.now {
            None => (0.0, format!("{what}: starting")),
            Some(Progress::Accuracy(a)) => (
                (a.pair as f32 + a.done as f32 / a.total.max(1) as f32) / a.pairs.max(1) as f32,
                format!("{a}, then {what}"),
            ),
            Some(Progress::Designs(done)) => (
                *done as f32 / self.designs.max(1) as f32,
                format!("{what}: {done}/{}", self.designs),
            ),
        }
    }
}

/// Starts the sweep of the space typed in the tab, in the background.
pub fn start_sweep(explorer: &mut Explorer) {
    let space = match explorer.explore.space(explorer) {
        Ok(s) => s,
        Err(e) => {
            explorer.notice = Some(Notice::Error(e));
            return;
        }
    };
    let total = space.len();
    explorer.jobs.sweep = Some(Job::spawn(
        &explorer.ctx,
        format!("sweeping {total} designs"),
        move |r| {
            let out = results_path();
            let _ = std::fs::remove_file(&out);
            sweep::run_until(&space, &out, Shard::ALL, false, r.cancel_flag(), &mut |p| {
                r.report(SweepProgress {
                    designs: total,
                    now: Some(p),
                })
            })
            .and_then(|outcome| {
                let designs = sweep::read_designs(&out)?;
                Ok((designs, outcome.resumed + outcome.evaluated))
            })
            .map_err(|e| e.to_string())
        },
    ));
}

/// Copies the sweep's results file to `path`.
pub fn export_results(explorer: &mut Explorer, path: &std::path::Path) {
    let copied = std::fs::read(results_path()).and_then(|bytes| {
        qvit_core::ron_io::write_atomic(path, &bytes).map_err(std::io::Error::other)
    });
    explorer.notice = Some(match copied {
        Ok(()) => Notice::Info(format!("wrote {}", path.display())),
        Err(e) => Notice::Error(format!("could not export the sweep: {e}")),
    });
}

fn scatter(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let s = &mut explorer.explore;
    let published = match s.published() {
        Ok(p) => p,
        Err(e) => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("published points: {e}"),
            );
            Vec::new()
        }
    };
    // Published figures are for one model each: only those for the open model (or its
    // family, where the paper names no variant) are comparable.
    let view = DesignScatter::new(&s.designs, s.x, s.y, &published);
    if s.designs.is_empty() {
        // No plot until there is something to draw: an empty one shows axes of −0.5..0.5.
        ui.label(
            "No designs yet: Run sweep prices every combination of the values above and plots \
             them here, with the published accelerators of this model family where they report \
             the axes.",
        );
        return;
    }
    let over_budget = (s.priced as usize).saturating_sub(s.designs.len());
    let objectives = if s.designs.iter().all(|d| d.top1.is_some()) {
        "FPS, GOPS/DSP and top-1"
    } else {
        "FPS and GOPS/DSP"
    };
    let on_front = s.designs.iter().filter(|d| d.pareto).count();
    ui.label(format!(
        "{} designs priced{}; {on_front} on the Pareto front of {objectives}. Hover a point \
         for its design, click it to load it.",
        s.priced.max(s.designs.len() as u64),
        if over_budget > 0 {
            format!(", {over_budget} over the DSP budget left out")
        } else {
            String::new()
        },
    ))
    .on_hover_text(
        "The front is over every objective at once, so in a view of two of them a front \
         point can look dominated: it wins on the objective not drawn, whose value its shade \
         gives (the legend).",
    );
    if view.is_empty() {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "No design has a value on both axes: top-1 is measured only when the sweep \
             measures it (the checkbox above); choose another axis or run it again.",
        );
    }
    let picked = super::scatter::draw(ui, "pareto", &s.designs, &view);
    super::register_plot(ui, super::figures::SCATTER, picked.rect);
    if let Some(i) = picked.hovered {
        let d = &s.designs[i];
        picked.response.on_hover_ui_at_pointer(|ui| {
            ui.label(describe(d));
            ui.weak("click to load it");
        });
    }
    if let Some(i) = picked.clicked {
        let d = s.designs[i].clone();
        load_design(explorer, &d);
    }
}

/// A design in one line: its engines, copies, bits and figures.
fn describe(d: &Design) -> String {
    let top1 = d
        .top1
        .map_or(String::new(), |t| format!(", top-1 {t:.2} %"));
    format!(
        "design {}{}: P_m {} L_m {} P_r {} L_r {} L {} {} · {:.1} FPS, {:.4} GOPS/DSP, {} DSPs{top1}",
        d.index,
        if d.pareto { " (Pareto front)" } else { "" },
        d.mat_pes,
        d.mat_lanes,
        d.rmac_pes,
        d.rmac_lanes,
        d.copies,
        d.bits,
        d.fps,
        d.gops_per_dsp,
        d.dsps,
    )
}

/// Makes a sweep's design the current configuration.
pub fn load_design(explorer: &mut Explorer, d: &Design) {
    if let Some(config) = explorer.project.accelerator.as_mut() {
        config.set_engines([d.mat_pes, d.mat_lanes, d.rmac_pes, d.rmac_lanes], d.copies);
        config.clock_mhz = d.clock_mhz;
    }
    if let Ok(bits) = d.bits.parse::<BitWidths>()
        && explorer.settings().bits != bits
    {
        explorer.settings().bits = bits;
        explorer.changes.quant = true;
    }
    explorer.reprice();
    explorer.notice = Some(Notice::Info(format!(
        "loaded design {}: P_m {} L_m {} P_r {} L_r {} L {} {}",
        d.index, d.mat_pes, d.mat_lanes, d.rmac_pes, d.rmac_lanes, d.copies, d.bits
    )));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/explorer.md describes the tab's default sweep: as many designs as its default axes
    /// hold, and top-1 on as many test images as it measures.
    #[test]
    fn the_documented_default_sweep_is_the_tabs() {
        let s = ExploreState::default();
        let count = |text: &str| text.split(',').filter(|v| !v.trim().is_empty()).count();
        let designs = [
            &s.mat_pes,
            &s.mat_lanes,
            &s.rmac_pes,
            &s.rmac_lanes,
            &s.copies,
            &s.bits,
        ]
        .iter()
        .map(|t| count(t))
        .product::<usize>();
        let doc = include_str!("../../../docs/explorer.md");
        assert!(
            doc.contains(&format!("A sweep of {designs} designs")),
            "docs/explorer.md should say {designs} designs"
        );
        let images = ACCURACY_IMAGES
            .to_string()
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            doc.contains(&format!("on {images} test images")),
            "docs/explorer.md should say {images} test images"
        );
    }
}
