//! FPGA parts an accelerator can be placed on: the budgets a design must fit.
//!
//! Figures are the vendors' published device resources (AMD/Xilinx product tables).

use serde::{Deserialize, Serialize};

use super::packing::DspKind;
use crate::error::{Error, Result};

/// One device's resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Short name used in configs, e.g. `zcu102`.
    pub name: &'static str,
    /// Board and device.
    pub description: &'static str,
    pub dsps: usize,
    /// The DSP slice, which sets how many products one packs ([`super::packing`]).
    pub dsp: DspKind,
    /// LUTs of the programmable logic.
    pub luts: usize,
    /// On-chip RAM in KiB (block RAM plus UltraRAM).
    pub on_chip_kib: usize,
}

/// The parts qvit knows.
pub const PARTS: &[Part] = &[
    Part {
        name: "zcu102",
        description: "Zynq UltraScale+ ZCU102 (XCZU9EG): 2,520 DSP48E2, 274,080 LUTs, 912 × 36 Kb BRAM",
        dsps: 2520,
        dsp: DspKind::Dsp48E2,
        luts: 274_080,
        on_chip_kib: 912 * 36 / 8,
    },
    Part {
        name: "zcu104",
        description: "Zynq UltraScale+ ZCU104 (XCZU7EV): 1,728 DSP48E2, 230,400 LUTs, 312 × 36 Kb BRAM, 96 × 288 Kb URAM",
        dsps: 1728,
        dsp: DspKind::Dsp48E2,
        luts: 230_400,
        on_chip_kib: (312 * 36 + 96 * 288) / 8,
    },
    Part {
        name: "vck190",
        description: "Versal AI Core VCK190 (XCVC1902), programmable logic only: 1,968 DSP58, 899,840 LUTs, 967 × 36 Kb BRAM, 463 × 288 Kb URAM",
        dsps: 1968,
        dsp: DspKind::Dsp58,
        luts: 899_840,
        on_chip_kib: (967 * 36 + 463 * 288) / 8,
    },
    Part {
        name: "u250",
        description: "Alveo U250 (XCU250): 12,288 DSP48E2, 1,728,000 LUTs, 2,688 × 36 Kb BRAM, 1,280 × 288 Kb URAM",
        dsps: 12288,
        dsp: DspKind::Dsp48E2,
        luts: 1_728_000,
        on_chip_kib: (2688 * 36 + 1280 * 288) / 8,
    },
];

/// A part by name; an unknown name lists the known ones.
pub fn part(name: &str) -> Result<&'static Part> {
    PARTS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::UnknownName {
            kind: "FPGA part",
            name: name.to_string(),
            valid: PARTS.iter().map(|p| p.name.to_string()).collect(),
        })
}
