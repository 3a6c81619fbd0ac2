//! Pricing a workload on an accelerator: per-layer cycles, memory traffic, and the totals.
//!
//! Memory model (corrected model only; the reference model counts compute alone): weights stream
//! from off-chip memory unless the whole model fits the weight buffer, and are broadcast to all
//! copies. A layer whose input and output do not fit a copy's activation buffer streams them, per
//! copy — except where they pass through the on-chip pipeline (1×1 expand → depthwise → 1×1
//! project), which never leaves the chip. With double buffering a layer takes
//! `max(compute, transfer)` cycles. A depthwise conv and the conv it feeds are priced together on
//! the depthwise layer.

use super::config::{AccelConfig, Architecture, TrioModel};
use super::packing::{Multipliers, Packing, engine_luts, envelope, macs_per_dsp};
use super::report::{Bound, CostReport, LayerCost};
use super::systolic::systolic_cycles;
use super::trio_vit::{Engines, corrected_cycles, reference_cycles};
use super::workload::{HwOp, Workload};
use crate::error::{Error, Result};

fn describe(op: &HwOp) -> String {
    match op {
        HwOp::Conv {
            cin,
            cout,
            groups,
            kernel,
            stride,
            ..
        } => {
            let kind = if *groups > 1 { "groupconv" } else { "conv" };
            format!("{kind}{kernel}x{kernel} s{stride} {cin}→{cout}")
        }
        HwOp::Depthwise {
            channels,
            kernel,
            stride,
            ..
        } => format!("dwconv{kernel}x{kernel} s{stride} ×{channels}"),
        HwOp::Linear {
            inputs,
            outputs,
            tokens,
        } => format!("linear {inputs}→{outputs} ×{tokens}"),
        HwOp::AttnContext { heads, dim, tokens } => format!("[v;1]·kᵀ {heads}h d{dim} N{tokens}"),
        HwOp::AttnQuery { heads, dim, tokens } => format!("ctx·q {heads}h d{dim} N{tokens}"),
        HwOp::AttnDivide { heads, dim, tokens } => format!("divide {heads}h d{dim} N{tokens}"),
        HwOp::AttnScores { heads, dim, tokens } => format!("q·kᵀ {heads}h d{dim} N{tokens}"),
        HwOp::AttnMix { heads, dim, tokens } => format!("p·v {heads}h d{dim} N{tokens}"),
        HwOp::Vector { kind, elements } => format!("{kind} ×{elements}"),
    }
}

/// The headline figures of a design, without per-layer detail (what sweeps record).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub cycles: u64,
    pub fps: f64,
    pub gops: f64,
    pub dsps: usize,
    pub gops_per_dsp: f64,
    pub fps_per_dsp: f64,
    pub utilization: f64,
    pub bytes_moved: u64,
    /// LUTs of the MAC array's adder trees and accumulators (FINN-style estimate).
    pub luts: u64,
}

/// Per-layer compute cycles, off-chip bytes, and the DSPs and LUTs of a feasible design.
struct Priced {
    compute: Vec<u64>,
    moved: Vec<u64>,
    bytes_per_cycle: f64,
    dsps: usize,
    budget: usize,
    /// The operand widths the datapath is built for.
    envelope: (u8, u8),
    luts: u64,
    /// The same engines with LUT multipliers instead of DSP slices.
    luts_as_lut_multipliers: u64,
}

impl Priced {
    fn memory_cycles(&self, i: usize) -> u64 {
        (self.moved[i] as f64 / self.bytes_per_cycle).ceil() as u64
    }

    fn cycles(&self, i: usize) -> u64 {
        self.compute[i].max(self.memory_cycles(i))
    }
}

/// The headline figures of `workload` on `config`; errors as [`cost`].
pub fn totals(workload: &Workload, config: &AccelConfig) -> Result<Totals> {
    let p = price(workload, config)?;
    let cycles = (0..p.compute.len()).map(|i| p.cycles(i)).sum();
    Ok(summarize(workload, config, &p, cycles))
}

fn summarize(workload: &Workload, config: &AccelConfig, p: &Priced, cycles: u64) -> Totals {
    let macs = workload.macs();
    let latency_s = cycles as f64 / (config.clock_mhz * 1e6);
    let fps = if cycles == 0 {
        0.0
    } else {
        config.copies as f64 / latency_s
    };
    let gops = 2.0 * macs as f64 * fps / 1e9;
    let per_copy = config.multipliers_per_copy() as f64;
    Totals {
        cycles,
        fps,
        gops,
        dsps: p.dsps,
        gops_per_dsp: gops / p.dsps as f64,
        fps_per_dsp: fps / p.dsps as f64,
        utilization: if cycles == 0 {
            0.0
        } else {
            macs as f64 / (cycles as f64 * per_copy)
        },
        bytes_moved: p.moved.iter().sum(),
        luts: p.luts,
    }
}

/// Prices `workload` on `config`. A design that needs more DSPs or on-chip memory than its part
/// has is an error, not a number.
pub fn cost(workload: &Workload, config: &AccelConfig) -> Result<CostReport> {
    let p = price(workload, config)?;
    let part = config.part()?;
    let per_copy = config.multipliers_per_copy() as f64;
    let fused_into = if config.fuses_depthwise() {
        workload.fused_into_depthwise()
    } else {
        vec![false; workload.layers.len()]
    };
    let layers: Vec<LayerCost> = workload
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (compute, memory, cycles) = (p.compute[i], p.memory_cycles(i), p.cycles(i));
            let bound = if fused_into[i] {
                Bound::Fused
            } else if cycles == 0 {
                Bound::None
            } else if memory > compute {
                Bound::Memory
            } else {
                Bound::Compute
            };
            let macs = l.macs + l.feeds.map_or(0, |t| workload.layers[t].macs);
            LayerCost {
                name: l.name.clone(),
                stage: l.stage.clone(),
                op: describe(&l.op),
                macs: l.macs,
                compute_cycles: compute,
                memory_cycles: memory,
                cycles,
                bound,
                utilization: if cycles == 0 {
                    0.0
                } else {
                    macs as f64 / (cycles as f64 * per_copy)
                },
                bytes_moved: p.moved[i],
            }
        })
        .collect();
    let cycles: u64 = layers.iter().map(|l| l.cycles).sum();
    let t = summarize(workload, config, &p, cycles);
    Ok(CostReport {
        model: workload.model.clone(),
        resolution: workload.resolution,
        accelerator: config.name.clone(),
        part: part.name.to_string(),
        clock_mhz: config.clock_mhz,
        copies: config.copies,
        multipliers: config.multipliers(),
        dsps: t.dsps,
        dsp_budget: p.budget,
        cycles,
        latency_ms: cycles as f64 / (config.clock_mhz * 1e3),
        fps: t.fps,
        gops: t.gops,
        gops_per_dsp: t.gops_per_dsp,
        fps_per_dsp: t.fps_per_dsp,
        utilization: t.utilization,
        macs: workload.macs(),
        bytes_moved: t.bytes_moved,
        envelope_bits: p.envelope,
        luts: p.luts,
        lut_budget: part.luts,
        luts_as_lut_multipliers: p.luts_as_lut_multipliers,
        layers,
    })
}

/// Per-layer compute cycles of one copy, each layer on engines `speedups[i]` times as wide (its
/// operands pack that many more products per DSP than the envelope's).
fn compute_cycles(workload: &Workload, config: &AccelConfig, speedups: &[usize]) -> Vec<u64> {
    let at = |s: usize| -> Vec<u64> {
        match &config.architecture {
            Architecture::TrioVit { mat, rmac, model } => {
                // Packed products share one operand: more output channels (MAT lanes) or output
                // rows (R-MAC lanes) per DSP.
                let engines = Engines {
                    mat_pes: mat.pes,
                    mat_lanes: mat.lanes * s,
                    rmac_pes: rmac.pes,
                    rmac_lanes: rmac.lanes * s,
                };
                match model {
                    TrioModel::Reference => reference_cycles(workload, &engines),
                    TrioModel::Corrected => corrected_cycles(workload, &engines),
                }
            }
            Architecture::Systolic { rows, cols } => systolic_cycles(workload, *rows, cols * s),
        }
    };
    let mut distinct = speedups.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let priced: Vec<(usize, Vec<u64>)> = distinct.into_iter().map(|s| (s, at(s))).collect();
    speedups
        .iter()
        .enumerate()
        .map(|(i, s)| priced.iter().find(|(k, _)| k == s).unwrap().1[i])
        .collect()
}

/// How many times the envelope's products per DSP each layer packs: 1 everywhere unless the
/// datapath is precision-scalable. A depthwise conv priced with the conv it feeds runs at the
/// slower of the two.
fn layer_speedups(workload: &Workload, config: &AccelConfig, base: usize) -> Result<Vec<usize>> {
    let kind = config.part()?.dsp;
    let own: Vec<usize> = workload
        .layers
        .iter()
        .map(|l| match config.packing {
            Packing::PerLayer if l.macs > 0 => macs_per_dsp(kind, l.weight_bits, l.act_bits) / base,
            _ => 1,
        })
        .collect();
    Ok(workload
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| l.feeds.map_or(own[i], |t| own[i].min(own[t])))
        .collect())
}

fn price(workload: &Workload, config: &AccelConfig) -> Result<Priced> {
    config.validate(&config.name)?;
    let part = config.part()?;
    let envelope = envelope(
        workload
            .layers
            .iter()
            .filter(|l| l.macs > 0)
            .map(|l| (l.weight_bits, l.act_bits)),
    );
    let base = macs_per_dsp(part.dsp, envelope.0, envelope.1);
    let compute = compute_cycles(workload, config, &layer_speedups(workload, config, base)?);
    let fuses = config.fuses_depthwise();
    let dsps = config.multipliers().div_ceil(base);
    let engines: Vec<(usize, usize)> = match &config.architecture {
        Architecture::TrioVit { mat, rmac, .. } => {
            vec![(mat.pes, mat.lanes), (rmac.pes, rmac.lanes)]
        }
        Architecture::Systolic { rows, cols } => vec![(*rows, *cols)],
    };
    let luts = |multipliers: Multipliers| -> u64 {
        let per_copy: u64 = engines
            .iter()
            .map(|&(pes, lanes)| engine_luts(pes, lanes, envelope.0, envelope.1, multipliers))
            .sum();
        per_copy * config.copies as u64
    };
    let over = |what: &str, need: usize, have: usize, unit: &str| Error::InvalidField {
        origin: config.name.clone(),
        field: what.to_string(),
        message: format!(
            "the design needs {need} {unit} but the {} has {have}; shrink the engines or the copies",
            part.name
        ),
    };
    if dsps > part.dsps {
        return Err(over("DSPs", dsps, part.dsps, "DSP slices"));
    }
    let (luts, luts_as_lut_multipliers) = (luts(Multipliers::Dsp), luts(Multipliers::Lut));
    if luts > part.luts as u64 {
        return Err(over("LUTs", luts as usize, part.luts, "LUTs"));
    }
    let buffers = config.activation_buffer_kib * config.copies + config.weight_buffer_kib;
    if buffers > part.on_chip_kib {
        return Err(over(
            "buffers",
            buffers,
            part.on_chip_kib,
            "KiB of on-chip RAM",
        ));
    }

    let counts_memory = !matches!(
        config.architecture,
        Architecture::TrioVit {
            model: TrioModel::Reference,
            ..
        }
    );
    let bytes = |elements: u64, bits: u8| (elements * bits as u64).div_ceil(8);
    let total_weight_bytes: u64 = workload
        .layers
        .iter()
        .map(|l| bytes(l.weights, l.weight_bits))
        .sum();
    let weights_resident = total_weight_bytes <= config.weight_buffer_kib as u64 * 1024;
    let act_buffer = config.activation_buffer_kib as u64 * 1024;
    let layer_bytes = |i: usize| -> u64 {
        let l = &workload.layers[i];
        let w = if weights_resident {
            0
        } else {
            bytes(l.weights, l.weight_bits)
        };
        let working_set = bytes(l.inputs + l.outputs, l.act_bits);
        // Only a fusing design keeps expand → depthwise → project on chip.
        let off_chip = bytes(
            if fuses && l.input_on_chip {
                0
            } else {
                l.inputs
            } + if fuses && l.output_on_chip {
                0
            } else {
                l.outputs
            },
            l.act_bits,
        );
        let a = if working_set > act_buffer {
            off_chip * config.copies as u64
        } else {
            0
        };
        w + a
    };
    let mut moved: Vec<u64> = if counts_memory {
        (0..workload.layers.len()).map(layer_bytes).collect()
    } else {
        vec![0; workload.layers.len()]
    };
    if counts_memory && fuses {
        // The fused conv's traffic happens during the depthwise layer that carries its cycles.
        for i in 0..workload.layers.len() {
            if let Some(t) = workload.layers[i].feeds {
                moved[i] += std::mem::take(&mut moved[t]);
            }
        }
    }
    Ok(Priced {
        compute,
        moved,
        bytes_per_cycle: config.bandwidth_gbps * 1e9 / (config.clock_mhz * 1e6),
        dsps,
        budget: part.dsps,
        envelope,
        luts,
        luts_as_lut_multipliers,
    })
}
