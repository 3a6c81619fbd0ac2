//! Where activations are quantized: the quantization points of a graph.
//!
//! A value is quantized once, where it is stored: after its producer and everything fused into
//! it (a folded BatchNorm, an activation function, the Softmax after attention logits). So a
//! conv → BN → Hardswish chain has one point, at the Hardswish. Concatenation and taking the
//! class token only move already-quantized values and have no point; the logits are left in
//! full precision, as every method in the zoo does. The input image is a point (it is 8-bit
//! data to begin with).
//!
//! ReLU linear attention has two points per matmul: `kv_matmul` (the `Σ relu(k)ᵀv` values) and
//! `kv_matmul/ksum` (the row of key sums), `q_matmul` (dividends) and `q_matmul/divisor`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, NodeId, Op};

/// What a quantized tensor is, so recipes can pick their technique for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TensorKind {
    Image,
    /// Read by a depthwise conv and nothing else (Trio-ViT's channel-wise migration).
    DepthwiseInput,
    /// The output of a depthwise conv (+ activation) read by a 1×1 conv and nothing else: the
    /// input of MBConv's projection (Trio-ViT's filter-wise shifting).
    ProjectionInput,
    /// Read by a LayerNorm (FQ-ViT's power-of-two factor).
    LayerNormInput,
    /// A LayerNorm's output read only by linear layers (RepQ-ViT's reparameterisation).
    PostLayerNorm,
    PostSoftmax,
    PostGelu,
    /// ReLU linear attention: `Σ relu(k)ᵀv` or the dividends `relu(q)·(Σ relu(k)ᵀv)`.
    AttentionProduct,
    /// ReLU linear attention: the key sums `Σ relu(k)`.
    AttentionKeySum,
    /// ReLU linear attention: the divisors `relu(q)·Σ relu(k)`.
    AttentionDivisor,
    Other,
}

/// How a point's elements sit in one image's tensor: `[outer, channels, inner]`, of which the
/// point owns inner positions `take` (all of them unless it is one part of a linear-attention
/// matmul).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub outer: usize,
    pub channels: usize,
    pub inner: usize,
    pub take: Range<usize>,
}

impl Layout {
    fn whole(outer: usize, channels: usize, inner: usize) -> Self {
        Self {
            outer,
            channels,
            inner,
            take: 0..inner,
        }
    }

    /// Elements per image the point owns.
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.take.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f(channel, index)` for every element the point owns in one image's tensor.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        for o in 0..self.outer {
            for c in 0..self.channels {
                let base = (o * self.channels + c) * self.inner;
                for j in self.take.clone() {
                    f(c, base + j);
                }
            }
        }
    }

    /// Replaces every element `x` the point owns in one image's tensor by `f(channel, x)`,
    /// run by run ([`Layout::for_each_run`]).
    #[inline]
    pub fn map(&self, item: &mut [f32], f: impl Fn(usize, f32) -> f32) {
        self.for_each_run(item, |run, xs| match run {
            Run::Row => xs.iter_mut().enumerate().for_each(|(c, x)| *x = f(c, *x)),
            Run::Channel(c) => xs.iter_mut().for_each(|x| *x = f(c, *x)),
        })
    }

    /// The layout cut into contiguous parts of at least `values` elements where it has that
    /// many: whole outer rows when there are several, else whole channels. Together the parts
    /// hold every element the point owns, each once, in memory order.
    pub fn parts(&self, values: usize) -> Vec<LayoutPart> {
        let (outer, channels, inner) = (self.outer, self.channels, self.inner);
        let slab = channels * inner;
        if outer == 0 || slab == 0 {
            return Vec::new();
        }
        let part = |range: Range<usize>, outer, channels: Range<usize>| LayoutPart {
            range,
            layout: Layout {
                outer,
                channels: channels.len(),
                inner,
                take: self.take.clone(),
            },
            first_channel: channels.start,
        };
        if outer > 1 {
            let step = values.div_ceil(slab).max(1);
            (0..outer)
                .step_by(step)
                .map(|o| {
                    let end = (o + step).min(outer);
                    part(o * slab..end * slab, end - o, 0..channels)
                })
                .collect()
        } else {
            let step = values.div_ceil(inner).max(1);
            (0..channels)
                .step_by(step)
                .map(|c| {
                    let end = (c + step).min(channels);
                    part(c * inner..end * inner, 1, c..end)
                })
                .collect()
        }
    }

    /// Calls `f(run, values)` for every contiguous run of the elements the point owns in one
    /// image's tensor: whole channels-last rows (`values[i]` is channel `i`), or runs of one
    /// channel.
    #[inline]
    pub fn for_each_run(&self, item: &mut [f32], mut f: impl FnMut(Run, &mut [f32])) {
        self.each_run(item.len(), |run, range| f(run, &mut item[range]));
    }

    /// The runs of [`Layout::for_each_run`] as an iterator over the values, for loops whose
    /// body must be compiled into the caller (a closure called from two places is not always
    /// inlined, and then misses the caller's target features).
    #[inline]
    pub fn runs_of<'a>(&self, item: &'a [f32]) -> impl Iterator<Item = (Run, &'a [f32])> {
        self.run_ranges(item.len())
            .map(move |(run, range)| (run, &item[range]))
    }

    /// Calls `f(run, range)` for the runs of [`Layout::for_each_run`] in an image's tensor of
    /// `len` elements, as index ranges, in memory order.
    #[inline]
    fn each_run(&self, len: usize, mut f: impl FnMut(Run, Range<usize>)) {
        for (run, range) in self.run_ranges(len) {
            f(run, range);
        }
    }

    /// The runs of [`Layout::for_each_run`] in an image's tensor of `len` elements, as index
    /// ranges, in memory order.
    #[inline]
    fn run_ranges(&self, len: usize) -> impl Iterator<Item = (Run, Range<usize>)> + use<> {
        assert!(
            len >= self.outer * self.channels * self.inner,
            "a tensor of {len} elements is smaller than its layout {self:?}"
        );
        let (outer, channels, inner, take) =
            (self.outer, self.channels, self.inner, self.take.clone());
        // Channels-last rows when there is no inner extent, else one run per (outer, channel).
        let runs = if channels == 0 || take.is_empty() {
            0
        } else if inner == 1 {
            outer
        } else {
            outer * channels
        };
        (0..runs).map(move |k| {
            if inner == 1 {
                (Run::Row, k * channels..(k + 1) * channels)
            } else {
                let base = k * inner;
                (
                    Run::Channel(k % channels),
                    base + take.start..base + take.end,
                )
            }
        })
    }
}

/// A contiguous part of an image's tensor that holds whole outer rows or whole channels of a
/// point's layout (see [`Layout::parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutPart {
    /// Where the part lies in the image's tensor.
    pub range: Range<usize>,
    /// The part's own layout, its first channel as channel 0.
    pub layout: Layout,
    /// The point's channel that is the part's channel 0.
    pub first_channel: usize,
}

/// A contiguous run of a point's elements (see [`Layout::for_each_run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// A channels-last row: element `i` is channel `i`.
    Row,
    /// Elements of one channel.
    Channel(usize),
}

/// One quantized activation tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantPoint {
    /// The node's name, with `/ksum` or `/divisor` for the linear-attention sums.
    pub name: String,
    pub node: NodeId,
    pub kind: TensorKind,
    pub layout: Layout,
}

/// Ops that a producer's output flows into before it is stored.
pub(crate) fn fuses_into_producer(op: &Op) -> bool {
    matches!(
        op,
        Op::Hardswish | Op::Relu | Op::Gelu | Op::Softmax | Op::BatchNorm2d { .. }
    )
}

/// Ops that only move already-quantized values.
pub(crate) fn moves_values(op: &Op) -> bool {
    matches!(op, Op::Concat | Op::TakeClassToken)
}

/// True when `id`'s value is stored (and so quantized) at `id`.
pub(crate) fn is_point(graph: &Graph, id: NodeId) -> bool {
    let op = &graph.node(id).op;
    if id == graph.output() || moves_values(op) {
        return false;
    }
    let consumers = graph.consumers(id);
    consumers.is_empty()
        || !consumers
            .iter()
            .all(|&c| fuses_into_producer(&graph.node(c).op))
}

/// The node a quantized value is produced by, looking through fused activations and norms.
pub(crate) fn producer(graph: &Graph, id: NodeId) -> NodeId {
    let mut n = id;
    while fuses_into_producer(&graph.node(n).op) {
        n = graph.node(n).inputs[0];
    }
    n
}

/// Nodes reading `id`'s value, looking through ops that only move values.
pub(crate) fn readers(graph: &Graph, id: NodeId) -> Vec<NodeId> {
    let mut out = Vec::new();
    for c in graph.consumers(id) {
        if moves_values(&graph.node(c).op) {
            out.extend(readers(graph, c));
        } else {
            out.push(c);
        }
    }
    out
}

fn kind(graph: &Graph, id: NodeId) -> TensorKind {
    let node = graph.node(id);
    let readers = readers(graph, id);
    let all_readers = |f: &dyn Fn(&Op) -> bool| {
        !readers.is_empty() && readers.iter().all(|&r| f(&graph.node(r).op))
    };
    match &node.op {
        Op::Input => return TensorKind::Image,
        Op::Softmax => return TensorKind::PostSoftmax,
        Op::Gelu => return TensorKind::PostGelu,
        Op::LayerNorm { .. } if all_readers(&|op| matches!(op, Op::Linear(_))) => {
            return TensorKind::PostLayerNorm;
        }
        _ => {}
    }
    if all_readers(&|op| matches!(op, Op::Conv2d(c) if c.is_depthwise())) {
        return TensorKind::DepthwiseInput;
    }
    let from_depthwise =
        matches!(&graph.node(producer(graph, id)).op, Op::Conv2d(c) if c.is_depthwise());
    if from_depthwise
        && all_readers(&|op| matches!(op, Op::Conv2d(c) if c.kernel == 1 && c.groups == 1))
    {
        return TensorKind::ProjectionInput;
    }
    if readers
        .iter()
        .any(|&r| matches!(graph.node(r).op, Op::LayerNorm { .. }))
    {
        return TensorKind::LayerNormInput;
    }
    TensorKind::Other
}

/// The layout of a node's whole output: channels on the first axis for images and feature
/// maps `[C, H, W]` and attention maps `[heads, N, N]`, on the last axis for tokens `[N, D]`.
fn layout(graph: &Graph, id: NodeId) -> Layout {
    let shape = &graph.node(id).shape;
    let tokens = shape.len() == 2;
    match shape.len() {
        1 => Layout::whole(1, shape[0], 1),
        _ if tokens => Layout::whole(shape[0], shape[1], 1),
        _ => Layout::whole(1, shape[0], shape[1..].iter().product()),
    }
}

/// Every quantization point of a graph, in execution order.
pub fn points(graph: &Graph) -> Vec<QuantPoint> {
    let mut out = Vec::new();
    for (id, node) in graph.nodes().iter().enumerate() {
        if !is_point(graph, id) {
            continue;
        }
        match node.op {
            Op::LinearAttentionContext { heads, head_dim }
            | Op::LinearAttentionQuery { heads, head_dim } => {
                // Output [heads, d+1, L]: rows 0..d are products, row d the sums.
                let row = node.shape[2];
                let inner = (head_dim + 1) * row;
                let is_query = matches!(node.op, Op::LinearAttentionQuery { .. });
                out.push(QuantPoint {
                    name: node.name.clone(),
                    node: id,
                    kind: TensorKind::AttentionProduct,
                    layout: Layout {
                        outer: 1,
                        channels: heads,
                        inner,
                        take: 0..head_dim * row,
                    },
                });
                out.push(QuantPoint {
                    name: format!(
                        "{}/{}",
                        node.name,
                        if is_query { "divisor" } else { "ksum" }
                    ),
                    node: id,
                    kind: if is_query {
                        TensorKind::AttentionDivisor
                    } else {
                        TensorKind::AttentionKeySum
                    },
                    layout: Layout {
                        outer: 1,
                        channels: heads,
                        inner,
                        take: head_dim * row..inner,
                    },
                });
            }
            _ => out.push(QuantPoint {
                name: node.name.clone(),
                node: id,
                kind: kind(graph, id),
                layout: layout(graph, id),
            }),
        }
    }
    out
}

/// The point that stores `id`'s value: `id` itself, or the activation / norm fused after it.
pub fn output_point_node(graph: &Graph, id: NodeId) -> Option<NodeId> {
    let mut n = id;
    loop {
        if is_point(graph, n) {
            return Some(n);
        }
        let consumers = graph.consumers(n);
        match consumers.as_slice() {
            [c] if fuses_into_producer(&graph.node(*c).op) => n = *c,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;

    fn graph(name: &str) -> Graph {
        Graph::build(&ArchSpec::preset(name).unwrap()).unwrap()
    }

    /// The parts of a layout hold each of its elements once, with its channel, in order.
    #[test]
    fn layout_parts_hold_every_element_once() {
        let layouts = [
            (197, 192, 1, 0..1),
            (1, 64, 56 * 56, 0..56 * 56),
            (1, 512, 49, 0..49),
            (8, 48, 196, 16..32),
            (3, 5, 7, 2..3),
            (1, 1, 10, 0..10),
        ];
        for (outer, channels, inner, take) in layouts {
            let l = Layout {
                outer,
                channels,
                inner,
                take,
            };
            let mut all = Vec::new();
            l.for_each(|c, i| all.push((c, i)));
            for values in [1, 100, 1 << 14, usize::MAX / 2] {
                let mut from_parts = Vec::new();
                let parts = l.parts(values);
                for p in &parts {
                    assert_eq!(p.range.len(), p.layout.outer * p.layout.channels * inner);
                    p.layout
                        .for_each(|c, i| from_parts.push((p.first_channel + c, p.range.start + i)));
                }
                assert_eq!(from_parts, all, "{l:?} in parts of {values}");
                let elements = l.len();
                if values <= elements / 2 && (outer > 1 || channels > 1) {
                    assert!(parts.len() > 1, "{l:?} in parts of {values}");
                }
            }
        }
    }

    #[test]
    fn efficientvit_points_follow_the_fusion_rules() {
        let g = graph("efficientvit-micro");
        let pts = points(&g);
        let find = |n: &str| pts.iter().find(|p| p.name.ends_with(n)).map(|p| p.kind);
        // conv → BN → hardswish: only the hardswish is a point.
        assert!(find("stages.0.op_list.0.main.inverted_conv.conv").is_none());
        assert!(find("stages.0.op_list.0.main.inverted_conv.norm").is_none());
        assert_eq!(
            find("stages.0.op_list.0.main.inverted_conv.act"),
            Some(TensorKind::DepthwiseInput)
        );
        assert_eq!(
            find("stages.0.op_list.0.main.depth_conv.act"),
            Some(TensorKind::ProjectionInput)
        );
        // The last conv of a block with no activation is stored after its folded norm.
        assert!(find("stages.0.op_list.0.main.point_conv.norm").is_some());
        assert!(find("stages.2.op_list.1.context_module.main.multiscale").is_none());
        assert_eq!(
            find("stages.2.op_list.1.context_module.main.q_matmul/divisor"),
            Some(TensorKind::AttentionDivisor)
        );
        assert_eq!(pts[0].kind, TensorKind::Image);
        assert!(pts.iter().all(|p| p.node != g.output()));
        // Query layout: [8 heads, 17 rows, 49 tokens]; the divisor is the last row.
        let div = pts
            .iter()
            .find(|p| {
                p.name
                    .ends_with("stages.2.op_list.1.context_module.main.q_matmul/divisor")
            })
            .unwrap();
        assert_eq!(
            (
                div.layout.channels,
                div.layout.inner,
                div.layout.take.clone()
            ),
            (8, 17 * 49, 16 * 49..17 * 49)
        );
        assert_eq!(div.layout.len(), 8 * 49);
    }

    #[test]
    fn deit_points_follow_the_fusion_rules() {
        let g = graph("deit-micro");
        let pts = points(&g);
        let kind = |n: &str| pts.iter().find(|p| p.name == n).map(|p| p.kind);
        assert_eq!(kind("blocks.0.norm1"), Some(TensorKind::PostLayerNorm));
        assert_eq!(kind("blocks.0.attn.softmax"), Some(TensorKind::PostSoftmax));
        assert_eq!(kind("blocks.0.attn.scores"), None);
        assert_eq!(kind("blocks.0.mlp.act"), Some(TensorKind::PostGelu));
        assert_eq!(kind("blocks.0.mlp.fc1"), None);
        assert_eq!(kind("blocks.0.attn_add"), Some(TensorKind::LayerNormInput));
        assert_eq!(kind("pos_embed"), Some(TensorKind::LayerNormInput));
        let ln = pts.iter().find(|p| p.name == "blocks.0.norm1").unwrap();
        assert_eq!(
            (ln.layout.outer, ln.layout.channels, ln.layout.inner),
            (50, 64, 1)
        );
        assert_eq!(
            output_point_node(&g, g.find("blocks.0.mlp.fc1").unwrap()),
            g.find("blocks.0.mlp.act")
        );
    }
}
