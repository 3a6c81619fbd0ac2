//! ONNX exports of a model, for deployment runtimes and hardware flows.
//!
//! - [`float_model`]: the float model in standard operators (opset [`FLOAT_OPSET`]), BatchNorm
//!   folded as qvit runs it, parameters under their checkpoint names.
//! - [`quantized_model`]: the fake-quant model of a quant plan, as QuantizeLinear/
//!   DequantizeLinear pairs (opset [`QDQ_OPSET`]) or as QONNX `Quant` nodes (opset
//!   [`QONNX_OPSET`]); see [`quantized`] for how each quantizer is written. A QONNX export can
//!   carry the integer executor's non-linear steps as `qvit` nodes ([`integer`]).
//!
//! The graph has one input, `input` (`[batch, C, H, W]` float32, exactly the tensor qvit's
//! executors take), and one output, `logits` (`[batch, classes]`). How each qvit op maps onto
//! ONNX operators is in [`lower`].

mod builder;
pub mod integer;
pub mod lower;
pub mod quantized;

use std::path::Path;

use onnx_protobuf::{Message, ModelProto};

pub use builder::{Attr, Dim, ElementType, IR_VERSION, OnnxGraph};
pub use integer::{IntegerSteps, QVIT_DOMAIN};
pub use quantized::{QDQ_OPSET, QONNX_DOMAIN, QONNX_OPSET, Style};

use crate::error::{Error, Result};
use crate::exec::int::IntProgram;
use crate::graph::Graph;
use crate::quant::QuantPlan;
use crate::weights::FoldedWeights;

/// The operator set of the float export: 17 is the first with `LayerNormalization`.
pub const FLOAT_OPSET: i64 = 17;

/// Facts about an export recorded in the model's `metadata_props` (key, value), e.g. the
/// input's normalisation, the recipe, the rounding.
pub type Metadata = Vec<(String, String)>;

/// The float model as standard ONNX operators.
pub fn float_model(
    graph: &Graph,
    params: &FoldedWeights,
    batch: Dim,
    metadata: &Metadata,
) -> Result<ModelProto> {
    let mut g = OnnxGraph::new(&graph.model);
    lower::lower(&mut g, graph, params, &mut lower::Float, batch)?;
    let doc = format!(
        "{} ({} classes, {}×{} input) exported by qvit in float32, BatchNorm folded into the \
         conv before it. Input `{}`: {}. Output `{}`: class logits.",
        graph.model,
        graph.num_classes,
        graph.resolution,
        graph.resolution,
        lower::INPUT,
        lower::INPUT_DOC,
        lower::LOGITS
    );
    Ok(g.into_model(&[("", FLOAT_OPSET)], &doc, metadata))
}

/// The fake-quant model of `plan` in `style`; `params` are the float folded weights (the
/// export quantizes them with the plan). With `integer` (the plan compiled for the integer
/// executor; QONNX only) the non-linear steps are that program's, as `qvit` nodes
/// ([`integer`]). The plan's recipe, bits, overrides and rounding, the points written in
/// standard operators and the integer steps are added to `metadata`.
pub fn quantized_model(
    graph: &Graph,
    params: &FoldedWeights,
    plan: &QuantPlan,
    style: Style,
    integer: Option<&IntProgram>,
    batch: Dim,
    metadata: &Metadata,
) -> Result<ModelProto> {
    let mut g = OnnxGraph::new(&graph.model);
    let mut hooks = quantized::Quantized::new(graph, plan, style)?;
    if let Some(program) = integer {
        if style != Style::Qonnx {
            return Err(Error::InvalidField {
                origin: graph.model.clone(),
                field: "format".into(),
                message: "integer steps are written in QONNX exports only".into(),
            });
        }
        hooks.integer = Some(IntegerSteps::new(graph, program));
    }
    lower::lower(&mut g, graph, params, &mut hooks, batch)?;
    let integer_steps = hooks
        .integer
        .as_ref()
        .map_or_else(String::new, |s| s.written.join(" "));
    let rounding = plan
        .activations
        .first()
        .map_or(crate::quant::Rounding::HalfUp, |a| a.rounding);
    let mut metadata = metadata.clone();
    metadata.extend([
        ("qvit.recipe".into(), plan.recipe.clone()),
        ("qvit.bits".into(), plan.bits.to_string()),
        (
            "qvit.overrides".into(),
            plan.overrides
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "qvit.rounding".into(),
            match style {
                Style::Qdq => format!(
                    "QuantizeLinear rounds half-even; qvit's plan rounds {} (its \
                     standard-operator points follow the plan)",
                    rounding.name()
                ),
                Style::Qonnx => format!(
                    "the plan rounds {}, and so does every Quant",
                    rounding.name()
                ),
            },
        ),
        (
            "qvit.standard_op_points".into(),
            hooks.standard_op_points.join("; "),
        ),
    ]);
    if integer.is_some() {
        metadata.push(("qvit.integer_steps".into(), integer_steps.clone()));
    }
    let form = match style {
        Style::Qdq => {
            "weights as integer codes with DequantizeLinear, activations as \
             QuantizeLinear/DequantizeLinear pairs"
        }
        Style::Qonnx if integer.is_some() => {
            "weights and activations through QONNX Quant nodes; the integer executor's \
             Softmax, LayerNorm, GELU and linear-attention division as `qvit` nodes \
             (metadata `qvit.integer_steps`), computing exactly what qvit's integer executor \
             computes"
        }
        Style::Qonnx => "weights and activations through QONNX Quant nodes",
    };
    let doc = format!(
        "{} ({} classes, {}×{} input) quantized by qvit with {} at {}: {form}, BatchNorm folded. \
         {} point(s) no quantizer node can express are written exactly in standard operators \
         (metadata `qvit.standard_op_points`). Input `{}`: {}. Output `{}`: class logits.",
        graph.model,
        graph.num_classes,
        graph.resolution,
        graph.resolution,
        plan.recipe,
        plan.bits,
        hooks.standard_op_points.len(),
        lower::INPUT,
        lower::INPUT_DOC,
        lower::LOGITS
    );
    let opsets: &[(&str, i64)] = match (style, integer) {
        (Style::Qdq, _) => &[("", QDQ_OPSET)],
        (Style::Qonnx, None) => &[("", QONNX_OPSET), (QONNX_DOMAIN, 1)],
        (Style::Qonnx, Some(_)) => &[("", QONNX_OPSET), (QONNX_DOMAIN, 1), (QVIT_DOMAIN, 1)],
    };
    Ok(g.into_model(opsets, &doc, &metadata))
}

/// Serialises `model` to `path`, atomically; returns the file's size in bytes.
pub fn write(path: &Path, model: &ModelProto) -> Result<usize> {
    let bytes = model.write_to_bytes().map_err(|e| Error::InvalidField {
        origin: path.display().to_string(),
        field: "onnx".into(),
        message: format!("the model could not be encoded: {e}"),
    })?;
    crate::ron_io::write_atomic(path, &bytes)?;
    Ok(bytes.len())
}

/// The value of one of the model's metadata entries.
pub fn metadata_value<'m>(model: &'m ModelProto, key: &str) -> Option<&'m str> {
    model
        .metadata_props
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}
