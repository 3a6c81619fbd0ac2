//! Appends nodes one at a time, inferring shapes and naming parameters as it goes.

use super::{Graph, Node, NodeId, Op, ParamSpec};
use crate::arch::Family;
use crate::error::{Error, Result};

use super::op::Conv2d;

/// The activation a `ConvLayer` / `LinearLayer` ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    Hardswish,
}

#[derive(Debug)]
pub(super) struct Builder {
    model: String,
    stage: String,
    nodes: Vec<Node>,
}

impl Builder {
    /// Starts a graph whose node 0 is the input image.
    pub fn new(model: &str, input_shape: Vec<usize>) -> Self {
        let input = Node {
            name: "input".to_string(),
            op: Op::Input,
            inputs: Vec::new(),
            shape: input_shape,
            stage: "input".to_string(),
            params: Vec::new(),
            macs: 0,
        };
        Self {
            model: model.to_string(),
            stage: "input".to_string(),
            nodes: vec![input],
        }
    }

    /// Nodes added from now on belong to `stage`.
    pub fn stage(&mut self, stage: impl Into<String>) {
        self.stage = stage.into();
    }

    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id].shape
    }

    /// Adds a node whose parameters are named `<name>.<suffix>`.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = name.into();
        let prefix = name.clone();
        self.add_with_param_prefix(name, &prefix, op, inputs)
    }

    /// Adds a node whose parameters are named `<prefix>.<suffix>` (or `<suffix>` for an empty
    /// prefix, as for DeiT's root-level `cls_token`).
    pub fn add_with_param_prefix(
        &mut self,
        name: String,
        prefix: &str,
        op: Op,
        inputs: &[NodeId],
    ) -> Result<NodeId> {
        let input_shapes: Vec<&[usize]> = inputs
            .iter()
            .map(|&i| self.nodes[i].shape.as_slice())
            .collect();
        let shape = op
            .infer_shape(&input_shapes)
            .map_err(|message| Error::Graph {
                model: self.model.clone(),
                layer: name.clone(),
                message,
            })?;
        let macs = op.macs(&input_shapes, &shape);
        let params = op
            .param_layout()
            .into_iter()
            .map(|(suffix, role, shape)| ParamSpec {
                name: if prefix.is_empty() {
                    suffix.to_string()
                } else {
                    format!("{prefix}.{suffix}")
                },
                shape,
                role,
            })
            .collect();
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            shape,
            stage: self.stage.clone(),
            params,
            macs,
        });
        Ok(self.nodes.len() - 1)
    }

    /// The official `ConvLayer`: conv (`<prefix>.conv`), optional BatchNorm (`<prefix>.norm`) and
    /// optional activation (`<prefix>.act`, no parameters).
    pub fn conv_layer(
        &mut self,
        prefix: &str,
        x: NodeId,
        conv: Conv2d,
        norm_eps: Option<f64>,
        act: Option<Act>,
    ) -> Result<NodeId> {
        let mut y = self.add(format!("{prefix}.conv"), Op::Conv2d(conv), &[x])?;
        if let Some(eps) = norm_eps {
            let op = Op::BatchNorm2d {
                channels: conv.out_channels,
                eps,
            };
            y = self.add(format!("{prefix}.norm"), op, &[y])?;
        }
        if let Some(act) = act {
            y = self.activation(format!("{prefix}.act"), act, y)?;
        }
        Ok(y)
    }

    pub fn activation(&mut self, name: String, act: Act, x: NodeId) -> Result<NodeId> {
        let op = match act {
            Act::Hardswish => Op::Hardswish,
        };
        self.add(name, op, &[x])
    }

    pub fn finish(self, family: Family, resolution: usize, num_classes: usize) -> Graph {
        Graph {
            model: self.model,
            family,
            resolution,
            num_classes,
            nodes: self.nodes,
        }
    }
}
