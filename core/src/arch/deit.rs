//! DeiT (timm `VisionTransformer`): the hyper-parameters that define one network.

use serde::{Deserialize, Serialize};

use super::limits;
use crate::error::{Error, Result};

/// The hyper-parameters of a DeiT classifier (class token, learned positions, pre-norm blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeitSpec {
    /// Preset name, e.g. `deit-tiny`.
    pub name: String,
    /// Square input side in pixels; must be a multiple of `patch_size`.
    pub resolution: usize,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    pub num_heads: usize,
    /// Hidden width of the MLP as a multiple of `embed_dim` (timm: `int(embed_dim * mlp_ratio)`).
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// LayerNorm epsilon (timm's DeiT uses 1e-6).
    #[serde(default = "default_ln_eps")]
    pub ln_eps: f64,
}

fn default_in_channels() -> usize {
    3
}
fn default_num_classes() -> usize {
    1000
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_true() -> bool {
    true
}
fn default_ln_eps() -> f64 {
    1e-6
}

impl DeitSpec {
    /// Channels per head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Width of the MLP hidden layer.
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Patches along one side.
    pub fn grid(&self) -> usize {
        self.resolution / self.patch_size
    }

    /// Tokens including the class token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Checks every value; `origin` names the file or preset in the error.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |field: &str, message: String| Error::field(origin, field, message);
        for (field, value) in [
            ("in_channels", self.in_channels),
            ("num_classes", self.num_classes),
            ("patch_size", self.patch_size),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        limits::at_most(origin, "patch_size", self.patch_size, limits::MAX_SMALL)?;
        limits::at_most(origin, "embed_dim", self.embed_dim, limits::MAX_CHANNELS)?;
        limits::at_most(origin, "depth", self.depth, limits::MAX_DEPTH)?;
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio <= limits::MAX_CHANNELS as f64) {
            return bad(
                "mlp_ratio",
                format!(
                    "{} is not a finite ratio of at most {}",
                    self.mlp_ratio,
                    limits::MAX_CHANNELS
                ),
            );
        }
        limits::at_most(origin, "mlp_ratio", self.mlp_hidden(), limits::MAX_CHANNELS)?;
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(
                "num_heads",
                format!(
                    "embed_dim {} is not divisible by {} heads",
                    self.embed_dim, self.num_heads
                ),
            );
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_hidden() >= 1) {
            return bad(
                "mlp_ratio",
                format!("{} gives an empty MLP hidden layer", self.mlp_ratio),
            );
        }
        if !(self.ln_eps.is_finite() && self.ln_eps >= 0.0) {
            return bad(
                "ln_eps",
                format!("{} is not a finite non-negative number", self.ln_eps),
            );
        }
        if self.resolution == 0 || !self.resolution.is_multiple_of(self.patch_size) {
            let below = self.resolution / self.patch_size * self.patch_size;
            let above = below + self.patch_size;
            let hint = if below == 0 {
                format!("use {above}")
            } else {
                format!("use {below} or {above}")
            };
            return bad(
                "resolution",
                format!(
                    "{} px is not a multiple of the patch size {}: the patch embedding tiles the image \
                     into {p}×{p} patches with stride {p}, and its learned position table has one entry \
                     per patch; {hint}",
                    self.resolution,
                    self.patch_size,
                    p = self.patch_size,
                ),
            );
        }
        Ok(())
    }
}
