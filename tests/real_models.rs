//! The full-size path end to end, on EfficientViT-B1 @ 224 and DeiT-T: random weights under
//! their official names (as a torch-style `.pt` would hold them, here safetensors), a generated
//! ImageNet-layout folder of JPEG and PNG images of odd sizes; calibrate from the folder,
//! evaluate in fake-quant and int, shard and merge, price, write golden vectors, and run the
//! same from a project file.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{image_folder, random_weights};

fn qvit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> serde_json::Value {
    let out = qvit(args);
    assert!(
        out.status.success(),
        "qvit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn err(args: &[&str]) -> String {
    let out = qvit(args);
    assert!(!out.status.success(), "qvit {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Case {
    dir: PathBuf,
    weights: String,
    data: String,
}

/// Random weights and a folder in a directory of its own (`tag` keeps parallel tests apart).
fn case(model: &str, tag: &str) -> Case {
    let dir = std::env::temp_dir().join(format!("qvit-real-{model}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join(format!("{model}.safetensors"));
    random_weights(model, &weights);
    image_folder(&dir.join("val"), 3, 3);
    Case {
        weights: weights.display().to_string(),
        data: dir.join("val").display().to_string(),
        dir,
    }
}

/// Calibrate from the folder, evaluate fake and int, shard and merge, cost and vectors, and
/// the same evaluation from a project.
fn end_to_end(model: &str, recipe: &str) {
    let c = case(model, "e2e");
    let stats = c.dir.join("s.calib.safetensors");
    let stats = stats.to_str().unwrap();
    let cal = ok(&[
        "calibrate",
        model,
        "--weights",
        &c.weights,
        "--data",
        &c.data,
        "--images",
        "4",
        "--seed",
        "3",
        "--out",
        stats,
        "--format",
        "json",
    ]);
    assert_eq!(cal["images"], 4);
    assert_eq!(cal["selection"]["seed"], 3);

    // `eval` and `vectors` take the same model, data and quantization flags.
    let with_model = |command: &'static str, extra: &[&'static str]| -> Vec<String> {
        let mut args = vec![command, model, "--weights", &c.weights, "--data", &c.data];
        args.extend(["--calibration", stats, "--recipe", recipe]);
        args.extend(extra);
        args.into_iter().map(String::from).collect()
    };
    let eval = |extra: &[&str]| {
        let mut args = with_model("eval", &["--batch", "2", "--format", "json"]);
        args.extend(extra.iter().map(|s| s.to_string()));
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fake = eval(&[]);
    assert_eq!(fake["images"], 9);
    assert_eq!(fake["executor"], "fake-quant");
    let int = eval(&["--executor", "int"]);
    assert_eq!(int["executor"], "int");
    assert_eq!(int["images"], 9);
    // Per-layer SQNR of the integer executor's own tensors, at full size.
    let layers = &eval(&["--executor", "int", "--layers"])["layers"];
    let (acts, int_db) = (
        layers["activations"].as_array().unwrap(),
        layers["int_network_sqnr_db"].as_array().unwrap(),
    );
    assert_eq!(acts.len(), int_db.len());
    assert!(
        int_db
            .iter()
            .all(|v| v.as_f64().is_some_and(f64::is_finite)),
        "{int_db:?}"
    );

    // Shards of whole batches add up to the single run, class by class.
    let mut parts = Vec::new();
    for i in 0..3 {
        let part = c.dir.join(format!("part{i}.json")).display().to_string();
        eval(&["--shard", &format!("{i}/3"), "--out", &part]);
        parts.push(part);
    }
    let mut merge = vec!["eval", "merge", "--format", "json"];
    merge.extend(parts.iter().map(String::as_str));
    let merged = ok(&merge);
    for key in [
        "images",
        "top1_percent",
        "top5_percent",
        "class_images",
        "class_top1_correct",
    ] {
        assert_eq!(merged[key], fake[key], "{key}");
    }
    let two = err(&["eval", "merge", &parts[0], &parts[2]]);
    assert!(two.contains("1/3"), "{two}");
    // An edited share (shard 5 of 3) is named, not a panic.
    let edited = c.dir.join("edited.json");
    let text = std::fs::read_to_string(&parts[1]).unwrap();
    std::fs::write(&edited, text.replacen("\"index\": 1", "\"index\": 5", 1)).unwrap();
    let bad = err(&["eval", "merge", edited.to_str().unwrap()]);
    assert!(
        bad.contains("edited.json") && bad.contains("shard 5/3"),
        "{bad}"
    );

    // Priced and vectorised at the same scale.
    let cost = ok(&["cost", model, "--format", "json"]);
    assert!(cost["fps"].as_f64().unwrap() > 0.0);
    let vectors = c.dir.join("vectors");
    let mut args = with_model("vectors", &["--out"]);
    args.push(vectors.display().to_string());
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(vectors.join("manifest.json").is_file());

    // A project with the same choices gives the same result.
    let project = c.dir.join("p.ron");
    std::fs::write(
        &project,
        format!(
            "Project(model: \"{model}\", weights: Some(\"{model}.safetensors\"), \
             data: Some(ImageFolder(root: \"val\")), calibration: Some(\"s.calib.safetensors\"), \
             quant: Some(recipe: \"{recipe}\", bits: \"w8a8\", executor: Int))"
        ),
    )
    .unwrap();
    let from_project = ok(&[
        "eval",
        project.to_str().unwrap(),
        "--batch",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(from_project["top1_percent"], int["top1_percent"]);
    assert_eq!(
        from_project["class_top1_correct"],
        int["class_top1_correct"]
    );
    std::fs::remove_dir_all(&c.dir).unwrap();
}

#[test]
fn efficientvit_b1_at_224_end_to_end() {
    end_to_end("efficientvit-b1", "minmax");
}

#[test]
fn deit_tiny_end_to_end() {
    end_to_end("deit-tiny", "repq-vit");
}

#[test]
fn full_size_models_say_what_to_give() {
    let c = case("deit-tiny", "errors");
    let e = err(&["eval", "deit-tiny", "--limit", "1"]);
    assert!(e.contains("--weights"), "{e}");
    let e = err(&["eval", "deit-tiny", "--weights", &c.weights, "--limit", "1"]);
    assert!(e.contains("--data DIR"), "{e}");
    let e = err(&[
        "eval",
        "deit-tiny",
        "--weights",
        &c.weights,
        "--data",
        &c.data,
        "--bits",
        "w8a8",
    ]);
    assert!(e.contains("--calibration-data DIR"), "{e}");
    let e = err(&[
        "eval",
        "deit-tiny",
        "--weights",
        &c.weights,
        "--data",
        "/nonexistent/val",
    ]);
    assert!(
        e.contains("/nonexistent/val") && e.contains("not found"),
        "{e}"
    );
    let e = err(&[
        "eval",
        "deit-tiny",
        "--weights",
        &c.weights,
        "--data",
        &c.data,
        "--crop-ratio",
        "0",
    ]);
    assert!(e.contains("crop_ratio"), "{e}");
    std::fs::remove_dir_all(&c.dir).unwrap();
}

/// `qvit sensitivity` at full size: trio-vit's searched plan (a one-image search) on B1 @ 224
/// and repq-vit on DeiT-T, held-out accuracy on a folder, every layer with weights in the CSV.
fn sensitivity(model: &str, recipe: &str) {
    let c = case(model, "sensitivity");
    let recipe = if recipe == "trio-vit" {
        let path = c.dir.join("trio-vit-quick.ron");
        common::quick_trio_vit(&path, 1);
        path.display().to_string()
    } else {
        recipe.to_string()
    };
    let out = c.dir.join("s.csv");
    let report = ok(&[
        "sensitivity",
        model,
        "--weights",
        &c.weights,
        "--calibration-data",
        &c.data,
        "--calibration-images",
        "2",
        "--recipe",
        &recipe,
        "--candidates",
        "w4a8",
        "--sample-images",
        "2",
        "--heldout",
        &c.data,
        "--heldout-images",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let layers = qvit_core::graph::Graph::build(&qvit_core::arch::ArchSpec::preset(model).unwrap())
        .unwrap()
        .nodes()
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                qvit_core::graph::Op::Conv2d(_)
                    | qvit_core::graph::Op::Linear(_)
                    | qvit_core::graph::Op::PatchEmbed(_)
            )
        })
        .count();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        layers,
        "{model}: one row per layer with weights"
    );
    assert!(rows.iter().all(|r| r["kl"].as_f64().unwrap().is_finite()));
    assert_eq!(report["heldout_images"], 3);
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(csv.lines().count(), 1 + layers);
    // Without held-out images, a full-size model says what to give.
    let e = err(&[
        "sensitivity",
        model,
        "--weights",
        &c.weights,
        "--calibration-data",
        &c.data,
        "--calibration-images",
        "2",
    ]);
    assert!(e.contains("--heldout DIR"), "{e}");
    std::fs::remove_dir_all(&c.dir).unwrap();
}

#[test]
fn efficientvit_b1_sensitivity() {
    sensitivity("efficientvit-b1", "trio-vit");
}

#[test]
fn deit_tiny_sensitivity() {
    sensitivity("deit-tiny", "repq-vit");
}

/// `qvit search` at full size: B1 @ 224 with trio-vit (a one-image search), weights and images
/// from a space file's `data` section, two widths, two designs, a few images per stage.
#[test]
fn efficientvit_b1_search() {
    let c = case("efficientvit-b1", "search");
    common::quick_trio_vit(&c.dir.join("trio-vit-quick.ron"), 1);
    let space = r#"Search(
        name: "b1",
        model: "efficientvit-b1",
        recipe: Some("trio-vit-quick.ron"),
        weights: [8, 4],
        activations: [8],
        groups: [(name: "attention", layers: "*context_module*")],
        accelerator: (
            base: "trio-vit-zcu102",
            mat_pes: [16], mat_lanes: [8], rmac_pes: [16], rmac_lanes: [8],
            copies: [4, 8],
            packing: [PerLayer],
        ),
        stages: (sample_images: 2, confirm_allocations: 2, heldout_images: 3, executor: Fake,
                 test_images: Some(3)),
        data: (weights: Some("efficientvit-b1.safetensors"), calibration: Some("val"),
               heldout: Some("val"), test: Some("val")),
    )"#;
    std::fs::write(c.dir.join("b1.ron"), space).unwrap();
    let out = c.dir.join("b1.csv");
    let projects = c.dir.join("rows");
    let state = c.dir.join("kept");
    let search = |out: &Path, extra: &[&str]| {
        let space = c.dir.join("b1.ron");
        let mut args = vec![
            "search",
            space.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = qvit(&args);
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{log}");
        (std::fs::read_to_string(out).unwrap(), log)
    };
    let (csv, log) = search(&out, &["--projects", projects.to_str().unwrap()]);
    assert!(log.contains("sensitivity (layer × width)"), "{log}");
    // Run again on its state (a key over B1's plan, weights and images): the sensitivity is
    // read back, not scanned, and the rows are the same (without the projects column, not
    // asked for this time).
    let (resumed, log) = search(&c.dir.join("b1-resumed.csv"), &[]);
    assert!(!log.contains("sensitivity (layer × width)"), "{log}");
    let without_projects = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(without_projects(&resumed), without_projects(&csv));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let reference = header.iter().position(|c| *c == "reference").unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.iter().filter(|r| r[reference] == "true").count(), 2);
    assert!(rows.len() > 2, "{csv}");
    // Every row is a project `qvit cost` prices as the search did, and a mixed one a project
    // `qvit eval` (the search's fake-quant on its three images) gives the search's top-1.
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let o = qvit(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    for r in &rows {
        let project = projects.join(r[col("project")]);
        let cost = json(&["cost", project.to_str().unwrap(), "--format", "json"]);
        assert_eq!(
            format!("{:.3}", cost["fps"].as_f64().unwrap()),
            r[col("fps")]
        );
    }
    let mixed = rows
        .iter()
        .find(|r| r[col("uniform")] == "false")
        .expect("a mixed row");
    let project = projects.join(mixed[col("project")]);
    let eval = json(&[
        "eval",
        project.to_str().unwrap(),
        "--limit",
        "3",
        "--format",
        "json",
    ]);
    let top1 = eval["top1_percent"].as_f64().unwrap();
    assert_eq!(format!("{top1:.2}"), mixed[col("top1")], "{eval}");
    std::fs::remove_dir_all(&c.dir).unwrap();
}
