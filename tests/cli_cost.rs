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

/// The README's `qvit cost` figures, checked against the commands it names: the block after
/// "`qvit cost efficientvit-b1 -r 224` ends with:" is the command's last lines, and the
/// systolic baseline's FPS, its ratio to Trio-ViT's engines on B1 and the DeiT-T gap are what
/// the commands give. A change that moves a figure fails here until the README follows.
#[test]
fn the_readme_cost_figures_are_what_the_commands_print() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let run = |args: &[&str]| {
        let out = qvit(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let marker = "`qvit cost efficientvit-b1 -r 224` ends with:\n\n```text\n";
    let start = readme.find(marker).expect("the README's cost block") + marker.len();
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let printed = run(&["cost", "efficientvit-b1", "-r", "224"]);
    assert!(
        printed.trim_end().ends_with(block.trim_end()),
        "README:\n{block}\nprinted:\n{printed}"
    );

    let fps = |args: &[&str]| -> f64 {
        let text = run(args);
        let line = text.lines().find(|l| l.starts_with("throughput")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let trio_b1 = fps(&["cost", "efficientvit-b1"]);
    let systolic_b1 = fps(&["cost", "efficientvit-b1", "--accel", "systolic-zcu102"]);
    let trio_deit = fps(&["cost", "deit-tiny"]);
    let systolic_deit = fps(&["cost", "deit-tiny", "--accel", "systolic-zcu102"]);
    let claims = [
        format!("reaches {systolic_b1:.1} FPS on B1 @ 224"),
        format!(
            "{:.1}× fewer than Trio-ViT's engines",
            trio_b1 / systolic_b1
        ),
        format!(
            "the two are within {:.1} %",
            100.0 * (trio_deit - systolic_deit).abs() / trio_deit.max(systolic_deit)
        ),
    ];
    // The README wraps lines; compare with its whitespace folded.
    let folded = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for claim in claims {
        assert!(folded.contains(&claim), "the README should say: {claim}");
    }
}
