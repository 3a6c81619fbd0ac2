//! Architecture specs: the hyper-parameters of a model family, stored as RON under
//! `presets/models/` and validated before any graph is built.

mod deit;
mod efficientvit;
pub mod limits;
mod presets;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use deit::DeitSpec;
pub use efficientvit::{EfficientVitSpec, LEVELS, conv_output_side, level_name};
pub use presets::{PRESETS, preset_names};

use crate::error::Result;
use crate::ron_io;

/// One model: which family it belongs to and that family's hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArchSpec {
    /// MIT's EfficientViT (Softmax-free, ReLU linear attention).
    #[serde(rename = "EfficientViT")]
    EfficientVit(EfficientVitSpec),
    /// timm's DeiT (Softmax attention, LayerNorm, GELU).
    #[serde(rename = "DeiT")]
    Deit(DeitSpec),
}

/// The two families, for code that branches on the kind of model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "EfficientViT")]
    EfficientVit,
    #[serde(rename = "DeiT")]
    Deit,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::EfficientVit => "EfficientViT",
            Family::Deit => "DeiT",
        })
    }
}

impl ArchSpec {
    /// Parses and validates a spec from RON text; `origin` names it in errors.
    pub fn from_ron(text: &str, origin: &str) -> Result<Self> {
        let spec: ArchSpec = ron_io::parse(text, origin)?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Reads and validates a spec from a RON file.
    pub fn load(path: &Path) -> Result<Self> {
        let spec: ArchSpec = ron_io::read(path)?;
        spec.validate(&path.display().to_string())?;
        Ok(spec)
    }

    /// A shipped preset by name (see [`preset_names`]).
    pub fn preset(name: &str) -> Result<Self> {
        let text = ron_io::preset_text("model preset", PRESETS, name)?;
        Self::from_ron(text, &format!("preset `{name}`"))
    }

    /// A preset name, or else a path to a RON file. A name that is neither is reported with the
    /// list of presets.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        let path = Path::new(name_or_path);
        let looks_like_path = name_or_path.ends_with(".ron")
            || name_or_path.contains(std::path::MAIN_SEPARATOR)
            || name_or_path.contains('/');
        if looks_like_path || (path.is_file() && !preset_names().any(|n| n == name_or_path)) {
            Self::load(path)
        } else {
            Self::preset(name_or_path)
        }
    }

    /// Checks all hyper-parameters, including that the resolution suits the model.
    pub fn validate(&self, origin: &str) -> Result<()> {
        limits::at_most(
            origin,
            "resolution",
            self.resolution(),
            limits::MAX_RESOLUTION,
        )?;
        limits::at_most(origin, "in_channels", self.in_channels(), limits::MAX_SMALL)?;
        limits::at_most(
            origin,
            "num_classes",
            self.num_classes(),
            limits::MAX_CLASSES,
        )?;
        match self {
            ArchSpec::EfficientVit(s) => s.validate(origin),
            ArchSpec::Deit(s) => s.validate(origin),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ArchSpec::EfficientVit(s) => &s.name,
            ArchSpec::Deit(s) => &s.name,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            ArchSpec::EfficientVit(_) => Family::EfficientVit,
            ArchSpec::Deit(_) => Family::Deit,
        }
    }

    pub fn resolution(&self) -> usize {
        match self {
            ArchSpec::EfficientVit(s) => s.resolution,
            ArchSpec::Deit(s) => s.resolution,
        }
    }

    pub fn in_channels(&self) -> usize {
        match self {
            ArchSpec::EfficientVit(s) => s.in_channels,
            ArchSpec::Deit(s) => s.in_channels,
        }
    }

    /// `[C, H, W]` of the images the model takes.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.in_channels(), self.resolution(), self.resolution()]
    }

    pub fn num_classes(&self) -> usize {
        match self {
            ArchSpec::EfficientVit(s) => s.num_classes,
            ArchSpec::Deit(s) => s.num_classes,
        }
    }

    /// The same model at another input resolution, validated.
    pub fn with_resolution(&self, resolution: usize) -> Result<Self> {
        let mut spec = self.clone();
        match &mut spec {
            ArchSpec::EfficientVit(s) => s.resolution = resolution,
            ArchSpec::Deit(s) => s.resolution = resolution,
        }
        spec.validate(&format!(
            "model `{}` at --resolution {resolution}",
            self.name()
        ))?;
        Ok(spec)
    }

    /// Serialises the spec as RON in the preset format.
    pub fn to_ron(&self) -> Result<String> {
        ron_io::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_validates_and_round_trips() {
        for name in preset_names() {
            let spec = ArchSpec::preset(name).unwrap();
            assert_eq!(spec.name(), name, "preset file name and `name` field agree");
            let again = ArchSpec::from_ron(&spec.to_ron().unwrap(), "round trip").unwrap();
            assert_eq!(spec, again);
        }
    }

    #[test]
    fn unknown_preset_lists_the_valid_names() {
        let text = ArchSpec::preset("efficientvit-b9").unwrap_err().to_string();
        assert!(text.contains("efficientvit-b9"), "{text}");
        assert!(
            text.contains("efficientvit-b1") && text.contains("deit-tiny"),
            "{text}"
        );
    }

    #[test]
    fn unknown_family_names_the_valid_ones() {
        let text = ArchSpec::from_ron("ResNet(name: \"r\")", "m.ron")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("m.ron:1:"), "{text}");
        assert!(
            text.contains("EfficientViT") && text.contains("DeiT"),
            "{text}"
        );
    }

    #[test]
    fn unknown_field_names_the_valid_ones() {
        let text = PRESETS.iter().find(|(n, _)| *n == "deit-tiny").unwrap().1;
        let broken = text.replace("depth:", "depht:");
        let err = ArchSpec::from_ron(&broken, "deit.ron")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `depht`"), "{err}");
        assert!(err.contains("depth") && err.contains("num_heads"), "{err}");
    }

    #[test]
    fn deit_resolution_must_be_a_multiple_of_the_patch() {
        let spec = ArchSpec::preset("deit-small").unwrap();
        let err = spec.with_resolution(230).unwrap_err().to_string();
        assert!(err.contains("resolution"), "{err}");
        assert!(err.contains("multiple of the patch size 16"), "{err}");
        assert!(err.contains("use 224 or 240"), "{err}");
        assert!(spec.with_resolution(384).is_ok());
    }

    #[test]
    fn efficientvit_resolution_that_empties_a_stage_is_rejected() {
        let spec = ArchSpec::preset("efficientvit-b1").unwrap();
        let err = spec.with_resolution(16).unwrap_err().to_string();
        assert!(err.contains("stage 4 would be empty"), "{err}");
        assert!(err.contains("at least 32"), "{err}");
        let err = spec.with_resolution(3).unwrap_err().to_string();
        assert!(err.contains("stage 2 would be empty"), "{err}");
        assert!(spec.with_resolution(32).is_ok());
        assert!(spec.with_resolution(0).is_err());
    }

    #[test]
    fn efficientvit_sides_follow_pytorch_padding() {
        let b1 = |r| match ArchSpec::preset("efficientvit-b1")
            .unwrap()
            .with_resolution(r)
            .unwrap()
        {
            ArchSpec::EfficientVit(s) => s.level_sides(),
            ArchSpec::Deit(_) => unreachable!(),
        };
        assert_eq!(b1(224), [112, 56, 28, 14, 7]);
        assert_eq!(b1(256), [128, 64, 32, 16, 8]);
        assert_eq!(b1(288), [144, 72, 36, 18, 9]);
        assert_eq!(b1(225), [113, 57, 29, 15, 8]);
    }
}
