//! Golden vectors for RTL testbenches: for one image, every step's integer inputs and output,
//! and for weighted layers their integer weights, biases and requantization constants, as
//! `.npy` files with a JSON manifest (`manifest.json`) that names each file, its shape and what
//! it holds, and per step its rescale records (multiplier, shift, addend with the zero-points
//! folded, rounding, saturation), threshold tables and non-linear constants
//! ([`super::rescale`]). Written by `qvit vectors`.
//!
//! The `.npy` files are NumPy format 1.0, little-endian, C order: `int32` codes and weights,
//! `int64` biases and addends. Everything is written to a fresh folder file by file, each file
//! atomically.

use std::path::Path;

use serde::Serialize;

use super::executor::IntExecutor;
use super::ops::weighted::{Output, Weights};
use super::program::StepOp;
use super::requant::{Encoder, Epilogue, Requant};
use super::rescale::{StepConstants, step_constants};
use crate::error::{Error, Result};
use crate::export::npy;
use crate::graph::Graph;
use crate::ron_io::write_atomic;

/// One array written.
#[derive(Debug, Clone, Serialize)]
pub struct ArrayEntry {
    pub file: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
}

/// One step of the program in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct StepEntry {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    pub inputs: Vec<ArrayEntry>,
    pub output: ArrayEntry,
    /// Integer constants of weighted layers: `weights`, `bias`, `multiplier`, `shift`, `addend`.
    pub constants: Vec<(String, ArrayEntry)>,
    /// Every requantization (rescale records), threshold table and non-linear constant of the
    /// step, and what its output codes mean.
    #[serde(flatten)]
    pub step: StepConstants,
}

/// The manifest written beside the arrays.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub model: String,
    pub recipe: String,
    pub semantics: &'static str,
    pub image: ArrayEntry,
    pub logit_scale: f64,
    pub steps: Vec<StepEntry>,
}

/// Runs one image and writes its golden vectors to `dir` (created if missing).
pub fn write(graph: &Graph, exec: &IntExecutor<'_>, image: &[f32], dir: &Path) -> Result<Manifest> {
    let program = exec.program();
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let values = exec.run_image(image, &|_| true);
    let shape_of = |node: usize| graph.node(node).shape.clone();
    let safe = |name: &str| name.replace(['/', '.'], "_");
    let image_entry = write_npy(dir, "image.npy", &values[0], &shape_of(0))?;
    let mut steps: Vec<StepEntry> = Vec::new();
    for (index, step) in program.steps.iter().enumerate() {
        let stem = format!("{index:03}_{}", safe(&step.name));
        let inputs = step
            .inputs
            .iter()
            .map(|&input| ArrayEntry {
                file: match program.steps.iter().position(|s| s.node == input) {
                    Some(i) => steps[i].output.file.clone(),
                    None => image_entry.file.clone(),
                },
                dtype: "int32",
                shape: shape_of(input),
            })
            .collect();
        let output = write_npy(
            dir,
            &format!("{stem}.out.npy"),
            &values[step.node],
            &shape_of(step.node),
        )?;
        let mut constants = Vec::new();
        if let StepOp::Weighted(w) = &step.op {
            let codes: Vec<i32> = match &w.weights {
                Weights::Int8(groups) => groups
                    .iter()
                    .flat_map(|a| {
                        (0..a.rows).flat_map(move |r| {
                            (0..a.k).map(move |kk| {
                                (a.quads[r * a.k4 + kk / 4].to_le_bytes()[kk % 4] as i8) as i32
                            })
                        })
                    })
                    .collect(),
                Weights::Depthwise(v) => v.iter().map(|&x| x as i32).collect(),
                Weights::Wide(v) => v.clone(),
            };
            // [out, in/groups·k·k], row-major (a conv's [out, in/groups, k, k] flattened).
            let shape = vec![w.out_channels, codes.len() / w.out_channels];
            constants.push((
                "weights".into(),
                write_npy(dir, &format!("{stem}.weights.npy"), &codes, &shape)?,
            ));
            // One convention for every path: `Σ w·x + bias` over the raw input codes (padding
            // holds each channel's zero-point), so the input zero-points are folded here.
            let per_out = codes.len() / w.out_channels;
            let per_channel = per_out / (w.in_channels / w.groups).max(1);
            let cout_g = w.out_channels / w.groups;
            let bias: Vec<i64> = (0..w.out_channels)
                .map(|o| {
                    let folded: i64 = codes[o * per_out..(o + 1) * per_out]
                        .iter()
                        .enumerate()
                        .map(|(t, &wv)| {
                            let c = (o / cout_g) * (w.in_channels / w.groups) + t / per_channel;
                            wv as i64 * w.zero[c.min(w.zero.len() - 1)] as i64
                        })
                        .sum();
                    w.bias[o] - folded
                })
                .collect();
            constants.push((
                "bias".into(),
                write_npy64(dir, &format!("{stem}.bias.npy"), &bias)?,
            ));
            if let Some(r) = output_requant(&w.output) {
                let m: Vec<i32> = r.multiplier.iter().map(|d| d.m).collect();
                let k: Vec<i32> = r.multiplier.iter().map(|d| d.k as i32).collect();
                let n = m.len();
                constants.push((
                    "multiplier".into(),
                    write_npy(dir, &format!("{stem}.multiplier.npy"), &m, &[n])?,
                ));
                constants.push((
                    "shift".into(),
                    write_npy(dir, &format!("{stem}.shift.npy"), &k, &[n])?,
                ));
                let addend: Vec<i64> = r
                    .addend
                    .iter()
                    .map(|&a| {
                        i64::try_from(a).map_err(|_| Error::Graph {
                            model: program.model.clone(),
                            layer: step.name.clone(),
                            message: "a requantization addend does not fit int64".into(),
                        })
                    })
                    .collect::<Result<_>>()?;
                constants.push((
                    "addend".into(),
                    write_npy64(dir, &format!("{stem}.addend.npy"), &addend)?,
                ));
            }
        }
        let encoding = program
            .points
            .iter()
            .find(|p| p.node == step.node)
            .map(|p| &p.encoding);
        steps.push(StepEntry {
            index,
            name: step.name.clone(),
            kind: step.op.kind(),
            inputs,
            output,
            constants,
            step: step_constants(&step.op, encoding),
        });
    }
    let manifest = Manifest {
        model: program.model.clone(),
        recipe: program.recipe.clone(),
        semantics: "qvit integer executor: see the qvit_core::exec::int module documentation; \
                    requantization q = clamp((acc + bias)·m + addend + 2^(shift−1) >> shift)",
        image: image_entry,
        logit_scale: program.logit_scale,
        steps,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("serialisable") + "\n";
    write_atomic(&dir.join("manifest.json"), json.as_bytes())?;
    Ok(manifest)
}

/// The first requantization of an output (the one a testbench checks against the codes).
fn output_requant(o: &Output) -> Option<&Requant> {
    match o {
        Output::Epilogue(Epilogue::Plain(Encoder::Linear(r)))
        | Output::Epilogue(Epilogue::Relu {
            out: Encoder::Linear(r),
            ..
        })
        | Output::Epilogue(Epilogue::Hardswish { to_t: r, .. })
        | Output::Logits(r)
        | Output::Gelu { to_x: r, .. } => Some(r),
        _ => None,
    }
}

fn write_npy(dir: &Path, file: &str, data: &[i32], shape: &[usize]) -> Result<ArrayEntry> {
    npy::write(&dir.join(file), data, shape)?;
    Ok(ArrayEntry {
        file: file.into(),
        dtype: "int32",
        shape: shape.to_vec(),
    })
}

fn write_npy64(dir: &Path, file: &str, data: &[i64]) -> Result<ArrayEntry> {
    npy::write(&dir.join(file), data, &[data.len()])?;
    Ok(ArrayEntry {
        file: file.into(),
        dtype: "int64",
        shape: vec![data.len()],
    })
}

/// Reads an int32 `.npy` written by [`write`] (for tests and tools): shape and values.
pub fn read_npy_i32(path: &Path) -> Result<(Vec<usize>, Vec<i32>)> {
    npy::read(path)
}
