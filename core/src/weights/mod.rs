//! Model weights: read from safetensors or `torch.save` checkpoints, mapped to their official
//! names, checked against the graph, and prepared for execution with BatchNorm folded into the
//! convolutions before it.
//!
//! The raw tensors stay available ([`Weights::get`]) for inspection; executors use the
//! [`FoldedWeights`] made from them.

mod check;
mod fold;
mod measured_norms;
pub mod names;
mod safetensors_file;
mod torch_file;

use std::collections::BTreeMap;
use std::path::Path;

pub use fold::{FoldedWeights, NodeParams};

use crate::error::{Error, Result};
use crate::graph::{Graph, Op, ParamRole};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Every parameter tensor of one model, as f32, under its official state-dict name.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Where the weights came from, for messages.
    pub origin: String,
    tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    /// Reads a checkpoint and checks it against `graph`: a missing, extra, duplicated,
    /// mis-shaped, wrongly typed or non-finite tensor is an error that lists every offending name.
    ///
    /// The format is recognised from the file's first bytes: safetensors, or a `torch.save`
    /// file (zip or legacy; `.pt`, `.pth`, `.bin`), f32, f16 or bf16. Keys may be official names,
    /// timm's EfficientViT names, or either under the `state_dict.` / `model.` / `module.`
    /// wrappers of published checkpoints (see [`names`]); BatchNorm's `num_batches_tracked`
    /// counters may be present or absent.
    pub fn load(path: &Path, graph: &Graph) -> Result<Self> {
        use std::io::Read;
        let origin = path.display().to_string();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        // The first bytes tell the format; a torch file is then read by its own reader, which
        // reads only the tensors the model has.
        let mut head = Vec::with_capacity(4);
        std::fs::File::open(path)
            .and_then(|f| f.take(4).read_to_end(&mut head))
            .map_err(io)?;
        if torch_file::looks_like_torch(&head) {
            let tensors = check::match_graph(torch_file::entries(path)?, &origin, graph)?;
            return Ok(Self { origin, tensors });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_safetensors(&bytes, &origin, graph)
    }

    /// As [`Weights::load`], from the bytes of a safetensors file.
    pub fn from_safetensors(bytes: &[u8], origin: &str, graph: &Graph) -> Result<Self> {
        let entries = safetensors_file::entries(bytes, origin)?;
        let tensors = check::match_graph(entries, origin, graph)?;
        Ok(Self {
            origin: origin.to_string(),
            tensors,
        })
    }

    /// Random weights for `graph` (uniform ±1/√fan_in, unit norms, identity BatchNorm
    /// statistics), a function of `seed`; for benchmarks and tests.
    pub fn random(graph: &Graph, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut tensors = BTreeMap::new();
        for node in graph.nodes() {
            let fan_in = match &node.op {
                Op::Conv2d(c) | Op::PatchEmbed(c) => c.in_channels / c.groups * c.kernel * c.kernel,
                Op::Linear(l) => l.in_features,
                _ => 1,
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            for p in &node.params {
                let n = p.numel() as usize;
                let data: Vec<f32> = match p.role {
                    ParamRole::Weight | ParamRole::Bias => {
                        (0..n).map(|_| rng.uniform(-bound, bound)).collect()
                    }
                    ParamRole::NormWeight | ParamRole::RunningVar => {
                        (0..n).map(|_| rng.uniform(0.5, 1.5)).collect()
                    }
                    ParamRole::NormBias | ParamRole::RunningMean => {
                        (0..n).map(|_| rng.uniform(-0.1, 0.1)).collect()
                    }
                    ParamRole::ClassToken | ParamRole::PosEmbed => {
                        (0..n).map(|_| 0.02 * rng.normal()).collect()
                    }
                    ParamRole::NumBatchesTracked => continue,
                };
                tensors.insert(p.name.clone(), Tensor::new(p.shape.clone(), data));
            }
        }
        Self {
            origin: format!("random weights (seed {seed})"),
            tensors,
        }
    }

    /// The tensor stored under an official name (BatchNorm counters are not kept).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Puts `tensor` in place of the one named `name` (same shape, finite values): for
    /// what-if experiments on a loaded model.
    pub fn replace(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        let Some(old) = self.tensors.get_mut(name) else {
            return Error::field(&self.origin, name, "no such tensor");
        };
        if old.shape != tensor.shape || tensor.data.iter().any(|v| !v.is_finite()) {
            return Error::field(
                &self.origin,
                name,
                format!(
                    "the replacement must be finite and of shape {:?}, not {:?}",
                    old.shape, tensor.shape
                ),
            );
        }
        *old = tensor;
        Ok(())
    }

    /// Names of all tensors held, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Per-node parameters for execution, BatchNorm folded into the conv before it.
    pub fn fold(&self, graph: &Graph) -> Result<FoldedWeights> {
        fold::gather(graph, self, true)
    }

    /// Per-node parameters with every BatchNorm kept as its own per-channel affine step, for
    /// inspection and for checking the folding.
    pub fn unfolded(&self, graph: &Graph) -> Result<FoldedWeights> {
        fold::gather(graph, self, false)
    }

    /// The tensors as a safetensors file (f32, official names).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(&String, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| (name, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = bytes
            .iter()
            .zip(self.tensors.values())
            .map(|((name, data), t)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), data)
                    .map(|view| (name.as_str(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidField {
                origin: self.origin.clone(),
                field: "safetensors".into(),
                message: e.to_string(),
            })?;
        safetensors::serialize(views, None).map_err(|e| Error::InvalidField {
            origin: self.origin.clone(),
            field: "safetensors".into(),
            message: e.to_string(),
        })
    }

    /// Writes the tensors as a safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::ron_io::write_atomic(path, &self.to_safetensors()?)
    }
}
