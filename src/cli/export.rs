//! `qvit export`: a model as an ONNX file for deployment runtimes and hardware flows.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use qvit_core::data::Normalize;
use qvit_core::eval::Classifier;
use qvit_core::exec::float::FloatExecutor;
use qvit_core::exec::int::{self, IntExecutor, IntProgram};
use qvit_core::export::{npy, onnx};
use qvit_core::graph::Graph;
use qvit_core::pipeline::{self, Model};
use qvit_core::project::{DataSource, Project};
use qvit_core::quant::{FakeQuantExecutor, QuantExecutor, QuantPlan};
use qvit_core::tensor::Tensor;
use qvit_core::weights::Weights;

use super::prepare;
use super::quant_args::{DataArgs, QuantArgs, project_with};

/// Write a model as ONNX, with sample inputs and qvit's outputs beside it to check it by.
///
/// `--format onnx` writes the float model in standard operators (opset 17), as qvit's float
/// executor runs it: BatchNorm folded into the conv before it, parameters under their
/// checkpoint names (a folded conv's initializers say so in their doc strings). The one input,
/// `input`, is `[batch, C, H, W]` float32, the exact tensor qvit's executors take: pixels / 255,
/// resized and centre-cropped as `qvit eval` does, then `(x − mean) / std` per channel (the
/// `normalization` metadata gives mean and std). The one output, `logits`, is
/// `[batch, classes]`.
///
/// `--format qdq` writes the fake-quant model (opset 21), quantized as `qvit eval` would with
/// the same flags (the project's `quant` section, else the family's recipe at W8A8): weights
/// as integer codes under their checkpoint names with a DequantizeLinear (int4 up to 4 bits,
/// int8 up to 8, per output channel with `axis` 0), activations as QuantizeLinear →
/// DequantizeLinear pairs with exactly the plan's scales and zero-points. Codes narrower than
/// their type (6 bits in uint8, the symmetric ±(2^(b−1) − 1)) are clamped after the
/// DequantizeLinear, which is exact; FQ-ViT's power-of-two factors become per-channel scales,
/// Trio-ViT's migration and shift a Div/Sub before and a Mul/Add after. What QuantizeLinear
/// cannot say, log2/log√2 levels (FQ-ViT's and RepQ-ViT's attention, Trio-ViT's divisor) and
/// PTQ4ViT's twin-uniform ranges, is written exactly in standard operators (Log, Round, Pow,
/// Where) and listed in the `qvit.standard_op_points` metadata. QuantizeLinear rounds ties to
/// even and qvit half up: `--rounding half-even` makes qvit round as the runtime does.
///
/// `--format qonnx` writes the same model for FINN and hls4ml (opset 17 and QONNX's
/// `qonnx.custom_op.general` domain): every uniform quantizer is one QONNX `Quant` at its own
/// bit width (signed and narrow for symmetric quantizers, the plan's zero-point otherwise,
/// rounding as the plan says); weights are float initializers holding the plan's quantized
/// values, through a `Quant` that keeps them. The graph's batch size is fixed (1 unless
/// `--batch` says otherwise), since those tools need every shape; run qonnx's InferShapes
/// before executing it.
///
/// `--integer-steps` (qonnx only) writes the integer executor's non-linear steps in place of
/// the float Softmax, LayerNorm and GELU and linear attention's division: nodes of qvit's
/// `qvit` domain that compute exactly what `qvit eval --executor int` computes, with every
/// constant (multipliers, shifts, addends, thresholds, the exponential's and GELU's
/// constants) as an attribute, for a flow to map onto its own cores. The plan must compile to
/// the integer executor. `tools/export/qvit/` implements the nodes for qonnx's executor, and
/// FILE.expected.npy then holds the integer executor's logits.
///
/// With `--samples N`, the first N test images (`--data`, or the shipped Fashion-MNIST test set
/// for the micro models) are written to FILE.inputs.npy, exactly as the model's input, and
/// qvit's logits for them (float executor for `onnx`, fake-quant otherwise, the integer
/// executor with `--integer-steps`) to
/// FILE.expected.npy, so that anyone can check the export in their own runtime; with the
/// runtimes of `tools/export/requirements.txt`:
///
///   qvit export deit-micro --format qdq --out deit.onnx --samples 1000
///
///   python tools/export/check.py deit.onnx    (the checker, then ONNX Runtime against qvit)
///
/// docs/export.md lists how each op and quantizer is written, and the measured agreement.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A project RON file, a model preset, or a model RON file (default: efficientvit-micro).
    target: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// What to write.
    #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
    format: ExportFormat,
    /// The ONNX file to write.
    #[arg(long, value_name = "FILE.onnx")]
    out: PathBuf,
    /// Also write the first N test images (FILE.inputs.npy) and qvit's logits for them
    /// (FILE.expected.npy).
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Random weights under the official names, drawn from SEED, instead of a checkpoint: for
    /// benchmarks (`tools/bench/peers.py`), whose speed does not depend on the values.
    #[arg(long, value_name = "SEED", conflicts_with = "weights")]
    random_weights: Option<u64>,
    /// A fixed batch size for the graph's input and output. Default: any size (`batch`) for
    /// onnx and qdq; 1 for qonnx, whose tools (FINN, qonnx's executor) need every shape fixed.
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Write the integer executor's Softmax, LayerNorm, GELU and linear-attention division as
    /// `qvit` nodes (qonnx only).
    #[arg(long)]
    integer_steps: bool,
    #[command(flatten)]
    quant: QuantArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// The float model in standard ONNX operators.
    Onnx,
    /// The fake-quant model as QuantizeLinear/DequantizeLinear pairs.
    Qdq,
    /// The fake-quant model with QONNX Quant nodes (FINN, hls4ml).
    Qonnx,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    // Mistakes in the flags are said before the model is loaded or calibrated.
    if args.integer_steps && args.format != ExportFormat::Qonnx {
        anyhow::bail!("--integer-steps writes qvit nodes into a QONNX graph: add --format qonnx");
    }
    if args.samples == Some(0) {
        anyhow::bail!("--samples 0: give at least one image, or leave the flag out");
    }
    if args.batch == Some(0) {
        anyhow::bail!("--batch 0: give a batch size of at least 1");
    }
    let (project, spec) = project_with(args.target.as_deref(), &args.data, &args.quant)?;
    let model = match args.random_weights {
        Some(seed) => {
            let graph = Graph::build(&spec)?;
            let folded = Weights::random(&graph, seed).fold(&graph)?;
            Model {
                graph,
                folded,
                weights_path: PathBuf::from(format!("random (seed {seed})")),
            }
        }
        None => prepare::model(&project)?,
    };
    let plan = match args.format {
        ExportFormat::Onnx => {
            if args.quant.asked(&project, None) && project.quant.is_none() {
                anyhow::bail!(
                    "--format onnx writes the float model; quantization flags need --format qdq"
                );
            }
            None
        }
        ExportFormat::Qdq | ExportFormat::Qonnx => {
            let settings = args
                .quant
                .settings(&project, &spec, Some(QuantExecutor::Fake));
            Some(prepare::project_plan(
                &model,
                &project,
                &settings,
                args.integer_steps,
            )?)
        }
    };
    let program = match (&plan, args.integer_steps) {
        (Some(plan), true) => Some(int::compile(&model.graph, &model.folded, plan)?),
        _ => None,
    };
    let samples = args
        .samples
        .map(|n| sample_images(&project, &model, n))
        .transpose()?;
    let metadata = metadata(&project, &model, args.format);
    let batch = match (args.batch, args.format) {
        (Some(n), _) => onnx::Dim::Fixed(n),
        (None, ExportFormat::Qonnx) => onnx::Dim::Fixed(1),
        (None, _) => onnx::Dim::Batch,
    };
    let proto = match &plan {
        None => onnx::float_model(&model.graph, &model.folded, batch, &metadata)?,
        Some(plan) => {
            let style = match args.format {
                ExportFormat::Qonnx => onnx::Style::Qonnx,
                _ => onnx::Style::Qdq,
            };
            onnx::quantized_model(
                &model.graph,
                &model.folded,
                plan,
                style,
                program.as_ref(),
                batch,
                &metadata,
            )?
        }
    };
    let bytes = onnx::write(&args.out, &proto)?;
    let nodes = proto.graph.as_ref().map_or(0, |g| g.node.len());
    eprintln!(
        "{} ({}) written to {}: {nodes} nodes, {:.1} MB",
        model.graph.model,
        args.format.describe(),
        args.out.display(),
        bytes as f64 / 1e6
    );
    if let Some(points) =
        onnx::metadata_value(&proto, "qvit.standard_op_points").filter(|p| !p.is_empty())
    {
        eprintln!(
            "{} point(s) that no quantizer node can express are written exactly in standard \
             operators (metadata qvit.standard_op_points): {points}",
            points.split("; ").count()
        );
    }
    if let Some(steps) = onnx::metadata_value(&proto, "qvit.integer_steps") {
        eprintln!(
            "{} integer step(s) written as qvit nodes (run them with tools/export/qvit/)",
            steps.split_whitespace().count()
        );
    }
    if let Some(images) = samples {
        let runs = match (&program, &plan) {
            (Some(program), _) => Runs::Int(program),
            (None, Some(plan)) => Runs::Fake(plan),
            (None, None) => Runs::Float,
        };
        let logits = logits(&model, runs, &images)?;
        let (inputs, expected) = (beside(&args.out, "inputs"), beside(&args.out, "expected"));
        npy::write(&inputs, &images.data, &images.shape)?;
        npy::write(&expected, &logits.data, &logits.shape)?;
        eprintln!(
            "{} sample images and qvit's logits for them written to {} and {}",
            images.shape[0],
            inputs.display(),
            expected.display()
        );
    }
    Ok(())
}

/// Images per forward pass: a full-size model's activations for a thousand images at once
/// would take gigabytes.
const BATCH: usize = 64;

/// Which executor's logits the samples are checked against.
enum Runs<'a> {
    Float,
    Fake(&'a QuantPlan),
    Int(&'a IntProgram),
}

/// qvit's logits for the samples.
fn logits(model: &Model, runs: Runs, images: &Tensor) -> anyhow::Result<Tensor> {
    let float;
    let fake;
    let int;
    let classifier: &dyn Classifier = match runs {
        Runs::Float => {
            float = FloatExecutor::new(&model.graph, &model.folded)?;
            &float
        }
        Runs::Fake(plan) => {
            fake = FakeQuantExecutor::new(&model.graph, &model.folded, plan)?;
            &fake
        }
        Runs::Int(program) => {
            int = IntExecutor::new(program);
            &int
        }
    };
    let (n, item) = (images.shape[0], images.item_len());
    let mut data = Vec::new();
    for start in (0..n).step_by(BATCH) {
        let end = (start + BATCH).min(n);
        let mut shape = images.shape.clone();
        shape[0] = end - start;
        let chunk = Tensor::new(shape, images.data[start * item..end * item].to_vec());
        data.extend(classifier.logits(&chunk)?.data);
    }
    Ok(Tensor::new(vec![n, model.graph.num_classes], data))
}

impl ExportFormat {
    fn describe(self) -> &'static str {
        match self {
            ExportFormat::Onnx => "float ONNX, opset 17",
            ExportFormat::Qdq => "ONNX QuantizeLinear/DequantizeLinear, opset 21",
            ExportFormat::Qonnx => "QONNX Quant nodes, opset 17",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ExportFormat::Onnx => "onnx",
            ExportFormat::Qdq => "qdq",
            ExportFormat::Qonnx => "qonnx",
        }
    }
}

/// `FILE.onnx` → `FILE.<what>.npy`.
fn beside(out: &Path, what: &str) -> PathBuf {
    out.with_extension(format!("{what}.npy"))
}

/// The first `n` test images, as the model's input tensor.
fn sample_images(project: &Project, model: &Model, n: usize) -> anyhow::Result<Tensor> {
    let data = pipeline::test_data(project, &model.graph)?;
    if n > data.len() {
        anyhow::bail!(
            "--samples {n}: the test data has {} images ({})",
            data.len(),
            data.origin
        );
    }
    Ok(data.batch(0..n)?.images)
}

/// What the file records about itself: the model, the format and the input's normalisation.
fn metadata(project: &Project, model: &Model, format: ExportFormat) -> onnx::Metadata {
    let graph = &model.graph;
    let normalize = match &project.data {
        Some(data) => data.normalize().clone(),
        None if graph.input_shape() == [1, 28, 28] => {
            DataSource::fashion_mnist_test().normalize().clone()
        }
        // Without data the ImageNet statistics, which every published checkpoint was trained
        // with, are what a folder would be read with.
        None => Normalize::imagenet(),
    };
    let list = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        ("qvit.model".into(), graph.model.clone()),
        ("qvit.format".into(), format.name().into()),
        (
            "qvit.weights".into(),
            model
                .weights_path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        ),
        (
            "normalization".into(),
            format!(
                "(pixel / 255 − mean) / std, mean [{}], std [{}]",
                list(&normalize.mean),
                list(&normalize.std)
            ),
        ),
    ]
}
