//! The hardware view of a model: the operations an accelerator executes, with their shapes, MACs
//! and operand bit widths, derived from the graph.
//!
//! BatchNorm is folded and activations, residual adds and requantisation run in the
//! accelerator's auxiliary units on the way out of a layer, so they are recorded as vector work
//! rather than as layers of their own.

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, NodeId, Op};

/// What a layer computes, in the terms a cycle model needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HwOp {
    /// A convolution that is not depthwise: the stem (k×k), pointwise and grouped 1×1 convs,
    /// DeiT's patch embedding.
    Conv {
        cin: usize,
        cout: usize,
        groups: usize,
        kernel: usize,
        stride: usize,
        /// Output pixels.
        pixels: usize,
        /// Output side (square maps).
        side: usize,
    },
    /// A depthwise k×k convolution.
    Depthwise {
        channels: usize,
        kernel: usize,
        stride: usize,
        /// Output side.
        side: usize,
    },
    /// A linear layer applied to `tokens` rows.
    Linear {
        inputs: usize,
        outputs: usize,
        tokens: usize,
    },
    /// ReLU linear attention, `[v;1]·relu(k)ᵀ` for `heads` heads of `dim` over `tokens`.
    AttnContext {
        heads: usize,
        dim: usize,
        tokens: usize,
    },
    /// ReLU linear attention, `context·relu(q)`.
    AttnQuery {
        heads: usize,
        dim: usize,
        tokens: usize,
    },
    /// ReLU linear attention, dividends over divisors: one division (a shift once the divisor is
    /// log2-quantized) per output element.
    AttnDivide {
        heads: usize,
        dim: usize,
        tokens: usize,
    },
    /// Softmax attention logits `q·kᵀ`.
    AttnScores {
        heads: usize,
        dim: usize,
        tokens: usize,
    },
    /// Softmax attention `P·v`.
    AttnMix {
        heads: usize,
        dim: usize,
        tokens: usize,
    },
    /// Element-wise or row-wise work without MACs (softmax, GELU, LayerNorm, pooling).
    Vector { kind: String, elements: usize },
}

/// Cycles of a [`HwOp::Vector`] layer on an auxiliary vector unit of `lanes` elements per
/// cycle. The unit reads the tensor once per pass: Softmax three times (row maximum, exponentials
/// and their sum, normalisation), LayerNorm three (mean, variance, normalisation), GELU once.
/// Global average pooling accumulates while the layer before it streams its output, so it
/// costs nothing of its own. (Trio-ViT's paper mentions "low-cost auxiliary processors" without
/// their size; one lane per MAC lane is qvit's assumption.)
pub fn vector_cycles(kind: &str, elements: usize, lanes: usize) -> u64 {
    let passes = match kind {
        "Softmax" | "LayerNorm" => 3,
        "Gelu" => 1,
        _ => 0,
    };
    passes * elements.div_ceil(lanes.max(1)) as u64
}

/// Where a layer sits in the network, for the rules of a cycle model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The first convolution (on the image).
    Stem,
    /// Any other layer of the backbone.
    Body,
    /// The projection conv after ReLU linear attention.
    AttnProjection,
    /// The classifier head.
    Head,
}

/// One accelerator operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HwLayer {
    /// The graph node it comes from.
    pub name: String,
    pub stage: String,
    pub op: HwOp,
    pub role: Role,
    pub macs: u64,
    /// For a depthwise conv: the index (in [`Workload::layers`]) of the conv its output feeds
    /// through activations only, which a DW→PW-fusing engine overlaps with it.
    pub feeds: Option<usize>,
    /// The input arrives from the previous layer through the on-chip pipeline (a depthwise conv
    /// after the 1×1 conv that expands for it, the conv after a depthwise conv).
    pub input_on_chip: bool,
    /// The output goes to the next layer through the on-chip pipeline.
    pub output_on_chip: bool,
    pub weight_bits: u8,
    pub act_bits: u8,
    /// Weight elements (0 for attention products).
    pub weights: u64,
    /// Input and output elements.
    pub inputs: u64,
    pub outputs: u64,
}

/// All layers of one model at one resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub model: String,
    pub resolution: usize,
    pub layers: Vec<HwLayer>,
}

impl Workload {
    /// The workload of `graph` with every operand at `weight_bits` / `act_bits`.
    pub fn uniform(graph: &Graph, weight_bits: u8, act_bits: u8) -> Self {
        Self::with_bits(graph, |_| (weight_bits, act_bits))
    }

    /// The workload of `graph` with the bit widths `bits(node)` gives each layer.
    pub fn with_bits(graph: &Graph, bits: impl Fn(NodeId) -> (u8, u8)) -> Self {
        let nodes = graph.nodes();
        let mut layers = Vec::new();
        let mut layer_of: Vec<Option<usize>> = vec![None; nodes.len()];
        let numel = |s: &[usize]| s.iter().map(|&d| d as u64).product::<u64>();
        let mut seen_conv = false;
        for (id, node) in nodes.iter().enumerate() {
            let input = node.inputs.first().map(|&i| nodes[i].shape.as_slice());
            let op = match &node.op {
                Op::Conv2d(c) if c.is_depthwise() => HwOp::Depthwise {
                    channels: c.out_channels,
                    kernel: c.kernel,
                    stride: c.stride,
                    side: node.shape[1],
                },
                Op::Conv2d(c) | Op::PatchEmbed(c) => HwOp::Conv {
                    cin: c.in_channels,
                    cout: c.out_channels,
                    groups: c.groups,
                    kernel: c.kernel,
                    stride: c.stride,
                    pixels: match node.op {
                        Op::PatchEmbed(_) => node.shape[0],
                        _ => node.shape[1] * node.shape[2],
                    },
                    side: match node.op {
                        Op::PatchEmbed(_) => (node.shape[0] as f64).sqrt() as usize,
                        _ => node.shape[1],
                    },
                },
                Op::Linear(l) => HwOp::Linear {
                    inputs: l.in_features,
                    outputs: l.out_features,
                    tokens: (numel(&node.shape) / l.out_features as u64) as usize,
                },
                Op::LinearAttentionContext { heads, head_dim } => HwOp::AttnContext {
                    heads: *heads,
                    dim: *head_dim,
                    tokens: input.map_or(0, |s| s[1] * s[2]),
                },
                Op::LinearAttentionQuery { heads, head_dim } => HwOp::AttnQuery {
                    heads: *heads,
                    dim: *head_dim,
                    tokens: node.shape[2],
                },
                Op::LinearAttentionNormalize {
                    heads,
                    head_dim,
                    height,
                    width,
                    ..
                } => HwOp::AttnDivide {
                    heads: *heads,
                    dim: *head_dim,
                    tokens: height * width,
                },
                Op::AttentionScores {
                    heads, head_dim, ..
                } => HwOp::AttnScores {
                    heads: *heads,
                    dim: *head_dim,
                    tokens: node.shape[1],
                },
                Op::AttentionMix { heads, head_dim } => HwOp::AttnMix {
                    heads: *heads,
                    dim: *head_dim,
                    tokens: node.shape[0],
                },
                Op::Softmax | Op::Gelu | Op::LayerNorm { .. } | Op::GlobalAvgPool => HwOp::Vector {
                    kind: node.op.kind().to_string(),
                    elements: numel(input.unwrap_or(&[])) as usize,
                },
                // Folded (BatchNorm), fused into the producer's output stage (activations, adds)
                // or pure data movement (concatenation, class token).
                _ => continue,
            };
            let role = if node.stage == "head" {
                Role::Head
            } else if !seen_conv && matches!(op, HwOp::Conv { .. }) {
                Role::Stem
            } else if matches!(op, HwOp::Conv { .. })
                && node
                    .inputs
                    .first()
                    .is_some_and(|&i| matches!(nodes[i].op, Op::LinearAttentionNormalize { .. }))
            {
                Role::AttnProjection
            } else {
                Role::Body
            };
            seen_conv |= matches!(op, HwOp::Conv { .. } | HwOp::Depthwise { .. });
            let (weight_bits, act_bits) = bits(id);
            layers.push(HwLayer {
                name: node.name.clone(),
                stage: node.stage.clone(),
                op,
                role,
                macs: node.macs,
                feeds: None,
                input_on_chip: false,
                output_on_chip: false,
                weight_bits,
                act_bits,
                weights: node
                    .params
                    .iter()
                    .filter(|p| p.role == crate::graph::ParamRole::Weight)
                    .map(|p| p.numel())
                    .sum(),
                inputs: node.inputs.iter().map(|&i| numel(&nodes[i].shape)).sum(),
                outputs: numel(&node.shape),
            });
            layer_of[id] = Some(layers.len() - 1);
        }
        // Link each depthwise conv to the convs before and after it when only element-wise steps
        // (norms, activations) lie between: those pairs run as an on-chip pipeline.
        for id in 0..nodes.len() {
            let Some(dw) = layer_of[id] else { continue };
            if !matches!(layers[dw].op, HwOp::Depthwise { .. }) {
                continue;
            }
            let mut up = nodes[id].inputs[0];
            while layer_of[up].is_none()
                && matches!(
                    nodes[up].op,
                    Op::BatchNorm2d { .. } | Op::Hardswish | Op::Relu
                )
                && graph.consumers(up).len() == 1
            {
                up = nodes[up].inputs[0];
            }
            if let Some(p) = layer_of[up]
                && matches!(layers[p].op, HwOp::Conv { kernel: 1, .. })
                && graph.consumers(up).len() == 1
            {
                layers[p].output_on_chip = true;
                layers[dw].input_on_chip = true;
            }
            let mut at = id;
            let target = loop {
                let consumers = graph.consumers(at);
                let [next] = consumers.as_slice() else {
                    break None;
                };
                match (&nodes[*next].op, layer_of[*next]) {
                    (Op::Conv2d(c), Some(l)) if !c.is_depthwise() => break Some(l),
                    (Op::BatchNorm2d { .. } | Op::Hardswish | Op::Relu, None) => at = *next,
                    _ => break None,
                }
            };
            layers[dw].feeds = target;
            if let Some(t) = target {
                layers[dw].output_on_chip = true;
                layers[t].input_on_chip = true;
            }
        }
        Workload {
            model: graph.model.clone(),
            resolution: graph.resolution,
            layers,
        }
    }

    /// For each layer, whether a depthwise conv before it carries its cycles (DW→PW fusion).
    pub fn fused_into_depthwise(&self) -> Vec<bool> {
        let mut fused = vec![false; self.layers.len()];
        for l in &self.layers {
            if let Some(t) = l.feeds {
                fused[t] = true;
            }
        }
        fused
    }

    /// Total MACs (equals the graph's).
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
}

#[cfg(test)]
mod vector_tests {
    use super::*;

    #[test]
    fn vector_work_by_hand() {
        // DeiT-T softmax on one block: 3 heads × 197 × 197 = 116,427 elements, 3 passes on 16
        // lanes: 3·⌈116,427/16⌉ = 3·7,277 = 21,831 cycles.
        assert_eq!(vector_cycles("Softmax", 3 * 197 * 197, 16), 21_831);
        assert_eq!(vector_cycles("Gelu", 197 * 768, 16), 9_456);
        assert_eq!(vector_cycles("LayerNorm", 197 * 192, 16), 3 * 2_364);
        assert_eq!(vector_cycles("GlobalAvgPool", 1000, 16), 0);
    }
}
