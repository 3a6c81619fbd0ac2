//! `qvit info` end to end: the real binary, its output formats and its errors on bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn qvit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .expect("the qvit binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Runs a command that must fail cleanly and returns its stderr.
fn failure(args: &[&str]) -> String {
    let out = qvit(args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qvit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn json_output_is_valid_and_has_the_reference_totals() {
    let out = qvit(&["info", "efficientvit-b1", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert_eq!(v["model"], "efficientvit-b1");
    assert_eq!(v["family"], "EfficientViT");
    assert_eq!(v["params"], 9_102_024);
    assert_eq!(v["macs"], 519_214_592u64);
    assert_eq!(v["state_dict_entries"], 272);
    let layers = v["layers"].as_array().unwrap();
    let mac_sum: u64 = layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum();
    assert_eq!(mac_sum, 519_214_592);
    let stem = &layers[0];
    assert_eq!(stem["name"], "backbone.input_stem.op_list.0.conv");
    assert_eq!(stem["input_shapes"], serde_json::json!([[3, 224, 224]]));
    assert_eq!(stem["output_shape"], serde_json::json!([16, 112, 112]));
    let stage_macs: u64 = v["by_stage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["macs"].as_u64().unwrap())
        .sum();
    assert_eq!(stage_macs, 519_214_592);
}

#[test]
fn resolution_flag_changes_the_macs() {
    let out = qvit(&["info", "efficientvit-b1", "-r", "288", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["resolution"], 288);
    assert_eq!(v["macs"], 855_643_648u64);
}

#[test]
fn table_output_shows_layers_and_totals() {
    let out = qvit(&["info", "deit-tiny"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("parameters 5,717,416"), "{text}");
    assert!(text.contains("MACs 1,253,683,200"), "{text}");
    assert!(text.contains("blocks.11.mlp.fc2"), "{text}");
    assert!(
        text.contains("by op type") && text.contains("by stage"),
        "{text}"
    );
}

#[test]
fn csv_output_has_one_row_per_layer() {
    let out = qvit(&[
        "info",
        "efficientvit-b1",
        "--format",
        "csv",
        "--compute-only",
    ]);
    assert!(out.status.success());
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 90, "MAC-bearing layers of B1");
    let macs: u64 = rows.iter().map(|r| r[8].parse::<u64>().unwrap()).sum();
    assert_eq!(macs, 519_214_592);
}

#[test]
fn a_spec_file_works_like_a_preset() {
    let text = std::fs::read_to_string("presets/models/deit-small.ron").unwrap();
    let path = temp_file("my-deit.ron", &text);
    let out = qvit(&["info", path.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["params"], 22_050_664);
}

#[test]
fn ron_syntax_error_reports_file_line_and_column() {
    let path = temp_file(
        "broken.ron",
        "DeiT(\n    name: \"x\",\n    resolution: 224,\n    patch_size: 16\n    embed_dim: 192,\n)\n",
    );
    let err = failure(&["info", path.to_str().unwrap()]);
    let expected = format!("{}:5:", path.display());
    assert!(err.contains(&expected), "{err}");
}

#[test]
fn unknown_field_and_family_name_the_valid_ones() {
    let path = temp_file(
        "field.ron",
        "DeiT(name: \"x\", resolution: 224, patch_size: 16, embed_dim: 192, depth: 12, num_heads: 3, heads: 3)",
    );
    let err = failure(&["info", path.to_str().unwrap()]);
    assert!(err.contains("unknown field `heads`"), "{err}");
    assert!(err.contains("num_heads"), "{err}");

    let path = temp_file("family.ron", "Swin(name: \"x\")");
    let err = failure(&["info", path.to_str().unwrap()]);
    assert!(err.contains("unknown variant `Swin`"), "{err}");
    assert!(err.contains("EfficientViT, DeiT"), "{err}");

    let err = failure(&["info", "efficientvit-b7"]);
    assert!(
        err.contains("efficientvit-b1") && err.contains("deit-base"),
        "{err}"
    );
}

#[test]
fn unsuitable_resolutions_are_rejected_with_a_reason() {
    let err = failure(&["info", "deit-tiny", "--resolution", "100"]);
    assert!(err.contains("not a multiple of the patch size 16"), "{err}");
    assert!(err.contains("use 96 or 112"), "{err}");
    let err = failure(&["info", "efficientvit-b2", "--resolution", "20"]);
    assert!(err.contains("would be empty"), "{err}");
    assert!(err.contains("at least 32"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = failure(&["info", "no/such/model.ron"]);
    assert!(err.contains("no/such/model.ron"), "{err}");
}

#[test]
fn help_names_every_model_preset() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(["info", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    for name in qvit_core::arch::preset_names() {
        let short = name.strip_prefix("efficientvit").unwrap_or("");
        assert!(
            help.contains(name) || (!short.is_empty() && help.contains(short)),
            "`qvit info --help` does not name {name}"
        );
    }
}
