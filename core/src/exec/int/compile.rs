//! Compiling (graph, folded weights, quant plan) into an [`IntProgram`]: integer weights and
//! biases, dyadic multipliers, thresholds and tables — every constant, so that the forward pass
//! needs no scale. A tensor the plan leaves unquantized, or quantized in a way the integer
//! arithmetic cannot represent, is an error that names it.

use super::dyadic::Dyadic;
use super::encoding::{Encoding, log_level};
use super::kernels::PackedA;
use super::nonlinear::LevelEncoder;
use super::nonlinear::gelu::{GeluConstants, SIGMOID_BITS};
use super::nonlinear::layernorm::MAX_EXACT_VARIANCE;
use super::nonlinear::softmax::{COMPILED_INPUT_BITS, EXP_BITS, PROBABILITY_BITS};
use super::ops::elementwise::{Add, ChannelMap, ClassPos, Pool};
use super::ops::layernorm::{Forms, LayerNorm};
use super::ops::linear_attention::{Context, Divide, Normalize, Query};
use super::ops::softmax_attention::{Mix, ScoresSoftmax};
use super::ops::weighted::{Geometry, Output, Weighted, Weights};
use super::program::{IntProgram, PointCodes, Step, StepOp};
use super::requant::{Activation, Encoder, Epilogue, Requant, Target};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Op};
use crate::quant::plan::{ActivationPlan, QuantPlan, WeightPlan, input_channel, out_channels};
use crate::quant::points::{TensorKind, is_point, moves_values, points, producer};
use crate::quant::quantizer::{Quantizer, Rounding};
use crate::weights::{FoldedWeights, NodeParams};

struct Compiler<'a> {
    graph: &'a Graph,
    params: &'a FoldedWeights,
    /// Encoding of each stored value (the first point's for a linear-attention node).
    value: Vec<Option<Encoding>>,
    /// All activation plans at each node.
    plans: Vec<Vec<&'a ActivationPlan>>,
    weights: Vec<Option<&'a WeightPlan>>,
}

/// `value`, or an error naming the layer and what its plan lacks (a plan is plain data: one
/// built by hand or edited may miss what the builder always provides).
fn need<T>(graph: &Graph, layer: &str, value: Option<T>, what: &str) -> Result<T> {
    value.map_or_else(
        || fail(graph, layer, format!("the quant plan gives no {what} here")),
        Ok,
    )
}

fn fail<T>(graph: &Graph, layer: &str, message: impl Into<String>) -> Result<T> {
    Err(Error::Graph {
        model: graph.model.clone(),
        layer: layer.to_string(),
        message: message.into(),
    })
}

/// Refuses a step whose accumulator can pass `limit`: `worst` is the largest magnitude it can
/// reach, bounded from the program's own constants and code ranges.
fn accumulator_fits(
    graph: &Graph,
    layer: &str,
    worst: u128,
    limit: u128,
    what: impl std::fmt::Display,
) -> Result<()> {
    if worst <= limit {
        return Ok(());
    }
    fail(
        graph,
        layer,
        format!(
            "{what} can reach {worst}, beyond the {limit} its accumulator holds; the integer \
             executor cannot run this layer exactly (use narrower codes or a smaller layer)"
        ),
    )
}

/// The Softmax's probabilities (at `2^−PROBABILITY_BITS`) as the post-Softmax point's codes:
/// its encoder as thresholds over `0 ..= 2^PROBABILITY_BITS`.
fn probability_codes(probs: &Encoding, name: &str) -> Result<LevelEncoder> {
    let enc = Encoder::new(
        &[2f64.powi(-(PROBABILITY_BITS as i32))],
        &[0.0],
        probs,
        1,
        name,
    )?;
    Ok(LevelEncoder::from_monotone(
        |p| enc.encode(p, 0),
        0,
        1 << PROBABILITY_BITS,
    ))
}

/// The largest `Σ_j |table[code_j]|` over one row of probabilities that the integer Softmax can
/// produce. Its rows sum to one (within `N/2` units of `2^−24`), so no row holds many large
/// probabilities: for each code reachable from the Softmax, with `lo` the smallest probability
/// encoded to it, `|table[code]| ≤ a·lo` (`a` the largest such ratio) or, for the codes of the
/// smallest probabilities (`lo = 0`), `≤ b`; hence the sum is at most `a·Σp + N·b`.
fn mix_bound(table: &[i64], probs: &Encoding, tokens: usize, name: &str) -> Result<u128> {
    let levels = probability_codes(probs, name)?;
    let (mut a, mut b) = (0.0f64, 0u128);
    for (i, &code) in levels.codes.iter().enumerate() {
        let d = table.get(code as usize).map_or(0, |v| v.unsigned_abs());
        let lo = if i == 0 {
            0
        } else {
            levels.thresholds[i - 1] + 1
        };
        if lo <= 0 {
            b = b.max(d as u128);
        } else {
            a = a.max(d as f64 / lo as f64);
        }
    }
    let total = (1u128 << PROBABILITY_BITS) + tokens as u128 / 2 + 1;
    Ok((a * total as f64).ceil() as u128 + tokens as u128 * b)
}

/// The largest value of an i32 accumulator.
const I32_LIMIT: u128 = i32::MAX as u128;
/// The largest value of an i64 accumulator that leaves room for the bias and the
/// requantization's product (which the executors form in i128).
const I64_LIMIT: u128 = 1 << 62;

/// Compiles a model for the integer executor.
pub fn compile(graph: &Graph, params: &FoldedWeights, plan: &QuantPlan) -> Result<IntProgram> {
    plan.check_model(graph)?;
    params.check_graph(graph)?;
    let n = graph.nodes().len();
    let mut plans: Vec<Vec<&ActivationPlan>> = vec![Vec::new(); n];
    let mut point_codes = Vec::new();
    for p in points(graph) {
        let Some(a) = plan.activations.iter().find(|a| a.point == p.name) else {
            return fail(
                graph,
                &p.name,
                "the quant plan leaves this tensor unquantized; the integer executor needs a \
                 quantizer for every stored tensor (rebuild the plan with `qvit eval --recipe …`)",
            );
        };
        if a.rounding != Rounding::HalfUp {
            return fail(
                graph,
                &p.name,
                format!(
                    "the plan rounds activations {}, and integer arithmetic rounds half up (a \
                     shift's `(x + 2^(k−1)) >> k`); half-even rounding is for the fake-quant \
                     executor, to compare with an ONNX export",
                    a.rounding.name()
                ),
            );
        }
        let encoding = Encoding::of(a).map_err(|e| with_model(e, graph))?;
        point_codes.push(PointCodes {
            name: p.name.clone(),
            node: p.node,
            layout: p.layout.clone(),
            encoding,
        });
        plans[p.node].push(a);
    }
    let mut weights = vec![None; n];
    for w in &plan.weights {
        if w.node < n {
            weights[w.node] = Some(w);
        }
    }
    let mut c = Compiler {
        graph,
        params,
        value: vec![None; n],
        plans,
        weights,
    };
    let Some(input_plan) = c.plans[0].first() else {
        return fail(
            graph,
            "input",
            "the quant plan has no quantizer for the image",
        );
    };
    let Quantizer::Uniform(input) = &input_plan.quantizer else {
        return fail(graph, "input", "the image must be quantized uniformly");
    };
    let input = input.clone();
    c.value[0] = Some(c.point(0, 0)?);

    let mut steps: Vec<Step> = Vec::new();
    let mut logit_scale = 1.0;
    for id in 1..n {
        let node = graph.node(id);
        let stored = is_point(graph, id) || moves_values(&node.op) || id == graph.output();
        if !stored {
            continue;
        }
        let (op, inputs) = c.step(id, &mut logit_scale)?;
        steps.push(Step {
            node: id,
            name: node.name.clone(),
            inputs,
            op,
        });
    }
    let mut last_use = vec![0; n];
    for (i, s) in steps.iter().enumerate() {
        for &x in &s.inputs {
            last_use[x] = i;
        }
    }
    last_use[graph.output()] = usize::MAX;
    Ok(IntProgram {
        model: graph.model.clone(),
        recipe: plan.recipe.clone(),
        input,
        steps,
        points: point_codes,
        output: graph.output(),
        logit_scale,
        last_use,
        nodes: n,
    })
}

fn with_model(e: Error, graph: &Graph) -> Error {
    match e {
        Error::Graph { layer, message, .. } => Error::Graph {
            model: graph.model.clone(),
            layer,
            message,
        },
        other => other,
    }
}

/// Per-channel `(scale, zero, offset)` vectors of a linear encoding over `channels`.
struct Lin {
    scale: Vec<f64>,
    zero: Vec<i32>,
    offset: Vec<f64>,
    qmin: i32,
    qmax: i32,
}

impl Compiler<'_> {
    fn name(&self, id: NodeId) -> &str {
        &self.graph.node(id).name
    }

    /// `(scale, zero, offset)` of channel `c` of the encoding used at `id`, or an error naming
    /// the layer when the encoding is not linear or holds no values.
    fn linear_at(&self, id: NodeId, e: &Encoding, c: usize) -> Result<(f64, i32, f64)> {
        need(
            self.graph,
            self.name(id),
            e.linear(c),
            "uniform scale and zero-point (log-quantized or empty)",
        )
    }

    /// The encoding of the `i`-th point at `id`.
    fn point(&self, id: NodeId, i: usize) -> Result<Encoding> {
        match self.plans[id].get(i) {
            Some(a) => Encoding::of(a).map_err(|e| with_model(e, self.graph)),
            None => fail(
                self.graph,
                self.name(id),
                "the quant plan leaves this tensor unquantized; the integer executor needs a \
                 quantizer for every stored tensor",
            ),
        }
    }

    /// The point at `id` of `kind`.
    fn point_of_kind(&self, id: NodeId, kind: TensorKind) -> Result<Encoding> {
        match self.plans[id].iter().position(|a| a.kind == kind) {
            Some(i) => self.point(id, i),
            None => fail(
                self.graph,
                self.name(id),
                format!("no {kind:?} quantizer in the plan"),
            ),
        }
    }

    fn linear(&self, id: NodeId, channels: usize) -> Result<Lin> {
        let Some(e) = &self.value[id] else {
            return fail(self.graph, self.name(id), "read before it was computed");
        };
        let Encoding::Linear { qmin, qmax, .. } = e else {
            return fail(
                self.graph,
                self.name(id),
                "is log-quantized, but its reader needs uniform codes",
            );
        };
        let mut l = Lin {
            scale: Vec::with_capacity(channels),
            zero: Vec::with_capacity(channels),
            offset: Vec::with_capacity(channels),
            qmin: *qmin,
            qmax: *qmax,
        };
        for c in 0..channels {
            let (s, z, o) = self.linear_at(id, e, c)?;
            l.scale.push(s);
            l.zero.push(z);
            l.offset.push(o);
        }
        Ok(l)
    }

    /// Walks from a stored node back to its producer: the activation fused on the way, after
    /// checking that every BatchNorm on it was folded.
    fn chain(&self, id: NodeId) -> Result<(NodeId, Option<Op>)> {
        let p = producer(self.graph, id);
        let mut act = None;
        let mut n = id;
        while n != p {
            let op = &self.graph.node(n).op;
            match op {
                Op::BatchNorm2d { .. } => {
                    if !matches!(self.params.nodes[n], NodeParams::Folded) {
                        return fail(
                            self.graph,
                            self.name(n),
                            "this BatchNorm could not be folded into a conv; the integer \
                             executor runs folded BatchNorms only",
                        );
                    }
                }
                other => act = Some(other.clone()),
            }
            n = self.graph.node(n).inputs[0];
        }
        Ok((p, act))
    }

    fn activation(&self, id: NodeId, act: &Option<Op>) -> Result<Activation> {
        match act {
            None => Ok(Activation::None),
            Some(Op::Relu) => Ok(Activation::Relu),
            Some(Op::Hardswish) => Ok(Activation::Hardswish),
            Some(op) => fail(
                self.graph,
                self.name(id),
                format!(
                    "a fused {} here is not supported by the integer executor",
                    op.kind()
                ),
            ),
        }
    }

    fn step(&mut self, id: NodeId, logit_scale: &mut f64) -> Result<(StepOp, Vec<NodeId>)> {
        let graph = self.graph;
        let node = graph.node(id);
        if moves_values(&node.op) {
            let inputs = node.inputs.clone();
            let (op, enc) = match node.op {
                Op::Concat => {
                    let parts: Vec<(&Encoding, usize)> = inputs
                        .iter()
                        .map(|&i| {
                            (
                                self.value[i].as_ref().expect("computed"),
                                graph.node(i).shape[0],
                            )
                        })
                        .collect();
                    let Some(e) = Encoding::concat(&parts) else {
                        return fail(
                            graph,
                            &node.name,
                            "cannot concatenate log-quantized tensors",
                        );
                    };
                    (StepOp::Concat, e)
                }
                _ => (
                    StepOp::TakeClassToken { dim: node.shape[0] },
                    self.value[inputs[0]].clone().expect("computed"),
                ),
            };
            self.value[id] = Some(enc);
            return Ok((op, inputs));
        }
        let (pid, act) = self.chain(id)?;
        let prod = graph.node(pid);
        let inputs = prod.inputs.clone();
        let out_enc = if id == graph.output() || self.plans[id].is_empty() {
            None
        } else {
            Some(self.point(id, 0)?)
        };
        let op = match &prod.op {
            Op::Conv2d(_) | Op::PatchEmbed(_) | Op::Linear(_) => StepOp::Weighted(Box::new(
                self.weighted(id, pid, &act, out_enc.as_ref(), logit_scale)?,
            )),
            Op::Add => StepOp::Add(self.add(
                id,
                &act,
                need(graph, &node.name, out_enc.as_ref(), "an output quantizer")?,
            )?),
            Op::GlobalAvgPool => {
                let x = inputs[0];
                let shape = &graph.node(x).shape;
                let (ch, plane) = (shape[0], shape[1] * shape[2]);
                let l = self.linear(x, ch)?;
                accumulator_fits(
                    graph,
                    &node.name,
                    plane as u128 * (l.qmax - l.qmin) as u128,
                    I64_LIMIT,
                    format!("the sum over {plane} positions"),
                )?;
                let scale: Vec<f64> = l.scale.iter().map(|s| s / plane as f64).collect();
                StepOp::Pool(Pool {
                    plane,
                    zero: l.zero,
                    out: Encoder::new(
                        &scale,
                        &l.offset,
                        need(graph, &node.name, out_enc.as_ref(), "an output quantizer")?,
                        ch,
                        &node.name,
                    )?,
                })
            }
            Op::ClassTokenPosEmbed { dim, .. } => StepOp::ClassPos(self.class_pos(
                id,
                pid,
                *dim,
                need(graph, &node.name, out_enc.as_ref(), "an output quantizer")?,
            )?),
            Op::LayerNorm { dim, .. } => StepOp::LayerNorm(self.layer_norm(
                id,
                pid,
                *dim,
                &act,
                need(graph, &node.name, out_enc.as_ref(), "an output quantizer")?,
            )?),
            Op::AttentionScores {
                heads,
                head_dim,
                scale,
            } => {
                if !matches!(act, Some(Op::Softmax)) {
                    return fail(
                        graph,
                        &node.name,
                        "attention logits must be followed by Softmax",
                    );
                }
                let qkv = inputs[0];
                let tokens = graph.node(qkv).shape[0];
                let l = self.linear(qkv, 3 * heads * head_dim)?;
                self.per_tensor(qkv, &l)?;
                let span = (l.qmax - l.qmin) as u128;
                accumulator_fits(
                    graph,
                    &node.name,
                    *head_dim as u128 * span * span,
                    I32_LIMIT,
                    format!("q·kᵀ over {head_dim} dimensions of codes spanning {span}"),
                )?;
                // The logits' kernel holds centred codes in i16.
                accumulator_fits(
                    graph,
                    &node.name,
                    span,
                    i16::MAX as u128,
                    "a centred q or k code",
                )?;
                let s_acc = l.scale[0] * l.scale[0] * scale;
                let j = COMPILED_INPUT_BITS;
                accumulator_fits(
                    graph,
                    &node.name,
                    (tokens as u128) << EXP_BITS,
                    I64_LIMIT,
                    format!("the Softmax's row sum over {tokens} tokens"),
                )?;
                let codes = probability_codes(
                    need(graph, &node.name, out_enc.as_ref(), "an output quantizer")?,
                    &node.name,
                )?;
                StepOp::ScoresSoftmax(ScoresSoftmax {
                    heads: *heads,
                    head_dim: *head_dim,
                    tokens,
                    zero: l.zero[0],
                    lift: (span <= 255).then_some(-l.qmin),
                    // Real logit = x·ln 2·2^−j: the exponential is then 2^(x·2^−j).
                    to_x: Requant::new(
                        &[s_acc],
                        &[0.0],
                        &Target {
                            scale: &[std::f64::consts::LN_2 * 2f64.powi(-(j as i32))],
                            zero: &[0],
                            offset: &[0.0],
                            range: (-(1 << 30), 1 << 30),
                        },
                        1,
                        &node.name,
                    )?,
                    input_bits: j,
                    codes,
                })
            }
            Op::AttentionMix { heads, head_dim } => {
                let (probs, qkv) = (inputs[0], inputs[1]);
                let tokens = graph.node(qkv).shape[0];
                let (table, unit) = self.decode_table(probs)?;
                let largest = table.iter().map(|v| v.abs()).max().unwrap_or(0);
                if largest > 1 << 15 {
                    return fail(
                        graph,
                        &node.name,
                        format!("probability codes decode to {largest}, beyond 2^15"),
                    );
                }
                let v = self.linear(qkv, 3 * heads * head_dim)?;
                self.per_tensor(qkv, &v)?;
                let worst = mix_bound(
                    &table,
                    self.value[probs].as_ref().expect("computed"),
                    tokens,
                    &node.name,
                )? * (v.qmax - v.qmin) as u128;
                accumulator_fits(
                    graph,
                    &node.name,
                    worst,
                    I32_LIMIT,
                    format!("P·V over {tokens} tokens"),
                )?;
                let table: Vec<i32> = table.iter().map(|&v| v as i32).collect();
                StepOp::Mix(Mix {
                    heads: *heads,
                    head_dim: *head_dim,
                    tokens,
                    probability: table,
                    zero: v.zero[0],
                    out: Encoder::new(
                        &[unit * v.scale[0]],
                        &[0.0],
                        need(graph, &node.name, out_enc.as_ref(), "an output quantizer")?,
                        heads * head_dim,
                        &node.name,
                    )?,
                })
            }
            Op::LinearAttentionContext { heads, head_dim } => {
                let ms = inputs[0];
                let (s, z) = self.head_encodings(ms, *heads, *head_dim)?;
                let prod_enc = self.point_of_kind(id, TensorKind::AttentionProduct)?;
                let ks_enc = self.point_of_kind(id, TensorKind::AttentionKeySum)?;
                let l = self.linear(ms, heads * 3 * head_dim)?;
                let (tokens, span) = (spatial(graph, ms), (l.qmax - l.qmin) as u128);
                accumulator_fits(
                    graph,
                    &node.name,
                    tokens as u128 * span * span,
                    I32_LIMIT,
                    format!("v·relu(k)ᵀ over {tokens} tokens of codes spanning {span}"),
                )?;
                let sq: Vec<f64> = s.iter().map(|v| v * v).collect();
                StepOp::Context(Context {
                    heads: *heads,
                    head_dim: *head_dim,
                    tokens: spatial(graph, ms),
                    zero: z,
                    products: Encoder::new(&sq, &[0.0], &prod_enc, *heads, &node.name)?,
                    key_sums: Encoder::new(&s, &[0.0], &ks_enc, *heads, &node.name)?,
                })
            }
            Op::LinearAttentionQuery { heads, head_dim } => {
                let (ms, ctx) = (inputs[0], inputs[1]);
                let (s, z) = self.head_encodings(ms, *heads, *head_dim)?;
                let span = |e: &Encoding| {
                    let (lo, hi) = e.code_range();
                    (hi as i64 - lo as i64) as u128
                };
                let context_span = span(&self.point_of_kind(ctx, TensorKind::AttentionProduct)?)
                    .max(span(&self.point_of_kind(ctx, TensorKind::AttentionKeySum)?));
                let l = self.linear(ms, heads * 3 * head_dim)?;
                accumulator_fits(
                    graph,
                    &node.name,
                    *head_dim as u128 * context_span * (l.qmax - l.qmin) as u128,
                    I32_LIMIT,
                    format!("context·relu(q) over {head_dim} dimensions"),
                )?;
                let (s_kv, z_kv) = self.per_tensor_point(ctx, TensorKind::AttentionProduct)?;
                let (s_ks, z_ks) = self.per_tensor_point(ctx, TensorKind::AttentionKeySum)?;
                let div_enc = self.point_of_kind(id, TensorKind::AttentionProduct)?;
                let dvs_enc = self.point_of_kind(id, TensorKind::AttentionDivisor)?;
                let a: Vec<f64> = s.iter().map(|v| v * s_kv).collect();
                let b: Vec<f64> = s.iter().map(|v| v * s_ks).collect();
                StepOp::Query(Query {
                    heads: *heads,
                    head_dim: *head_dim,
                    tokens: spatial(graph, ms),
                    zero: z,
                    product_zero: z_kv,
                    key_sum_zero: z_ks,
                    dividends: Encoder::new(&a, &[0.0], &div_enc, *heads, &node.name)?,
                    divisors: Encoder::new(&b, &[0.0], &dvs_enc, *heads, &node.name)?,
                })
            }
            Op::LinearAttentionNormalize {
                heads, head_dim, ..
            } => StepOp::Normalize(self.normalize(
                id,
                inputs[0],
                *heads,
                *head_dim,
                need(graph, &node.name, out_enc.as_ref(), "an output quantizer")?,
            )?),
            other => {
                return fail(
                    graph,
                    &node.name,
                    format!("the integer executor has no step for {}", other.kind()),
                );
            }
        };
        // The value's encoding for readers: the point's (the first one for attention nodes).
        self.value[id] = out_enc;
        Ok((op, inputs))
    }

    fn per_tensor(&self, id: NodeId, l: &Lin) -> Result<()> {
        let same = l.scale.iter().all(|&s| s == l.scale[0])
            && l.zero.iter().all(|&z| z == l.zero[0])
            && l.offset.iter().all(|&o| o == 0.0);
        if same {
            Ok(())
        } else {
            fail(
                self.graph,
                self.name(id),
                "must have one scale and zero-point for the attention products",
            )
        }
    }

    fn per_tensor_point(&self, id: NodeId, kind: TensorKind) -> Result<(f64, i32)> {
        let e = self.point_of_kind(id, kind)?;
        match (&e, e.is_per_tensor()) {
            (Encoding::Linear { .. }, true) => {
                let (s, z, _) = self.linear_at(id, &e, 0)?;
                Ok((s, z))
            }
            _ => fail(
                self.graph,
                self.name(id),
                format!("its {kind:?} part must be uniform per tensor"),
            ),
        }
    }

    /// One `(scale, zero)` per head of a multi-scale tensor `[heads·3d, H, W]`.
    fn head_encodings(&self, ms: NodeId, heads: usize, d: usize) -> Result<(Vec<f64>, Vec<i32>)> {
        let l = self.linear(ms, heads * 3 * d)?;
        let mut s = Vec::new();
        let mut z = Vec::new();
        for h in 0..heads {
            let r = h * 3 * d..(h + 1) * 3 * d;
            let ok = l.scale[r.clone()].iter().all(|&v| v == l.scale[r.start])
                && l.zero[r.clone()].iter().all(|&v| v == l.zero[r.start])
                && l.offset[r.clone()].iter().all(|&v| v == 0.0);
            if !ok {
                return fail(
                    self.graph,
                    self.name(ms),
                    format!("head {h}: q, k and v must share one scale"),
                );
            }
            s.push(l.scale[r.start]);
            z.push(l.zero[r.start]);
        }
        Ok((s, z))
    }

    /// Code → integer at one scale, for probabilities read by `P·V`.
    fn decode_table(&self, id: NodeId) -> Result<(Vec<i64>, f64)> {
        match self.value[id].as_ref().expect("computed") {
            Encoding::Linear { qmin, qmax, .. } if *qmin >= 0 => {
                let e = self.value[id].as_ref().expect("computed");
                if !e.is_per_tensor() {
                    return fail(
                        self.graph,
                        self.name(id),
                        "probabilities must have one scale",
                    );
                }
                let (s, z, _) = self.linear_at(id, e, 0)?;
                Ok(((0..=*qmax).map(|q| (q - z) as i64).collect(), s))
            }
            Encoding::Log(l) => {
                let unit = l.scale as f64 / 32768.0;
                Ok((
                    (0..1i32 << l.bits)
                        .map(|q| (log_level(l, q) / unit).round() as i64)
                        .collect(),
                    unit,
                ))
            }
            _ => fail(
                self.graph,
                self.name(id),
                "signed probability codes are not supported",
            ),
        }
    }

    fn weighted(
        &self,
        id: NodeId,
        pid: NodeId,
        act: &Option<Op>,
        out: Option<&Encoding>,
        logit_scale: &mut f64,
    ) -> Result<Weighted> {
        let graph = self.graph;
        let prod = graph.node(pid);
        let name = &prod.name;
        let Some(wp) = self.weights[pid] else {
            return fail(
                graph,
                name,
                "the quant plan has no weight quantizer for this layer",
            );
        };
        let (w, b): (&[f32], Option<&[f32]>) = match &self.params.nodes[pid] {
            NodeParams::Conv { weight, bias } => (weight, Some(bias)),
            NodeParams::Linear { weight, bias } => (weight, bias.as_deref()),
            _ => return fail(graph, name, "has no weights"),
        };
        let x = prod.inputs[0];
        let (in_ch, groups, geometry, padded) = match &prod.op {
            Op::Conv2d(c) | Op::PatchEmbed(c) => {
                let is = &graph.node(x).shape;
                let os = &prod.shape;
                let in_hw = (is[1], is[2]);
                let out_hw = match prod.op {
                    Op::PatchEmbed(_) => (in_hw.0 / c.stride, in_hw.1 / c.stride),
                    _ => (os[1], os[2]),
                };
                let g = match prod.op {
                    Op::PatchEmbed(_) => Geometry::Patch {
                        conv: *c,
                        in_hw,
                        out_hw,
                    },
                    _ => Geometry::Conv {
                        conv: *c,
                        in_hw,
                        out_hw,
                    },
                };
                (c.in_channels, c.groups, g, c.padding > 0)
            }
            Op::Linear(l) => {
                let numel: usize = graph.node(x).shape.iter().product();
                (
                    l.in_features,
                    1,
                    Geometry::Tokens {
                        tokens: numel / l.in_features,
                    },
                    false,
                )
            }
            _ => unreachable!("weighted ops only"),
        };
        let outs = out_channels(&prod.op);
        let per_out = w.len() / outs;
        let input = self.linear(x, in_ch)?;
        let q = &wp.quantizer;
        let w_scale = |o: usize| -> f64 {
            if q.scale.len() == 1 {
                q.scale[0] as f64
            } else {
                q.scale[(o / q.group.max(1)).min(q.scale.len() - 1)] as f64
            }
        };
        let r = |c: usize| wp.input_scale.as_ref().map_or(1.0, |s| s[c] as f64);
        let codes: Vec<i32> = w
            .iter()
            .enumerate()
            .map(|(e, &v)| q.code(v * r(input_channel(&prod.op, e)) as f32, e / per_out) as i32)
            .collect();
        // Accumulator scale per output channel; every input channel must give the same.
        let mut acc_scale = vec![0.0f64; outs];
        let mut offset = vec![0.0f64; outs];
        for o in 0..outs {
            for t in 0..per_out {
                let e = o * per_out + t;
                let c = input_channel(&prod.op, e);
                let s = w_scale(o) * input.scale[c] / r(c);
                if t == 0 {
                    acc_scale[o] = s;
                } else if ((s - acc_scale[o]) / acc_scale[o]).abs() > 1e-4 {
                    return fail(
                        graph,
                        name,
                        format!(
                            "input `{}` has per-channel scales its weights do not absorb (channel {c})",
                            self.name(x)
                        ),
                    );
                }
                if input.offset[c] != 0.0 {
                    offset[o] += codes[e] as f64 * w_scale(o) / r(c) * input.offset[c];
                }
            }
        }
        if padded && input.offset.iter().any(|&o| o != 0.0) {
            return fail(
                graph,
                name,
                format!(
                    "padding cannot represent the shifted input `{}`",
                    self.name(x)
                ),
            );
        }
        let bias: Vec<i64> = (0..outs)
            .map(|o| b.map_or(0, |b| (b[o] as f64 / acc_scale[o]).round() as i64))
            .collect();
        let narrow_w = wp.bits <= 8;
        let span = input.qmax - input.qmin;
        let lift = if input.qmin < 0 { 128 } else { 0 };
        let narrow_x = input.qmin + lift >= 0 && input.qmax + lift <= 255;
        let depthwise = matches!(&prod.op, Op::Conv2d(c) if c.is_depthwise());
        let mut correction = vec![0i64; outs];
        // The largest |Σ w·x| of any output channel: the sum of its |w| times the widest input
        // (the int8 path adds `lift` to every code, so its inputs reach 255).
        let row_abs = (0..outs)
            .map(|o| {
                codes[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| v.unsigned_abs() as u128)
                    .sum::<u128>()
            })
            .max()
            .unwrap_or(0);
        let depthwise_path = depthwise && narrow_w && span <= 255;
        let int8_path = !depthwise_path && narrow_w && narrow_x;
        let (widest, limit) = if int8_path {
            (255, I32_LIMIT)
        } else if depthwise_path {
            (span as u128, I32_LIMIT)
        } else {
            (span as u128, I64_LIMIT)
        };
        accumulator_fits(
            graph,
            name,
            row_abs * widest,
            limit,
            format!("the weighted sum over {per_out} inputs (K)"),
        )?;
        let weights = if depthwise_path {
            Weights::Depthwise(codes.iter().map(|&v| v as i16).collect())
        } else if int8_path {
            for (o, corr) in correction.iter_mut().enumerate() {
                *corr = (0..per_out)
                    .map(|t| {
                        let e = o * per_out + t;
                        codes[e] as i64 * (input.zero[input_channel(&prod.op, e)] + lift) as i64
                    })
                    .sum();
            }
            let cout_g = outs / groups;
            let packed = (0..groups)
                .map(|g| {
                    let rows: Vec<i8> = codes[g * cout_g * per_out..(g + 1) * cout_g * per_out]
                        .iter()
                        .map(|&v| v as i8)
                        .collect();
                    PackedA::new(&rows, cout_g, per_out)
                })
                .collect();
            Weights::Int8(packed)
        } else {
            Weights::Wide(codes)
        };
        let output = if id == graph.output() {
            let common = acc_scale.iter().copied().fold(0.0, f64::max);
            *logit_scale = common;
            Output::Logits(Requant::new(
                &acc_scale,
                &offset,
                &Target {
                    scale: &[common],
                    zero: &[0],
                    offset: &[0.0],
                    range: (i32::MIN as i64, i32::MAX as i64),
                },
                outs,
                name,
            )?)
        } else {
            let out = need(graph, name, out, "an output quantizer")?;
            if matches!(act, Some(Op::Gelu)) {
                let step = match out {
                    Encoding::Linear { scale, .. } => {
                        scale.iter().copied().fold(f64::INFINITY, f64::min)
                    }
                    Encoding::Log(l) => l.scale as f64 / 256.0,
                };
                let s_g = step / 4.0;
                let Some(constants) = GeluConstants::new(s_g) else {
                    return fail(
                        graph,
                        name,
                        format!("GELU's input step {s_g} has no integer form"),
                    );
                };
                Output::Gelu {
                    to_x: Requant::new(
                        &acc_scale,
                        &offset,
                        &Target {
                            scale: &[s_g],
                            zero: &[0],
                            offset: &[0.0],
                            range: (-(1 << 24), 1 << 24),
                        },
                        outs,
                        name,
                    )?,
                    gelu: constants,
                    // 20-bit multipliers: x·σ reaches 2^39 (see `Weighted::emit`).
                    out: match Encoder::new(
                        &[s_g / 2f64.powi(SIGMOID_BITS as i32)],
                        &[0.0],
                        out,
                        outs,
                        name,
                    )? {
                        Encoder::Linear(r) => Encoder::Linear(r.with_mantissa_bits(20)),
                        levels => levels,
                    },
                    unit: acc_scale.clone(),
                }
            } else {
                let a = self.activation(id, act)?;
                Output::Epilogue(Epilogue::new(a, &acc_scale, &offset, out, outs, name)?)
            }
        };
        Ok(Weighted {
            geometry,
            in_channels: in_ch,
            out_channels: outs,
            groups,
            weights,
            bias,
            correction,
            zero: input.zero,
            lift,
            table: None,
            hardswish: Vec::new(),
            requant: Vec::new(),
            token_major: None,
            output,
        }
        .with_lanes())
    }

    fn add(&self, id: NodeId, act: &Option<Op>, out: &Encoding) -> Result<Add> {
        let graph = self.graph;
        let node = graph.node(id);
        if act.is_some() {
            return fail(
                graph,
                &node.name,
                "an activation after a residual add is not supported",
            );
        }
        let plan = self.plans[id][0];
        let map = ChannelMap {
            channels: plan.layout.channels,
            inner: plan.layout.inner,
        };
        let ch = map.channels;
        let (a, b) = (
            self.linear(node.inputs[0], ch)?,
            self.linear(node.inputs[1], ch)?,
        );
        let Encoding::Linear { qmin, qmax, .. } = out else {
            return fail(
                graph,
                &node.name,
                "a residual sum must be quantized uniformly",
            );
        };
        let mut add = Add {
            map,
            zero_a: a.zero.clone(),
            zero_b: b.zero.clone(),
            m_a: Vec::new(),
            m_b: Vec::new(),
            k: Vec::new(),
            addend: Vec::new(),
            qmin: *qmin as i64,
            qmax: *qmax as i64,
            codes: [a.qmin, a.qmax, b.qmin, b.qmax]
                .into_iter()
                .map(i32::unsigned_abs)
                .max()
                .unwrap_or(u32::MAX),
            lanes: None,
        };
        for c in 0..ch {
            let Some((ma, mb, k, addend)) = Add::channel(
                (a.scale[c], a.offset[c]),
                (b.scale[c], b.offset[c]),
                self.linear_at(id, out, c)?,
            ) else {
                return fail(
                    graph,
                    &node.name,
                    format!("channel {c}: scale ratio out of range"),
                );
            };
            add.m_a.push(ma);
            add.m_b.push(mb);
            add.k.push(k);
            add.addend.push(addend);
        }
        Ok(add.with_lanes())
    }

    fn class_pos(&self, id: NodeId, pid: NodeId, dim: usize, out: &Encoding) -> Result<ClassPos> {
        let graph = self.graph;
        let name = &graph.node(id).name;
        let NodeParams::ClassTokenPosEmbed { cls, pos } = &self.params.nodes[pid] else {
            return fail(graph, name, "has no class token");
        };
        let x = graph.node(pid).inputs[0];
        let l = self.linear(x, dim)?;
        let Encoding::Linear { qmin, qmax, .. } = out else {
            return fail(graph, name, "must be quantized uniformly");
        };
        let class_row = (0..dim)
            .map(|c| out.code_of((cls[c] + pos[c]) as f64, c))
            .collect();
        let mut multiplier = Vec::with_capacity(dim);
        for c in 0..dim {
            let (so, _, _) = self.linear_at(id, out, c)?;
            multiplier.push(
                Dyadic::from_real(l.scale[c] / so).ok_or_else(|| Error::Graph {
                    model: graph.model.clone(),
                    layer: name.clone(),
                    message: "scale ratio out of range".into(),
                })?,
            );
        }
        let tokens = pos.len() / dim - 1;
        let mut addend = Vec::with_capacity(tokens * dim);
        for t in 0..tokens {
            for c in 0..dim {
                let (so, zo, oo) = self.linear_at(id, out, c)?;
                let k = multiplier[c].k as i32;
                let real = l.offset[c] + pos[(t + 1) * dim + c] as f64 - oo;
                addend.push(((real / so + zo as f64) * 2f64.powi(k)).round() as i64);
            }
        }
        Ok(ClassPos {
            dim,
            class_row,
            zero: l.zero,
            multiplier,
            addend,
            qmin: *qmin as i64,
            qmax: *qmax as i64,
        })
    }

    fn layer_norm(
        &self,
        id: NodeId,
        pid: NodeId,
        dim: usize,
        act: &Option<Op>,
        out: &Encoding,
    ) -> Result<LayerNorm> {
        let graph = self.graph;
        let name = &graph.node(pid).name;
        let NodeParams::LayerNorm { weight, bias } = &self.params.nodes[pid] else {
            return fail(graph, name, "has no LayerNorm parameters");
        };
        let x = graph.node(pid).inputs[0];
        let l = self.linear(x, dim)?;
        if l.offset.iter().any(|&o| o != 0.0) {
            return fail(
                graph,
                name,
                format!("its input `{}` is shifted per channel", self.name(x)),
            );
        }
        let s_min = l.scale.iter().copied().fold(f64::INFINITY, f64::min);
        let mut alpha = Vec::with_capacity(dim);
        for (c, &s) in l.scale.iter().enumerate() {
            let a = (s / s_min).log2();
            if (a - a.round()).abs() > 1e-6 {
                return fail(
                    graph,
                    name,
                    format!(
                        "input `{}` channel {c}: LayerNorm needs channel scales that are powers of two apart",
                        self.name(x)
                    ),
                );
            }
            alpha.push(a.round() as u32);
        }
        let bits = 32 - ((l.qmax - l.qmin) as u32).leading_zeros();
        let max_alpha = alpha.iter().copied().max().unwrap_or(0);
        let promote = 15u32.saturating_sub(bits + max_alpha);
        let widest = ((l.qmax - l.qmin) as u128) << (max_alpha + promote);
        accumulator_fits(
            graph,
            name,
            dim as u128 * widest * widest,
            MAX_EXACT_VARIANCE as u128,
            format!("the variance of {dim} channels of up to ±{widest}"),
        )?;
        let unit = (dim as f64).sqrt() / 2f64.powi(30);
        let scale: Vec<f64> = weight.iter().map(|&g| g as f64 * unit).collect();
        let offset: Vec<f64> = bias.iter().map(|&b| b as f64).collect();
        let a = self.activation(id, act)?;
        Ok(LayerNorm {
            dim,
            zero: l.zero,
            shift: alpha.iter().map(|a| a + promote).collect(),
            out: Epilogue::new(a, &scale, &offset, out, dim, name)?,
            forms: Forms::default(),
        }
        .with_lanes())
    }

    fn normalize(
        &self,
        id: NodeId,
        x: NodeId,
        heads: usize,
        d: usize,
        out: &Encoding,
    ) -> Result<Normalize> {
        let graph = self.graph;
        let name = &graph.node(id).name;
        let (s_n, z_n) = self.per_tensor_point(x, TensorKind::AttentionProduct)?;
        let divisor = self.point_of_kind(x, TensorKind::AttentionDivisor)?;
        let channels = heads * d;
        let Encoding::Linear { qmin, qmax, .. } = out else {
            return fail(graph, name, "must be quantized uniformly");
        };
        let mut out_scale = Vec::new();
        let mut out_zero = Vec::new();
        for c in 0..channels {
            let (s, z, o) = self.linear_at(id, out, c)?;
            if o != 0.0 {
                return fail(graph, name, "a shifted attention output is not supported");
            }
            out_scale.push(s);
            out_zero.push(z);
        }
        let pow2 = |v: f64| v > 0.0 && (v.log2() - v.log2().round()).abs() < 1e-9;
        let (divide, den_unit) = match &divisor {
            Encoding::Log(l) if l.root == 1 && !l.zero_code && pow2(l.scale as f64) => {
                (Divide::Shift, l.scale as f64)
            }
            Encoding::Log(l) => {
                let unit = l.scale as f64 / 32768.0;
                let table = (0..1i32 << l.bits)
                    .map(|q| (log_level(l, q) / unit).round() as i64)
                    .collect();
                (Divide::Integer { divisor: table }, unit)
            }
            Encoding::Linear { qmin, qmax, .. } => {
                let (s, z, _) = self.linear_at(id, &divisor, 0)?;
                if *qmin < 0 {
                    return fail(graph, name, "signed divisor codes are not supported");
                }
                (
                    Divide::Integer {
                        divisor: (0..=*qmax).map(|q| (q - z) as i64).collect(),
                    },
                    s,
                )
            }
        };
        Ok(Normalize {
            heads,
            head_dim: d,
            tokens: graph.node(id).shape[1] * graph.node(id).shape[2],
            dividend_zero: z_n,
            divide,
            out: Requant::new(
                &[s_n / den_unit],
                &[0.0],
                &Target {
                    scale: &out_scale,
                    zero: &out_zero,
                    offset: &[0.0],
                    range: (*qmin as i64, *qmax as i64),
                },
                channels,
                name,
            )?,
            out_zero,
        })
    }
}

/// Positions per channel of a `[C, H, W]` value.
fn spatial(graph: &Graph, id: NodeId) -> usize {
    graph.node(id).shape[1..].iter().product()
}
