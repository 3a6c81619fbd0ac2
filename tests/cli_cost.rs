//! `qvit cost` end to end.

use std::process::Command;

fn qvit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn reference_preset_reports_the_published_cycle_count_as_json() {
    let out = qvit(&[
        "cost",
        "efficientvit-b1",
        "--resolution",
        "224",
        "--accel",
        "trio-vit-reference-16",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cycles"], 2_060_601);
    assert_eq!(v["accelerator"], "trio-vit-reference-16");
}

#[test]
fn bad_bits_and_unknown_presets_are_clear_errors() {
    let out = qvit(&["cost", "efficientvit-b1", "--bits", "w1a8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("from 2 to 16"),
        "{err}"
    );
    let out = qvit(&["cost", "efficientvit-b1", "--accel", "tpu-v9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("trio-vit-zcu102"),
        "{err}"
    );
}

#[test]
fn per_layer_bits_from_overrides_and_projects_reach_the_cost_model() {
    let json = |args: &[&str]| -> serde_json::Value {
        let out = qvit(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let base = json(&["cost", "efficientvit-b1", "--format", "json"]);
    let mixed = json(&[
        "cost",
        "efficientvit-b1",
        "--override",
        "stages.3.*=w4a4",
        "--format",
        "json",
    ]);
    let bytes = |v: &serde_json::Value| v["bytes_moved"].as_u64().unwrap();
    assert!(
        bytes(&mixed) < bytes(&base),
        "4-bit stage 3 moves fewer bytes"
    );

    // The same settings from a project file.
    let dir = std::env::temp_dir().join(format!("qvit-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let project = dir.join("p.ron");
    std::fs::write(
        &project,
        r#"Project(model: "efficientvit-b1", quant: Some(bits: "w8a8", overrides: [(layers: "stages.3.*", bits: "w4a4")]))"#,
    )
    .unwrap();
    let from_project = json(&["cost", project.to_str().unwrap(), "--format", "json"]);
    assert_eq!(bytes(&from_project), bytes(&mixed));
    std::fs::remove_dir_all(&dir).ok();

    let out = qvit(&["cost", "efficientvit-b1", "--override", "blocks.*=w4a4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("blocks.*"), "{err}");
}
