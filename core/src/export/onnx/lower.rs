//! qvit's graph as standard ONNX operators, node by node.
//!
//! Every qvit node becomes a value of shape `[batch] + node.shape` named after the node (the
//! logits are `logits`): feature maps `[B, C, H, W]`, token sequences `[B, N, D]`, attention
//! scores `[B, heads, N, N]`, so a quantization point of qvit's plan sits on exactly one ONNX
//! value. Helper values are named `<node>/<what>`. Parameters keep their checkpoint names and
//! shapes; a BatchNorm that qvit folds is folded here too (the conv's initializers say so in
//! their doc strings).

use std::collections::HashMap;

use super::builder::{Attr, Dim, OnnxGraph};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId, Op, ParamRole};
use crate::weights::{FoldedWeights, NodeParams};

/// What a quantized export adds to the float graph; the float export adds nothing.
pub trait Quantize {
    /// The value a weighted node reads as its weight (`data`, with checkpoint `name` and
    /// `dims`): the float initializer, or integer codes and a DequantizeLinear.
    fn weight(
        &mut self,
        g: &mut OnnxGraph,
        node: NodeId,
        name: &str,
        dims: &[usize],
        data: &[f32],
        doc: &str,
    ) -> Result<String>;

    /// The value later nodes read in place of node `id`'s output `value`.
    fn activation(&mut self, g: &mut OnnxGraph, node: NodeId, value: String) -> Result<String>;

    /// Node `id` written whole, as an export writes it in place of the float operators, reading
    /// `inputs` (the values of the node's inputs) and ending in its point's values; `None`
    /// writes the float operators and then [`Quantize::activation`].
    fn replace(
        &mut self,
        _g: &mut OnnxGraph,
        _id: NodeId,
        _inputs: &[String],
    ) -> Result<Option<String>> {
        Ok(None)
    }
}

/// The float export: weights as they are, activations untouched.
#[derive(Debug)]
pub struct Float;

impl Quantize for Float {
    fn weight(
        &mut self,
        g: &mut OnnxGraph,
        _: NodeId,
        name: &str,
        dims: &[usize],
        data: &[f32],
        doc: &str,
    ) -> Result<String> {
        Ok(g.initializer(name, dims, data, doc))
    }

    fn activation(&mut self, _: &mut OnnxGraph, _: NodeId, value: String) -> Result<String> {
        Ok(value)
    }
}

/// Name of the graph's one input.
pub const INPUT: &str = "input";
/// Name of the graph's one output.
pub const LOGITS: &str = "logits";

/// Lowers every node of `graph` into `g`, declaring the input and the logits with a batch
/// axis of `batch` (`Dim::Batch`: any size).
pub fn lower(
    g: &mut OnnxGraph,
    graph: &Graph,
    params: &FoldedWeights,
    quantize: &mut dyn Quantize,
    batch: Dim,
) -> Result<()> {
    params.check_graph(graph)?;
    let mut l = Lowering {
        g,
        batch,
        graph,
        params,
        quantize,
        values: Vec::with_capacity(graph.nodes().len()),
        heads: HashMap::new(),
    };
    for id in 0..graph.nodes().len() {
        // A folded norm's value is its conv's (already normalised); the plan puts a point on
        // the norm, not the conv, when the value is stored there.
        let inputs: Vec<String> = graph
            .node(id)
            .inputs
            .iter()
            .map(|&i| l.values[i].clone())
            .collect();
        let value = match l.quantize.replace(l.g, id, &inputs)? {
            Some(value) => value,
            None => {
                let value = l.node(id)?;
                l.quantize.activation(l.g, id, value)?
            }
        };
        l.values.push(value);
    }
    let logits = l.values[graph.output()].clone();
    let classes = Dim::Fixed(graph.num_classes);
    // The output keeps a fixed name whatever produced it.
    let out = l.g.node("Identity", LOGITS, &[&logits], &[]);
    debug_assert_eq!(out, LOGITS);
    l.g.output(
        LOGITS,
        &[batch, classes],
        "class logits (before the softmax)",
    );
    Ok(())
}

struct Lowering<'a> {
    g: &'a mut OnnxGraph,
    batch: Dim,
    graph: &'a Graph,
    params: &'a FoldedWeights,
    quantize: &'a mut dyn Quantize,
    /// The value each lowered node's output is read from.
    values: Vec<String>,
    /// Per-head views of a fused attention tensor, by the node that produced it: (q, k, v),
    /// each `[B, heads, N, d]` for softmax attention, `[B, heads, d, N]` for linear attention.
    heads: HashMap<NodeId, [String; 3]>,
}

fn ints(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&d| d as i64).collect())
}

impl Lowering<'_> {
    fn input(&self, node: &Node, i: usize) -> String {
        self.values[node.inputs[i]].clone()
    }

    fn param_name(node: &Node, role: ParamRole, fallback: &str) -> String {
        node.params
            .iter()
            .find(|p| p.role == role)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format!("{}.{fallback}", node.name))
    }

    /// The node's output value; node 0 declares the graph input.
    fn node(&mut self, id: NodeId) -> Result<String> {
        let graph = self.graph;
        let node = graph.node(id);
        let out = node.name.as_str();
        let params = &self.params.nodes[id];
        Ok(match (&node.op, params) {
            (Op::Input, _) => {
                let dims: Vec<Dim> = std::iter::once(self.batch)
                    .chain(node.shape.iter().map(|&d| Dim::Fixed(d)))
                    .collect();
                self.g.input(INPUT, &dims, INPUT_DOC)
            }
            (Op::Conv2d(c) | Op::PatchEmbed(c), NodeParams::Conv { weight, bias }) => {
                let folded = self.folded_norm(id);
                let doc = folded
                    .as_ref()
                    .map(|n| format!("BatchNorm `{n}` folded in"))
                    .unwrap_or_default();
                let w_name = Self::param_name(node, ParamRole::Weight, "weight");
                let dims = [c.out_channels, c.in_channels / c.groups, c.kernel, c.kernel];
                let w = self
                    .quantize
                    .weight(self.g, id, &w_name, &dims, weight, &doc)?;
                let b_name = Self::param_name(node, ParamRole::Bias, "bias");
                let b_doc = match (&folded, c.bias) {
                    (Some(n), _) => format!("BatchNorm `{n}` folded in"),
                    (None, false) => "zeros: the layer has no bias".into(),
                    (None, true) => String::new(),
                };
                let b = self.g.initializer(&b_name, &[c.out_channels], bias, &b_doc);
                let x = self.input(node, 0);
                let attrs = [
                    ("kernel_shape", ints(&[c.kernel, c.kernel])),
                    ("strides", ints(&[c.stride, c.stride])),
                    ("pads", ints(&[c.padding; 4])),
                    ("dilations", ints(&[1, 1])),
                    ("group", Attr::Int(c.groups as i64)),
                ];
                if matches!(node.op, Op::PatchEmbed(_)) {
                    let map = self
                        .g
                        .node("Conv", &format!("{out}/map"), &[&x, &w, &b], &attrs);
                    let shape = self
                        .g
                        .ints(&format!("{out}/shape"), &[0, c.out_channels as i64, -1]);
                    let flat = self
                        .g
                        .node("Reshape", &format!("{out}/flat"), &[&map, &shape], &[]);
                    self.g
                        .node("Transpose", out, &[&flat], &[("perm", ints(&[0, 2, 1]))])
                } else {
                    self.g.node("Conv", out, &[&x, &w, &b], &attrs)
                }
            }
            (Op::BatchNorm2d { .. }, NodeParams::Folded) => self.input(node, 0),
            (Op::BatchNorm2d { channels, .. }, NodeParams::ChannelAffine { scale, shift }) => {
                let dims = [*channels, 1, 1];
                let doc = "the BatchNorm's weight/√(running_var + eps)";
                let s = self
                    .g
                    .initializer(&format!("{out}.scale"), &dims, scale, doc);
                let doc = "the BatchNorm's bias − running_mean·scale";
                let t = self
                    .g
                    .initializer(&format!("{out}.shift"), &dims, shift, doc);
                let x = self.input(node, 0);
                let scaled = self.g.node("Mul", &format!("{out}/scaled"), &[&x, &s], &[]);
                self.g.node("Add", out, &[&scaled, &t], &[])
            }
            (Op::Linear(lin), NodeParams::Linear { weight, bias }) => {
                let w_name = Self::param_name(node, ParamRole::Weight, "weight");
                let dims = [lin.out_features, lin.in_features];
                let w = self
                    .quantize
                    .weight(self.g, id, &w_name, &dims, weight, "")?;
                let b = bias.as_ref().map(|b| {
                    let name = Self::param_name(node, ParamRole::Bias, "bias");
                    self.g.initializer(&name, &[lin.out_features], b, "")
                });
                let x = self.input(node, 0);
                if node.shape.len() == 1 {
                    // [B, in] → [B, out]: one Gemm with the weight as stored.
                    let mut inputs = vec![x.as_str(), w.as_str()];
                    if let Some(b) = &b {
                        inputs.push(b);
                    }
                    self.g
                        .node("Gemm", out, &inputs, &[("transB", Attr::Int(1))])
                } else {
                    // [B, N, in] · weightᵀ: the checkpoint's [out, in] weight, transposed here.
                    let wt = self.g.node(
                        "Transpose",
                        &format!("{out}/weight_t"),
                        &[&w],
                        &[("perm", ints(&[1, 0]))],
                    );
                    match &b {
                        Some(b) => {
                            let y =
                                self.g
                                    .node("MatMul", &format!("{out}/product"), &[&x, &wt], &[]);
                            self.g.node("Add", out, &[&y, b], &[])
                        }
                        None => self.g.node("MatMul", out, &[&x, &wt], &[]),
                    }
                }
            }
            (Op::LayerNorm { eps, dim }, NodeParams::LayerNorm { weight, bias }) => {
                let w = Self::param_name(node, ParamRole::NormWeight, "weight");
                let w = self.g.initializer(&w, &[*dim], weight, "");
                let b = Self::param_name(node, ParamRole::NormBias, "bias");
                let b = self.g.initializer(&b, &[*dim], bias, "");
                let x = self.input(node, 0);
                let attrs = [
                    ("axis", Attr::Int(-1)),
                    ("epsilon", Attr::Float(*eps as f32)),
                ];
                self.g
                    .node("LayerNormalization", out, &[&x, &w, &b], &attrs)
            }
            (Op::Hardswish, _) => {
                let x = self.input(node, 0);
                self.g.node("HardSwish", out, &[&x], &[])
            }
            (Op::Relu, _) => {
                let x = self.input(node, 0);
                self.g.node("Relu", out, &[&x], &[])
            }
            (Op::Gelu, _) => {
                // The exact GELU, x·(1 + erf(x/√2))/2, in operators every opset has.
                let x = self.input(node, 0);
                let root2 = self
                    .g
                    .scalar_f32(&format!("{out}/sqrt2"), std::f32::consts::SQRT_2);
                let one = self.g.scalar_f32(&format!("{out}/one"), 1.0);
                let half = self.g.scalar_f32(&format!("{out}/half"), 0.5);
                let scaled = self
                    .g
                    .node("Div", &format!("{out}/scaled"), &[&x, &root2], &[]);
                let erf = self.g.node("Erf", &format!("{out}/erf"), &[&scaled], &[]);
                let plus = self
                    .g
                    .node("Add", &format!("{out}/plus_one"), &[&erf, &one], &[]);
                let times = self
                    .g
                    .node("Mul", &format!("{out}/times_x"), &[&x, &plus], &[]);
                self.g.node("Mul", out, &[&times, &half], &[])
            }
            (Op::Softmax, _) => {
                let x = self.input(node, 0);
                self.g
                    .node("Softmax", out, &[&x], &[("axis", Attr::Int(-1))])
            }
            (Op::Add, _) => {
                let (a, b) = (self.input(node, 0), self.input(node, 1));
                self.g.node("Add", out, &[&a, &b], &[])
            }
            (Op::Concat, _) => {
                let (a, b) = (self.input(node, 0), self.input(node, 1));
                self.g
                    .node("Concat", out, &[&a, &b], &[("axis", Attr::Int(1))])
            }
            (Op::GlobalAvgPool, _) => {
                let x = self.input(node, 0);
                let pooled = self
                    .g
                    .node("GlobalAveragePool", &format!("{out}/pooled"), &[&x], &[]);
                self.g
                    .node("Flatten", out, &[&pooled], &[("axis", Attr::Int(1))])
            }
            (
                Op::ClassTokenPosEmbed { dim, tokens },
                NodeParams::ClassTokenPosEmbed { cls, pos },
            ) => {
                let cls_name = Self::param_name(node, ParamRole::ClassToken, "cls_token");
                let cls = self.g.initializer(&cls_name, &[1, 1, *dim], cls, "");
                let pos_name = Self::param_name(node, ParamRole::PosEmbed, "pos_embed");
                let pos = self
                    .g
                    .initializer(&pos_name, &[1, tokens + 1, *dim], pos, "");
                let x = self.input(node, 0);
                // The class token repeated over the batch: Expand to [B, 1, D], B read from the
                // input unless the batch is fixed (then every shape is known statically).
                let target = match self.batch {
                    Dim::Fixed(b) => self
                        .g
                        .ints(&format!("{out}/cls_shape"), &[b as i64, 1, *dim as i64]),
                    Dim::Batch => self.batch_shape(out, &x, *dim),
                };
                let cls_b = self
                    .g
                    .node("Expand", &format!("{out}/cls"), &[&cls, &target], &[]);
                let seq = self.g.node(
                    "Concat",
                    &format!("{out}/tokens"),
                    &[&cls_b, &x],
                    &[("axis", Attr::Int(1))],
                );
                self.g.node("Add", out, &[&seq, &pos], &[])
            }
            (Op::TakeClassToken, _) => {
                let x = self.input(node, 0);
                let first = self.g.scalar_i64(&format!("{out}/index"), 0);
                self.g
                    .node("Gather", out, &[&x, &first], &[("axis", Attr::Int(1))])
            }
            (
                Op::AttentionScores {
                    heads,
                    head_dim,
                    scale,
                },
                _,
            ) => {
                let [q, k, _] = self.softmax_heads(node.inputs[0], *heads, *head_dim);
                let kt = self.g.node(
                    "Transpose",
                    &format!("{out}/k_t"),
                    &[&k],
                    &[("perm", ints(&[0, 1, 3, 2]))],
                );
                let qk = self.g.node("MatMul", &format!("{out}/qk"), &[&q, &kt], &[]);
                let s = self.g.scalar_f32(&format!("{out}/scale"), *scale as f32);
                self.g.node("Mul", out, &[&qk, &s], &[])
            }
            (Op::AttentionMix { heads, head_dim }, _) => {
                let p = self.input(node, 0);
                let [_, _, v] = self.softmax_heads(node.inputs[1], *heads, *head_dim);
                let pv = self.g.node("MatMul", &format!("{out}/pv"), &[&p, &v], &[]);
                let tokens_first = self.g.node(
                    "Transpose",
                    &format!("{out}/tokens_first"),
                    &[&pv],
                    &[("perm", ints(&[0, 2, 1, 3]))],
                );
                let shape = self
                    .g
                    .ints(&format!("{out}/shape"), &[0, -1, (heads * head_dim) as i64]);
                self.g.node("Reshape", out, &[&tokens_first, &shape], &[])
            }
            (Op::LinearAttentionContext { heads, head_dim }, _) => {
                let [_, k, v] = self.linear_heads(node.inputs[0], *heads, *head_dim);
                let k = self.g.node("Relu", &format!("{out}/relu_k"), &[&k], &[]);
                let kt = self.g.node(
                    "Transpose",
                    &format!("{out}/relu_k_t"),
                    &[&k],
                    &[("perm", ints(&[0, 1, 3, 2]))],
                );
                // [v; 1]: a row of ones under each head's values gives Σ relu(k) in the same product.
                let pads = self
                    .g
                    .ints(&format!("{out}/pads"), &[0, 0, 0, 0, 0, 0, 1, 0]);
                let one = self.g.scalar_f32(&format!("{out}/one"), 1.0);
                let v1 = self
                    .g
                    .node("Pad", &format!("{out}/v_ones"), &[&v, &pads, &one], &[]);
                self.g.node("MatMul", out, &[&v1, &kt], &[])
            }
            (Op::LinearAttentionQuery { heads, head_dim }, _) => {
                let [q, _, _] = self.linear_heads(node.inputs[0], *heads, *head_dim);
                let context = self.input(node, 1);
                let q = self.g.node("Relu", &format!("{out}/relu_q"), &[&q], &[]);
                self.g.node("MatMul", out, &[&context, &q], &[])
            }
            (
                Op::LinearAttentionNormalize {
                    heads,
                    head_dim,
                    height,
                    width,
                    eps,
                },
                _,
            ) => {
                let x = self.input(node, 0);
                let d = *head_dim as i64;
                let axis = self.g.ints(&format!("{out}/axis"), &[2]);
                let (zero, dd, d1) = (
                    self.g.ints(&format!("{out}/start"), &[0]),
                    self.g.ints(&format!("{out}/d"), &[d]),
                    self.g.ints(&format!("{out}/d_plus_1"), &[d + 1]),
                );
                let num = self.g.node(
                    "Slice",
                    &format!("{out}/dividends"),
                    &[&x, &zero, &dd, &axis],
                    &[],
                );
                let den = self.g.node(
                    "Slice",
                    &format!("{out}/divisor"),
                    &[&x, &dd, &d1, &axis],
                    &[],
                );
                let e = self.g.scalar_f32(&format!("{out}/eps"), *eps as f32);
                let den = self
                    .g
                    .node("Add", &format!("{out}/divisor_eps"), &[&den, &e], &[]);
                let y = self
                    .g
                    .node("Div", &format!("{out}/heads"), &[&num, &den], &[]);
                let shape = self.g.ints(
                    &format!("{out}/shape"),
                    &[0, (heads * head_dim) as i64, *height as i64, *width as i64],
                );
                self.g.node("Reshape", out, &[&y, &shape], &[])
            }
            (op, params) => {
                return Err(Error::Graph {
                    model: graph.model.clone(),
                    layer: node.name.clone(),
                    message: format!(
                        "{} has parameters {} it cannot use (weights folded for another graph)",
                        op.kind(),
                        params_kind(params)
                    ),
                });
            }
        })
    }

    /// `[B, 1, dim]` with B the batch size of value `x`, computed when the graph runs.
    fn batch_shape(&mut self, out: &str, x: &str, dim: usize) -> String {
        let shape = self.g.node("Shape", &format!("{out}/shape"), &[x], &[]);
        let starts = self.g.ints(&format!("{out}/batch_start"), &[0]);
        let ends = self.g.ints(&format!("{out}/batch_end"), &[1]);
        let batch = self.g.node(
            "Slice",
            &format!("{out}/batch"),
            &[&shape, &starts, &ends],
            &[],
        );
        let rest = self.g.ints(&format!("{out}/token_shape"), &[1, dim as i64]);
        self.g.node(
            "Concat",
            &format!("{out}/cls_shape"),
            &[&batch, &rest],
            &[("axis", Attr::Int(0))],
        )
    }

    /// The BatchNorm folded into conv `id`, if any.
    fn folded_norm(&self, id: NodeId) -> Option<String> {
        self.graph
            .consumers(id)
            .into_iter()
            .find(|&c| matches!(self.params.nodes[c], NodeParams::Folded))
            .map(|c| self.graph.node(c).name.clone())
    }

    /// q, k, v of fused `[B, N, 3·heads·d]` (columns `[q | k | v]`, head-major in each) as
    /// `[B, heads, N, d]` each, made once per fused tensor.
    fn softmax_heads(&mut self, qkv: NodeId, heads: usize, d: usize) -> [String; 3] {
        if let Some(views) = self.heads.get(&qkv) {
            return views.clone();
        }
        let base = self.graph.node(qkv).name.clone();
        let x = self.values[qkv].clone();
        let shape = self.g.ints(
            &format!("{base}/heads_shape"),
            &[0, -1, 3, heads as i64, d as i64],
        );
        let split = self
            .g
            .node("Reshape", &format!("{base}/heads"), &[&x, &shape], &[]);
        // [B, N, 3, h, d] → [3, B, h, N, d]
        let perm = ints(&[2, 0, 3, 1, 4]);
        let parts = self.g.node(
            "Transpose",
            &format!("{base}/qkv"),
            &[&split],
            &[("perm", perm)],
        );
        let views = self.gather_three(&base, &parts, 0);
        self.heads.insert(qkv, views.clone());
        views
    }

    /// q, k, v of the multi-scale map `[B, heads·3d, H, W]` (per head d channels each of q, k,
    /// v) as `[B, heads, d, H·W]` each, made once per map.
    fn linear_heads(&mut self, ms: NodeId, heads: usize, d: usize) -> [String; 3] {
        if let Some(views) = self.heads.get(&ms) {
            return views.clone();
        }
        let base = self.graph.node(ms).name.clone();
        let x = self.values[ms].clone();
        let shape = self.g.ints(
            &format!("{base}/heads_shape"),
            &[0, heads as i64, 3, d as i64, -1],
        );
        let split = self
            .g
            .node("Reshape", &format!("{base}/heads"), &[&x, &shape], &[]);
        let views = self.gather_three(&base, &split, 2);
        self.heads.insert(ms, views.clone());
        views
    }

    fn gather_three(&mut self, base: &str, x: &str, axis: i64) -> [String; 3] {
        ["q", "k", "v"].map(|part| {
            let index = match part {
                "q" => 0,
                "k" => 1,
                _ => 2,
            };
            let i = self.g.scalar_i64(&format!("{base}/{part}_index"), index);
            self.g.node(
                "Gather",
                &format!("{base}/{part}"),
                &[x, &i],
                &[("axis", Attr::Int(axis))],
            )
        })
    }
}

fn params_kind(p: &NodeParams) -> &'static str {
    match p {
        NodeParams::None => "none",
        NodeParams::Conv { .. } => "conv",
        NodeParams::Linear { .. } => "linear",
        NodeParams::ChannelAffine { .. } => "channel affine",
        NodeParams::Folded => "folded",
        NodeParams::LayerNorm { .. } => "layer norm",
        NodeParams::ClassTokenPosEmbed { .. } => "class token",
    }
}

/// The input's documentation, repeated in the model's doc string.
pub const INPUT_DOC: &str = "images [batch, channels, height, width], float32, exactly the tensor \
qvit's executors take: decoded RGB (or grey) pixels / 255, resized and centre-cropped as `qvit \
eval` does, then normalised per channel, (x − mean) / std, with the model's mean and std (see the \
`normalization` metadata)";
