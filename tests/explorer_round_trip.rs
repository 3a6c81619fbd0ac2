//! A project saved by the explorer runs unchanged headless: `qvit cost` prices the same
//! design, `qvit eval` quantizes and evaluates it as configured, `qvit sweep` sweeps the
//! Explore tab's space around its accelerator.

use std::process::Command;

use qvit_app::Explorer;
use qvit_app::views::explore;
use qvit_core::quant::Override;

fn qvit(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "qvit {args:?}: {stderr}");
    (stdout, stderr)
}

#[test]
fn a_saved_project_runs_with_eval_cost_and_sweep() {
    let dir = std::env::temp_dir().join(format!("qvit-round-trip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("explored.ron");

    // Configure as the views do: bits, an override, engine copies, a sweep space.
    let ctx = egui::Context::default();
    let mut e = Explorer::new(&ctx, Explorer::default_project(), None, None);
    e.settings().bits = "w6a8".parse().unwrap();
    e.settings().overrides.push(Override {
        layers: "backbone.stages.3.*".into(),
        bits: "w8a8".parse().unwrap(),
    });
    e.project.accelerator.as_mut().unwrap().copies = 4;
    e.explore.mat_pes = "8, 16".into();
    e.explore.mat_lanes = "8".into();
    e.explore.rmac_pes = "16".into();
    e.explore.rmac_lanes = "4, 8".into();
    e.explore.copies = "2, 4".into();
    e.explore.bits = "w6a8, w8a8".into();
    e.explore.accuracy = false;
    explore::keep_in_project(&mut e).unwrap();
    e.reprice();
    let fps = e.cost.as_ref().unwrap().fps;
    e.save_project(&path);
    assert!(path.exists(), "{:?}", e.notice);
    // The explorer calibrated in the background from the start; nothing here needs it, and a
    // dropped job is told to stop, which frees the cores for the commands below.
    drop(e);
    let path = path.to_str().unwrap();

    // The same design, priced headless.
    let (json, _) = qvit(&["cost", path, "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["fps"].as_f64().unwrap(), fps);
    assert_eq!(report["copies"], 4);

    // The same quantization, on the integer executor the explorer uses.
    let (table, _) = qvit(&["eval", path, "--limit", "200"]);
    assert!(
        table.contains("(trio-vit W6A8, int, backbone.stages.3.*=w8a8)"),
        "{table}"
    );

    // The Explore tab's space around the project's accelerator: 2·1·1·2·2·2 designs.
    let csv = dir.join("sweep.csv");
    qvit(&["sweep", path, "--out", csv.to_str().unwrap()]);
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 1 + 16, "{rows}");
    assert!(rows.lines().skip(1).all(|r| r.ends_with(",ok")), "{rows}");
    std::fs::remove_dir_all(&dir).ok();
}
