//! Recipes: a PTQ method as a composition of quantizers, range searches and techniques, read
//! from `presets/quant/*.ron` or a user's file.

use serde::{Deserialize, Serialize};

use super::points::TensorKind;
use super::quantizer::Rounding;
use super::range::RangeMethod;
use crate::arch::Family;
use crate::error::{Error, Result};
use crate::ron_io;

/// How weights are quantized: symmetric uniform, one scale per output channel (filter-wise),
/// per group of output channels, or per tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Granularity {
    PerTensor,
    PerChannel,
    PerGroup(usize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRule {
    pub granularity: Granularity,
    pub range: RangeMethod,
}

/// The default for activations: one uniform quantizer per tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRule {
    pub symmetric: bool,
    pub range: RangeMethod,
}

/// A method-specific treatment of the tensors where it fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Technique {
    /// Trio-ViT: divide each depthwise-conv input channel by `s_c = clip(m_c / r, min, max)`
    /// (`m_c` the channel maximum, `r = max(quantile_q(X), mean_c m_c)`) and multiply the
    /// depthwise weights by `s_c`, then quantize the activation per tensor.
    ChannelMigration { quantile: f64, min: f32, max: f32 },
    /// Trio-ViT: subtract each projection-input channel's centre `(max_c + min_c)/2` before a
    /// per-tensor quantizer and add `Σ_i z_i·w_(j,i)` to the projection's bias.
    FilterShift,
    /// Trio-ViT: ReLU linear attention's divisors on `bits`-bit log2 levels, so the division
    /// is a shift.
    LogDivisor { bits: u8 },
    /// Trio-ViT: the linear-attention matmul results (`Σ relu(k)ᵀv`, key sums, dividends) on
    /// `bits`-bit uniform levels whatever the activation bit width.
    UniformAttention { bits: u8 },
    /// PTQ4ViT: twin-uniform quantizers for post-Softmax and post-GELU activations.
    TwinUniform,
    /// FQ-ViT: LayerNorm inputs with a power-of-two factor per channel, `α ∈ 0..=max_alpha`.
    PowerOfTwoFactor { max_alpha: u8 },
    /// FQ-ViT's Log-Int-Softmax: attention probabilities on `bits`-bit log2 levels.
    LogAttention { bits: u8 },
    /// RepQ-ViT: attention probabilities on log√2 levels at the activation bit width.
    LogSqrt2Attention,
    /// RepQ-ViT: post-LayerNorm activations calibrated per channel, then reparameterised to one
    /// scale per tensor through the LayerNorm affine and the next linear layer's weights.
    RepqLayerNorm,
    /// Every uniform activation step rescaled by the factor (of 0.25–1.41) whose quantized
    /// logits on the first `images` calibration-sample images are closest to the float logits,
    /// quantizer by quantizer in network order (see [`super::output_search`]): qvit's
    /// gradient-free stand-in for Trio-ViT's learned activation steps.
    OutputSearch { images: usize },
}

/// One PTQ method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    /// Model families the method is defined for.
    pub families: Vec<Family>,
    pub weights: WeightRule,
    pub activations: ActivationRule,
    #[serde(default)]
    pub techniques: Vec<Technique>,
    /// How activations round ties: `HalfUp` (the default, what the integer executor computes)
    /// or `HalfEven` (what ONNX's `QuantizeLinear` computes, to compare with an export in its
    /// runtime; fake-quant only). Weight codes are computed once, half up, and exported as
    /// they are.
    #[serde(default)]
    pub rounding: Rounding,
}

macro_rules! preset {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../presets/quant/", $name, ".ron")),
        )
    };
}

/// The shipped recipes, by name.
pub const PRESETS: &[(&str, &str)] = &[
    preset!("minmax"),
    preset!("percentile"),
    preset!("omse"),
    preset!("ptq4vit"),
    preset!("fq-vit"),
    preset!("repq-vit"),
    preset!("trio-vit"),
    preset!("trio-vit-lp"),
];

impl Recipe {
    pub fn preset(name: &str) -> Result<Self> {
        let text = ron_io::preset_text("recipe", PRESETS, name)?;
        Self::from_ron(text, &format!("recipe preset {name}"))
    }

    pub fn from_ron(text: &str, origin: &str) -> Result<Self> {
        let r: Recipe = ron_io::parse(text, origin)?;
        r.validate(origin)?;
        Ok(r)
    }

    /// A preset name, or the path of a recipe RON file.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        if name_or_path.ends_with(".ron") {
            let path = std::path::Path::new(name_or_path);
            let r: Recipe = ron_io::read(path)?;
            r.validate(name_or_path)?;
            Ok(r)
        } else {
            Self::preset(name_or_path)
        }
    }

    /// Refuses, before any calibration or search, a recipe whose plans the integer executor
    /// cannot run: twin-uniform codes, or activations rounded half to even (`rounding` is the
    /// settings' override of the recipe's own). The compiler checks the plan itself as well;
    /// this says it before minutes of work.
    pub fn check_integer(&self, rounding: Option<Rounding>) -> Result<()> {
        let origin = format!("recipe `{}`", self.name);
        if self.techniques.contains(&Technique::TwinUniform) {
            return Error::field(
                &origin,
                "techniques",
                "twin-uniform codes (ptq4vit) cannot be compiled to the integer executor; use a \
                 uniform, log2 or log√2 recipe, or the fake-quant executor",
            );
        }
        let (origin, rounding) = match rounding {
            Some(r) => ("the quant settings".to_string(), r),
            None => (origin, self.rounding),
        };
        if rounding != Rounding::HalfUp {
            return Error::field(
                &origin,
                "rounding",
                format!(
                    "activations round {}, and integer arithmetic rounds half up (a shift's \
                     `(x + 2^(k−1)) >> k`); half-even rounding is for the fake-quant executor, to \
                     compare with an ONNX export",
                    rounding.name()
                ),
            );
        }
        Ok(())
    }

    pub fn validate(&self, origin: &str) -> Result<()> {
        if self.families.is_empty() {
            return Error::field(origin, "families", "name at least one model family");
        }
        if let Granularity::PerGroup(0) = self.weights.granularity {
            return Error::field(
                origin,
                "weights.granularity",
                "a group has at least one channel",
            );
        }
        for rule in [&self.weights.range, &self.activations.range] {
            match *rule {
                RangeMethod::Percentile(p) if !(50.0..=100.0).contains(&p) => {
                    return Error::field(
                        origin,
                        "range",
                        format!("percentile {p} is not in 50–100"),
                    );
                }
                RangeMethod::Lp(p) if !(p > 0.0 && p <= 10.0) => {
                    return Error::field(
                        origin,
                        "range",
                        format!("L_p exponent {p} is not in (0, 10]"),
                    );
                }
                _ => {}
            }
        }
        for t in &self.techniques {
            match *t {
                Technique::LogDivisor { bits }
                | Technique::LogAttention { bits }
                | Technique::UniformAttention { bits } => {
                    super::bits::check(bits, origin, "techniques")?;
                }
                Technique::ChannelMigration { quantile, min, max }
                    if !((0.0..=1.0).contains(&quantile) && min > 0.0 && min <= max) =>
                {
                    return Error::field(
                        origin,
                        "techniques.ChannelMigration",
                        "needs 0 ≤ quantile ≤ 1 and 0 < min ≤ max",
                    );
                }
                Technique::OutputSearch { images: 0 } => {
                    return Error::field(
                        origin,
                        "techniques.OutputSearch",
                        "images is at least 1 (the reference initialises on 64)",
                    );
                }
                Technique::PowerOfTwoFactor { max_alpha } if max_alpha > 8 => {
                    return Error::field(
                        origin,
                        "techniques.PowerOfTwoFactor",
                        "max_alpha is at most 8",
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn has(&self, f: impl Fn(&Technique) -> bool) -> bool {
        self.techniques.iter().any(f)
    }

    /// The width the recipe gives a point of this kind whatever the settings ask for: 8 bits
    /// for the image, and the widths its attention techniques fix (log2 divisors, uniform
    /// attention products, log2 attention). The plan builder and the cost model both read it.
    pub fn fixed_bits(&self, kind: TensorKind) -> Option<u8> {
        let find = |f: fn(&Technique) -> Option<u8>| self.techniques.iter().find_map(f);
        let uniform_attention = |t: &Technique| match t {
            Technique::UniformAttention { bits } => Some(*bits),
            _ => None,
        };
        match kind {
            TensorKind::Image => Some(8),
            TensorKind::AttentionDivisor => find(|t| match t {
                Technique::LogDivisor { bits } => Some(*bits),
                _ => None,
            })
            .or_else(|| find(uniform_attention)),
            TensorKind::AttentionProduct | TensorKind::AttentionKeySum => find(uniform_attention),
            TensorKind::PostSoftmax => find(|t| match t {
                Technique::LogAttention { bits } => Some(*bits),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Refuses a model of a family the method is not defined for.
    pub fn check_family(&self, family: Family, model: &str) -> Result<()> {
        if self.families.contains(&family) {
            Ok(())
        } else {
            Error::field(
                &format!("recipe `{}`", self.name),
                "families",
                format!(
                    "the method is defined for {} models; `{model}` is a {family} model",
                    self.families
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            )
        }
    }
}

/// Names of the shipped recipes.
pub fn names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for name in names() {
            let r = Recipe::preset(name).unwrap();
            assert_eq!(r.name, name);
        }
    }

    #[test]
    fn wrong_family_and_unknown_names_are_clear() {
        let trio = Recipe::preset("trio-vit").unwrap();
        let e = trio
            .check_family(Family::Deit, "deit-micro")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("EfficientViT") && e.contains("deit-micro"),
            "{e}"
        );
        let e = Recipe::preset("gptq").unwrap_err().to_string();
        assert!(e.contains("trio-vit") && e.contains("minmax"), "{e}");
    }

    #[test]
    fn recipes_the_integer_executor_cannot_run_are_refused_by_name() {
        for name in names() {
            let r = Recipe::preset(name).unwrap();
            let twin = r.techniques.contains(&Technique::TwinUniform);
            assert_eq!(r.check_integer(None).is_err(), twin, "{name}");
            let e = r.check_integer(Some(Rounding::HalfEven)).unwrap_err();
            assert!(
                e.to_string()
                    .contains(if twin { "twin" } else { "half-even" }),
                "{e}"
            );
        }
        let e = Recipe::preset("ptq4vit")
            .unwrap()
            .check_integer(None)
            .unwrap_err();
        assert!(e.to_string().contains("`ptq4vit`"), "{e}");
        let mut even = Recipe::preset("minmax").unwrap();
        even.rounding = Rounding::HalfEven;
        let e = even.check_integer(None).unwrap_err().to_string();
        assert!(
            e.contains("recipe `minmax`") && e.contains("rounding"),
            "{e}"
        );
        assert!(even.check_integer(Some(Rounding::HalfUp)).is_ok());
    }

    #[test]
    fn bad_fields_are_named() {
        let text = Recipe::preset("minmax").map(|_| PRESETS[0].1).unwrap();
        let broken = text.replace("MinMax", "Percentile(120.0)");
        let e = Recipe::from_ron(&broken, "x.ron").unwrap_err().to_string();
        assert!(e.contains("x.ron") && e.contains("percentile"), "{e}");
    }
}
