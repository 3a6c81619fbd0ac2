//! Per-layer rows and totals of a graph: what `qvit info` prints and the explorer's model view
//! shows.

use serde::{Deserialize, Serialize};

use super::Graph;
use crate::arch::Family;

/// One node of the graph as a table row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    /// Op-type bucket (see [`super::Op::category`]).
    pub category: String,
    /// Settings in a few words (`k3 s2 p1 g1`, `1536→1600`, …).
    pub detail: String,
    pub stage: String,
    pub input_shapes: Vec<Vec<usize>>,
    pub output_shape: Vec<usize>,
    pub params: u64,
    pub macs: u64,
    /// Share of the model's MACs, in percent.
    pub mac_share: f64,
}

/// Sums over a group of layers (an op type or a stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupTotal {
    pub name: String,
    pub layers: usize,
    pub params: u64,
    pub macs: u64,
    /// Share of the model's MACs, in percent.
    pub mac_share: f64,
}

/// Everything `qvit info` reports about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSummary {
    pub model: String,
    pub family: Family,
    pub resolution: usize,
    pub input_shape: Vec<usize>,
    pub num_classes: usize,
    /// Learned parameters (BatchNorm running statistics excluded).
    pub params: u64,
    /// MACs for one image: convolutions, linear layers and attention products.
    pub macs: u64,
    /// Tensors in the checkpoint, BatchNorm buffers included.
    pub state_dict_entries: usize,
    pub layers: Vec<LayerRow>,
    /// In order of first appearance.
    pub by_op_type: Vec<GroupTotal>,
    /// In network order.
    pub by_stage: Vec<GroupTotal>,
}

fn percent(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

fn group_by(
    rows: &[LayerRow],
    key: impl Fn(&LayerRow) -> &str,
    total_macs: u64,
) -> Vec<GroupTotal> {
    let mut groups: Vec<GroupTotal> = Vec::new();
    for row in rows {
        let name = key(row);
        let index = match groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                groups.push(GroupTotal {
                    name: name.to_string(),
                    layers: 0,
                    params: 0,
                    macs: 0,
                    mac_share: 0.0,
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[index];
        g.layers += 1;
        g.params += row.params;
        g.macs += row.macs;
    }
    for g in &mut groups {
        g.mac_share = percent(g.macs, total_macs);
    }
    groups
}

pub(super) fn summarize(graph: &Graph) -> GraphSummary {
    let total_macs = graph.macs();
    let layers: Vec<LayerRow> = graph
        .nodes()
        .iter()
        .enumerate()
        .skip(1)
        .map(|(id, node)| LayerRow {
            name: node.name.clone(),
            op: node.op.kind().to_string(),
            category: node.op.category(),
            detail: node.op.detail(),
            stage: node.stage.clone(),
            input_shapes: graph
                .input_shapes(id)
                .into_iter()
                .map(<[usize]>::to_vec)
                .collect(),
            output_shape: node.shape.clone(),
            params: node.learnable_params(),
            macs: node.macs,
            mac_share: percent(node.macs, total_macs),
        })
        .collect();
    GraphSummary {
        model: graph.model.clone(),
        family: graph.family,
        resolution: graph.resolution,
        input_shape: graph.input_shape().to_vec(),
        num_classes: graph.num_classes,
        params: graph.params(),
        macs: total_macs,
        state_dict_entries: graph.state_dict().len(),
        by_op_type: group_by(&layers, |r| &r.category, total_macs),
        by_stage: group_by(&layers, |r| &r.stage, total_macs),
        layers,
    }
}
