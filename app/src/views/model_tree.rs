//! The model as a tree, stage → block → op: each op with its output shape, MACs, bits and a
//! small SQNR bar. Selecting an op drives the other views.

use qvit_core::graph::{Graph, NodeId};

use super::{db, thousands};
use crate::explorer::Explorer;

/// SQNR that fills the bar: 8-bit quantization of a well-behaved tensor gives about 40 dB.
const FULL_BAR_DB: f64 = 50.0;

pub fn show(explorer: &mut Explorer, ui: &mut egui::Ui) {
    let graph = match &explorer.graph {
        Ok(g) => g.clone(),
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
            return;
        }
    };
    ui.heading(&graph.model);
    ui.label(format!(
        "{} px · {} parameters · {} MACs",
        graph.resolution,
        thousands(graph.params()),
        thousands(graph.macs())
    ));
    ui.separator();
    egui::ScrollArea::vertical().show(ui, |ui| {
        for (stage, blocks) in group(&graph) {
            egui::CollapsingHeader::new(&stage)
                .default_open(true)
                .show(ui, |ui| {
                    for (block, ops) in blocks {
                        egui::CollapsingHeader::new(short(&block, &stage))
                            .id_salt(&block)
                            .default_open(false)
                            .show(ui, |ui| {
                                for id in ops {
                                    op_row(explorer, &graph, id, &block, ui);
                                }
                            });
                    }
                });
        }
    });
}

fn op_row(explorer: &mut Explorer, graph: &Graph, id: NodeId, block: &str, ui: &mut egui::Ui) {
    let node = graph.node(id);
    let bits = explorer
        .layer_bits
        .as_ref()
        .map(|b| b.operands(graph, id))
        .map_or(String::new(), |(w, a)| format!("W{w}A{a}"));
    let sqnr = explorer.quantized.as_ref().and_then(|q| {
        let input = super::input_point(q, graph, id);
        input.and_then(|p| q.activation_sqnr(p))
    });
    ui.horizontal(|ui| {
        let selected = explorer.selected == Some(id);
        let name = short(&node.name, block);
        if ui
            .selectable_label(selected, name)
            .on_hover_text(format!(
                "{}\n{:?} → {:?}\n{} MACs",
                node.name, node.op, node.shape, node.macs
            ))
            .clicked()
        {
            explorer.selected = Some(id);
        }
        ui.weak(format!("{:?}", node.shape));
        ui.weak(thousands(node.macs));
        ui.label(bits);
        let fill = sqnr.map_or(0.0, |s| (s / FULL_BAR_DB).clamp(0.0, 1.0)) as f32;
        ui.add(egui::ProgressBar::new(fill).desired_width(48.0))
            .on_hover_text(format!("input activation SQNR {}", db(sqnr)));
    });
}

/// A named group of the tree and what it holds.
type Group<T> = (String, Vec<T>);

/// Ops that do work (MACs), grouped by stage and block, in graph order.
fn group(graph: &Graph) -> Vec<Group<Group<NodeId>>> {
    let mut out: Vec<Group<Group<NodeId>>> = Vec::new();
    for (id, node) in graph.nodes().iter().enumerate() {
        if node.macs == 0 {
            continue;
        }
        let block = block_of(&node.name);
        if out.last().is_none_or(|(s, _)| *s != node.stage) {
            out.push((node.stage.clone(), Vec::new()));
        }
        let blocks = &mut out.last_mut().expect("pushed").1;
        if blocks.last().is_none_or(|(b, _)| *b != block) {
            blocks.push((block.clone(), Vec::new()));
        }
        blocks.last_mut().expect("pushed").1.push(id);
    }
    out
}

/// A layer's block: its name up to the second numeric component (`…stages.2.op_list.1`), or
/// the first when there is only one (`blocks.3`).
fn block_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let numeric: Vec<usize> = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.parse::<usize>().is_ok())
        .map(|(i, _)| i)
        .collect();
    match numeric.get(1).or(numeric.first()) {
        Some(&i) => parts[..=i].join("."),
        None => name.to_string(),
    }
}

/// `name` without the `prefix.` it shares with its parent in the tree.
fn short<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix)
        .map(|s| s.trim_start_matches('.'))
        .filter(|s| !s.is_empty())
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_short_names() {
        assert_eq!(
            block_of("backbone.stages.2.op_list.1.context_module.main.qkv.conv"),
            "backbone.stages.2.op_list.1"
        );
        assert_eq!(block_of("blocks.3.attn.qkv"), "blocks.3");
        assert_eq!(block_of("head.fc"), "head.fc");
        assert_eq!(short("blocks.3.attn.qkv", "blocks.3"), "attn.qkv");
        assert_eq!(short("head", "head"), "head");
    }
}
