//! A joint search space, stored as RON under `presets/searches/`: the model and recipe, the
//! widths each layer may take, groups of layers that move together, the accelerator designs,
//! the constraints, and how many images each stage uses.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::accel::config::{AccelConfig, Architecture, MAX_ARRAY_SIDE, check_size};
use crate::accel::packing::Packing;
use crate::error::{Error, Result};
use crate::quant::{BitWidths, QuantExecutor};
use crate::ron_io;

/// Layers that always share one width (e.g. every attention projection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    /// A layer pattern as in overrides (`*` and `?`, matched from any `.`).
    pub layers: String,
}

/// The accelerator designs: the base preset with each axis varied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceleratorAxes {
    /// The accelerator preset (or RON file) every design starts from.
    pub base: String,
    pub mat_pes: Vec<usize>,
    pub mat_lanes: Vec<usize>,
    pub rmac_pes: Vec<usize>,
    pub rmac_lanes: Vec<usize>,
    pub copies: Vec<usize>,
    /// How products pack into DSPs (default: the base's).
    #[serde(default)]
    pub packing: Vec<Packing>,
}

/// Limits a design must meet to be on the front.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Held-out top-1 (%) at least this.
    #[serde(default)]
    pub min_top1: Option<f64>,
    /// At most this many DSPs (the part's budget always applies).
    #[serde(default)]
    pub max_dsps: Option<usize>,
}

/// How candidates are screened and confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// Calibration-sample images for the sensitivity proxy (logit KL).
    #[serde(default = "default_sample")]
    pub sample_images: usize,
    /// At most this many allocations of the screened front are confirmed.
    #[serde(default = "default_confirmed")]
    pub confirm_allocations: usize,
    /// Held-out training images each confirmed allocation is evaluated on.
    #[serde(default = "default_heldout")]
    pub heldout_images: usize,
    /// The executor that confirms and reports (default: the integer executor).
    #[serde(default = "default_executor")]
    pub executor: QuantExecutor,
    /// Test images the final front is reported on (default: all).
    #[serde(default)]
    pub test_images: Option<usize>,
}

fn default_sample() -> usize {
    128
}
fn default_confirmed() -> usize {
    24
}
fn default_heldout() -> usize {
    2000
}
fn default_executor() -> QuantExecutor {
    QuantExecutor::Int
}

impl Default for Stages {
    fn default() -> Self {
        Self {
            sample_images: default_sample(),
            confirm_allocations: default_confirmed(),
            heldout_images: default_heldout(),
            executor: default_executor(),
            test_images: None,
        }
    }
}

fn default_base() -> BitWidths {
    BitWidths::W8A8
}

/// A joint search over per-layer widths and accelerator designs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Search")]
pub struct SearchSpace {
    pub name: String,
    /// A model preset (or RON file); its shipped weights and data are used.
    pub model: String,
    /// The recipe (default: the family's).
    #[serde(default)]
    pub recipe: Option<String>,
    /// The widths every layer starts from.
    #[serde(default = "default_base")]
    pub base: BitWidths,
    /// Weight widths a layer may take.
    pub weights: Vec<u8>,
    /// Activation widths a layer may take (of the activation it writes).
    pub activations: Vec<u8>,
    #[serde(default)]
    pub groups: Vec<Group>,
    pub accelerator: AcceleratorAxes,
    #[serde(default)]
    pub constraints: Constraints,
    #[serde(default)]
    pub stages: Stages,
    /// Where the model's weights and images come from, for a model qvit ships none for
    /// (paths relative to this file): a checkpoint, calibration images, held-out training images
    /// (never the test set) and test images, each a folder or an IDX file. The micro models use
    /// the shipped ones.
    #[serde(default)]
    pub data: SearchData,
}

/// Weights and images of a search (see [`SearchSpace::data`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchData {
    #[serde(default)]
    pub weights: Option<std::path::PathBuf>,
    #[serde(default)]
    pub calibration: Option<std::path::PathBuf>,
    #[serde(default)]
    pub heldout: Option<std::path::PathBuf>,
    #[serde(default)]
    pub test: Option<std::path::PathBuf>,
}

impl SearchData {
    /// Every path taken relative to `dir` (the space file's folder).
    pub fn relative_to(&self, dir: &Path) -> Self {
        let at = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| dir.join(p));
        Self {
            weights: at(&self.weights),
            calibration: at(&self.calibration),
            heldout: at(&self.heldout),
            test: at(&self.test),
        }
    }
}

impl SearchSpace {
    /// Reads a space file; its data paths, and a recipe or accelerator given as a file, are
    /// taken relative to the file.
    pub fn load(path: &Path) -> Result<Self> {
        let mut space: SearchSpace = ron_io::read(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        space.data = space.data.relative_to(dir);
        // A recipe or accelerator given as a file is found beside the space, as data is.
        let file = |name: &str| name.ends_with(".ron") || name.contains('/');
        if let Some(r) = &space.recipe
            && file(r)
        {
            space.recipe = Some(dir.join(r).display().to_string());
        }
        if file(&space.accelerator.base) {
            space.accelerator.base = dir.join(&space.accelerator.base).display().to_string();
        }
        space.validate(&path.display().to_string())?;
        Ok(space)
    }

    pub fn from_ron(text: &str, origin: &str) -> Result<Self> {
        let space: SearchSpace = ron_io::parse(text, origin)?;
        space.validate(origin)?;
        Ok(space)
    }

    /// Every (weights, activations) pair a layer may take, weights first, widest first.
    pub fn widths(&self) -> Vec<BitWidths> {
        let mut w = self.weights.clone();
        let mut a = self.activations.clone();
        w.sort_unstable_by(|x, y| y.cmp(x));
        a.sort_unstable_by(|x, y| y.cmp(x));
        w.iter()
            .flat_map(|&weights| {
                a.iter().map(move |&activations| BitWidths {
                    weights,
                    activations,
                })
            })
            .collect()
    }

    /// The base accelerator.
    pub fn base_accelerator(&self) -> Result<AccelConfig> {
        AccelConfig::resolve(&self.accelerator.base)
    }

    /// Every accelerator design of the space, in axis order (packing varies fastest).
    pub fn designs(&self) -> Result<Vec<AccelConfig>> {
        let base = self.base_accelerator()?;
        let a = &self.accelerator;
        let packings = if a.packing.is_empty() {
            vec![base.packing]
        } else {
            a.packing.clone()
        };
        let mut out = Vec::new();
        for &mat_pes in &a.mat_pes {
            for &mat_lanes in &a.mat_lanes {
                for &rmac_pes in &a.rmac_pes {
                    for &rmac_lanes in &a.rmac_lanes {
                        for &copies in &a.copies {
                            for &packing in &packings {
                                let mut c = base.clone();
                                c.set_engines([mat_pes, mat_lanes, rmac_pes, rmac_lanes], copies);
                                c.packing = packing;
                                c.name = format!(
                                    "{}-m{mat_pes}x{mat_lanes}-r{rmac_pes}x{rmac_lanes}-l{copies}-{}",
                                    base.name,
                                    match packing {
                                        Packing::Envelope => "envelope",
                                        Packing::PerLayer => "per-layer",
                                    }
                                );
                                out.push(c);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Checks every field: empty lists, widths out of 2–16, zero sizes, and stage counts name
    /// the field.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, message: String| Error::field(origin, field, message);
        if let Err(e) = crate::arch::ArchSpec::resolve(&self.model) {
            return bad("model", e.to_string());
        }
        for (field, list) in [
            ("weights", &self.weights),
            ("activations", &self.activations),
        ] {
            if list.is_empty() {
                return bad(field, "give at least one width, e.g. [8, 4]".into());
            }
            if let Some(b) = list.iter().find(|b| !(2..=16).contains(*b)) {
                return bad(field, format!("{b} bits: widths run from 2 to 16"));
            }
        }
        let base = self.accelerator.base.as_str();
        match AccelConfig::resolve(base) {
            Err(e) => return bad("accelerator.base", e.to_string()),
            Ok(c) if !matches!(c.architecture, Architecture::TrioVit { .. }) => {
                return bad(
                    "accelerator.base",
                    format!("`{base}` is not a Trio-ViT design; the axes vary its engines"),
                );
            }
            Ok(_) => {}
        }
        let a = &self.accelerator;
        for (field, list) in [
            ("accelerator.mat_pes", &a.mat_pes),
            ("accelerator.mat_lanes", &a.mat_lanes),
            ("accelerator.rmac_pes", &a.rmac_pes),
            ("accelerator.rmac_lanes", &a.rmac_lanes),
            ("accelerator.copies", &a.copies),
        ] {
            if list.is_empty() {
                return bad(field, "give at least one value".into());
            }
            if let Some(i) = list.iter().position(|&v| v == 0) {
                return bad(field, format!("entry {i} is 0; sizes must be at least 1"));
            }
            for &v in list.iter() {
                check_size(origin, field, v, MAX_ARRAY_SIDE)?;
            }
        }
        if let Some(t) = self.constraints.min_top1
            && !(t.is_finite() && (0.0..=100.0).contains(&t))
        {
            return bad(
                "constraints.min_top1",
                format!("{t} is not a top-1 from 0 to 100 %"),
            );
        }
        if self.constraints.max_dsps == Some(0) {
            return bad("constraints.max_dsps", "must be at least 1".into());
        }
        let s = &self.stages;
        for (field, v) in [
            ("stages.sample_images", s.sample_images),
            ("stages.confirm_allocations", s.confirm_allocations),
            ("stages.heldout_images", s.heldout_images),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if s.test_images == Some(0) {
            return bad("stages.test_images", "must be at least 1".into());
        }
        Ok(())
    }
}
