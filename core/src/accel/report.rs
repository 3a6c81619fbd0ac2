//! What a cost model reports: per-layer cycles and totals.

use serde::{Deserialize, Serialize};

/// What limits a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bound {
    Compute,
    Memory,
    /// Runs inside another layer's cycles (a conv fused with the depthwise conv before it).
    Fused,
    /// Not counted by the model.
    None,
}

/// One layer's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    pub name: String,
    pub stage: String,
    /// Op in a few words.
    pub op: String,
    pub macs: u64,
    /// Compute cycles on one copy.
    pub compute_cycles: u64,
    /// Off-chip transfer cycles (all copies share the bus).
    pub memory_cycles: u64,
    /// `max(compute, memory)` with double buffering.
    pub cycles: u64,
    pub bound: Bound,
    /// MACs / (cycles · multipliers of one copy).
    pub utilization: f64,
    pub bytes_moved: u64,
}

/// Totals for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    pub model: String,
    pub resolution: usize,
    pub accelerator: String,
    pub part: String,
    pub clock_mhz: f64,
    pub copies: usize,
    pub multipliers: usize,
    pub dsps: usize,
    pub dsp_budget: usize,
    /// Cycles for one image on one copy.
    pub cycles: u64,
    pub latency_ms: f64,
    /// Images per second over all copies.
    pub fps: f64,
    /// 2 operations per MAC.
    pub gops: f64,
    pub gops_per_dsp: f64,
    pub fps_per_dsp: f64,
    /// MACs / (cycles · multipliers of one copy).
    pub utilization: f64,
    pub macs: u64,
    pub bytes_moved: u64,
    /// `(weight bits, activation bits)` the datapath is built for: the widest of any layer.
    pub envelope_bits: (u8, u8),
    /// LUTs of the MAC array's adder trees and accumulators (FINN-style estimate).
    pub luts: u64,
    pub lut_budget: usize,
    /// The same engines with every multiplier built from LUTs instead of a DSP slice.
    pub luts_as_lut_multipliers: u64,
    pub layers: Vec<LayerCost>,
}

/// Writes a report's layers as CSV (one row per layer, the [`LayerCost`] fields), atomically.
pub fn write_layers_csv(report: &CostReport, path: &std::path::Path) -> crate::Result<()> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| crate::Error::InvalidField {
        origin: path.display().to_string(),
        field: "csv".into(),
        message: e.to_string(),
    };
    for layer in &report.layers {
        writer.serialize(layer).map_err(failed)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| failed(e.into_error().into()))?;
    crate::ron_io::write_atomic(path, &bytes)
}
