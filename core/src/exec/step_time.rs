//! One step's time on an image, as `qvit bench --steps` reports it for the integer executor
//! (its program's steps) and the float one (its graph's nodes), under the same kinds and
//! shapes so that the two read side by side.

use crate::graph::{Node, Op};

/// One step's time on an image ([`IntExecutor::time_steps`],
/// [`FloatExecutor::time_nodes`]).
///
/// [`IntExecutor::time_steps`]: crate::exec::int::executor::IntExecutor::time_steps
/// [`FloatExecutor::time_nodes`]: crate::exec::float::FloatExecutor::time_nodes
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepTime {
    /// The step's name: the node it writes.
    pub name: String,
    /// What it computes: the kind of product for weighted layers ("1×1 conv", "depthwise
    /// 3×3", "linear", …), else the step's kind.
    pub kind: &'static str,
    /// What a weighted layer works on: its output map's side or its tokens per image.
    pub shape: String,
    /// A weighted layer's multiply-accumulates (0 for the other steps).
    pub macs: u64,
    /// The median of its times over the rounds.
    pub seconds: f64,
}

/// The name of a conv's product by its kernel and grouping.
pub fn conv_kind(kernel: usize, depthwise: bool, groups: usize) -> &'static str {
    match (kernel, depthwise, groups) {
        (3, true, _) => "depthwise 3×3",
        (5, true, _) => "depthwise 5×5",
        (7, true, _) => "depthwise 7×7",
        (_, true, _) => "depthwise",
        (1, false, 1) => "1×1 conv",
        (1, false, _) => "grouped 1×1 conv",
        (3, false, _) => "3×3 conv",
        _ => "conv",
    }
}

/// What a map or token layer works on: `h×w` for a map, `n tokens` for token rows.
pub fn map_or_tokens(out_hw: Option<(usize, usize)>, tokens: usize) -> String {
    match (out_hw, tokens) {
        (Some((h, w)), _) => format!("{h}×{w}"),
        (None, 1) => "1 token".to_string(),
        (None, n) => format!("{n} tokens"),
    }
}

/// A graph node's kind, shape and weighted MACs, as [`StepTime`] gives them: weighted
/// layers by their product and what it works on, other nodes by their op's kind. `input` is
/// the shape of the node's first input for one image.
pub fn describe_node(node: &Node, input: &[usize]) -> (&'static str, String, u64) {
    let tokens = match node.shape.as_slice() {
        [n, _] => *n,
        _ => 1,
    };
    match (&node.op, node.shape.as_slice(), input) {
        (Op::Conv2d(c), &[_, h, w], _) => {
            let kind = conv_kind(c.kernel, c.is_depthwise(), c.groups);
            (kind, map_or_tokens(Some((h, w)), 1), node.macs)
        }
        // Non-overlapping patches: the map of patches is the input's over the stride.
        (Op::PatchEmbed(c), _, &[_, h, w]) => {
            let hw = Some((h / c.stride.max(1), w / c.stride.max(1)));
            ("patch embedding", map_or_tokens(hw, tokens), node.macs)
        }
        (Op::Linear(_), _, _) => ("linear", map_or_tokens(None, tokens), node.macs),
        (op, _, _) => (op.kind(), String::new(), 0),
    }
}
