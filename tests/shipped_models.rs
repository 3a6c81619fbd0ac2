//! The shipped micro models on the shipped Fashion-MNIST test set, through the real binary.

use std::process::Command;

fn eval_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_qvit"))
        .arg("eval")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("the qvit binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

fn trainer_report(model: &str) -> serde_json::Value {
    let path = format!("assets/{model}.train.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// FP32 top-1 on all 10,000 test images must reach `threshold` and equal, to 0.01 points (one
/// image), what the trainer measured on the weights it exported, which the README quotes.
fn check(model: &str, args: &[&str], threshold: f64) {
    let v = eval_json(args);
    assert_eq!(v["model"], model);
    assert_eq!(v["images"], 10_000);
    let top1 = v["top1_percent"].as_f64().unwrap();
    let reported = trainer_report(model)["test_top1_percent"].as_f64().unwrap();
    assert!(top1 >= threshold, "{model}: top-1 {top1} % < {threshold} %");
    assert!(
        (top1 - reported).abs() <= 0.01 + 1e-9,
        "{model}: qvit measures {top1} %, the trainer reported {reported} %"
    );
    // The README's table of shipped models quotes the trainer's figure and wall time.
    let readme = std::fs::read_to_string("README.md").unwrap();
    let row = format!("| {model} | {reported:.2} % |");
    let line = readme
        .lines()
        .find(|l| l.starts_with(&row))
        .unwrap_or_else(|| panic!("README.md should have `{row}`"));
    let seconds = trainer_report(model)["wall_time_s"].as_f64().unwrap();
    let minutes = format!("| {} min on 2 cores", (seconds / 60.0).round());
    assert!(
        line.contains(&minutes),
        "{model}: the report's {seconds} s should read `{minutes}` in `{line}`"
    );
}

#[test]
fn default_eval_is_the_micro_efficientvit_above_90_percent() {
    check("efficientvit-micro", &[], 90.0);
}

#[test]
fn the_micro_deit_is_above_88_percent() {
    check("deit-micro", &["deit-micro"], 88.0);
}

#[test]
fn the_spread_micro_efficientvit_is_above_90_percent() {
    check(
        "efficientvit-micro-spread",
        &["efficientvit-micro-spread"],
        90.0,
    );
}
