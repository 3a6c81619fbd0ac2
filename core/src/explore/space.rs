//! Design spaces: lists of values per axis, stored as RON under `presets/sweeps/`.
//!
//! A point is identified by its index. On a grid, the index is a mixed-radix number over the axes
//! (the last axis varies fastest); under random sampling, point `i` draws each axis from a
//! generator seeded by the space's seed and `i`. Either way a point is a function of its index
//! alone, which is what lets a sweep be sharded and resumed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::accuracy::AccuracySpec;
use crate::accel::config::{MAX_ARRAY_SIDE, check_size};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::ron_io;

/// How points are drawn from the axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Sampling {
    /// Every combination.
    #[default]
    Grid,
    /// `count` points, each axis drawn uniformly from its list.
    Random { count: u64, seed: u64 },
}

/// The axes of a sweep over accelerator sizes, bit widths, models and resolutions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "DesignSpace")]
pub struct DesignSpace {
    pub name: String,
    /// The accelerator preset (or RON file) whose other settings every point shares. In a
    /// project's `sweep` section it may be left out: the project's accelerator is the base.
    #[serde(default)]
    pub base: String,
    /// The base accelerator itself, when it comes from a project rather than from `base`.
    #[serde(skip)]
    pub base_config: Option<crate::accel::AccelConfig>,
    /// Model presets or RON files (in a project's `sweep` section, default: the project's model).
    #[serde(default)]
    pub models: Vec<String>,
    /// Input resolutions (empty: each model's own).
    #[serde(default)]
    pub resolutions: Vec<usize>,
    pub mat_pes: Vec<usize>,
    pub mat_lanes: Vec<usize>,
    pub rmac_pes: Vec<usize>,
    pub rmac_lanes: Vec<usize>,
    pub copies: Vec<usize>,
    /// Clock frequencies in MHz (empty: the base accelerator's).
    #[serde(default)]
    pub clock_mhz: Vec<f64>,
    /// Bit widths as `wXaY`.
    pub bits: Vec<String>,
    /// Measure each (model, bits)'s top-1 on the shipped test set and make it a third Pareto
    /// objective (shipped micro models only, at their own resolution).
    #[serde(default)]
    pub accuracy: Option<AccuracySpec>,
    #[serde(default)]
    pub sampling: Sampling,
}

/// One design: an index into each axis (resolution and clock `None` when the axis is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub index: u64,
    pub model: usize,
    pub resolution: Option<usize>,
    pub mat_pes: usize,
    pub mat_lanes: usize,
    pub rmac_pes: usize,
    pub rmac_lanes: usize,
    pub copies: usize,
    pub clock: Option<usize>,
    pub bits: usize,
}

/// `w8a8` → (8, 8), bits from 2 to 16.
pub fn parse_bits(text: &str) -> std::result::Result<(u8, u8), String> {
    text.parse::<crate::quant::BitWidths>()
        .map(|b| (b.weights, b.activations))
        .map_err(|e| e.to_string())
}

impl DesignSpace {
    pub fn load(path: &Path) -> Result<Self> {
        let space: DesignSpace = ron_io::read(path)?;
        space.validate(&path.display().to_string())?;
        Ok(space)
    }

    pub fn from_ron(text: &str, origin: &str) -> Result<Self> {
        let space: DesignSpace = ron_io::parse(text, origin)?;
        space.validate(origin)?;
        Ok(space)
    }

    /// Radixes of the axes, in index order (the last varies fastest).
    fn radixes(&self) -> [usize; 9] {
        [
            self.models.len(),
            self.resolutions.len().max(1),
            self.mat_pes.len(),
            self.mat_lanes.len(),
            self.rmac_pes.len(),
            self.rmac_lanes.len(),
            self.copies.len(),
            self.clock_mhz.len().max(1),
            self.bits.len(),
        ]
    }

    /// Number of points.
    pub fn len(&self) -> u64 {
        match self.sampling {
            Sampling::Grid => self.radixes().iter().map(|&r| r as u64).product(),
            Sampling::Random { count, .. } => count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The point with this index.
    pub fn point(&self, index: u64) -> Point {
        let radixes = self.radixes();
        let mut digits = [0usize; 9];
        match self.sampling {
            Sampling::Grid => {
                let mut rest = index;
                for (d, &r) in digits.iter_mut().zip(&radixes).rev() {
                    *d = (rest % r as u64) as usize;
                    rest /= r as u64;
                }
            }
            Sampling::Random { seed, .. } => {
                let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                for (d, &r) in digits.iter_mut().zip(&radixes) {
                    *d = rng.below(r);
                }
            }
        }
        Point {
            index,
            model: digits[0],
            resolution: (!self.resolutions.is_empty()).then_some(digits[1]),
            mat_pes: digits[2],
            mat_lanes: digits[3],
            rmac_pes: digits[4],
            rmac_lanes: digits[5],
            copies: digits[6],
            clock: (!self.clock_mhz.is_empty()).then_some(digits[7]),
            bits: digits[8],
        }
    }

    /// Checks every axis: empty lists, zero sizes and malformed bit widths name the field.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, message: String| Error::field(origin, field, message);
        if self.models.is_empty() {
            return bad("models", "name at least one model".into());
        }
        for m in &self.models {
            if let Err(e) = crate::arch::ArchSpec::resolve(m) {
                return bad("models", e.to_string());
            }
        }
        if !self.base.is_empty()
            && let Err(e) = crate::accel::AccelConfig::resolve(&self.base)
        {
            return bad("base", e.to_string());
        }
        if self.base.is_empty() && self.base_config.is_none() {
            return bad(
                "base",
                "name the accelerator every point starts from, e.g. \"trio-vit-zcu102\"".into(),
            );
        }
        if self.bits.is_empty() {
            return bad(
                "bits",
                "name at least one bit width, e.g. [\"w8a8\"]".into(),
            );
        }
        for (field, list) in [
            ("mat_pes", &self.mat_pes),
            ("mat_lanes", &self.mat_lanes),
            ("rmac_pes", &self.rmac_pes),
            ("rmac_lanes", &self.rmac_lanes),
            ("copies", &self.copies),
            ("resolutions", &self.resolutions),
        ] {
            if field != "resolutions" && list.is_empty() {
                return bad(field, "give at least one value".into());
            }
            if let Some(i) = list.iter().position(|&v| v == 0) {
                return bad(field, format!("entry {i} is 0; sizes must be at least 1"));
            }
            let max = if field == "resolutions" {
                crate::arch::limits::MAX_RESOLUTION
            } else {
                MAX_ARRAY_SIDE
            };
            for &v in list.iter() {
                check_size(origin, field, v, max)?;
            }
        }
        if let Some(c) = self
            .clock_mhz
            .iter()
            .find(|c| !(c.is_finite() && (1.0..=10_000.0).contains(*c)))
        {
            return bad(
                "clock_mhz",
                format!("{c} is not a frequency from 1 to 10,000 MHz"),
            );
        }
        for b in &self.bits {
            if let Err(message) = parse_bits(b) {
                return bad("bits", message);
            }
        }
        if self.accuracy.is_some() && !self.resolutions.is_empty() {
            return bad(
                "accuracy",
                "accuracy is measured at each model's own resolution; leave `resolutions` empty"
                    .into(),
            );
        }
        if let Sampling::Random { count: 0, .. } = self.sampling {
            return bad(
                "sampling",
                "a random sample needs a count of at least 1".into(),
            );
        }
        Ok(())
    }
}
