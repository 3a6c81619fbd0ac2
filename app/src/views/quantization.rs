//! Quantization controls: recipe, executor, global bit widths, per-layer overrides by name or
//! glob, and the per-layer SQNR they give. Every change re-quantizes from the cached
//! calibration statistics in the background.

use qvit_core::quant::{BitWidths, Override, QuantExecutor, recipe};

use super::db;
use crate::explorer::Explorer;

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let mut changed = false;
    let selected_name = match (&explorer.graph, explorer.selected) {
        (Ok(g), Some(id)) => Some(g.node(id).name.clone()),
        _ => None,
    };
    let settings = explorer.settings();
    ui.horizontal(|ui| {
        ui.label("recipe");
        egui::ComboBox::from_id_salt("recipe")
            .selected_text(settings.recipe.clone())
            .show_ui(ui, |ui| {
                for name in recipe::names() {
                    changed |= ui
                        .selectable_value(&mut settings.recipe, name.to_string(), name)
                        .changed();
                }
            });
        ui.separator();
        ui.label("executor");
        changed |= ui
            .radio_value(&mut settings.executor, QuantExecutor::Int, "integer")
            .on_hover_text("Integer-only arithmetic, as the accelerator computes")
            .changed();
        changed |= ui
            .radio_value(&mut settings.executor, QuantExecutor::Fake, "fake-quant")
            .changed();
    });
    ui.horizontal(|ui| {
        changed |= bits_sliders(ui, &mut settings.bits, "global");
    });
    ui.separator();
    ui.horizontal(|ui| {
        ui.strong("Per-layer overrides");
        ui.weak("(glob on layer names, `*` and `?`; later rows win)");
    });
    let mut remove = None;
    for (i, o) in settings.overrides.iter_mut().enumerate() {
        // The pattern and its remove button on one line, the bit widths under it: in one line
        // they pass the width of a 1600-pixel window.
        ui.horizontal(|ui| {
            changed |= ui
                .add(
                    egui::TextEdit::singleline(&mut o.layers)
                        .desired_width(320.0)
                        .hint_text("stages.3.*"),
                )
                .labelled_by(ui.label(format!("override {}: layer pattern", i + 1)).id)
                .lost_focus();
            if ui.small_button("remove").clicked() {
                remove = Some(i);
            }
        });
        ui.horizontal(|ui| {
            ui.add_space(16.0);
            changed |= bits_sliders(ui, &mut o.bits, &format!("override {}", i + 1));
        });
    }
    if let Some(i) = remove {
        settings.overrides.remove(i);
        changed = true;
    }
    let global = settings.bits;
    ui.horizontal(|ui| {
        if ui.button("Add override").clicked() {
            settings.overrides.push(Override {
                layers: "*".into(),
                bits: global,
            });
            changed = true;
        }
        if let Some(name) = &selected_name
            && ui
                .button(format!("Override the selected layer ({name})"))
                .clicked()
        {
            settings.overrides.push(Override {
                layers: name.clone(),
                bits: global,
            });
            changed = true;
        }
    });
    if !settings.overrides.is_empty() {
        changed |= ui
            .checkbox(
                &mut settings.search_at_base,
                "range search at the global widths, overrides spliced in after it",
            )
            .on_hover_text(
                "How qvit search and qvit sensitivity build a mixed plan: a recipe's \
                 output-aware range search runs once at the global widths and the overridden \
                 layers take search-free ranges at their own. Off: the search runs with the \
                 overrides in place. Recipes without the search give the same plan either way.",
            )
            .changed();
    }
    ui.horizontal(|ui| {
        ui.label("evaluate on");
        let all = explorer.loaded.as_ref().map_or(0, |l| l.test.len());
        let current = explorer.eval_images;
        egui::ComboBox::from_id_salt("eval images")
            .selected_text(match current {
                None => format!("all {all} test images"),
                Some(n) => format!("the first {n} test images"),
            })
            .show_ui(ui, |ui| {
                for choice in [None, Some(1000), Some(2000), Some(5000)] {
                    let text = choice.map_or("all".to_string(), |n| n.to_string());
                    changed |= ui
                        .selectable_value(&mut explorer.eval_images, choice, text)
                        .changed();
                }
            });
    });
    if changed {
        explorer.changes.quant = true;
        explorer.reprice();
    }
    ui.separator();
    selected_summary(explorer, ui);
    layer_table(explorer, ui);
}

/// Two sliders for weight and activation bits (2–16); true when either moved.
fn bits_sliders(ui: &mut egui::Ui, bits: &mut BitWidths, what: &str) -> bool {
    let mut changed = false;
    changed |= ui
        .add(egui::Slider::new(&mut bits.weights, 2..=16).text(format!("{what} weight bits")))
        .changed();
    changed |= ui
        .add(
            egui::Slider::new(&mut bits.activations, 2..=16)
                .text(format!("{what} activation bits")),
        )
        .changed();
    changed
}

/// One line on the layer selected in the tree: the bits and SQNR of its weights, of the
/// activations it reads and of those it writes (an override's activation bits set the latter,
/// which the next layer reads).
fn selected_summary(explorer: &Explorer, ui: &mut egui::Ui) {
    let (Ok(graph), Some(id), Some(q)) = (&explorer.graph, explorer.selected, &explorer.quantized)
    else {
        return;
    };
    let name = &graph.node(id).name;
    let point_bits = |p: Option<&str>| {
        p.and_then(|p| q.plan.activations.iter().find(|a| a.point == p))
            .map_or("–".to_string(), |a| format!("A{}", a.bits))
    };
    let weight_bits = q
        .plan
        .weights
        .iter()
        .find(|w| w.layer == *name)
        .map_or("–".to_string(), |w| format!("W{}", w.bits));
    let (input, output) = (
        super::input_point(q, graph, id),
        super::output_point(q, graph, id),
    );
    ui.label(format!(
        "selected layer {name}: weights {weight_bits} at {}, input {} at {}, output {} at {}",
        db(q.weight_sqnr(name)),
        point_bits(input),
        db(input.and_then(|p| q.activation_sqnr(p))),
        point_bits(output),
        db(output.and_then(|p| q.activation_sqnr(p))),
    ));
}

fn layer_table(explorer: &Explorer, ui: &mut egui::Ui) {
    let Some(q) = &explorer.quantized else {
        if let Some(e) = &explorer.quant_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        } else {
            ui.label("Quantizing…");
        }
        return;
    };
    ui.label(format!(
        "{} at {}{} · SQNR on {} test images (tensor: this point's error alone; network: accumulated)",
        q.plan.recipe,
        q.plan.bits,
        if q.cached {
            " (plan from qvit's cache: built before from these statistics and settings)"
        } else {
            ""
        },
        crate::session::SQNR_IMAGES
    ));
    egui::ScrollArea::both().show(ui, |ui| {
        egui::Grid::new("sqnr").striped(true).show(ui, |ui| {
            for h in [
                "tensor",
                "bits",
                "quantizer",
                "tensor SQNR",
                "network SQNR",
                "what the recipe did",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            for a in &q.activations {
                let plan = q.plan.activations.iter().find(|p| p.point == a.point);
                ui.label(&a.point);
                ui.label(format!("A{}", a.bits));
                ui.label(plan.map_or(String::new(), |p| p.quantizer.describe()));
                ui.label(db(Some(a.tensor_sqnr_db)));
                ui.label(db(Some(a.network_sqnr_db)));
                note(ui, plan.map_or(String::new(), |p| super::plain(&p.note)));
                ui.end_row();
            }
            for w in &q.weights {
                let note_of = q.plan.weights.iter().find(|p| p.layer == w.layer);
                ui.label(format!("{} (weights)", w.layer));
                ui.label(format!("W{}", w.bits));
                ui.label(note_of.map_or(String::new(), |p| p.quantizer.describe()));
                ui.label(db(Some(w.sqnr_db)));
                ui.label("");
                note(ui, note_of.map_or(String::new(), |p| super::plain(&p.note)));
                ui.end_row();
            }
        });
    });
}

/// What the recipe did to a tensor: dim text wrapped in a column of its own width, so the
/// longest notes (migration and shift ranges, the output-aware search) stay on screen whole.
fn note(ui: &mut egui::Ui, text: String) {
    ui.scope(|ui| {
        ui.set_width(NOTE_WIDTH);
        ui.add(egui::Label::new(egui::RichText::new(text).weak()).wrap());
    });
}

/// Points: the table then fits a 1600-pixel window beside the model tree.
const NOTE_WIDTH: f32 = 340.0;
