//! Folding BatchNorm into the convolution before it, and gathering each node's parameters.
//!
//! For a conv with weight `W`, bias `b` followed by BatchNorm (γ, β, μ, σ² , ε):
//! `W'[o] = W[o]·γ[o]/√(σ²[o]+ε)` and `b'[o] = β[o] + (b[o] − μ[o])·γ[o]/√(σ²[o]+ε)`.
//! The arithmetic is done in f64 and rounded once to f32.

use super::Weights;
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, Op, ParamRole};

/// The parameters one node needs at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeParams {
    /// The op has no parameters.
    None,
    /// Weight `[out, in/groups, k, k]` row-major and one bias per output channel (zeros when
    /// the layer has none), with a following BatchNorm folded in.
    Conv {
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// Weight `[out, in]` row-major and an optional bias.
    Linear {
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// A BatchNorm that could not be folded: `y = x·scale[c] + shift[c]`.
    ChannelAffine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// A BatchNorm already folded into the conv before it: passes its input through.
    Folded,
    LayerNorm {
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// DeiT's class token `[D]` and position table `[N+1, D]`.
    ClassTokenPosEmbed {
        cls: Vec<f32>,
        pos: Vec<f32>,
    },
}

/// Run-time parameters of every node, indexed like [`Graph::nodes`].
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedWeights {
    pub nodes: Vec<NodeParams>,
}

impl FoldedWeights {
    /// Refuses weights folded for another graph (a different node count), naming both.
    pub fn check_graph(&self, graph: &Graph) -> Result<()> {
        if self.nodes.len() == graph.nodes().len() {
            return Ok(());
        }
        Err(Error::Graph {
            model: graph.model.clone(),
            layer: "(all)".into(),
            message: format!(
                "weights were folded for a graph of {} nodes, this one has {}",
                self.nodes.len(),
                graph.nodes().len()
            ),
        })
    }
}

/// The tensor of `node` with `role`. Weights loaded from a file were checked against the graph,
/// so a miss here means they belong to another model.
fn tensor<'w>(weights: &'w Weights, node: &Node, role: ParamRole) -> Result<&'w [f32]> {
    node.params
        .iter()
        .find(|p| p.role == role)
        .and_then(|spec| weights.get(&spec.name))
        .map(|t| t.data.as_slice())
        .ok_or_else(|| Error::InvalidField {
            origin: weights.origin.clone(),
            field: node.name.clone(),
            message: format!(
                "no {role:?} tensor for this layer; were the weights made for another model?"
            ),
        })
}

/// Per-channel `(scale, shift)` of an inference BatchNorm, in f64.
fn bn_affine(weights: &Weights, node: &Node, eps: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    let gamma = tensor(weights, node, ParamRole::NormWeight)?;
    let beta = tensor(weights, node, ParamRole::NormBias)?;
    let mean = tensor(weights, node, ParamRole::RunningMean)?;
    let var = tensor(weights, node, ParamRole::RunningVar)?;
    let scale: Vec<f64> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| b as f64 - m as f64 * s)
        .collect();
    Ok((scale, shift))
}

pub(super) fn gather(graph: &Graph, weights: &Weights, fold: bool) -> Result<FoldedWeights> {
    let mut nodes: Vec<NodeParams> = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        nodes.push(match &node.op {
            Op::Conv2d(c) | Op::PatchEmbed(c) => NodeParams::Conv {
                weight: tensor(weights, node, ParamRole::Weight)?.to_vec(),
                bias: if c.bias {
                    tensor(weights, node, ParamRole::Bias)?.to_vec()
                } else {
                    vec![0.0; c.out_channels]
                },
            },
            Op::Linear(l) => NodeParams::Linear {
                weight: tensor(weights, node, ParamRole::Weight)?.to_vec(),
                bias: if l.bias {
                    Some(tensor(weights, node, ParamRole::Bias)?.to_vec())
                } else {
                    None
                },
            },
            Op::BatchNorm2d { eps, .. } => {
                let (scale, shift) = bn_affine(weights, node, *eps)?;
                NodeParams::ChannelAffine {
                    scale: scale.iter().map(|&s| s as f32).collect(),
                    shift: shift.iter().map(|&s| s as f32).collect(),
                }
            }
            Op::LayerNorm { .. } => NodeParams::LayerNorm {
                weight: tensor(weights, node, ParamRole::NormWeight)?.to_vec(),
                bias: tensor(weights, node, ParamRole::NormBias)?.to_vec(),
            },
            Op::ClassTokenPosEmbed { .. } => NodeParams::ClassTokenPosEmbed {
                cls: tensor(weights, node, ParamRole::ClassToken)?.to_vec(),
                pos: tensor(weights, node, ParamRole::PosEmbed)?.to_vec(),
            },
            _ => NodeParams::None,
        });
    }
    let pairs = if fold {
        graph.foldable_batch_norms()
    } else {
        Vec::new()
    };
    for (conv_id, bn_id) in pairs {
        let Op::BatchNorm2d { eps, .. } = graph.node(bn_id).op else {
            unreachable!("foldable_batch_norms pairs a conv with a batch norm")
        };
        let (scale, shift) = bn_affine(weights, graph.node(bn_id), eps)?;
        let NodeParams::Conv { weight, bias } = &mut nodes[conv_id] else {
            unreachable!("foldable_batch_norms pairs a conv with a batch norm")
        };
        let per_out = weight.len() / bias.len();
        for (o, (s, t)) in scale.iter().zip(&shift).enumerate() {
            for w in &mut weight[o * per_out..(o + 1) * per_out] {
                *w = (*w as f64 * s) as f32;
            }
            bias[o] = (bias[o] as f64 * s + t) as f32;
        }
        nodes[bn_id] = NodeParams::Folded;
    }
    Ok(FoldedWeights { nodes })
}
