//! The accelerator: part, engine sizes, copies, clock and bandwidth, priced in the same frame;
//! per-layer cycles as bars coloured by what bounds them; DSP and buffer budget meters.

use egui_plot::{Bar, BarChart, Legend, Plot};
use qvit_core::accel::config::Architecture;
use qvit_core::accel::parts::PARTS;
use qvit_core::accel::{AccelConfig, Bound};

use super::thousands;
use crate::explorer::Explorer;

const COMPUTE: egui::Color32 = rgb(super::figures::COMPUTE);
const MEMORY: egui::Color32 = rgb(super::figures::MEMORY);

const fn rgb([r, g, b]: [u8; 3]) -> egui::Color32 {
    egui::Color32::from_rgb(r, g, b)
}

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let Some(config) = explorer.project.accelerator.as_mut() else {
        ui.label("No accelerator.");
        return;
    };
    let before = config.clone();
    ui.horizontal(|ui| {
        ui.label("accelerator");
        ui.text_edit_singleline(&mut config.name);
        ui.label("part");
        egui::ComboBox::from_id_salt("part")
            .selected_text(config.part.clone())
            .show_ui(ui, |ui| {
                for p in PARTS {
                    ui.selectable_value(&mut config.part, p.name.to_string(), p.name)
                        .on_hover_text(p.description);
                }
            });
        ui.label("preset");
        egui::ComboBox::from_id_salt("preset")
            .selected_text("load…")
            .show_ui(ui, |ui| {
                for name in qvit_core::accel::config::PRESETS.iter().map(|(n, _)| *n) {
                    if ui.selectable_label(false, name).clicked()
                        && let Ok(c) = AccelConfig::preset(name)
                    {
                        *config = c;
                    }
                }
            });
    });
    sliders(ui, config);
    if *config != before {
        explorer.reprice();
    }
    ui.separator();
    budgets(explorer, ui);
    ui.separator();
    cycles_chart(explorer, ui);
}

fn sliders(ui: &mut egui::Ui, config: &mut AccelConfig) {
    egui::Grid::new("engines").num_columns(2).show(ui, |ui| {
        match &mut config.architecture {
            Architecture::TrioVit { mat, rmac, .. } => {
                ui.add(
                    egui::Slider::new(&mut mat.pes, 1..=64).text("P_m: MAT multipliers per lane"),
                );
                ui.add(egui::Slider::new(&mut mat.lanes, 1..=64).text("L_m: MAT lanes"));
                ui.end_row();
                ui.add(
                    egui::Slider::new(&mut rmac.pes, 1..=64)
                        .text("P_r: R-MAC multipliers per lane"),
                );
                ui.add(egui::Slider::new(&mut rmac.lanes, 1..=64).text("L_r: R-MAC lanes"));
                ui.end_row();
            }
            Architecture::Systolic { rows, cols } => {
                ui.add(egui::Slider::new(rows, 1..=128).text("rows"));
                ui.add(egui::Slider::new(cols, 1..=128).text("columns"));
                ui.end_row();
            }
        }
        ui.add(egui::Slider::new(&mut config.copies, 1..=32).text("L: engine copies"));
        ui.add(
            egui::Slider::new(&mut config.clock_mhz, 50.0..=500.0)
                .step_by(5.0)
                .text("clock (MHz)"),
        );
        ui.end_row();
        ui.add(
            egui::Slider::new(&mut config.bandwidth_gbps, 0.5..=64.0)
                .logarithmic(true)
                .text("off-chip bandwidth (GB/s)"),
        );
        ui.add(
            egui::Slider::new(&mut config.activation_buffer_kib, 16..=8192)
                .logarithmic(true)
                .text("activation buffer per copy (KiB)"),
        );
        ui.end_row();
        ui.add(
            egui::Slider::new(&mut config.weight_buffer_kib, 16..=32768)
                .logarithmic(true)
                .text("weight buffer, shared by the copies (KiB)"),
        )
        .on_hover_text(
            "Weights that fit stay on chip and are read from off-chip memory once; otherwise \
             every image streams them again",
        );
        ui.end_row();
    });
}

fn budgets(explorer: &Explorer, ui: &mut egui::Ui) {
    let Some(config) = &explorer.project.accelerator else {
        return;
    };
    let part = match config.part() {
        Ok(p) => p,
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, e.to_string());
            return;
        }
    };
    match &explorer.cost {
        Ok(c) => {
            meter(ui, "DSPs", c.dsps as f64, part.dsps as f64, "");
            meter(ui, "LUTs", c.luts as f64, part.luts as f64, "").on_hover_text(format!(
                "Adder trees and accumulators of the MAC array (FINN-style estimate) for \
                     w{}a{} operands; {} with LUT multipliers instead of DSP slices",
                c.envelope_bits.0,
                c.envelope_bits.1,
                thousands(c.luts_as_lut_multipliers)
            ));
            ui.label(format!(
                "utilization {:.1} % · {} cycles per image per copy · {} bytes off-chip per image",
                100.0 * c.utilization,
                thousands(c.cycles),
                thousands(c.bytes_moved)
            ));
        }
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
    }
    let buffers = config.activation_buffer_kib * config.copies + config.weight_buffer_kib;
    meter(
        ui,
        "on-chip buffers",
        buffers as f64,
        part.on_chip_kib as f64,
        " KiB",
    );
}

fn meter(ui: &mut egui::Ui, what: &str, used: f64, budget: f64, unit: &str) -> egui::Response {
    let share = used / budget.max(1.0);
    let mut bar = egui::ProgressBar::new(share.min(1.0) as f32)
        .desired_width(400.0)
        .text(format!(
            "{what}: {used:.0}{unit} of {budget:.0}{unit} ({:.0} %)",
            100.0 * share
        ));
    if share > 1.0 {
        bar = bar.fill(ui.visuals().error_fg_color);
    }
    ui.add(bar)
}

fn cycles_chart(explorer: &Explorer, ui: &mut egui::Ui) {
    let Ok(c) = &explorer.cost else { return };
    let layers: Vec<_> = c.layers.iter().filter(|l| l.cycles > 0).collect();
    ui.label(format!(
        "per-layer cycles ({} layers that take time; hover for names)",
        layers.len()
    ));
    let bar = |i: usize, l: &qvit_core::accel::LayerCost| {
        Bar::new(i as f64, l.cycles as f64)
            .name(format!(
                "{} · {} · {} cycles · {:.0} % utilized",
                l.name,
                l.op,
                thousands(l.cycles),
                100.0 * l.utilization
            ))
            .width(0.8)
    };
    let (mut compute, mut memory) = (Vec::new(), Vec::new());
    for (i, l) in layers.iter().enumerate() {
        match l.bound {
            Bound::Memory => memory.push(bar(i, l)),
            _ => compute.push(bar(i, l)),
        }
    }
    let shown = Plot::new("cycles")
        // Top left: a bar's hover label opens to the pointer's right, where a top-right legend
        // sat under it.
        .legend(Legend::default().position(egui_plot::Corner::LeftTop))
        .x_axis_label("layer, in network order (that take time)")
        .y_axis_label("cycles per image per copy")
        .height(ui.available_height().max(160.0))
        .show(ui, |plot| {
            plot.bar_chart(BarChart::new("compute-bound", compute).color(COMPUTE));
            plot.bar_chart(BarChart::new("memory-bound", memory).color(MEMORY));
        });
    super::register_plot(ui, super::figures::CYCLES, shown.response.rect);
}
