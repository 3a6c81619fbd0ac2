//! The tensors of a `torch.save` file: the zip archive of PyTorch ≥ 1.6 (`.pt`, `.pth`, `.bin`)
//! or the legacy pickle stream before it, read by the `pytorch-reader` crate, which interprets
//! the pickle without running any of it.
//!
//! A pickle can name any Python callable, and `torch.load` without `weights_only` would call
//! it. qvit calls nothing, and it also accepts nothing but what a weights file needs: dicts,
//! lists, numbers, strings and tensors. A file that names anything else (`posix.system`, a
//! training script's `argparse.Namespace`) is refused with the name and where it sits, so a
//! checkpoint crafted to run code when PyTorch opens it is flagged rather than passed on.
//!
//! The weights are the dict under `state_dict` (MIT EfficientViT), `model` (DeiT) or `module`
//! when the file holds one, else the file's own top-level dict.

use std::path::Path;

use pytorch_reader::{DType, PickleValue, PytorchReader};

use super::check::{Entry, float_values};
use crate::error::{Error, Result};

/// Keys under which published checkpoints keep the state dict.
const WRAPPERS: [&str; 3] = ["state_dict", "model", "module"];

/// Whether the first bytes are those of a file `torch.save` writes: a zip archive, or a
/// pickle (protocol 2, as the legacy format starts with).
pub(super) fn looks_like_torch(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.starts_with(&[0x80, 0x02])
}

fn invalid(origin: &str, message: String) -> Error {
    Error::InvalidField {
        origin: origin.to_string(),
        field: "torch checkpoint".into(),
        message,
    }
}

/// Every value of the pickle that is not plain data or a tensor, as `path: type`.
fn foreign_objects(value: &PickleValue, path: &mut Vec<String>, found: &mut Vec<String>) {
    match value {
        PickleValue::Dict(d) => {
            let mut keys: Vec<&String> = d.keys().collect();
            keys.sort();
            for k in keys {
                path.push(k.clone());
                foreign_objects(&d[k], path, found);
                path.pop();
            }
        }
        PickleValue::List(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                foreign_objects(item, path, found);
                path.pop();
            }
        }
        PickleValue::Unsupported(kind) if kind != "torch.Tensor" => {
            let at = if path.is_empty() {
                "the file's root".to_string()
            } else {
                format!("`{}`", path.join("."))
            };
            found.push(format!("{at} is a `{kind}`"));
        }
        _ => {}
    }
}

/// Every tensor of the checkpoint's state dict, its values read when asked for.
pub(super) fn entries(path: &Path) -> Result<Vec<Entry<'static>>> {
    let origin = path.display().to_string();
    let pickle = PytorchReader::read_pickle_data(path, None).map_err(|e| {
        invalid(
            &origin,
            format!("not a readable torch.save file ({e}); is it truncated or of another format?"),
        )
    })?;
    let mut found = Vec::new();
    foreign_objects(&pickle, &mut Vec::new(), &mut found);
    if !found.is_empty() {
        let more = found.len().saturating_sub(5);
        found.truncate(5);
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        return Err(invalid(
            &origin,
            format!(
                "the pickle holds Python objects other than tensors, dicts and lists, which qvit \
                 neither runs nor accepts: {}{more}. Save the state dict alone, e.g. \
                 `torch.save(checkpoint[\"model\"], \"weights.pth\")` in a Python you trust, or \
                 convert it to safetensors",
                found.join("; ")
            ),
        ));
    }
    let PickleValue::Dict(root) = &pickle else {
        return Err(invalid(
            &origin,
            "the file holds no dict of tensors (expected a state dict, or a dict with one under \
             `state_dict` or `model`)"
                .into(),
        ));
    };
    let wrapper = WRAPPERS
        .into_iter()
        .find(|k| matches!(root.get(*k), Some(PickleValue::Dict(_))));
    let reader = match wrapper {
        Some(key) => PytorchReader::with_top_level_key(path, key),
        None => PytorchReader::new(path),
    }
    .map_err(|e| invalid(&origin, format!("cannot read the tensors: {e}")))?;
    Ok(reader
        .into_tensors()
        .into_iter()
        .map(|(key, tensor)| {
            let shape = tensor.shape().to_vec();
            Entry {
                key,
                shape,
                values: Box::new(move || {
                    let dtype = match tensor.dtype() {
                        DType::F32 => "F32",
                        DType::F16 => "F16",
                        DType::BF16 => "BF16",
                        other => {
                            return Err(format!("has dtype {other:?}, expected F32, F16 or BF16"));
                        }
                    };
                    let bytes = tensor
                        .read()
                        .map_err(|e| format!("cannot be read from the file: {e}"))?;
                    float_values(dtype, &bytes)
                        .ok_or_else(|| format!("has dtype {dtype}, expected F32, F16 or BF16"))
                }),
            }
        })
        .collect())
}
