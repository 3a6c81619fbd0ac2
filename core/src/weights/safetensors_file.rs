//! The tensors of a safetensors file.

use safetensors::SafeTensors;

use super::check::{Entry, float_values};
use crate::error::{Error, Result};

/// Every tensor of the file, its values decoded when asked for.
pub(super) fn entries<'a>(bytes: &'a [u8], origin: &str) -> Result<Vec<Entry<'a>>> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::InvalidField {
        origin: origin.to_string(),
        field: "safetensors".to_string(),
        message: format!(
            "not a readable safetensors file ({e}); is it truncated or of another format?"
        ),
    })?;
    Ok(file
        .tensors()
        .into_iter()
        .map(|(key, view)| {
            let shape = view.shape().to_vec();
            let dtype = format!("{:?}", view.dtype());
            let data = view.data();
            Entry {
                key,
                shape,
                values: Box::new(move || {
                    float_values(&dtype, data)
                        .ok_or_else(|| format!("has dtype {dtype}, expected F32, F16 or BF16"))
                }),
            }
        })
        .collect())
}
