//! The integer executor's non-linear steps as nodes of qvit's own operator domain
//! ([`QVIT_DOMAIN`]), for a QONNX export a hardware flow can map onto its own cores: qvit's
//! integer Softmax, I-LayerNorm, the integer GELU and linear attention's division by a log2 (or
//! uniform) divisor. Each node is one step of the compiled [`IntProgram`] with every constant
//! as an attribute, and computes exactly what the integer executor computes.
//!
//! Around them the graph stays the QONNX fake-quant graph, so the nodes meet floats:
//!
//! - **In**, a node recovers its integers from the float values it reads. A quantization
//!   point's value `s_c·(q − z_c) + o_c` gives its codes `q = ⌊(x − o_c)/s_c⌉ + z_c`
//!   (`*_scale`, `*_zero_point`, `*_offset`), a log point's value its code by the nearest of
//!   its `*_levels`; an accumulator handed over as the float product of dequantized codes
//!   gives `⌊x/input_scale⌉` (exact while the float product is within half a unit, which
//!   float32 holds for the accumulators of 8-bit codes).
//! - **Out**, a node writes the real value of each output code, `output_scale_c·(q −
//!   output_zero_point_c) + output_offset_c` or `output_levels[q]`, so the next float operator
//!   reads what it would read after the point's quantizer.
//!
//! Requantizations are rescale records as in the golden vectors' manifest
//! ([`crate::exec::int::rescale`]): `clamp((v·multiplier + addend + 2^(shift−1)) >> shift,
//! saturate)` per channel; threshold encoders give `codes[i]`, `i` the number of
//! `thresholds` below the value. docs/export.md lists each node's attributes; the numpy
//! implementation in `tools/export/qvit/` runs them in qonnx's executor.

use std::collections::HashMap;

use super::builder::{Attr, OnnxGraph};
use crate::error::{Error, Result};
use crate::exec::int::IntProgram;
use crate::exec::int::encoding::Encoding;
use crate::exec::int::nonlinear::gelu::{GELU_INPUT_BITS, SIGMOID_BITS};
use crate::exec::int::nonlinear::softmax::{EXP_BITS, FRACTION_B, PROBABILITY_BITS};
use crate::exec::int::ops::linear_attention::Divide;
use crate::exec::int::ops::weighted::Output;
use crate::exec::int::program::{Step, StepOp};
use crate::exec::int::requant::{Encoder, Epilogue, Requant};
use crate::graph::{Graph, NodeId, Op};

/// The operator domain of the integer steps (and the Python module that implements them).
pub const QVIT_DOMAIN: &str = "qvit";

/// The steps of one compiled program that the export writes as `qvit` nodes.
#[derive(Debug)]
pub struct IntegerSteps<'p> {
    graph: &'p Graph,
    program: &'p IntProgram,
    /// The step that writes each node's value.
    steps: HashMap<NodeId, &'p Step>,
    /// Names of the nodes written as `qvit` nodes, in graph order.
    pub written: Vec<String>,
}

type Attrs = Vec<(String, Attr)>;

impl<'p> IntegerSteps<'p> {
    pub fn new(graph: &'p Graph, program: &'p IntProgram) -> Self {
        Self {
            graph,
            program,
            steps: program.steps.iter().map(|s| (s.node, s)).collect(),
            written: Vec::new(),
        }
    }

    /// The `qvit` node for graph node `id`, reading `inputs` (the values of the node's inputs),
    /// or `None` when the node is not one of the integer steps.
    pub fn lower(
        &mut self,
        g: &mut OnnxGraph,
        id: NodeId,
        inputs: &[String],
    ) -> Result<Option<String>> {
        let Some(step) = self.steps.get(&id).copied() else {
            return Ok(None);
        };
        let node = self.graph.node(id);
        let (op_type, mut attrs) = match (&node.op, &step.op) {
            (Op::Softmax, StepOp::ScoresSoftmax(s)) => {
                let scores = self.graph.node(node.inputs[0]);
                let Op::AttentionScores { scale, .. } = scores.op else {
                    return Err(self.refuse(id, "its input is not attention logits"));
                };
                let qkv = self.point(step.inputs[0])?;
                let (s_qkv, _, _) = qkv
                    .linear(0)
                    .ok_or_else(|| self.refuse(id, "q, k and v must be quantized uniformly"))?;
                let mut a: Attrs = vec![
                    float("input_scale", s_qkv * s_qkv * scale),
                    int("input_bits", s.input_bits as i64),
                    int("exp_bits", EXP_BITS as i64),
                    int("probability_bits", PROBABILITY_BITS as i64),
                    int("fraction_b", FRACTION_B),
                ];
                a.extend(self.rescale("to_x", &s.to_x, id)?);
                a.push((
                    "output_thresholds".into(),
                    Attr::Ints(s.codes.thresholds.clone()),
                ));
                a.push((
                    "output_codes".into(),
                    Attr::Ints(s.codes.codes.iter().map(|&c| c as i64).collect()),
                ));
                ("Softmax", a)
            }
            (Op::LayerNorm { dim, .. }, StepOp::LayerNorm(l)) => {
                let input = self.point(step.inputs[0])?;
                let mut a = self.decode("input", input, *dim, id)?;
                if !matches!(input, Encoding::Linear { zero, .. } if expand(zero, *dim) == l.zero) {
                    return Err(self.refuse(id, "its step centres codes on other zero-points"));
                }
                a.push((
                    "shift".into(),
                    Attr::Ints(l.shift.iter().map(|&s| s as i64).collect()),
                ));
                let Epilogue::Plain(Encoder::Linear(r)) = &l.out else {
                    return Err(self.refuse(id, "its output must be a uniform point"));
                };
                a.extend(self.rescale("output", r, id)?);
                ("LayerNorm", a)
            }
            (Op::Gelu, StepOp::Weighted(w)) => {
                let Output::Gelu {
                    to_x,
                    gelu,
                    out: Encoder::Linear(out),
                    unit,
                } = &w.output
                else {
                    return Err(self.refuse(id, "its output must be a uniform point"));
                };
                let input = self.point(step.inputs[0])?;
                let shifted =
                    (0..w.in_channels).any(|c| input.linear(c).is_none_or(|(_, _, o)| o != 0.0));
                if shifted {
                    return Err(self.refuse(
                        id,
                        "the layer before it reads a shifted or non-uniform input, whose \
                         accumulator the float graph does not carry",
                    ));
                }
                let mut a: Attrs = vec![
                    floats("input_scale", unit),
                    int("c1", gelu.c1),
                    int("c3", gelu.c3),
                    int("shift", gelu.shift as i64),
                    int("limit", gelu.limit),
                    int("input_bits", GELU_INPUT_BITS as i64),
                    int("sigmoid_bits", SIGMOID_BITS as i64),
                    int("exp_bits", EXP_BITS as i64),
                    int("fraction_b", FRACTION_B),
                ];
                a.extend(self.rescale("to_x", to_x, id)?);
                a.extend(self.rescale("output", out, id)?);
                ("Gelu", a)
            }
            (
                Op::LinearAttentionNormalize {
                    heads,
                    head_dim,
                    height,
                    width,
                    ..
                },
                StepOp::Normalize(n),
            ) => {
                // The query value is [heads, d + 1, N]; a point owns whole rows of N.
                let query = step.inputs[0];
                let row_len = self.graph.node(query).shape[2];
                let at_row = |row: usize| {
                    self.program
                        .points
                        .iter()
                        .find(|p| p.node == query && p.layout.take.contains(&(row * row_len)))
                        .map(|p| &p.encoding)
                        .ok_or_else(|| self.refuse(id, "its dividends and divisors need points"))
                };
                let mut a: Attrs = vec![
                    int("heads", *heads as i64),
                    int("head_dim", *head_dim as i64),
                    int("height", *height as i64),
                    int("width", *width as i64),
                    int("dividend_zero", n.dividend_zero as i64),
                ];
                a.extend(self.decode("dividend", at_row(0)?, 1, id)?);
                a.extend(self.decode("divisor", at_row(*head_dim)?, 1, id)?);
                match &n.divide {
                    Divide::Shift => a.push(("divide".into(), Attr::Str("shift".into()))),
                    Divide::Integer { divisor } => {
                        a.push(("divide".into(), Attr::Str("integer".into())));
                        a.push(("divisor_of_code".into(), Attr::Ints(divisor.clone())));
                    }
                }
                // The division adds the output zero-point after rounding: `output_zero_point`.
                a.extend(self.rescale("output", &n.out, id)?);
                ("LinearAttentionNormalize", a)
            }
            _ => return Ok(None),
        };
        // The output's channels as the nodes read them: the last axis of tokens, the first of
        // feature maps; attention probabilities have one quantizer for all.
        let channels = match (&node.op, node.shape.as_slice()) {
            (Op::Softmax, _) => 1,
            (_, [_, d]) => *d,
            (_, [c, _, _]) => *c,
            _ => 1,
        };
        attrs.extend(self.decode("output", self.point(id)?, channels, id)?);
        let input = &inputs[0];
        let borrowed: Vec<(&str, Attr)> =
            attrs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let out = g.node_in(QVIT_DOMAIN, op_type, &node.name, &[input], &borrowed);
        self.written.push(node.name.clone());
        Ok(Some(out))
    }

    fn refuse(&self, id: NodeId, why: &str) -> Error {
        Error::Graph {
            model: self.graph.model.clone(),
            layer: self.graph.node(id).name.clone(),
            message: format!("cannot be written as an integer step: {why}"),
        }
    }

    /// The encoding of the point on node `id`'s value (the first, for values with several).
    fn point(&self, id: NodeId) -> Result<&'p Encoding> {
        self.program
            .points
            .iter()
            .find(|p| p.node == id)
            .map(|p| &p.encoding)
            .ok_or_else(|| self.refuse(id, "the value has no quantization point"))
    }

    /// Attributes that recover the codes of a point's value: `<what>_scale`,
    /// `<what>_zero_point`, `<what>_offset` per channel, or `<what>_levels`.
    fn decode(&self, what: &str, e: &Encoding, channels: usize, id: NodeId) -> Result<Attrs> {
        Ok(match e {
            Encoding::Linear { .. } => {
                let mut scale = Vec::with_capacity(channels);
                let mut zero = Vec::with_capacity(channels);
                let mut offset = Vec::with_capacity(channels);
                for c in 0..channels {
                    let (s, z, o) = e
                        .linear(c)
                        .ok_or_else(|| self.refuse(id, "a point has no scale for a channel"))?;
                    scale.push(s);
                    zero.push(z as i64);
                    offset.push(o);
                }
                vec![
                    floats(&format!("{what}_scale"), &scale),
                    (format!("{what}_zero_point"), Attr::Ints(zero)),
                    floats(&format!("{what}_offset"), &offset),
                ]
            }
            Encoding::Log(_) => vec![levels(&format!("{what}_levels"), e)],
        })
    }

    /// A requantization as a rescale record: `<what>_multiplier`, `_shift`, `_addend`
    /// (per channel, or one) and `_saturate` (lowest, highest).
    fn rescale(&self, what: &str, r: &Requant, id: NodeId) -> Result<Attrs> {
        let addend = r
            .addend
            .iter()
            .map(|&a| i64::try_from(a))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| {
                self.refuse(
                    id,
                    &format!("the {what} requantization's addend needs more than the 64 bits an ONNX attribute holds"),
                )
            })?;
        Ok(vec![
            (
                format!("{what}_multiplier"),
                Attr::Ints(r.multiplier.iter().map(|d| d.m as i64).collect()),
            ),
            (
                format!("{what}_shift"),
                Attr::Ints(r.multiplier.iter().map(|d| d.k as i64).collect()),
            ),
            (format!("{what}_addend"), Attr::Ints(addend)),
            (format!("{what}_saturate"), Attr::Ints(vec![r.qmin, r.qmax])),
        ])
    }
}

/// Per-channel values from one-or-per-channel storage.
fn expand(v: &[i32], channels: usize) -> Vec<i32> {
    (0..channels).map(|c| v[c.min(v.len() - 1)]).collect()
}

fn int(name: &str, v: i64) -> (String, Attr) {
    (name.into(), Attr::Int(v))
}

fn float(name: &str, v: f64) -> (String, Attr) {
    (name.into(), Attr::Float(v as f32))
}

fn floats(name: &str, v: &[f64]) -> (String, Attr) {
    (
        name.into(),
        Attr::Floats(v.iter().map(|&x| x as f32).collect()),
    )
}

/// The real value of every code of a log point.
fn levels(name: &str, e: &Encoding) -> (String, Attr) {
    let (lo, hi) = e.code_range();
    floats(
        name,
        &(lo..=hi).map(|q| e.value_of(q, 0)).collect::<Vec<_>>(),
    )
}
