//! What to quantize with, before any statistics: the recipe name, global bit widths and
//! per-layer overrides (a project's `quant` section), resolved to bits per node.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::bits::BitWidths;
use super::points::{output_point_node, points};
use super::quantizer::Rounding;
use super::recipe::Recipe;
use crate::arch::Family;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Op};

/// Bit widths for the layers whose names match `layers` (`*` any run of characters, `?` one;
/// a pattern may match a whole name or any part of it that starts after a `.`, so
/// `stages.3.*` matches `backbone.stages.3.op_list.0.main.depth_conv.conv`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub layers: String,
    pub bits: BitWidths,
}

impl FromStr for Override {
    type Err = Error;
    /// `PATTERN=wNaM`.
    fn from_str(s: &str) -> Result<Self> {
        let (layers, bits) = s.rsplit_once('=').ok_or_else(|| Error::InvalidField {
            origin: "override".into(),
            field: s.into(),
            message: "expected `LAYERS=wNaM`, e.g. `stages.3.*=w4a8`".into(),
        })?;
        Ok(Self {
            layers: layers.trim().to_string(),
            bits: bits.parse()?,
        })
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.layers, String::from(self.bits))
    }
}

/// Wildcard match of a whole string: `*` any run, `?` one character.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// True when `pattern` matches `name` or a dotted suffix of it.
pub fn layer_matches(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    wildcard(p, name.as_bytes())
        || name
            .match_indices('.')
            .any(|(i, _)| wildcard(p, &name.as_bytes()[i + 1..]))
}

/// What to quantize with: the `quant` section of a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantSettings {
    /// A recipe preset name or the path of a recipe RON file.
    #[serde(default = "default_recipe")]
    pub recipe: String,
    #[serde(default = "default_bits")]
    pub bits: BitWidths,
    /// Later entries win where patterns overlap.
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Which executor gives the quantized accuracy.
    #[serde(default)]
    pub executor: QuantExecutor,
    /// How activations round ties, over the recipe's own setting (see
    /// [`super::Recipe::rounding`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<Rounding>,
    /// Where a recipe with an output-aware range search runs it: once at the global `bits`,
    /// the overridden layers then taking search-free ranges at their own widths (`true`, how
    /// `qvit sensitivity` and `qvit search` build their plans, see `search::Splicer`), or with
    /// the overrides in place (`false`, the default). A recipe without the search gives the
    /// same plan either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub search_at_base: bool,
}

/// How a quantized model is run for its accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QuantExecutor {
    /// Float arithmetic on quantized values (`quant::FakeQuantExecutor`).
    #[default]
    Fake,
    /// Integer arithmetic only (`exec::int::IntExecutor`): what the accelerator computes.
    Int,
}

fn default_recipe() -> String {
    "trio-vit".into()
}

fn default_bits() -> BitWidths {
    BitWidths::W8A8
}

/// The recipe a model family is quantized with when none is named: Trio-ViT's for
/// EfficientViT (the method built for it), RepQ-ViT's for DeiT (Trio-ViT's techniques target
/// EfficientViT's depthwise convolutions and linear attention).
pub fn family_recipe(family: Family) -> &'static str {
    match family {
        Family::EfficientVit => "trio-vit",
        Family::Deit => "repq-vit",
    }
}

impl QuantSettings {
    /// W8A8 with the family's recipe ([`family_recipe`]), fake-quant.
    pub fn for_family(family: Family) -> Self {
        Self {
            recipe: family_recipe(family).into(),
            ..Self::default()
        }
    }
}

impl Default for QuantSettings {
    fn default() -> Self {
        Self {
            recipe: default_recipe(),
            bits: default_bits(),
            overrides: Vec::new(),
            executor: QuantExecutor::Fake,
            rounding: None,
            search_at_base: false,
        }
    }
}

/// A node whose stored width a recipe fixes whatever the settings ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWidth {
    pub node: NodeId,
    pub bits: u8,
    /// The node stores another point the recipe leaves at the settings' width (a
    /// linear-attention product beside a fixed divisor): the node takes the wider of the two.
    pub partial: bool,
}

/// The nodes whose stored width `recipe` fixes ([`Recipe::fixed_bits`]); where a node stores
/// two points (a linear-attention product and its divisor), the widest, since its storage must
/// hold both.
pub fn fixed_widths(graph: &Graph, recipe: &Recipe) -> Vec<FixedWidth> {
    let mut fixed: Vec<FixedWidth> = Vec::new();
    let mut previous = None;
    for p in points(graph) {
        let same_node = previous == Some(p.node);
        previous = Some(p.node);
        let Some(bits) = recipe.fixed_bits(p.kind) else {
            if let Some(f) = fixed.last_mut().filter(|f| same_node && f.node == p.node) {
                f.partial = true;
            }
            continue;
        };
        match fixed.last_mut() {
            Some(f) if same_node && f.node == p.node => f.bits = f.bits.max(bits),
            _ => fixed.push(FixedWidth {
                node: p.node,
                bits,
                partial: same_node,
            }),
        }
    }
    fixed
}

/// Bit widths per node after the overrides: what the cost model needs, known without
/// calibration statistics. The image keeps the global activation bits here, as the cost model
/// and sweeps price it; the quant plan stores it at 8 bits, which it is.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerBits {
    /// Weight bits of each node (meaningful for weighted layers).
    pub weights: Vec<u8>,
    /// Bits of the activation stored at each node (meaningful for quantization points).
    pub activations: Vec<u8>,
}

impl LayerBits {
    /// The global bits with the overrides applied in order; a pattern that matches no layer is
    /// an error naming it.
    pub fn resolve(graph: &Graph, settings: &QuantSettings) -> Result<Self> {
        let n = graph.nodes().len();
        let mut weights = vec![settings.bits.weights; n];
        let mut activations = vec![settings.bits.activations; n];
        for o in &settings.overrides {
            let matched: Vec<NodeId> = (0..n)
                .filter(|&id| layer_matches(&o.layers, &graph.node(id).name))
                .collect();
            if matched.is_empty() {
                let examples: Vec<&str> = graph
                    .nodes()
                    .iter()
                    .skip(1)
                    .take(3)
                    .map(|n| n.name.as_str())
                    .collect();
                return Error::field(
                    "overrides",
                    &o.layers,
                    format!(
                        "the pattern matches no layer of `{}` (layers are named like {}; see `qvit info {}`)",
                        graph.model,
                        examples.join(", "),
                        graph.model
                    ),
                );
            }
            for id in matched {
                weights[id] = o.bits.weights;
                if let Some(p) = output_point_node(graph, id) {
                    activations[p] = o.bits.activations;
                }
            }
        }
        Ok(Self {
            weights,
            activations,
        })
    }

    /// The settings' widths ([`Self::resolve`]) with the widths `recipe` fixes whatever the
    /// settings ask for ([`Recipe::fixed_bits`]: the 8-bit image, attention products, log2
    /// divisors): the widths a plan of this recipe quantizes to, known before calibrating.
    pub fn for_recipe(graph: &Graph, settings: &QuantSettings, recipe: &Recipe) -> Result<Self> {
        let mut bits = Self::resolve(graph, settings)?;
        bits.fix(&fixed_widths(graph, recipe));
        Ok(bits)
    }

    /// Sets the activation widths of `fixed` ([`fixed_widths`]) over the settings'.
    pub fn fix(&mut self, fixed: &[FixedWidth]) {
        for f in fixed {
            let stored = &mut self.activations[f.node];
            *stored = if f.partial {
                (*stored).max(f.bits)
            } else {
                f.bits
            };
        }
    }

    /// `(weight bits, input activation bits)` of a layer: the bits of the tensor it reads,
    /// looking through ops that only move values (concatenation, taking the class token). An
    /// attention product multiplies two activations: its "weight" operand is its last input
    /// (k in q·kᵀ, v in P·v, the context in context·q).
    pub fn operands(&self, graph: &Graph, id: NodeId) -> (u8, u8) {
        let source = |mut input: NodeId| {
            while matches!(graph.node(input).op, Op::Concat | Op::TakeClassToken) {
                input = graph.node(input).inputs[0];
            }
            input
        };
        let node = graph.node(id);
        let input = source(node.inputs.first().copied().unwrap_or(0));
        let weights = match node.op {
            Op::AttentionScores { .. }
            | Op::AttentionMix { .. }
            | Op::LinearAttentionContext { .. }
            | Op::LinearAttentionQuery { .. } => {
                self.activations[source(node.inputs.last().copied().unwrap_or(0))]
            }
            _ => self.weights[id],
        };
        (weights, self.activations[input])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_and_dotted_suffixes() {
        let name = "backbone.stages.3.op_list.0.main.depth_conv.conv";
        assert!(layer_matches("stages.3.*", name));
        assert!(layer_matches("backbone.*", name));
        assert!(layer_matches("*depth_conv*", name));
        assert!(layer_matches("*.depth_conv.conv", name));
        assert!(!layer_matches("stages.2.*", name));
        assert!(!layer_matches("ages.3.*", name));
        assert!(layer_matches("blocks.?.mlp.fc1", "blocks.4.mlp.fc1"));
    }

    #[test]
    fn overrides_parse() {
        let o: Override = "stages.3.*=w4a8".parse().unwrap();
        assert_eq!(o.layers, "stages.3.*");
        assert_eq!((o.bits.weights, o.bits.activations), (4, 8));
        assert_eq!(o.to_string(), "stages.3.*=w4a8");
        assert!("stages.3.*".parse::<Override>().is_err());
        assert!(
            "x=w20a8"
                .parse::<Override>()
                .unwrap_err()
                .to_string()
                .contains("from 2 to 16")
        );
    }
}
