//! The fake-quant model of a quant plan, in one of two styles ([`Style`]):
//!
//! - **QDQ** (opset [`QDQ_OPSET`]), for ONNX Runtime and the QDQ-aware deployment flows. Weights
//!   are the plan's integer codes under the checkpoint's names (int4 up to 4 bits, int8 up to 8,
//!   int16 beyond) with a `DequantizeLinear` per output channel (`axis` 0) or per tensor.
//!   Uniform activations are `QuantizeLinear` → `DequantizeLinear` with the plan's scales and
//!   zero-points (per tensor, or per channel with `axis`); codes narrower than their type (6 bits
//!   in uint8, the symmetric range ±(2^(b−1) − 1) in int8) are clamped after the
//!   `DequantizeLinear`, which is exact.
//! - **QONNX** (opset [`QONNX_OPSET`] with QONNX's `qonnx.custom_op.general` domain), for FINN
//!   and hls4ml. Every uniform quantizer is one `Quant` node at its own bit width (`signed`,
//!   `narrow`, `rounding_mode` as the plan says); weights are float initializers holding the
//!   plan's quantized values, through a `Quant` that leaves them unchanged.
//!
//! In both, input-channel factors that a technique moved into the weights (Trio-ViT's
//! migration, RepQ-ViT's reparameterisation) are divided out after the weight's quantizer,
//! exactly as qvit computes `Q(W ⊙ r)/r`; FQ-ViT's power-of-two factors are a per-channel scale
//! `Δ·2^α_c`; Trio-ViT's migration factors and shifts are a `Sub`/`Div` before and `Mul`/`Add`
//! after. What neither can say, log2 and log√2 levels (FQ-ViT's and RepQ-ViT's attention,
//! Trio-ViT's divisor) and twin-uniform ranges (PTQ4ViT), is written exactly in standard
//! operators (`Log`, `Round`, `Pow`, `Where`, …) and listed in the model's
//! `qvit.standard_op_points` metadata.
//!
//! `QuantizeLinear` rounds half to even; qvit rounds half up unless the recipe says otherwise
//! ([`crate::quant::Rounding`]). QONNX's `Quant` rounds as the plan says (`HALF_UP` rounds
//! negative ties away from zero where qvit rounds them up; only symmetric quantizers see
//! negative values). The standard-operator points round as the plan does.

use super::builder::{Attr, ElementType, OnnxGraph};
use super::integer::IntegerSteps;
use super::lower::Quantize;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::quant::plan::{ActivationPlan, QuantPlan, WeightPlan, input_channel, out_channels};
use crate::quant::quantizer::{Log, PowerOfTwoFactor, Quantizer, Rounding, Twin, Uniform};

/// The operator set of the QDQ export: 21 is the first with 4-bit and 16-bit
/// `QuantizeLinear`.
pub const QDQ_OPSET: i64 = 21;
/// The operator set of the QONNX export's standard operators: 17 is the first with
/// `LayerNormalization`.
pub const QONNX_OPSET: i64 = 17;
/// QONNX's operator domain (`Quant`, `Trunc`).
pub const QONNX_DOMAIN: &str = "qonnx.custom_op.general";

/// How uniform quantizers and weights are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `QuantizeLinear`/`DequantizeLinear` pairs, integer weight codes.
    Qdq,
    /// QONNX `Quant` nodes, float weights through a `Quant`.
    Qonnx,
}

/// The hooks that quantize the float graph as one plan says.
#[derive(Debug)]
pub struct Quantized<'p> {
    graph: &'p Graph,
    plan: &'p QuantPlan,
    style: Style,
    /// Points written in standard operators rather than quantizer nodes: `name: what`.
    pub standard_op_points: Vec<String>,
    /// The integer executor's non-linear steps, when the export writes them as `qvit` nodes.
    pub integer: Option<IntegerSteps<'p>>,
}

impl<'p> Quantized<'p> {
    pub fn new(graph: &'p Graph, plan: &'p QuantPlan, style: Style) -> Result<Self> {
        plan.check_model(graph)?;
        Ok(Self {
            graph,
            plan,
            style,
            standard_op_points: Vec::new(),
            integer: None,
        })
    }
}

/// The axis of a node's batched value `[B] + shape` that a point's channels lie on: the last
/// for token sequences `[N, D]`, else the first after the batch.
fn channel_axis(shape: &[usize]) -> usize {
    if shape.len() == 2 { 2 } else { 1 }
}

/// Per-channel values shaped to broadcast over a rank-`rank` value along `axis`.
fn broadcast_dims(channels: usize, axis: usize, rank: usize) -> Vec<usize> {
    std::iter::once(channels)
        .chain(std::iter::repeat_n(1, rank - 1 - axis))
        .collect()
}

impl Quantize for Quantized<'_> {
    fn weight(
        &mut self,
        g: &mut OnnxGraph,
        node: NodeId,
        name: &str,
        dims: &[usize],
        data: &[f32],
        doc: &str,
    ) -> Result<String> {
        let Some(wp) = self.plan.weights.iter().find(|w| w.node == node) else {
            return Ok(g.initializer(name, dims, data, doc));
        };
        Ok(weight(g, self.graph, wp, self.style, name, dims, data, doc))
    }

    fn activation(&mut self, g: &mut OnnxGraph, node: NodeId, value: String) -> Result<String> {
        let points: Vec<&ActivationPlan> = self
            .plan
            .activations
            .iter()
            .filter(|a| a.node == node)
            .collect();
        let shape = &self.graph.node(node).shape;
        match points.as_slice() {
            [] => Ok(value),
            [a] if a.layout.take == (0..a.layout.inner) => self.fake(g, &value, a, shape),
            parts => self.rows(g, node, &value, parts),
        }
    }

    fn replace(
        &mut self,
        g: &mut OnnxGraph,
        id: NodeId,
        inputs: &[String],
    ) -> Result<Option<String>> {
        match &mut self.integer {
            Some(steps) => steps.lower(g, id, inputs),
            None => Ok(None),
        }
    }
}

impl Quantized<'_> {
    /// Linear attention's `[heads, d+1, L]`, whose rows 0..d and row d have quantizers of their
    /// own: each point's rows are sliced and quantized, rows no point owns are passed through,
    /// and the rows are put back together in order.
    fn rows(
        &mut self,
        g: &mut OnnxGraph,
        node: NodeId,
        value: &str,
        parts: &[&ActivationPlan],
    ) -> Result<String> {
        let name = self.graph.node(node).name.clone();
        let shape = self.graph.node(node).shape.clone();
        let refuse = |point: &str| Error::Graph {
            model: self.graph.model.clone(),
            layer: point.to_string(),
            message: "a partial quantization point must own whole rows of a [heads, rows, L] \
                      tensor, apart from the others, to be exported"
                .into(),
        };
        let (rows, row) = match shape.as_slice() {
            [_, rows, row] => (*rows, *row),
            _ => return Err(refuse(&parts[0].point)),
        };
        let mut parts = parts.to_vec();
        parts.sort_by_key(|a| a.layout.take.start);
        let axis = g.ints(&format!("{name}/row_axis"), &[2]);
        let slice = |g: &mut OnnxGraph, what: &str, from: usize, to: usize| {
            let starts = g.ints(&format!("{what}/rows_from"), &[from as i64]);
            let ends = g.ints(&format!("{what}/rows_to"), &[to as i64]);
            g.node(
                "Slice",
                &format!("{what}/rows"),
                &[value, &starts, &ends, &axis],
                &[],
            )
        };
        let mut pieces = Vec::new();
        let mut next = 0;
        for a in parts {
            let take = &a.layout.take;
            if take.start % row != 0 || take.end % row != 0 || take.start / row < next {
                return Err(refuse(&a.point));
            }
            let (from, to) = (take.start / row, take.end / row);
            if from > next {
                pieces.push(slice(g, &format!("{name}/unquantized_{next}"), next, from));
            }
            let rows_of_point = slice(g, &a.point, from, to);
            pieces.push(self.fake(g, &rows_of_point, a, &shape)?);
            next = to;
        }
        if next < rows {
            pieces.push(slice(g, &format!("{name}/unquantized_{next}"), next, rows));
        }
        let inputs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        Ok(g.node(
            "Concat",
            &format!("{name}/quantized"),
            &inputs,
            &[("axis", Attr::Int(2))],
        ))
    }

    /// `s_c·Q((x − z_c)/s_c) + z_c` of one point on value `x` (of a node of `shape`).
    fn fake(
        &mut self,
        g: &mut OnnxGraph,
        x: &str,
        a: &ActivationPlan,
        shape: &[usize],
    ) -> Result<String> {
        let base = a.point.as_str();
        let (axis, rank) = (channel_axis(shape), shape.len() + 1);
        let channels = a.layout.channels;
        let dims = broadcast_dims(channels, axis, rank);
        let mut x = x.to_string();
        if let Some(z) = &a.shift {
            let z = g.floats(&format!("{base}/shift"), &dims, z);
            x = g.node("Sub", &format!("{base}/shifted"), &[&x, &z], &[]);
        }
        let migration = a
            .migration
            .as_ref()
            .map(|s| g.floats(&format!("{base}/migration"), &dims, s));
        if let Some(s) = &migration {
            x = g.node("Div", &format!("{base}/migrated"), &[&x, s], &[]);
        }
        let q = &mut QuantizeAt {
            g,
            base,
            axis,
            rank,
            channels,
            style: self.style,
            rounding: a.rounding,
        };
        let mut y = match &a.quantizer {
            Quantizer::Uniform(u) => q.uniform(&x, u),
            Quantizer::PowerOfTwoFactor(p) => q.power_of_two(&x, p),
            Quantizer::Log(l) => {
                self.standard_op_points
                    .push(format!("{base}: {} levels", a.quantizer.describe()));
                q.log(&x, l, a.rounding)
            }
            Quantizer::Twin(t) => {
                self.standard_op_points
                    .push(format!("{base}: {}", a.quantizer.describe()));
                q.twin(&x, t, a.rounding)
            }
        };
        if let Some(s) = &migration {
            y = g.node("Mul", &format!("{base}/unmigrated"), &[&y, s], &[]);
        }
        if let Some(z) = &a.shift {
            let z = g.floats(&format!("{base}/unshift"), &dims, z);
            y = g.node("Add", &format!("{base}/unshifted"), &[&y, &z], &[]);
        }
        Ok(y)
    }
}

/// Writes one quantizer's operators on a value whose channels lie on `axis`.
struct QuantizeAt<'g> {
    g: &'g mut OnnxGraph,
    base: &'g str,
    axis: usize,
    rank: usize,
    channels: usize,
    style: Style,
    rounding: Rounding,
}

/// QONNX `Quant`'s attributes for a quantizer of the plan: symmetric ones are signed and
/// narrow (±(2^(b−1) − 1)), asymmetric ones unsigned over `[0, 2^b − 1]`.
fn quant_attrs(symmetric: bool, rounding: Rounding) -> Vec<(&'static str, Attr)> {
    let mode = match rounding {
        Rounding::HalfUp => "HALF_UP",
        Rounding::HalfEven => "ROUND",
    };
    vec![
        ("signed", Attr::Int(i64::from(symmetric))),
        ("narrow", Attr::Int(i64::from(symmetric))),
        ("rounding_mode", Attr::Str(mode.into())),
    ]
}

impl QuantizeAt<'_> {
    fn name(&self, what: &str) -> String {
        format!("{}/{what}", self.base)
    }

    /// Q/DQ with per-channel `scale` and integer `zero` (one value: per tensor), then a clamp
    /// to the plan's codes `lo..=hi` where the type holds more.
    fn qdq(
        &mut self,
        x: &str,
        scale: &[f32],
        zero: &[i32],
        element: ElementType,
        (lo, hi): (i32, i32),
    ) -> String {
        let per_channel = scale.len() > 1;
        let dims: Vec<usize> = if per_channel {
            vec![scale.len()]
        } else {
            Vec::new()
        };
        let s = self.g.floats(&self.name("scale"), &dims, scale);
        let z = self
            .g
            .codes(&self.name("zero_point"), element, &dims, zero, "");
        let attrs: Vec<(&str, Attr)> = if per_channel {
            vec![("axis", Attr::Int(self.axis as i64))]
        } else {
            Vec::new()
        };
        let q = self
            .g
            .node("QuantizeLinear", &self.name("q"), &[x, &s, &z], &attrs);
        let mut y = self
            .g
            .node("DequantizeLinear", &self.name("dq"), &[&q, &s, &z], &attrs);
        let (tmin, tmax) = element.range();
        let bound = |code: i32| -> Vec<f32> {
            scale
                .iter()
                .zip(zero.iter().cycle())
                .map(|(&s, &z)| (code as f32 - z as f32) * s)
                .collect()
        };
        let bdims = if per_channel {
            broadcast_dims(scale.len(), self.axis, self.rank)
        } else {
            Vec::new()
        };
        if lo > tmin {
            let b = self.g.floats(&self.name("lowest"), &bdims, &bound(lo));
            y = self
                .g
                .node("Max", &self.name("clamped_low"), &[&y, &b], &[]);
        }
        if hi < tmax {
            let b = self.g.floats(&self.name("highest"), &bdims, &bound(hi));
            y = self.g.node("Min", &self.name("clamped"), &[&y, &b], &[]);
        }
        y
    }

    fn uniform(&mut self, x: &str, u: &Uniform) -> String {
        let (qmin, qmax) = Uniform::levels(u.bits, u.symmetric);
        let n = if u.scale.len() == 1 { 1 } else { self.channels };
        let (scale, zero): (Vec<f32>, Vec<i32>) = (0..n)
            .map(|c| {
                let (s, z) = u.parameters(c);
                (s, z as i32)
            })
            .unzip();
        match self.style {
            Style::Qdq => {
                let element = ElementType::holding(u.bits, u.symmetric);
                self.qdq(x, &scale, &zero, element, (qmin as i32, qmax as i32))
            }
            Style::Qonnx => self.quant(x, &scale, &zero, u.bits, u.symmetric),
        }
    }

    fn power_of_two(&mut self, x: &str, p: &PowerOfTwoFactor) -> String {
        let scale: Vec<f32> = (0..self.channels)
            .map(|c| p.channel_scale(p.alpha.get(c).copied().unwrap_or(0)))
            .collect();
        let zero = vec![p.zero_point as i32; self.channels];
        match self.style {
            Style::Qdq => {
                let element = ElementType::holding(p.bits, false);
                self.qdq(x, &scale, &zero, element, (0, (1 << p.bits) - 1))
            }
            Style::Qonnx => self.quant(x, &scale, &zero, p.bits, false),
        }
    }

    /// One QONNX `Quant` with per-channel `scale` and `zero` (one value: per tensor), shaped
    /// to broadcast over the value.
    fn quant(&mut self, x: &str, scale: &[f32], zero: &[i32], bits: u8, symmetric: bool) -> String {
        let dims = if scale.len() > 1 {
            broadcast_dims(scale.len(), self.axis, self.rank)
        } else {
            Vec::new()
        };
        let zero: Vec<f32> = zero.iter().map(|&z| z as f32).collect();
        let s = self.g.floats(&self.name("scale"), &dims, scale);
        let z = self.g.floats(&self.name("zero_point"), &dims, &zero);
        let b = self.g.scalar_f32(&self.name("bits"), f32::from(bits));
        self.g.node_in(
            QONNX_DOMAIN,
            "Quant",
            &self.name("quantized"),
            &[x, &s, &z, &b],
            &quant_attrs(symmetric, self.rounding),
        )
    }

    /// `round(t)` as the plan rounds: `Round` is half to even, `Floor(t + ½)` half up.
    fn round(&mut self, t: &str, rounding: Rounding, what: &str) -> String {
        match rounding {
            Rounding::HalfEven => self.g.node("Round", &self.name(what), &[t], &[]),
            Rounding::HalfUp => {
                let half = self.g.scalar_f32(&self.name("half"), 0.5);
                let up = self.g.node(
                    "Add",
                    &self.name(&format!("{what}_plus_half")),
                    &[t, &half],
                    &[],
                );
                self.g.node("Floor", &self.name(what), &[&up], &[])
            }
        }
    }

    /// `Clip(t, lo, hi)` with scalar bounds.
    fn clip(&mut self, t: &str, lo: f32, hi: f32, what: &str) -> String {
        let lo = self.g.scalar_f32(&self.name(&format!("{what}_min")), lo);
        let hi = self.g.scalar_f32(&self.name(&format!("{what}_max")), hi);
        self.g.node("Clip", &self.name(what), &[t, &lo, &hi], &[])
    }

    /// Log levels `Δ·2^(−q/root)`, `q = clamp(round(−root·log2(x/Δ)), 0, max)`, zero (or the
    /// smallest level) below them, as [`Log::fake`] computes.
    fn log(&mut self, x: &str, l: &Log, rounding: Rounding) -> String {
        let g_scale = self.g.scalar_f32(&self.name("scale"), l.scale);
        let t = self.g.node("Div", &self.name("t"), &[x, &g_scale], &[]);
        let tiny = self.g.scalar_f32(&self.name("tiny"), f32::MIN_POSITIVE);
        let positive = self
            .g
            .node("Max", &self.name("positive"), &[&t, &tiny], &[]);
        let ln = self.g.node("Log", &self.name("ln"), &[&positive], &[]);
        let factor = -(l.root as f32) / std::f32::consts::LN_2;
        let factor = self.g.scalar_f32(&self.name("to_code"), factor);
        let exponent = self
            .g
            .node("Mul", &self.name("exponent"), &[&ln, &factor], &[]);
        let q = self.round(&exponent, rounding, "code");
        let zero = self.g.scalar_f32(&self.name("zero"), 0.0);
        let q = self
            .g
            .node("Max", &self.name("code_nonnegative"), &[&q, &zero], &[]);
        let max = self.g.scalar_f32(&self.name("max_level"), l.max_level());
        let not_positive = self
            .g
            .node("LessOrEqual", &self.name("not_positive"), &[x, &zero], &[]);
        let level = |this: &mut Self, q: &str| {
            let root = this.g.scalar_f32(&this.name("root"), l.root as f32);
            let neg = this.g.node("Neg", &this.name("minus_code"), &[q], &[]);
            let e = this.g.node("Div", &this.name("power"), &[&neg, &root], &[]);
            let two = this.g.scalar_f32(&this.name("two"), 2.0);
            let p = this.g.node("Pow", &this.name("fraction"), &[&two, &e], &[]);
            this.g
                .node("Mul", &this.name("level"), &[&g_scale, &p], &[])
        };
        if l.zero_code {
            let under = self
                .g
                .node("Greater", &self.name("underflow"), &[&q, &max], &[]);
            let zeroed = self
                .g
                .node("Or", &self.name("to_zero"), &[&not_positive, &under], &[]);
            let v = level(self, &q);
            self.g
                .node("Where", &self.name("quantized"), &[&zeroed, &zero, &v], &[])
        } else {
            let capped = self
                .g
                .node("Min", &self.name("code_capped"), &[&q, &max], &[]);
            let q = self.g.node(
                "Where",
                &self.name("code_final"),
                &[&not_positive, &max, &capped],
                &[],
            );
            level(self, &q)
        }
    }

    /// Twin-uniform ranges, as [`Twin::fake`] computes.
    fn twin(&mut self, x: &str, t: &Twin, rounding: Rounding) -> String {
        let top = t.top();
        let small = self.g.scalar_f32(&self.name("small"), t.small);
        let large = self.g.scalar_f32(&self.name("large"), t.large);
        let fine = self.g.node("Div", &self.name("fine_t"), &[x, &small], &[]);
        let fine = self.round(&fine, rounding, "fine");
        let coarse = self
            .g
            .node("Div", &self.name("coarse_t"), &[x, &large], &[]);
        let coarse = self.round(&coarse, rounding, "coarse");
        let coarse = self.clip(&coarse, 0.0, top, "coarse_clipped");
        let coarse = self
            .g
            .node("Mul", &self.name("coarse_value"), &[&coarse, &large], &[]);
        let zero = self.g.scalar_f32(&self.name("zero"), 0.0);
        if t.signed_split {
            let fine = self.clip(&fine, -top - 1.0, 0.0, "fine_clipped");
            let fine = self
                .g
                .node("Mul", &self.name("fine_value"), &[&fine, &small], &[]);
            let negative = self
                .g
                .node("Less", &self.name("negative"), &[x, &zero], &[]);
            self.g.node(
                "Where",
                &self.name("quantized"),
                &[&negative, &fine, &coarse],
                &[],
            )
        } else {
            let top_c = self.g.scalar_f32(&self.name("top"), top);
            let in_fine = self
                .g
                .node("LessOrEqual", &self.name("in_fine"), &[&fine, &top_c], &[]);
            let fine = self
                .g
                .node("Max", &self.name("fine_clipped"), &[&fine, &zero], &[]);
            let fine = self
                .g
                .node("Mul", &self.name("fine_value"), &[&fine, &small], &[]);
            self.g.node(
                "Where",
                &self.name("quantized"),
                &[&in_fine, &fine, &coarse],
                &[],
            )
        }
    }
}

/// A weight through its quantizer (then `/ r` per input channel): integer codes and a
/// `DequantizeLinear`, or the quantized values and a QONNX `Quant`.
#[allow(clippy::too_many_arguments)]
fn weight(
    g: &mut OnnxGraph,
    graph: &Graph,
    wp: &WeightPlan,
    style: Style,
    name: &str,
    dims: &[usize],
    data: &[f32],
    doc: &str,
) -> String {
    let op = &graph.node(wp.node).op;
    let outs = out_channels(op);
    let per_out = data.len() / outs;
    let r = |e: usize| {
        wp.input_scale
            .as_ref()
            .map_or(1.0, |s| s[input_channel(op, e)])
    };
    let u = &wp.quantizer;
    let codes: Vec<i32> = data
        .iter()
        .enumerate()
        .map(|(e, &w)| u.code(w * r(e), e / per_out) as i32)
        .collect();
    let per_channel = u.scale.len() > 1;
    let scale: Vec<f32> = if per_channel {
        (0..outs).map(|c| u.parameters(c).0).collect()
    } else {
        vec![u.scale[0]]
    };
    let mut doc = doc.to_string();
    let mut note = |text: &str| {
        doc.push_str(if doc.is_empty() { "" } else { "; " });
        doc.push_str(text);
    };
    if wp.input_scale.is_some() {
        note("the weight times the input-channel factors `r`, divided out after its quantizer");
    }
    let quantized = match style {
        Style::Qdq => {
            let element = ElementType::holding(wp.bits, true);
            let w = g.codes(name, element, dims, &codes, &doc);
            let sdims = if per_channel { vec![outs] } else { Vec::new() };
            let s = g.floats(&format!("{name}/scale"), &sdims, &scale);
            let attrs: Vec<(&str, Attr)> = if per_channel {
                vec![("axis", Attr::Int(0))]
            } else {
                Vec::new()
            };
            g.node("DequantizeLinear", &format!("{name}/dq"), &[&w, &s], &attrs)
        }
        Style::Qonnx => {
            // The plan's quantized values, code × scale: the Quant gives them back unchanged
            // (x/scale is within an ulp of the code), so the codes are the plan's whatever
            // the rounding mode.
            note("the plan's quantized values (code × scale), which the Quant keeps");
            let values: Vec<f32> = codes
                .iter()
                .enumerate()
                .map(|(e, &q)| q as f32 * scale[if per_channel { e / per_out } else { 0 }])
                .collect();
            let w = g.initializer(name, dims, &values, &doc);
            let sdims: Vec<usize> = if per_channel {
                std::iter::once(outs)
                    .chain(std::iter::repeat_n(1, dims.len() - 1))
                    .collect()
            } else {
                Vec::new()
            };
            let s = g.floats(&format!("{name}/scale"), &sdims, &scale);
            let z = g.scalar_f32(&format!("{name}/zero_point"), 0.0);
            let b = g.scalar_f32(&format!("{name}/bits"), f32::from(wp.bits));
            g.node_in(
                QONNX_DOMAIN,
                "Quant",
                &format!("{name}/quantized"),
                &[&w, &s, &z, &b],
                &quant_attrs(true, Rounding::HalfEven),
            )
        }
    };
    if wp.input_scale.is_none() {
        return quantized;
    }
    // r as a tensor over the weight's first two axes ([out, in/groups, 1, 1] or [out, in]).
    let rdims: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if i < 2 { d } else { 1 })
        .collect();
    let inner: usize = dims[2..].iter().product();
    let factors: Vec<f32> = (0..dims[0] * dims[1]).map(|i| r(i * inner)).collect();
    let f = g.floats(&format!("{name}/input_factors"), &rdims, &factors);
    g.node(
        "Div",
        &format!("{name}/dequantized"),
        &[&quantized, &f],
        &[],
    )
}
