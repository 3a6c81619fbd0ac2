//! Published ViT accelerators as reference points, from `presets/published/`: the figures each
//! paper reports (or that a later paper tabulated for it), so sweeps and the explorer can plot
//! them beside modelled designs.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ron_io;

/// One reported figure set: a model at a precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPoint {
    pub model: String,
    pub precision: String,
    #[serde(default)]
    pub fps: Option<f64>,
    #[serde(default)]
    pub gops: Option<f64>,
    #[serde(default)]
    pub gops_per_dsp: Option<f64>,
    #[serde(default)]
    pub fps_per_dsp: Option<f64>,
}

/// An accelerator and what was published about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Published")]
pub struct PublishedAccelerator {
    pub name: String,
    /// Where the figures come from.
    pub source: String,
    pub platform: String,
    pub clock_mhz: Option<f64>,
    pub points: Vec<PublishedPoint>,
}

macro_rules! published {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../presets/published/", $name, ".ron")),
        )
    };
}

const FILES: &[(&str, &str)] = &[
    published!("efficientvit-fpga"),
    published!("auto-vit-acc"),
    published!("group-vector-systolic"),
    published!("heatvit"),
    published!("p2-vit"),
    published!("vaqf"),
];

/// Every shipped reference point.
pub fn all() -> Result<Vec<PublishedAccelerator>> {
    FILES
        .iter()
        .map(|(name, text)| ron_io::parse(text, &format!("presets/published/{name}.ron")))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_reference_point_parses_and_says_something() {
        let all = super::all().unwrap();
        assert_eq!(all.len(), 6);
        for a in &all {
            assert!(!a.points.is_empty(), "{}", a.name);
            for p in &a.points {
                assert!(
                    p.fps
                        .or(p.gops)
                        .or(p.gops_per_dsp)
                        .or(p.fps_per_dsp)
                        .is_some(),
                    "{}: {} has no figure",
                    a.name,
                    p.model
                );
            }
        }
        let fpga = all.iter().find(|a| a.name == "EfficientViT-FPGA").unwrap();
        assert_eq!(fpga.points[0].gops, Some(780.2));
    }
}
