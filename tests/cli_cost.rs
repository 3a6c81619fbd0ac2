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
