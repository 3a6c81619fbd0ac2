//! Accelerator configurations, stored as RON under `presets/accelerators/`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::packing::Packing;
use super::parts::{Part, part};
use super::trio_vit::Engines;
use crate::error::{Error, Result};
use crate::ron_io;

/// Which cycle model prices the Trio-ViT engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrioModel {
    /// The published analytical model, quirks included (reproduces its cycle counts).
    Reference,
    /// The published model with its two mistakes corrected, plus the classifier head, the
    /// attention divisions and memory traffic.
    Corrected,
}

/// One engine: `pes` multipliers per lane, `lanes` lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    pub pes: usize,
    pub lanes: usize,
}

/// The compute architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Architecture {
    /// Trio-ViT: a MAT engine and an R-MAC engine per copy.
    TrioVit {
        mat: Engine,
        rmac: Engine,
        model: TrioModel,
    },
    /// A generic weight-stationary systolic array of `rows × cols` MACs per copy (the baseline:
    /// no depthwise engine, no DW→PW fusion).
    Systolic { rows: usize, cols: usize },
}

/// An accelerator design on a part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Accelerator")]
pub struct AccelConfig {
    pub name: String,
    /// FPGA part, see [`super::parts::PARTS`].
    pub part: String,
    pub clock_mhz: f64,
    /// L: identical copies of the engines, each running its own image.
    pub copies: usize,
    pub architecture: Architecture,
    /// How products pack into DSP slices: built for the widest operands (the default), or
    /// precision-scalable per layer.
    #[serde(default)]
    pub packing: Packing,
    /// On-chip activation buffer per copy; a layer whose input and output do not fit streams
    /// them from off-chip memory.
    pub activation_buffer_kib: usize,
    /// On-chip weight buffer, shared by the copies (weights are broadcast).
    pub weight_buffer_kib: usize,
    /// Off-chip bandwidth in GB/s (10⁹ bytes per second).
    pub bandwidth_gbps: f64,
}

impl AccelConfig {
    pub fn from_ron(text: &str, origin: &str) -> Result<Self> {
        let config: AccelConfig = ron_io::parse(text, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let config: AccelConfig = ron_io::read(path)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// A shipped preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        let text = ron_io::preset_text("accelerator preset", PRESETS, name)?;
        Self::from_ron(text, &format!("accelerator preset `{name}`"))
    }

    /// A preset name, or the path of a RON file.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        if name_or_path.ends_with(".ron") || name_or_path.contains('/') {
            Self::load(Path::new(name_or_path))
        } else {
            Self::preset(name_or_path)
        }
    }

    pub fn part(&self) -> Result<&'static Part> {
        part(&self.part)
    }

    /// The Trio-ViT engines of one copy (`None` for other architectures).
    pub fn engines(&self) -> Option<Engines> {
        match &self.architecture {
            Architecture::TrioVit { mat, rmac, .. } => Some(Engines {
                mat_pes: mat.pes,
                mat_lanes: mat.lanes,
                rmac_pes: rmac.pes,
                rmac_lanes: rmac.lanes,
            }),
            Architecture::Systolic { .. } => None,
        }
    }

    /// Sets a Trio-ViT design's engines, `[P_m, L_m, P_r, L_r]`, and its copies (other
    /// architectures keep their array): the one place sweeps, searches and the explorer vary a
    /// design.
    pub fn set_engines(
        &mut self,
        [mat_pes, mat_lanes, rmac_pes, rmac_lanes]: [usize; 4],
        copies: usize,
    ) {
        if let Architecture::TrioVit { mat, rmac, .. } = &mut self.architecture {
            *mat = Engine {
                pes: mat_pes,
                lanes: mat_lanes,
            };
            *rmac = Engine {
                pes: rmac_pes,
                lanes: rmac_lanes,
            };
        }
        self.copies = copies;
    }

    /// Multipliers of one copy.
    pub fn multipliers_per_copy(&self) -> usize {
        match &self.architecture {
            Architecture::TrioVit { mat, rmac, .. } => mat.pes * mat.lanes + rmac.pes * rmac.lanes,
            Architecture::Systolic { rows, cols } => rows * cols,
        }
    }

    /// Multipliers over all copies.
    pub fn multipliers(&self) -> usize {
        self.multipliers_per_copy() * self.copies
    }

    /// True when depthwise convs overlap with the conv they feed and the expand → depthwise →
    /// project chain stays on chip (Trio-ViT), false for a plain array.
    pub fn fuses_depthwise(&self) -> bool {
        matches!(self.architecture, Architecture::TrioVit { .. })
    }

    /// Checks every value: zero-sized engines, clocks and buffers are errors naming the field.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, message: String| Error::field(origin, field, message);
        if let Err(e) = self.part() {
            return bad("part", e.to_string());
        }
        let dims: Vec<(&str, usize)> = match &self.architecture {
            Architecture::TrioVit { mat, rmac, .. } => vec![
                ("architecture.mat.pes", mat.pes),
                ("architecture.mat.lanes", mat.lanes),
                ("architecture.rmac.pes", rmac.pes),
                ("architecture.rmac.lanes", rmac.lanes),
            ],
            Architecture::Systolic { rows, cols } => {
                vec![("architecture.rows", *rows), ("architecture.cols", *cols)]
            }
        };
        let mut per_copy = 0usize;
        for (field, value) in &dims {
            if *value == 0 {
                return bad(
                    field,
                    "must be at least 1 (a PE array cannot be empty)".into(),
                );
            }
            check_size(origin, field, *value, MAX_ARRAY_SIDE)?;
        }
        for pair in dims.chunks(2) {
            per_copy += pair[0].1 * pair[1].1;
        }
        if self.copies == 0 {
            return bad("copies", "must be at least 1".into());
        }
        check_size(origin, "copies", self.copies, MAX_ARRAY_SIDE)?;
        check_size(origin, "copies", per_copy * self.copies, MAX_MULTIPLIERS)?;
        for (field, v, lo, hi) in [
            ("clock_mhz", self.clock_mhz, 1.0, 10_000.0),
            ("bandwidth_gbps", self.bandwidth_gbps, 1e-3, 1e5),
        ] {
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                return bad(field, format!("{v} is not a number from {lo} to {hi}"));
            }
        }
        for (field, kib) in [
            ("activation_buffer_kib", self.activation_buffer_kib),
            ("weight_buffer_kib", self.weight_buffer_kib),
        ] {
            check_size(origin, field, kib, MAX_BUFFER_KIB)?;
        }
        if self.packing == Packing::PerLayer
            && matches!(
                self.architecture,
                Architecture::TrioVit {
                    model: TrioModel::Reference,
                    ..
                }
            )
        {
            return bad(
                "packing",
                "the reference model prices the published W8A8 design exactly; per-layer packing \
                 needs `model: Corrected`"
                    .into(),
            );
        }
        Ok(())
    }
}

/// PEs or lanes of one engine, rows or columns of an array, and engine copies: no FPGA holds
/// more than a few thousand DSP slices, so 4,096 along any side is far beyond any real design.
pub const MAX_ARRAY_SIDE: usize = 4096;
/// Multipliers over all copies (the largest parts have about 12,000 DSP slices).
pub const MAX_MULTIPLIERS: usize = 1 << 24;
/// On-chip buffer size (16 GiB; FPGAs hold tens of MiB).
pub const MAX_BUFFER_KIB: usize = 1 << 24;

/// Refuses `value` above `max`, naming the field: sizes beyond any FPGA would only make the
/// cost model's integers wrap.
pub fn check_size(origin: &str, field: &str, value: usize, max: usize) -> Result<()> {
    crate::error::at_most(origin, field, value, max, "no FPGA design holds that many")
}

macro_rules! preset {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../presets/accelerators/", $name, ".ron")),
        )
    };
}

/// `(name, RON text)` of every shipped accelerator preset.
pub const PRESETS: &[(&str, &str)] = &[
    preset!("trio-vit-zcu102"),
    preset!("trio-vit-reference-16"),
    preset!("trio-vit-reference-8"),
    preset!("systolic-zcu102"),
];
