//! Reading a safetensors file and checking it against a graph's state dict.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::graph::{Graph, ParamRole};
use crate::tensor::Tensor;

/// Prefixes that published checkpoints put before the module names.
const PREFIXES: [&str; 3] = ["state_dict.", "model.", "module."];

fn strip_prefixes(mut name: &str) -> &str {
    while let Some(rest) = PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
        name = rest;
    }
    name
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let words = |n: usize| bytes.chunks_exact(n);
    Some(match dtype {
        Dtype::F32 => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn dims(shape: &[usize]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(super) fn read(bytes: &[u8], origin: &str, graph: &Graph) -> Result<BTreeMap<String, Tensor>> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::InvalidField {
        origin: origin.to_string(),
        field: "safetensors".to_string(),
        message: format!(
            "not a readable safetensors file ({e}); is it truncated or of another format?"
        ),
    })?;
    let expected: BTreeMap<String, (Vec<usize>, ParamRole)> = graph
        .state_dict()
        .into_iter()
        .map(|p| (p.name, (p.shape, p.role)))
        .collect();

    let mut problems = Vec::new();
    let mut tensors = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (key, view) in file.tensors() {
        let name = strip_prefixes(&key).to_string();
        let Some((shape, role)) = expected.get(&name) else {
            problems.push(format!(
                "unexpected tensor `{key}` {} (the model has no such parameter)",
                dims(view.shape())
            ));
            continue;
        };
        seen.insert(name.clone());
        if *role == ParamRole::NumBatchesTracked {
            continue; // a counter, not used for inference; any integer type is fine
        }
        if view.shape() != shape.as_slice() {
            problems.push(format!(
                "tensor `{name}` has shape {}, expected {}",
                dims(view.shape()),
                dims(shape)
            ));
            continue;
        }
        match to_f32(view.dtype(), view.data()) {
            Some(data) => {
                tensors.insert(name, Tensor::new(shape.clone(), data));
            }
            None => problems.push(format!(
                "tensor `{name}` has dtype {:?}, expected F32, F16 or BF16",
                view.dtype()
            )),
        }
    }
    for (name, (shape, role)) in &expected {
        if *role != ParamRole::NumBatchesTracked && !seen.contains(name) {
            problems.push(format!("missing tensor `{name}` of shape {}", dims(shape)));
        }
    }
    if problems.is_empty() {
        Ok(tensors)
    } else {
        Err(Error::WeightsMismatch {
            origin: origin.to_string(),
            model: graph.model.clone(),
            problems,
        })
    }
}
