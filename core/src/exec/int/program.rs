//! The integer program: the quantized image, then one step per stored value, in graph order.
//! A step writes the codes of one node's value; fused ops (folded BatchNorm, the activation or
//! Softmax before a point) are inside their producer's step.

use super::encoding::Encoding;
use super::ops::elementwise::{Add, ClassPos, Pool};
use super::ops::layernorm::LayerNorm;
use super::ops::linear_attention::{Context, Normalize, Query};
use super::ops::softmax_attention::{Mix, ScoresSoftmax};
use super::ops::weighted::{Geometry, Weighted};
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
            StepOp::Weighted(w) => w.output_len(x[0]),
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

/// The last steps of a program that work on one token per image (see
/// [`IntProgram::token_tail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTail {
    /// The index of its first step.
    pub start: usize,
    /// The node that step reads: one token per image.
    pub input: NodeId,
}

impl IntProgram {
    /// The program's token tail, if it has one: the steps up to the logits that each read
    /// the step before alone (the first, one node), on one token per image — linear layers on
    /// one token (a classifier head) and LayerNorms between them. Each is a function of each
    /// token alone, so the executor can run a whole run of images' tokens through the tail at
    /// once, which reads each weight once per run instead of once per image (EfficientViT-B1's
    /// head holds 4 MB of weights) and gives the same codes.
    pub fn token_tail(&self) -> Option<TokenTail> {
        let one_token_linear = |op: &StepOp| matches!(op, StepOp::Weighted(w) if w.geometry == Geometry::Tokens { tokens: 1 });
        let last = self.steps.last()?;
        if last.node != self.output {
            return None;
        }
        // Back from the logits while each step reads only the one before it.
        let mut start = self.steps.len() - 1;
        while start > 0 {
            let (before, step) = (&self.steps[start - 1], &self.steps[start]);
            let chained = step.inputs == [before.node];
            let token_wise = one_token_linear(&before.op)
                || matches!(before.op, StepOp::LayerNorm(_)) && one_token_linear(&step.op);
            if !(chained && token_wise && before.inputs.len() == 1) {
                break;
            }
            start -= 1;
        }
        // The first step must be a linear layer on one token: what fixes the tail's input as
        // one token per image.
        while !one_token_linear(&self.steps[start].op) {
            start += 1;
            if start == self.steps.len() {
                return None;
            }
        }
        let first = &self.steps[start];
        (first.inputs.len() == 1).then(|| TokenTail {
            start,
            input: first.inputs[0],
        })
    }

    /// Where a run of images stops going image by image, for a run through the steps before
    /// `end`: the first step that runs the images at once ([`Weighted::stacks`]; `end` if
    /// none). From there the executor takes the steps layer by layer, so that those layers
    /// see every image of the run.
    ///
    /// [`Weighted::stacks`]: super::ops::weighted::Weighted::stacks
    pub fn stacked_from(&self, end: usize) -> usize {
        self.steps[..end]
            .iter()
            .position(|step| matches!(&step.op, StepOp::Weighted(w) if w.stacks()))
            .unwrap_or(end)
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
