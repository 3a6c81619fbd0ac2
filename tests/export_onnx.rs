//! `qvit export`: every file passes ONNX's checker and runs in its own runtime to the outputs
//! qvit wrote beside it, on the micro models and, with random weights under official names and
//! a generated image folder, on every full-size model.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::runtimes;
use common::{image_folder, random_weights};

fn qvit(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qvit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qvit-export-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// ONNX Runtime reproduces qvit's float logits, op by op and optimized: the largest difference
/// is within 1e-5 of the largest logit, and every image gets the same class.
fn assert_float_match(report: &serde_json::Value, images: u64) {
    assert_eq!(report["checker"], "ok");
    assert_eq!(report["images"], images, "{report}");
    for run in ["reference", "optimized"] {
        let err = report[run]["max_relative_error"].as_f64().unwrap();
        assert!(err <= 1e-5, "{run}: {report}");
        assert_eq!(report[run]["argmax_agreement"], 1.0, "{run}: {report}");
    }
}

#[test]
fn float_exports_of_the_micro_models_run_in_onnxruntime_to_qvits_logits() {
    let Some(python) = runtimes::python() else {
        return;
    };
    let dir = temp_dir("micro");
    for model in [
        "efficientvit-micro",
        "deit-micro",
        "efficientvit-micro-spread",
    ] {
        let out = dir.join(format!("{model}.onnx"));
        qvit(&[
            "export",
            model,
            "--format",
            "onnx",
            "--out",
            path(&out),
            "--samples",
            "200",
        ]);
        let report = runtimes::check(python, &out, "onnxruntime");
        assert_float_match(&report, 200);
        let meta = &report["metadata"];
        assert_eq!(meta["qvit.model"], model);
        assert_eq!(meta["qvit.format"], "onnx");
        assert!(
            meta["normalization"]
                .as_str()
                .unwrap()
                .contains("mean [0.286]"),
            "{meta}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every full-size model, random weights under its official names, images from a generated
/// ImageNet-style folder: B1 @ 224 and DeiT-T on six images, the others on two.
#[test]
fn full_size_float_exports_run_in_onnxruntime_to_qvits_logits() {
    let Some(python) = runtimes::python() else {
        return;
    };
    let dir = temp_dir("full");
    let (six, two) = (dir.join("six"), dir.join("two"));
    image_folder(&six, 3, 2);
    image_folder(&two, 2, 1);
    let models = [
        ("efficientvit-b1", &six, 6),
        ("deit-tiny", &six, 6),
        ("efficientvit-b0", &two, 2),
        ("efficientvit-b2", &two, 2),
        ("efficientvit-b3", &two, 2),
        ("deit-small", &two, 2),
        ("deit-base", &two, 2),
    ];
    for (model, data, images) in models {
        let weights = dir.join(format!("{model}.safetensors"));
        random_weights(model, &weights);
        let out = dir.join(format!("{model}.onnx"));
        let samples = images.to_string();
        qvit(&[
            "export",
            model,
            "--weights",
            path(&weights),
            "--data",
            path(data),
            "--out",
            path(&out),
            "--samples",
            &samples,
        ]);
        let report = runtimes::check(python, &out, "onnxruntime");
        assert_float_match(&report, images);
        assert!(
            report["metadata"]["normalization"]
                .as_str()
                .unwrap()
                .contains("mean [0.485, 0.456, 0.406]"),
            "{report}"
        );
        for file in [weights, out] {
            std::fs::remove_file(file).unwrap();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `qvit calibrate` once per model, so that the exports below do not each calibrate.
/// A micro model's statistics on the shipped calibration images (what an export calibrates on
/// when given none), computed once per run of this file and shared by its tests.
fn calibration(model: &str) -> PathBuf {
    static FILES: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut files = FILES.lock().unwrap();
    files
        .entry(model.to_string())
        .or_insert_with(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("export-calibration");
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join(format!("{model}.calib.safetensors"));
            qvit(&["calibrate", model, "--out", path(&out)]);
            out
        })
        .clone()
}

/// The QDQ export of a shipped micro model's recipe at W8A8 and W4A8 against qvit's fake-quant
/// logits on 1,000 test images, qvit rounding half to even as QuantizeLinear does. Op by op
/// (ONNX Runtime's graph optimizations off) the runtime computes what qvit computes: ≥ 99.8 %
/// of the images get the same class. With every optimization on, fused kernels whose float
/// arithmetic differs in the last bits move a few values across a rounding boundary, and images
/// whose top two logits are close can change class: ≥ 98 % agree.
fn qdq_case(model: &str, recipe: &str) {
    let Some(python) = runtimes::python() else {
        return;
    };
    let dir = temp_dir(&format!("qdq-{recipe}"));
    let calib = calibration(model);
    for bits in ["w8a8", "w4a8"] {
        let out = dir.join(format!("{model}-{recipe}-{bits}.onnx"));
        qvit(&[
            "export",
            model,
            "--format",
            "qdq",
            "--recipe",
            recipe,
            "--bits",
            bits,
            "--rounding",
            "half-even",
            "--calibration",
            path(&calib),
            "--out",
            path(&out),
            "--samples",
            "1000",
        ]);
        let report = runtimes::check(python, &out, "onnxruntime");
        let case = format!("{model} {recipe} {bits}: {report}");
        assert_eq!(report["checker"], "ok", "{case}");
        let agreement = |run: &str| report[run]["argmax_agreement"].as_f64().unwrap();
        assert!(agreement("reference") >= 0.998, "{case}");
        // On an x86 CPU without VNNI, ONNX Runtime's fused u8 × i8 products add two of them in
        // i16 and can saturate (on the AMD Zen 3 measured: 95.9 % of the images agreed); there
        // the check also runs the int8 weights as u8 with zero-points moved by 128, the same
        // values, which it multiplies exactly, and that run is held to the bound.
        let optimized = match report.get("optimized_u8_weights") {
            Some(_) => {
                eprintln!(
                    "{model} {recipe} {bits}: this CPU has no VNNI, so ONNX Runtime's optimized \
                     run is checked with the weights as u8 (as exported it agreed on {:.1} %)",
                    100.0 * agreement("optimized")
                );
                "optimized_u8_weights"
            }
            None => "optimized",
        };
        assert!(agreement(optimized) >= 0.98, "{case}");
        let meta = &report["metadata"];
        assert_eq!(meta["qvit.recipe"], recipe, "{case}");
        assert_eq!(meta["qvit.bits"], bits.to_uppercase(), "{case}");
        assert!(
            meta["qvit.rounding"]
                .as_str()
                .unwrap()
                .contains("rounds half-even"),
            "{case}"
        );
        // Weights are stored as codes: int4 at 4 bits, int8 at 8.
        let types = &report["initializer_types"];
        let code_type = if bits == "w4a8" { "INT4" } else { "INT8" };
        assert!(types[code_type].as_u64().unwrap() > 10, "{case}");
        let ops = report["operators"].as_array().unwrap();
        assert!(ops.contains(&"QuantizeLinear".into()), "{case}");
        // Log levels (Trio-ViT's divisor, FQ-ViT's and RepQ-ViT's attention) are written in
        // standard operators and listed.
        let listed = meta["qvit.standard_op_points"].as_str().unwrap();
        assert!(listed.contains("log"), "{case}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn qdq_exports_of_trio_vit_reproduce_fake_quant_in_onnxruntime() {
    qdq_case("efficientvit-micro", "trio-vit");
}

#[test]
fn qdq_exports_of_repq_vit_reproduce_fake_quant_in_onnxruntime() {
    qdq_case("deit-micro", "repq-vit");
}

#[test]
fn qdq_exports_of_fq_vit_reproduce_fake_quant_in_onnxruntime() {
    qdq_case("deit-micro", "fq-vit");
}

/// Both full-size models.
const BOTH: &[&str] = &["efficientvit-b1", "deit-tiny"];

/// The full-size models of `models` (B1 @ 224 with trio-vit, its output-aware search cut to one
/// image, which changes the ranges, not what is exported; DeiT-T with repq-vit), random
/// weights, a generated folder of six images: `run(model, dir, args)` per model, with `args`
/// the flags that choose its weights, data, calibration and recipe.
fn full_size(tag: &str, models: &[&str], mut run: impl FnMut(&str, &Path, &[&str])) {
    let dir = temp_dir(&format!("{tag}-full"));
    let data = dir.join("val");
    image_folder(&data, 3, 2);
    let trio = dir.join("trio-vit-quick.ron");
    common::quick_trio_vit(&trio, 1);
    for (model, recipe) in [("efficientvit-b1", path(&trio)), ("deit-tiny", "repq-vit")] {
        if !models.contains(&model) {
            continue;
        }
        let weights = dir.join(format!("{model}.safetensors"));
        random_weights(model, &weights);
        let args = [
            "--weights",
            path(&weights),
            "--data",
            path(&data),
            "--calibration-data",
            path(&data),
            "--calibration-images",
            "3",
            "--recipe",
            recipe,
        ];
        run(model, &dir, &args);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The full-size models exported in `format` with qvit's logits for the first `samples` images:
/// each model's report from `runtime`.
fn full_size_reports(
    models: &[&str],
    format: &str,
    runtime: &str,
    samples: &str,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let Some(python) = runtimes::python() else {
        return Vec::new();
    };
    let mut reports = Vec::new();
    full_size(format, models, |model, dir, common| {
        let out = dir.join(format!("{model}.onnx"));
        let mut args = vec!["export", model, "--format", format];
        args.extend(common);
        args.extend(["--out", path(&out), "--samples", samples]);
        args.extend(extra);
        qvit(&args);
        let report = runtimes::check(python, &out, runtime);
        assert_eq!(report["checker"], "ok", "{report}");
        reports.push(report);
    });
    reports
}

/// The QDQ export at full size (see [`full_size_reports`]). Random weights give near-equal
/// logits, so the predicted class is no test here; the logits are: op by op, ONNX Runtime's are
/// within 10 % of the largest logit of qvit's (measured: B1 4.1 %, from the few values that
/// float arithmetic in another order moves across a rounding boundary).
#[test]
fn full_size_qdq_exports_reproduce_fake_quant_in_onnxruntime() {
    for report in full_size_reports(
        BOTH,
        "qdq",
        "onnxruntime",
        "6",
        &["--rounding", "half-even"],
    ) {
        let err = report["reference"]["max_relative_error"].as_f64().unwrap();
        assert!(err <= 0.1, "{report}");
        assert!(
            report["initializer_types"]["INT8"].as_u64().unwrap() > 20,
            "{report}"
        );
    }
}

/// The QONNX export of B1 @ 224 in qonnx's executor on two images (qonnx runs node by node, a
/// few seconds per image at this size), the graph's batch fixed at two: logits
/// within 20 % of the largest (measured: B1 9.5 %, DeiT-T 5.3 %; qonnx's `Quant` adds the
/// zero-point before it rounds, so more values cross a boundary than in ONNX Runtime), and
/// qonnx's cleanup changes nothing but constants ([`assert_clean`]; B1 has 200 `Quant` nodes).
/// DeiT-T's QONNX graph is deit-micro's with other sizes (both recipes are tested in qonnx
/// above) and its full-size QDQ graph runs in ONNX Runtime above; qonnx's cleanup, quadratic in
/// the graph's values, takes 45 s on it, so it runs on request:
/// `QVIT_QONNX_DEIT_TINY=1 cargo test --release --test export_onnx full_size_qonnx`.
#[test]
fn full_size_qonnx_exports_reproduce_fake_quant_in_qonnx() {
    for report in full_size_reports(
        if std::env::var_os("QVIT_QONNX_DEIT_TINY").is_some() {
            BOTH
        } else {
            &["efficientvit-b1"]
        },
        "qonnx",
        "qonnx",
        "2",
        &["--batch", "2"],
    ) {
        let err = report["reference"]["max_relative_error"].as_f64().unwrap();
        assert!(err <= 0.2, "{report}");
        assert!(
            report["cleanup"]["quant_nodes_before"].as_u64().unwrap() > 100,
            "{report}"
        );
        assert_clean(&report, &report.to_string());
    }
}

/// qonnx's cleanup (then InferShapes) changes nothing but constants: it keeps every `Quant`
/// and every `qvit` node, gives every value a shape and leaves every logit as it was; the only
/// nodes it removes are the ones it folds into constants, each linear weight's `Transpose`
/// (moved into the `Quant`'s initializer, qonnx's `FoldTransposeIntoQuantInit`) and the class
/// token's `Expand` over the fixed batch.
fn assert_clean(report: &serde_json::Value, case: &str) {
    let cleanup = &report["cleanup"];
    assert_eq!(
        cleanup["quant_nodes_before"], cleanup["quant_nodes_after"],
        "{case}"
    );
    assert_eq!(
        cleanup["values_without_shape"],
        serde_json::json!([]),
        "{case}"
    );
    assert_eq!(cleanup["max_relative_change"], 0.0, "{case}");
    for (op, counts) in cleanup["changed_operators"].as_object().unwrap() {
        assert!(
            ["Transpose", "Expand"].contains(&op.as_str()),
            "{op}: {case}"
        );
        assert!(counts[1].as_u64() < counts[0].as_u64(), "{op}: {case}");
    }
}

fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "qvit {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn export_mistakes_are_clear_errors() {
    let dir = temp_dir("errors");
    let out = dir.join("m.onnx");
    let out = path(&out);
    let e = fails(&["export", "--out", out, "--samples", "0"]);
    assert!(e.contains("--samples 0"), "{e}");
    let e = fails(&["export", "--out", out, "--samples", "10001"]);
    assert!(
        e.contains("--samples 10001") && e.contains("10000 images"),
        "{e}"
    );
    let e = fails(&["export", "--out", out, "--bits", "w4a8"]);
    assert!(e.contains("--format qdq"), "{e}");
    // A full-size model needs data for its samples, and says so.
    let weights = dir.join("deit-tiny.safetensors");
    random_weights("deit-tiny", &weights);
    let w = path(&weights);
    let e = fails(&[
        "export",
        "deit-tiny",
        "--weights",
        w,
        "--out",
        out,
        "--samples",
        "1",
    ]);
    assert!(e.contains("--data DIR"), "{e}");
    assert!(
        !Path::new(out).exists(),
        "nothing is written when the export fails"
    );
    // Integer arithmetic rounds half up; asking it to round half to even is refused by name.
    let e = fails(&[
        "eval",
        "--executor",
        "int",
        "--rounding",
        "half-even",
        "--limit",
        "10",
    ]);
    assert!(
        e.contains("half-even") && e.contains("rounds half up"),
        "{e}"
    );
    // Integer steps go into QONNX graphs only, and need a plan the integer executor runs.
    let e = fails(&["export", "--format", "qdq", "--integer-steps", "--out", out]);
    assert!(e.contains("--format qonnx"), "{e}");
    let e = fails(&[
        "export",
        "deit-micro",
        "--format",
        "qonnx",
        "--integer-steps",
        "--recipe",
        "ptq4vit",
        "--out",
        out,
    ]);
    assert!(e.contains("twin-uniform"), "{e}");
    assert!(!Path::new(out).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `model` exported to `out` as QONNX with `recipe` at `bits` (and `extra` flags) with the first
/// `samples` test images, run in qonnx's executor in one batch (the graph's batch fixed at
/// `samples`: qonnx's executor spends its time per node and per run more than per image, and
/// one batch of 300 rather than three of 100 took deit-micro's check from 31–49 s to 24–32 s
/// in alternating runs): the report, and a line naming the case for assertion messages.
fn qonnx_run(
    python: &Path,
    out: &Path,
    [model, recipe, bits]: [&str; 3],
    extra: &[&str],
    samples: &str,
) -> (serde_json::Value, String) {
    let mut args = vec![
        "export", model, "--format", "qonnx", "--recipe", recipe, "--bits", bits, "--out",
    ];
    args.extend([path(out), "--samples", samples, "--batch", samples]);
    args.extend(extra);
    qvit(&args);
    let report = runtimes::check(python, out, "qonnx");
    let case = format!("{model} {recipe} {bits} {extra:?}: {report}");
    (report, case)
}

/// The QONNX export of a required recipe in qonnx's own executor on 300 test images (one
/// batch, the graph's fixed batch size), at most three of which may change class: trio-vit at
/// W4A8, repq-vit at W8A8 and fq-vit at W4A8 are tested (docs/export.md has every recipe at
/// both widths on 1,000 images; qonnx runs node by node and its cleanup takes 20 s on
/// deit-micro, too slow for more in every `cargo test`). qvit rounds half up here, and so does every `Quant`. qonnx's
/// cleanup changes nothing but constants ([`assert_clean`]).
fn qonnx_case(model: &str, recipe: &str, bits: &str) {
    let Some(python) = runtimes::python() else {
        return;
    };
    let dir = temp_dir(&format!("qonnx-{recipe}"));
    let out = dir.join(format!("{model}-{recipe}-{bits}.onnx"));
    let calib = calibration(model);
    let flags = ["--calibration", path(&calib)];
    let (report, case) = qonnx_run(python, &out, [model, recipe, bits], &flags, "300");
    assert_eq!(report["checker"], "ok", "{case}");
    let agreement = report["reference"]["argmax_agreement"].as_f64().unwrap();
    assert!(agreement >= 0.99, "{case}");
    assert!(
        report["cleanup"]["quant_nodes_before"].as_u64().unwrap() > 20,
        "{case}"
    );
    assert_clean(&report, &case);
    let meta = &report["metadata"];
    assert_eq!(meta["qvit.format"], "qonnx", "{case}");
    assert!(
        meta["qvit.rounding"].as_str().unwrap().contains("half-up"),
        "{case}"
    );
    // Weights are float values through a Quant; nothing is stored as integers but shapes.
    assert!(report["initializer_types"].get("INT8").is_none(), "{case}");
    let ops = report["operators"].as_array().unwrap();
    assert!(ops.contains(&"Quant".into()), "{case}");
    assert!(!ops.contains(&"QuantizeLinear".into()), "{case}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn qonnx_export_of_trio_vit_w4a8_reproduces_fake_quant_in_qonnx() {
    qonnx_case("efficientvit-micro", "trio-vit", "w4a8");
}

#[test]
fn qonnx_export_of_repq_vit_w8a8_reproduces_fake_quant_in_qonnx() {
    qonnx_case("deit-micro", "repq-vit", "w8a8");
}

#[test]
fn qonnx_export_of_fq_vit_w4a8_reproduces_fake_quant_in_qonnx() {
    qonnx_case("deit-micro", "fq-vit", "w4a8");
}

/// An integer-steps export of `model` and the golden vectors of the same plan (`quant`: the
/// flags that choose it), compared node by node by `tools/export/golden.py`: every output code
/// of every `qvit` node equals the integer executor's. Returns how many nodes of each kind.
fn assert_golden(python: &Path, dir: &Path, model: &str, quant: &[&str]) -> Vec<String> {
    let out = dir.join(format!("{model}-integer.onnx"));
    let vectors = dir.join(format!("{model}-vectors"));
    let mut export = vec!["export", model, "--format", "qonnx", "--integer-steps"];
    export.extend(quant);
    export.extend(["--out", path(&out)]);
    qvit(&export);
    let mut golden = vec!["vectors", model];
    golden.extend(quant);
    golden.extend(["--out", path(&vectors)]);
    qvit(&golden);
    let report = runtimes::golden(python, &out, &vectors);
    assert_eq!(report["all_equal"], true, "{model} {quant:?}: {report}");
    let nodes = report["nodes"].as_object().unwrap();
    assert!(
        nodes.values().all(|n| n["elements"].as_u64().unwrap() > 0),
        "{report}"
    );
    nodes
        .values()
        .map(|n| n["op"].as_str().unwrap().to_string())
        .collect()
}

/// `--integer-steps`: every `qvit` node computes exactly the codes the integer executor's golden
/// vectors hold for its step, every element of every node: the Softmax, I-LayerNorm and GELU of
/// deit-micro (repq-vit at W8A8 with log√2 probabilities; fq-vit at W4A8, whose LayerNorm
/// inputs carry power-of-two channel factors; minmax with uniform probabilities) and the
/// log2-divisor division of efficientvit-micro (trio-vit at W4A8).
#[test]
fn integer_steps_compute_the_integer_executors_codes() {
    let Some(python) = runtimes::python() else {
        return;
    };
    let dir = temp_dir("integer");
    for (model, recipe, bits) in [
        ("deit-micro", "repq-vit", "w8a8"),
        ("deit-micro", "fq-vit", "w4a8"),
        // Uniform attention probabilities: one quantizer for every head.
        ("deit-micro", "minmax", "w8a8"),
        ("efficientvit-micro", "trio-vit", "w4a8"),
    ] {
        let calib = calibration(model);
        let quant = [
            "--recipe",
            recipe,
            "--bits",
            bits,
            "--calibration",
            path(&calib),
        ];
        let ops = assert_golden(python, &dir, model, &quant);
        let count = |op: &str| ops.iter().filter(|o| *o == op).count();
        if model == "deit-micro" {
            // Six blocks: two LayerNorms, a Softmax and a GELU each, and the final norm.
            assert_eq!(
                [count("LayerNorm"), count("Softmax"), count("Gelu")],
                [13, 6, 6]
            );
        } else {
            assert_eq!(ops, ["LinearAttentionNormalize"; 2]);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same at full size: B1 @ 224 (two linear-attention divisions per attention stage) and
/// DeiT-T (twelve blocks), random weights.
#[test]
fn full_size_integer_steps_compute_the_integer_executors_codes() {
    let Some(python) = runtimes::python() else {
        return;
    };
    full_size("integer", BOTH, |model, dir, quant| {
        let ops = assert_golden(python, dir, model, quant);
        if model == "deit-tiny" {
            assert_eq!(ops.len(), 12 * 4 + 1);
        } else {
            assert!(ops.iter().all(|o| o == "LinearAttentionNormalize"));
            assert!(ops.len() >= 2, "{ops:?}");
        }
    });
}

/// An integer-steps export runs in qonnx's executor (its `qvit` nodes from `tools/export/qvit/`)
/// after InferShapes, and qonnx's cleanup changes nothing but constants ([`assert_clean`]). Against the integer executor's logits on 200 images, at least 97 % get the same
/// class (measured: see docs/export.md): the non-linear steps are exact, but the linear layers
/// and residual adds between them are QONNX's float `Quant` graph, which lands a value one code
/// away from the integer executor's now and then, as fake-quant does.
#[test]
fn integer_steps_run_in_qonnx() {
    let Some(python) = runtimes::python() else {
        return;
    };
    let dir = temp_dir("integer-run");
    for (model, recipe, bits, nodes) in [
        ("deit-micro", "repq-vit", "w8a8", 25),
        ("efficientvit-micro", "trio-vit", "w4a8", 2),
    ] {
        let out = dir.join(format!("{model}.onnx"));
        let case = [model, recipe, bits];
        let calib = calibration(model);
        let flags = ["--integer-steps", "--calibration", path(&calib)];
        let (report, case) = qonnx_run(python, &out, case, &flags, "200");
        let agreement = report["reference"]["argmax_agreement"].as_f64().unwrap();
        assert!(agreement >= 0.97, "{case}");
        let steps = report["metadata"]["qvit.integer_steps"].as_str().unwrap();
        assert_eq!(steps.split_whitespace().count(), nodes, "{case}");
        assert_eq!(report["cleanup"]["qvit_nodes_after"], nodes, "{case}");
        assert_clean(&report, &case);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
