//! Search: the joint search of per-layer widths and accelerator designs (`qvit search`) from a
//! space file, run in the background with progress and cancel. Its front is drawn in two of
//! top-1, FPS and GOPS/DSP with the third as colour, beside the best uniform-width designs, and
//! the sensitivity table it started from is below. Hovering a design shows its widths;
//! clicking loads it as the open configuration.

use std::path::PathBuf;
use std::sync::Arc;

use qvit_core::explore::scatter::{Axis, DesignScatter};
use qvit_core::explore::sweep::Design;
use qvit_core::search::job::{self, Searched};
use qvit_core::search::run::{Progress, Row};
use qvit_core::search::space::SearchSpace;

use crate::explorer::{Explorer, Notice};
use crate::jobs::Job;

/// Images a quick run confirms on (held-out) and reports on (test) at most.
const QUICK_HELDOUT: usize = 500;
const QUICK_TEST: usize = 2000;

/// The tab's inputs and its last result.
#[derive(Debug, Clone)]
pub struct SearchState {
    /// The space file (empty: the shipped space for the open model, chosen when first shown).
    pub space: String,
    /// Cap the held-out and test images, for an answer in about a minute.
    pub quick: bool,
    pub x: Axis,
    pub y: Axis,
    pub result: Option<Arc<Searched>>,
    /// The result's rows as designs for the scatter, in row order.
    designs: Vec<Design>,
}

impl Default for SearchState {
    fn default() -> Self {
        Self {
            space: String::new(),
            quick: true,
            x: Axis::Fps,
            y: Axis::Top1,
            result: None,
            designs: Vec::new(),
        }
    }
}

impl SearchState {
    /// Keeps a finished search and its rows as designs.
    pub fn accept(&mut self, searched: Arc<Searched>) {
        self.designs = (0..searched.outcome.rows.len())
            .map(|i| as_design(&searched, i))
            .collect();
        self.result = Some(searched);
    }
}

/// A running search's last report.
#[derive(Debug, Clone, Default)]
pub struct SearchProgress(pub Option<Progress>);

impl SearchProgress {
    /// The bar's fraction and text.
    pub fn describe(&self) -> (f32, String) {
        let Some(p) = &self.0 else {
            return (0.0, "search: starting".into());
        };
        let (what, done, total) = p.stage();
        (
            done as f32 / total.max(1) as f32,
            format!("{what}: {done}/{total}"),
        )
    }
}

/// A search row as a design of the scatter: its engines, widths (run-length) and figures.
fn as_design(searched: &Searched, i: usize) -> Design {
    let row = &searched.outcome.rows[i];
    let config = &searched.outcome.designs[row.design];
    // A search's designs are Trio-ViT's (the space refuses any other base).
    let [mat_pes, mat_lanes, rmac_pes, rmac_lanes] = config.engines().map_or([0; 4], |e| {
        [e.mat_pes, e.mat_lanes, e.rmac_pes, e.rmac_lanes]
    });
    Design {
        index: i as u64,
        model: searched.space.model.clone(),
        mat_pes,
        mat_lanes,
        rmac_pes,
        rmac_lanes,
        copies: config.copies,
        clock_mhz: config.clock_mhz,
        bits: row.allocation.compact(),
        dsps: row.totals.dsps,
        fps: row.totals.fps,
        gops_per_dsp: row.totals.gops_per_dsp,
        top1: Some(row.top1),
        pareto: row.on_front,
    }
}

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let shipped = qvit_core::assets::search_spaces();
    if explorer.search.space.is_empty() {
        explorer.search.space = default_space(&shipped, &explorer.project.model);
    }
    ui.horizontal(|ui| {
        let s = &mut explorer.search;
        ui.label("space");
        ui.add(egui::TextEdit::singleline(&mut s.space).desired_width(360.0))
            .on_hover_text("A search space RON file (see presets/searches/)");
        egui::ComboBox::from_id_salt("shipped spaces")
            .selected_text("shipped")
            .show_ui(ui, |ui| {
                for p in &shipped {
                    let name = p.file_name().map_or(String::new(), |n| {
                        n.to_string_lossy().trim_end_matches(".ron").to_string()
                    });
                    if ui.selectable_label(false, name).clicked() {
                        s.space = p.display().to_string();
                    }
                }
            });
        ui.checkbox(
            &mut s.quick,
            format!("quick: at most {QUICK_HELDOUT} held-out and {QUICK_TEST} test images"),
        )
        .on_hover_text(
            "Off: the space's own counts (`qvit search` uses them), for figures to publish",
        );
    });
    ui.horizontal(|ui| match &explorer.jobs.search {
        Some(job) => {
            ui.spinner();
            let (fraction, text) = job.progress().describe();
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(560.0)
                    .text(text),
            );
            if ui.button("Cancel search").clicked() {
                job.cancel();
            }
        }
        None => {
            if ui
                .button("Run search")
                .on_hover_text(
                    "Sensitivity of every layer, allocations priced on every design, the front \
                     confirmed on held-out training images, then its top-1 on the test set",
                )
                .clicked()
            {
                start_search(explorer);
            }
        }
    });
    let Some(searched) = explorer.search.result.clone() else {
        ui.label(
            "No search yet: Run search gives every layer with weights its own widths and \
             searches them with the accelerator designs of the space. `qvit search SPACE.ron` \
             runs the same headless.",
        );
        return;
    };
    summary(&searched, ui);
    ui.horizontal(|ui| {
        let s = &mut explorer.search;
        for (label, axis) in [("x", &mut s.x), ("y", &mut s.y)] {
            ui.label(label);
            egui::ComboBox::from_id_salt(("search axis", label))
                .selected_text(axis.name())
                .show_ui(ui, |ui| {
                    for a in [Axis::Fps, Axis::GopsPerDsp, Axis::Top1] {
                        ui.selectable_value(axis, a, a.name());
                    }
                });
        }
    });
    let s = &explorer.search;
    let view = DesignScatter::new(&s.designs, s.x, s.y, &[]);
    let height = (ui.available_height() - 190.0).max(220.0);
    let picked = ui
        .allocate_ui(egui::vec2(ui.available_width(), height), |ui| {
            super::scatter::draw(ui, "search front", &s.designs, &view)
        })
        .inner;
    super::register_plot(ui, "search-front", picked.rect);
    if let Some(i) = picked.hovered {
        let row = &searched.outcome.rows[i];
        let design = &s.designs[i];
        picked.response.on_hover_ui_at_pointer(|ui| {
            ui.set_max_width(520.0);
            ui.label(describe(row, design));
            ui.weak("click to load it");
        });
    }
    if let Some(i) = picked.clicked {
        load_row(explorer, &searched, i);
    }
    sensitivity(&searched, ui);
}

/// The shipped space for `model`, else the first shipped one.
fn default_space(shipped: &[PathBuf], model: &str) -> String {
    shipped
        .iter()
        .find(|p| SearchSpace::load(p).is_ok_and(|s| s.model == model))
        .or(shipped.first())
        .map_or(String::new(), |p| p.display().to_string())
}

/// Starts the search of the tab's space in the background.
pub fn start_search(explorer: &mut Explorer) {
    if explorer.search.space.trim().is_empty() {
        let shipped = qvit_core::assets::search_spaces();
        explorer.search.space = default_space(&shipped, &explorer.project.model);
    }
    let path = PathBuf::from(explorer.search.space.trim());
    let mut space = match SearchSpace::load(&path) {
        Ok(s) => s,
        Err(e) => {
            explorer.notice = Some(Notice::Error(e.to_string()));
            return;
        }
    };
    if explorer.search.quick {
        let stages = &mut space.stages;
        stages.heldout_images = stages.heldout_images.min(QUICK_HELDOUT);
        stages.test_images = Some(stages.test_images.unwrap_or(QUICK_TEST).min(QUICK_TEST));
    }
    // The open model's statistics serve when the space calibrates as it does: the same model
    // with its shipped weights and calibration images.
    let calibration = explorer
        .loaded
        .as_ref()
        .filter(|_| {
            explorer.project.model == space.model
                && explorer.project.weights.is_none()
                && explorer.project.calibration_data.is_none()
                && space.data.weights.is_none()
                && space.data.calibration.is_none()
        })
        .and_then(|l| l.stats_file.clone());
    // Kept beside the statistics: a search run again (or after a cancel) resumes.
    let state = explorer
        .calibration_cache
        .as_ref()
        .map(|c| c.join("searches"));
    explorer.jobs.search = Some(Job::spawn(
        &explorer.ctx,
        format!("searching {}", space.name),
        move |r| {
            let (calibration, state) = (calibration.as_deref(), state.as_deref());
            job::search(&space, calibration, state, r.cancel_flag(), &|p| {
                r.report(SearchProgress(Some(p)))
            })
            .map(Arc::new)
            .map_err(|e| e.to_string())
        },
    ));
}

/// One line on what was searched and found.
fn summary(searched: &Searched, ui: &mut egui::Ui) {
    let o = &searched.outcome;
    let front = o.rows.iter().filter(|r| r.on_front && !r.reference).count();
    let mixed = o
        .rows
        .iter()
        .filter(|r| r.on_front && !r.allocation.is_uniform())
        .count();
    ui.label(format!(
        "{} on {}: {} units, {} designs, {} (allocation, design) pairs priced; {front} designs \
         on the front ({mixed} mixed), {} uniform references. The front is over top-1, FPS \
         and GOPS/DSP; the colour is the objective neither axis shows.",
        searched.space.model,
        searched.space.accelerator.base,
        o.units.len(),
        o.designs.len(),
        o.priced,
        o.rows.iter().filter(|r| r.reference).count(),
    ));
}

/// A row in a few lines: method, widths, figures and engines.
fn describe(row: &Row, d: &Design) -> String {
    format!(
        "{} {}{}\nwidths {}\ntest top-1 {:.2} % · held-out {:.2} % · proxy KL {:.4}\n\
         {:.1} FPS · {:.4} GOPS/DSP · {} DSPs\nP_m {} L_m {} P_r {} L_r {} L {}",
        row.method.name(),
        if row.allocation.is_uniform() {
            "(uniform)"
        } else {
            "(mixed)"
        },
        if row.on_front { ", on the front" } else { "" },
        d.bits,
        row.top1,
        row.heldout_top1,
        row.proxy_kl,
        d.fps,
        d.gops_per_dsp,
        d.dsps,
        d.mat_pes,
        d.mat_lanes,
        d.rmac_pes,
        d.rmac_lanes,
        d.copies,
    )
}

/// Makes row `i` the open configuration: its widths and design on the open model, or its whole
/// project when the search ran on another model or data.
pub fn load_row(explorer: &mut Explorer, searched: &Searched, i: usize) {
    let project = searched.row_project(i);
    let same_inputs = project.model == explorer.project.model
        && project.weights == explorer.project.weights
        && project.data == explorer.project.data
        && project.calibration_data == explorer.project.calibration_data;
    if same_inputs {
        explorer.project.quant = project.quant;
        explorer.project.accelerator = project.accelerator;
        explorer.changes.quant = true;
    } else {
        explorer.replace_project(project, None);
    }
    explorer.notice = Some(Notice::Info(format!(
        "loaded search row {}: {} widths {}",
        i + 1,
        searched.outcome.rows[i].method.name(),
        searched.outcome.rows[i].allocation.compact()
    )));
}

/// The sensitivity the search started from: per layer, the logit KL each width adds alone,
/// shaded from none to the table's largest.
fn sensitivity(searched: &Searched, ui: &mut egui::Ui) {
    let table = &searched.outcome.sensitivity;
    // The candidates in the order the space lists them.
    let mut widths = Vec::new();
    for r in &table.rows {
        if !widths.contains(&r.bits) {
            widths.push(r.bits);
        }
    }
    let largest = table
        .rows
        .iter()
        .map(|r| r.kl_increase)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    egui::CollapsingHeader::new(format!(
        "Sensitivity: logit KL each layer adds alone at each width (base {}, KL {:.4}, on {} \
         calibration images)",
        table.base.to_string().to_lowercase(),
        table.base_kl,
        table.sample_images
    ))
    .id_salt("search sensitivity")
    .default_open(true)
    .show(ui, |ui| {
        egui::ScrollArea::vertical()
            .max_height(260.0)
            .show(ui, |ui| {
                egui::Grid::new("sensitivity grid")
                    .striped(true)
                    .show(ui, |ui| {
                        ui.strong("layer");
                        for w in &widths {
                            ui.strong(w.to_string().to_lowercase());
                        }
                        ui.end_row();
                        let mut layer: Option<&str> = None;
                        for r in &table.rows {
                            if layer != Some(r.layer.as_str()) {
                                if layer.is_some() {
                                    ui.end_row();
                                }
                                layer = Some(r.layer.as_str());
                                ui.label(&r.layer);
                                for w in &widths {
                                    let cell = table
                                        .rows
                                        .iter()
                                        .find(|c| c.layer == r.layer && c.bits == *w);
                                    match cell {
                                        Some(c) => {
                                            let shade = (c.kl_increase.max(0.0) / largest).sqrt();
                                            let fill = egui::Color32::from_rgba_unmultiplied(
                                                220,
                                                90,
                                                40,
                                                (shade * 200.0) as u8,
                                            );
                                            egui::Frame::new().fill(fill).show(ui, |ui| {
                                                ui.monospace(format!("{:.4}", c.kl_increase));
                                            });
                                        }
                                        None => {
                                            ui.label("");
                                        }
                                    }
                                }
                            }
                        }
                        ui.end_row();
                    });
            });
    });
}
