//! The one error type of `qvit-core`.
//!
//! Every variant names what the user has to look at — a file and position, a field, a layer or a
//! preset — and what was expected, so that the CLI and the app can show it as it is.

use std::path::PathBuf;

/// Errors from loading, validating and building qvit's inputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A RON document failed to parse or did not match the expected structure.
    #[error("{origin}:{line}:{column}: {message}")]
    Ron {
        /// The file path, or a description such as `preset efficientvit-b1`.
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },

    /// A document parsed but one of its values is not acceptable.
    #[error("{origin}: field `{field}`: {message}")]
    InvalidField {
        origin: String,
        field: String,
        message: String,
    },

    /// A name that should have been one of a known set.
    #[error("unknown {kind} `{name}`; valid {kind}s: {}", valid.join(", "))]
    UnknownName {
        kind: &'static str,
        name: String,
        valid: Vec<String>,
    },

    /// A weights file does not fit the model: every offending tensor is listed.
    #[error("{origin}: the weights do not fit model `{model}`:\n  {}", problems.join("\n  "))]
    WeightsMismatch {
        origin: String,
        model: String,
        problems: Vec<String>,
    },

    /// Building the graph of a model failed at a specific layer.
    #[error("model `{model}`, layer `{layer}`: {message}")]
    Graph {
        model: String,
        layer: String,
        message: String,
    },
}

impl Error {
    /// An [`Error::InvalidField`] as an `Err`: `origin` (file or preset), the field, what is wrong.
    pub fn field<T>(origin: &str, field: &str, message: impl Into<String>) -> Result<T> {
        Err(Error::InvalidField {
            origin: origin.to_string(),
            field: field.to_string(),
            message: message.into(),
        })
    }
}

/// Refuses `value` above `max` with an [`Error::InvalidField`] naming the field; `beyond` says
/// why the bound is safe to impose (what no real input comes near).
pub fn at_most(origin: &str, field: &str, value: usize, max: usize, beyond: &str) -> Result<()> {
    if value > max {
        return Error::field(
            origin,
            field,
            format!("{value} is more than qvit accepts (at most {max}); {beyond}"),
        );
    }
    Ok(())
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
