//! `qvit info`: a model's layers with shapes, parameters and MACs, and totals by op type and stage.

use clap::Args;
use qvit_core::arch::ArchSpec;
use qvit_core::graph::{Graph, GraphSummary, GroupTotal, shape_string};

use clap::ValueEnum;

use super::format::{emit, table, thousands};

/// How `qvit info` prints a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InfoFormat {
    /// Aligned tables for reading.
    Table,
    /// The summary as one JSON document for scripts.
    Json,
    /// One comma-separated row per layer, for spreadsheets.
    Csv,
    /// The whole graph as JSON — every node's op with its settings, inputs, shape and
    /// parameters — for other tools (qvit's trainer reads it).
    Graph,
}

/// Show a model's layers: shapes, parameters and MACs, with totals by op type and by stage.
///
/// MACs count convolutions, linear layers and attention matrix products for one image; norms,
/// activations, adds and pooling are not MACs. Parameters exclude BatchNorm running statistics,
/// as model cards count them.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A preset name (efficientvit-b0, -b1, -b2, -b3, efficientvit-micro,
    /// efficientvit-micro-spread, deit-tiny, deit-small, deit-base, deit-micro) or the path of a
    /// model RON file.
    model: String,
    /// Input resolution in pixels (default: the spec's own).
    #[arg(long, short)]
    resolution: Option<usize>,
    #[arg(long, short, value_enum, default_value_t = InfoFormat::Table)]
    format: InfoFormat,
    /// List only the layers that perform MACs.
    #[arg(long)]
    compute_only: bool,
}

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let mut spec = ArchSpec::resolve(&args.model)?;
    if let Some(r) = args.resolution {
        spec = spec.with_resolution(r)?;
    }
    let graph = Graph::build(&spec)?;
    let summary = || {
        let mut summary = graph.summary();
        if args.compute_only {
            summary.layers.retain(|l| l.macs > 0);
        }
        summary
    };
    let text = match args.format {
        InfoFormat::Table => tables(&summary()),
        InfoFormat::Json => serde_json::to_string_pretty(&summary())? + "\n",
        InfoFormat::Csv => csv_rows(&summary())?,
        InfoFormat::Graph => serde_json::to_string(&graph)? + "\n",
    };
    emit(&text)
}

fn tables(s: &GraphSummary) -> String {
    let mut out = format!(
        "{} ({}) — input {}, {} classes\n",
        s.model,
        s.family,
        shape_string(&s.input_shape),
        s.num_classes
    );
    out += &format!(
        "parameters {} · MACs {} ({:.3} G) per image · {} checkpoint tensors\n\n",
        thousands(s.params),
        thousands(s.macs),
        s.macs as f64 / 1e9,
        s.state_dict_entries
    );
    let mut layers = table(
        &[
            "layer", "op", "detail", "input", "output", "params", "MACs", "share",
        ],
        &[5, 6, 7],
    );
    for l in &s.layers {
        let inputs: Vec<String> = l.input_shapes.iter().map(|x| shape_string(x)).collect();
        layers.add_row(vec![
            l.name.clone(),
            l.op.clone(),
            l.detail.clone(),
            inputs.join(", "),
            shape_string(&l.output_shape),
            thousands(l.params),
            thousands(l.macs),
            format!("{:.2} %", l.mac_share),
        ]);
    }
    out += &format!("{layers}\n\nby op type\n{}\n\n", totals(&s.by_op_type));
    out += &format!("by stage\n{}\n", totals(&s.by_stage));
    out
}

fn totals(groups: &[GroupTotal]) -> comfy_table::Table {
    let mut t = table(&["", "layers", "params", "MACs", "share"], &[1, 2, 3, 4]);
    for g in groups {
        t.add_row(vec![
            g.name.clone(),
            g.layers.to_string(),
            thousands(g.params),
            thousands(g.macs),
            format!("{:.2} %", g.mac_share),
        ]);
    }
    t
}

fn csv_rows(s: &GraphSummary) -> anyhow::Result<String> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "layer",
        "op",
        "category",
        "detail",
        "stage",
        "input",
        "output",
        "params",
        "macs",
        "mac_share",
    ])?;
    for l in &s.layers {
        let inputs: Vec<String> = l.input_shapes.iter().map(|x| shape_string(x)).collect();
        out.write_record([
            l.name.as_str(),
            &l.op,
            &l.category,
            &l.detail,
            &l.stage,
            &inputs.join(" "),
            &shape_string(&l.output_shape),
            &l.params.to_string(),
            &l.macs.to_string(),
            &format!("{:.4}", l.mac_share),
        ])?;
    }
    Ok(String::from_utf8(out.into_inner()?)?)
}
