//! The integer program: the quantized image, then one step per stored value, in graph order.
//! A step writes the codes of one node's value; fused ops (folded BatchNorm, the activation or
//! Softmax before a point) are inside their producer's step.

use super::encoding::Encoding;
use super::ops::elementwise::{Add, ClassPos, Pool};
use super::ops::layernorm::LayerNorm;
use super::ops::linear_attention::{Context, Normalize, Query};
use super::ops::softmax_attention::{Mix, ScoresSoftmax};
use super::ops::weighted::Weighted;
use crate::graph::NodeId;
use crate::quant::points::Layout;
use crate::quant::quantizer::Uniform;

/// One step of the program.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The node whose value the step writes.
    pub node: NodeId,
    pub name: String,
    /// Nodes whose values it reads.
    pub inputs: Vec<NodeId>,
    pub op: StepOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepOp {
    Weighted(Box<Weighted>),
    Add(Add),
    Pool(Pool),
    ClassPos(ClassPos),
    LayerNorm(LayerNorm),
    ScoresSoftmax(ScoresSoftmax),
    Mix(Mix),
    Context(Context),
    Query(Query),
    Normalize(Normalize),
    /// Channel concatenation of the inputs' codes.
    Concat,
    /// The first `dim` codes (the class token's row).
    TakeClassToken {
        dim: usize,
    },
}

impl StepOp {
    /// How many codes the step writes, from its inputs' codes (what its run writes: each op
    /// sizes its output by the same method).
    pub fn output_len(&self, x: &[&[i32]]) -> usize {
        match self {
            StepOp::Weighted(w) => w.output_len(),
            StepOp::Add(a) => a.output_len(x[0], x[1]),
            StepOp::Pool(p) => p.output_len(x[0]),
            StepOp::ClassPos(c) => c.output_len(x[0]),
            StepOp::LayerNorm(l) => l.output_len(x[0]),
            StepOp::ScoresSoftmax(s) => s.output_len(),
            StepOp::Mix(m) => m.output_len(),
            StepOp::Context(c) => c.output_len(),
            StepOp::Query(q) => q.output_len(),
            StepOp::Normalize(n) => n.output_len(),
            StepOp::Concat => x.iter().map(|v| v.len()).sum(),
            StepOp::TakeClassToken { dim } => *dim,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StepOp::Weighted(_) => "weighted",
            StepOp::Add(_) => "add",
            StepOp::Pool(_) => "pool",
            StepOp::ClassPos(_) => "class-pos",
            StepOp::LayerNorm(_) => "i-layernorm",
            StepOp::ScoresSoftmax(_) => "shiftmax",
            StepOp::Mix(_) => "attention-mix",
            StepOp::Context(_) => "linear-attention-context",
            StepOp::Query(_) => "linear-attention-query",
            StepOp::Normalize(_) => "linear-attention-normalize",
            StepOp::Concat => "concat",
            StepOp::TakeClassToken { .. } => "take-class-token",
        }
    }
}

/// A quantization point's codes inside a value (for comparisons and golden vectors).
#[derive(Debug, Clone, PartialEq)]
pub struct PointCodes {
    pub name: String,
    pub node: NodeId,
    pub layout: Layout,
    pub encoding: Encoding,
}

/// A compiled model.
#[derive(Debug, Clone, PartialEq)]
pub struct IntProgram {
    pub model: String,
    pub recipe: String,
    /// The image's 8-bit quantizer: the only float → integer conversion, at the boundary.
    pub input: Uniform,
    pub steps: Vec<Step>,
    pub points: Vec<PointCodes>,
    /// The node holding the logits and the real value of one logit unit.
    pub output: NodeId,
    pub logit_scale: f64,
    /// Per node, the last step index that reads it (values are dropped after it).
    pub last_use: Vec<usize>,
    pub nodes: usize,
}
