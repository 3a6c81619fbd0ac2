//! Matching a checkpoint's tensors with a graph's state dict, whatever the file format: every
//! key mapped to its official name, then checked for presence, shape, type and value.

use std::collections::BTreeMap;

use super::names;
use crate::error::{Error, Result};
use crate::graph::{Graph, ParamRole};
use crate::tensor::Tensor;

/// Most problems of each kind (wrong, missing, unexpected) listed one per line; the rest are
/// counted.
const LISTED_PER_KIND: usize = 15;

/// One tensor of a checkpoint, its values read only once its name and shape fit the model.
pub(super) struct Entry<'a> {
    /// The key as the file spells it.
    pub key: String,
    pub shape: Vec<usize>,
    /// The values as f32, or why they cannot be (an integer type, an unreadable storage).
    pub values: Box<dyn FnOnce() -> std::result::Result<Vec<f32>, String> + 'a>,
}

/// f32, f16 or bf16 little-endian bytes as f32 values; `None` for any other type.
pub(super) fn float_values(dtype: &str, bytes: &[u8]) -> Option<Vec<f32>> {
    let words = |n: usize| bytes.chunks_exact(n);
    Some(match dtype {
        "F32" => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "F16" => words(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "BF16" => words(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

pub(super) fn dims(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Why a tensor's values cannot be a trained model's, if they cannot: a NaN or an infinity
/// anywhere, or a negative BatchNorm variance.
fn impossible_value(values: &[f32], role: ParamRole) -> Option<String> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Some(format!(
            "holds {v} at index {i}; weights must be finite numbers"
        ));
    }
    if role == ParamRole::RunningVar
        && let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v < 0.0)
    {
        return Some(format!(
            "holds the variance {v} at index {i}; a BatchNorm variance cannot be negative"
        ));
    }
    None
}

/// The checkpoint's tensors under their official names, checked against `graph`: a missing,
/// extra, duplicated, mis-shaped, wrongly typed or non-finite tensor is an error that lists
/// every offending name, sorted, after a one-line summary.
pub(super) fn match_graph(
    entries: Vec<Entry<'_>>,
    origin: &str,
    graph: &Graph,
) -> Result<BTreeMap<String, Tensor>> {
    let expected: BTreeMap<String, (Vec<usize>, ParamRole)> = graph
        .state_dict()
        .into_iter()
        .map(|p| (p.name, (p.shape, p.role)))
        .collect();

    let total = entries.len();
    let (mut missing, mut unexpected, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
    let mut tensors = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for entry in entries {
        let name = names::official(&entry.key, graph.family);
        let Some((shape, role)) = expected.get(&name) else {
            unexpected.push(format!(
                "unexpected tensor `{}` {} (the model has no such parameter)",
                entry.key,
                dims(&entry.shape)
            ));
            continue;
        };
        if let Some(first) = seen.insert(name.clone(), entry.key.clone()) {
            wrong.push(format!(
                "tensors `{first}` and `{}` both stand for `{name}`; keep one of them",
                entry.key
            ));
            continue;
        }
        if *role == ParamRole::NumBatchesTracked {
            continue; // a counter, not used for inference; any integer type is fine
        }
        if entry.shape != *shape {
            wrong.push(format!(
                "tensor `{name}` has shape {}, expected {}",
                dims(&entry.shape),
                dims(shape)
            ));
            continue;
        }
        match (entry.values)() {
            Ok(values) if values.len() != shape.iter().product::<usize>() => wrong.push(format!(
                "tensor `{name}` holds {} values for shape {}; is the file truncated?",
                values.len(),
                dims(shape)
            )),
            Ok(values) => match impossible_value(&values, *role) {
                Some(why) => wrong.push(format!("tensor `{name}` {why}")),
                None => {
                    tensors.insert(name, Tensor::new(shape.clone(), values));
                }
            },
            Err(why) => wrong.push(format!("tensor `{name}` {why}")),
        }
    }
    for (name, (shape, role)) in &expected {
        if *role != ParamRole::NumBatchesTracked && !seen.contains_key(name) {
            missing.push(format!("missing tensor `{name}` of shape {}", dims(shape)));
        }
    }
    if missing.is_empty() && unexpected.is_empty() && wrong.is_empty() {
        return Ok(tensors);
    }
    let mut summary = vec![format!(
        "{} missing, {} unexpected, {} wrong ({} tensors in the file, {} expected)",
        missing.len(),
        unexpected.len(),
        wrong.len(),
        total,
        expected
            .values()
            .filter(|(_, r)| *r != ParamRole::NumBatchesTracked)
            .count()
    )];
    if seen.is_empty() {
        let examples: Vec<&str> = expected.keys().take(3).map(String::as_str).collect();
        summary.push(format!(
            "no tensor of the file is a parameter of `{}`: is it a checkpoint of another model? \
             (its tensors are named like `{}`)",
            graph.model,
            examples.join("`, `")
        ));
    }
    for (mut list, kind) in [
        (wrong, "wrong"),
        (unexpected, "unexpected"),
        (missing, "missing"),
    ] {
        list.sort();
        let more = list.len().saturating_sub(LISTED_PER_KIND);
        list.truncate(LISTED_PER_KIND);
        summary.extend(list);
        if more > 0 {
            summary.push(format!("… and {more} more {kind}"));
        }
    }
    Err(Error::WeightsMismatch {
        origin: origin.to_string(),
        model: graph.model.clone(),
        problems: summary,
    })
}
