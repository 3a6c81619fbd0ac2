//! The model graph: typed ops in execution order with inferred shapes, parameters named as the
//! official checkpoints name them, and MACs.
//!
//! Every node produces one tensor; a node's id is its index, and inputs always refer to earlier
//! nodes, so the node list is already a topological order for the executors.

mod builder;
mod deit;
mod efficientvit;
mod op;
mod state_dict;
mod summary;

use serde::{Deserialize, Serialize};

pub use op::{Conv2d, Linear, Op, ParamRole, ParamSpec, shape_string};
pub use summary::{GraphSummary, GroupTotal, LayerRow};

use crate::arch::{ArchSpec, Family};
use crate::error::Result;

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// One op applied to earlier nodes' outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Module path in the official code, e.g. `backbone.stages.2.op_list.1.context_module.main.qkv.conv`;
    /// ops without a module of their own (adds, attention products) get a name under their block.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    /// Output shape for one image.
    pub shape: Vec<usize>,
    /// Coarse position in the network (`stem`, `stage1`…, `head`; DeiT: `embed`, `blocks.N`, `head`).
    pub stage: String,
    /// Parameter tensors owned by this node, with full state-dict names.
    pub params: Vec<ParamSpec>,
    /// Multiply-accumulates for one image.
    pub macs: u64,
}

impl Node {
    /// Learned parameters of this node (excludes BatchNorm running statistics).
    pub fn learnable_params(&self) -> u64 {
        self.params
            .iter()
            .filter(|p| p.role.is_learnable())
            .map(ParamSpec::numel)
            .sum()
    }
}

/// A whole network for one input resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub model: String,
    pub family: Family,
    pub resolution: usize,
    pub num_classes: usize,
    nodes: Vec<Node>,
}

impl Graph {
    /// Builds the graph of a validated spec.
    pub fn build(spec: &ArchSpec) -> Result<Graph> {
        spec.validate(&format!("model `{}`", spec.name()))?;
        match spec {
            ArchSpec::EfficientVit(s) => efficientvit::build(s),
            ArchSpec::Deit(s) => deit::build(s),
        }
    }

    /// All nodes in execution order; node 0 is the input image.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The node whose output is the logits.
    pub fn output(&self) -> NodeId {
        self.nodes.len() - 1
    }

    /// Shape of the input image, `[C, H, W]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.nodes[0].shape
    }

    /// Looks a node up by name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Shapes of a node's inputs.
    pub fn input_shapes(&self, id: NodeId) -> Vec<&[usize]> {
        self.nodes[id]
            .inputs
            .iter()
            .map(|&i| self.nodes[i].shape.as_slice())
            .collect()
    }

    /// Nodes that read `id`'s output.
    pub fn consumers(&self, id: NodeId) -> Vec<NodeId> {
        (id + 1..self.nodes.len())
            .filter(|&n| self.nodes[n].inputs.contains(&id))
            .collect()
    }

    /// Learned parameters (BatchNorm running statistics excluded), as model cards count them.
    pub fn params(&self) -> u64 {
        self.nodes.iter().map(Node::learnable_params).sum()
    }

    /// Multiply-accumulates for one image (convolutions, linear layers, attention products).
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.macs).sum()
    }

    /// Every checkpoint tensor, in the order PyTorch's `state_dict()` lists them.
    pub fn state_dict(&self) -> Vec<ParamSpec> {
        state_dict::pytorch_order(self.nodes.iter().flat_map(|n| n.params.iter().cloned()))
    }

    /// `(conv, batch_norm)` pairs where the norm reads only that conv and the conv feeds only the
    /// norm, so the norm can be folded into the conv's weight and bias.
    pub fn foldable_batch_norms(&self) -> Vec<(NodeId, NodeId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(id, node)| match (&node.op, node.inputs.as_slice()) {
                (Op::BatchNorm2d { .. }, &[conv])
                    if matches!(self.nodes[conv].op, Op::Conv2d(_))
                        && self.consumers(conv) == [id] =>
                {
                    Some((conv, id))
                }
                _ => None,
            })
            .collect()
    }

    /// Per-layer rows and totals by op type and by stage.
    pub fn summary(&self) -> GraphSummary {
        summary::summarize(self)
    }
}
