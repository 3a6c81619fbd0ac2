//! `qvit export`: every file passes ONNX's checker and runs in its own runtime to the outputs
//! qvit wrote beside it, on the micro models and, with random weights under official names and
//! a generated image folder, on every full-size model.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// ONNX Runtime reproduces qvit's float logits: the largest difference is within 1e-5 of the
/// largest logit, and every image gets the same class.
fn assert_float_match(report: &serde_json::Value, images: u64) {
    assert_eq!(report["checker"], "ok");
    assert_eq!(report["images"], images, "{report}");
    let err = report["max_relative_error"].as_f64().unwrap();
    assert!(err <= 1e-5, "{report}");
    assert_eq!(report["argmax_agreement"], 1.0, "{report}");
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
fn float_exports_of_every_full_size_model_run_in_onnxruntime_to_qvits_logits() {
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
