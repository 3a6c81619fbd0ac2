//! EfficientViT (MIT, B series): the hyper-parameters that define one network.
//!
//! The field names follow the official constructors (`width_list`, `depth_list`, `dim`, …) so a
//! reader can check a preset against `efficientvit_backbone_b1` line by line. Two fields extend
//! the official family for small inputs: `strides` (the official models use stride 2 everywhere)
//! and `in_channels`/`num_classes`.

use serde::{Deserialize, Serialize};

use super::limits;
use crate::error::{Error, Result};

/// Number of resolution levels: the input stem and four stages.
pub const LEVELS: usize = 5;

/// The hyper-parameters of an EfficientViT classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientVitSpec {
    /// Preset name, e.g. `efficientvit-b1`.
    pub name: String,
    /// Square input side in pixels.
    pub resolution: usize,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    /// Channels of the stem and of stages 1–4.
    pub width_list: Vec<usize>,
    /// Stem: DSConv blocks after the stem conv. Stages 1–2: MBConv blocks (the first downsamples).
    /// Stages 3–4: EfficientViT blocks after the downsampling MBConv.
    pub depth_list: Vec<usize>,
    /// Channels per attention head (`dim` in the official code).
    pub dim: usize,
    /// MBConv expansion ratio.
    #[serde(default = "default_expand_ratio")]
    pub expand_ratio: usize,
    /// Widths of the classifier head: the 1×1 conv and the hidden linear layer.
    pub head_width_list: Vec<usize>,
    /// Stride of the first conv of the stem and of each stage (official: 2 everywhere).
    #[serde(default = "default_strides")]
    pub strides: Vec<usize>,
    /// Kernel of the multi-scale aggregation's depthwise conv (official `scales=(5,)`).
    #[serde(default = "default_scale")]
    pub aggregation_kernel: usize,
    /// BatchNorm epsilon (the official factory sets 1e-5 on every norm).
    #[serde(default = "default_norm_eps")]
    pub bn_eps: f64,
    /// LayerNorm epsilon of the classifier head.
    #[serde(default = "default_norm_eps")]
    pub ln_eps: f64,
    /// Epsilon added to the linear-attention normaliser (official 1e-15; timm uses 1e-5).
    #[serde(default = "default_attention_eps")]
    pub attention_eps: f64,
}

fn default_in_channels() -> usize {
    3
}
fn default_num_classes() -> usize {
    1000
}
fn default_expand_ratio() -> usize {
    4
}
fn default_strides() -> Vec<usize> {
    vec![2; LEVELS]
}
fn default_scale() -> usize {
    5
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_attention_eps() -> f64 {
    1e-15
}

/// Output side of a conv with the official "same" padding `k/2`, as PyTorch computes it.
/// An input of side 0 gives 0.
pub fn conv_output_side(input: usize, kernel: usize, stride: usize) -> usize {
    match (input + 2 * (kernel / 2)).checked_sub(kernel) {
        Some(span) if input > 0 => span / stride + 1,
        _ => 0,
    }
}

impl EfficientVitSpec {
    /// Heads of the attention in stage `level` (3 or 4): `width / dim`, as the official code.
    pub fn heads(&self, level: usize) -> usize {
        self.width_list[level] / self.dim
    }

    /// Product of all strides: how much the last stage is downsampled.
    pub fn total_stride(&self) -> usize {
        self.strides.iter().product()
    }

    /// Spatial side at the output of each level (stem, stage 1..4).
    pub fn level_sides(&self) -> [usize; LEVELS] {
        let mut side = self.resolution;
        let mut out = [0; LEVELS];
        for (level, &stride) in self.strides.iter().enumerate() {
            side = conv_output_side(side, 3, stride);
            out[level] = side;
        }
        out
    }

    /// Checks every value; `origin` names the file or preset in the error.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, message: String| Error::field(origin, field, message);
        for (field, list, len) in [
            ("width_list", &self.width_list, LEVELS),
            ("depth_list", &self.depth_list, LEVELS),
            ("strides", &self.strides, LEVELS),
            ("head_width_list", &self.head_width_list, 2),
        ] {
            if list.len() != len {
                return bad(
                    field,
                    format!("expected {len} entries, found {}", list.len()),
                );
            }
        }
        for (field, value) in [
            ("in_channels", self.in_channels),
            ("num_classes", self.num_classes),
            ("dim", self.dim),
            ("expand_ratio", self.expand_ratio),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        limits::at_most(origin, "dim", self.dim, limits::MAX_CHANNELS)?;
        limits::at_most(
            origin,
            "aggregation_kernel",
            self.aggregation_kernel,
            limits::MAX_SMALL,
        )?;
        for (field, list, max) in [
            ("width_list", &self.width_list, limits::MAX_CHANNELS),
            (
                "head_width_list",
                &self.head_width_list,
                limits::MAX_CHANNELS,
            ),
            ("depth_list", &self.depth_list, limits::MAX_DEPTH),
        ] {
            for &v in list {
                limits::at_most(origin, field, v, max)?;
            }
        }
        for &w in &self.width_list {
            limits::at_most(
                origin,
                "expand_ratio",
                w.saturating_mul(self.expand_ratio),
                limits::MAX_CHANNELS,
            )?;
        }
        if let Some(i) = self.width_list.iter().position(|&w| w == 0) {
            return bad(
                "width_list",
                format!("entry {i} is 0; every width must be ≥ 1"),
            );
        }
        if let Some(i) = self.head_width_list.iter().position(|&w| w == 0) {
            return bad("head_width_list", format!("entry {i} is 0"));
        }
        for level in 1..3 {
            if self.depth_list[level] == 0 {
                return bad(
                    "depth_list",
                    format!(
                        "stage {level} has depth 0; conv stages need at least their downsampling block"
                    ),
                );
            }
        }
        if let Some(i) = self.strides.iter().position(|&s| s != 1 && s != 2) {
            return bad(
                "strides",
                format!("entry {i} is {}; strides must be 1 or 2", self.strides[i]),
            );
        }
        if self.aggregation_kernel.is_multiple_of(2) {
            return bad(
                "aggregation_kernel",
                format!(
                    "{} is even; the official padding k/2 needs an odd kernel",
                    self.aggregation_kernel
                ),
            );
        }
        for level in 3..LEVELS {
            if self.heads(level) == 0 {
                return bad(
                    "dim",
                    format!(
                        "head dim {} exceeds stage {level}'s width {}; an attention stage needs at least one head",
                        self.dim, self.width_list[level]
                    ),
                );
            }
        }
        for (field, eps) in [
            ("bn_eps", self.bn_eps),
            ("ln_eps", self.ln_eps),
            ("attention_eps", self.attention_eps),
        ] {
            if !(eps.is_finite() && eps >= 0.0) {
                return bad(field, format!("{eps} is not a finite non-negative number"));
            }
        }
        // A stride-2 layer that receives a single pixel has nothing to downsample: the stage after
        // it would be empty. Requiring the input to cover the total stride rules that out.
        let min = self.total_stride();
        if self.resolution < min {
            // The first stride-2 level whose input is narrower than its stride is the empty one.
            let mut side = self.resolution;
            let mut empty = LEVELS - 1;
            for (level, &stride) in self.strides.iter().enumerate() {
                if side < stride {
                    empty = level;
                    break;
                }
                side = conv_output_side(side, 3, stride);
            }
            return bad(
                "resolution",
                format!(
                    "{} px is too small for `{}`: {} would be empty (its stride-2 layer would get a \
                     {side}×{side} map); the model downsamples by {min} in total, so the resolution \
                     must be at least {min}",
                    self.resolution,
                    self.name,
                    level_name(empty),
                ),
            );
        }
        Ok(())
    }
}

/// Human name of a level: `stem`, `stage 1`, … `stage 4`.
pub fn level_name(level: usize) -> String {
    if level == 0 {
        "the stem".to_string()
    } else {
        format!("stage {level}")
    }
}
