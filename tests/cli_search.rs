//! `qvit sensitivity` from the command line: the table, the CSV, and mistakes refused before any
//! work.

use std::process::Command;

fn qvit(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qvit"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn temp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qvit-cli-search-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sensitivity_prints_a_table_and_writes_every_row() {
    let dir = temp("table");
    let out = qvit(
        &dir,
        &[
            "sensitivity",
            "deit-micro",
            "--calibration-images",
            "256",
            "--candidates",
            "w4a8,w8a4",
            "--sample-images",
            "32",
            "--heldout-images",
            "100",
            "--out",
            "s.csv",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("W4A8") && table.contains("W8A4"), "{table}");
    assert!(table.contains("blocks.0.attn.qkv"), "{table}");
    assert!(
        table.contains("held-out top-1") && table.contains("most sensitive"),
        "{table}"
    );
    let csv = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert_eq!(header, "layer,bits,kl,kl_increase,sqnr_db,top1,top1_drop");
    // deit-micro: patch embedding, 4 linear layers in each of its blocks, and the head.
    let graph =
        qvit_core::graph::Graph::build(&qvit_core::arch::ArchSpec::preset("deit-micro").unwrap())
            .unwrap();
    let blocks = graph
        .nodes()
        .iter()
        .filter(|n| n.name.ends_with("mlp.fc2"))
        .count();
    assert_eq!(csv.lines().count(), 1 + 2 * (2 + 4 * blocks));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sensitivity_mistakes_are_refused_before_calibrating() {
    let dir = temp("mistakes");
    let err = |args: &[&str]| {
        let out = qvit(&dir, args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(&["sensitivity", "deit-micro", "--out", "s.txt"]);
    assert!(e.contains(".csv or .json"), "{e}");
    let e = err(&["sensitivity", "deit-micro", "--candidates", "w1a8"]);
    assert!(e.contains("from 2 to 16"), "{e}");
    let e = err(&["sensitivity", "deit-micro", "--sample-images", "0"]);
    assert!(e.contains("sample"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small space on deit-micro: two widths, eight designs, few images.
const SMALL: &str = r#"Search(
    name: "small",
    model: "deit-micro",
    recipe: Some("repq-vit"),
    weights: [8, 4],
    activations: [8],
    groups: [(name: "qkv", layers: "*.attn.qkv")],
    accelerator: (
        base: "trio-vit-zcu102",
        mat_pes: [16],
        mat_lanes: [4, 8],
        rmac_pes: [16],
        rmac_lanes: [8],
        copies: [2, 8],
        packing: [Envelope, PerLayer],
    ),
    stages: (
        sample_images: 16,
        confirm_allocations: 4,
        heldout_images: 200,
        executor: Int,
        test_images: Some(300),
    ),
)"#;

fn search(dir: &std::path::Path, space: &str, extra: &[&str]) -> std::process::Output {
    std::fs::write(dir.join("space.ron"), space).unwrap();
    let mut args: Vec<&str> = vec!["search", "space.ron"];
    args.extend_from_slice(extra);
    qvit(dir, &args)
}

#[test]
fn a_search_writes_its_front_and_uniform_references_the_same_for_any_thread_count() {
    let dir = temp("small");
    let run = |threads: &str, out: &str| {
        let o = search(
            &dir,
            SMALL,
            &["--threads", threads, "--out", out, "--report", "r.md"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(dir.join(out)).unwrap()
    };
    let one = run("1", "one.csv");
    assert_eq!(one, run("3", "three.csv"));
    let mut lines = one.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for column in [
        "top1",
        "fps",
        "gops_per_dsp",
        "dsps",
        "uniform",
        "on_front",
        "widths",
    ] {
        assert!(header.contains(&column), "{column} in {header:?}");
    }
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // One reference row per uniform width (w8a8, w4a8), and front rows before them.
    let references: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| r[col("reference")] == "true")
        .collect();
    assert_eq!(references.len(), 2);
    assert!(references.iter().all(|r| r[col("uniform")] == "true"));
    assert!(rows.iter().any(|r| r[col("on_front")] == "true"));
    // Widths name every unit: the patch embedding, the qkv group, per block proj/fc1/fc2, head.
    for r in &rows {
        let widths = r[col("widths")];
        let units: usize = widths
            .split_whitespace()
            .map(|w| w.split_once('*').map_or(1, |(_, n)| n.parse().unwrap()))
            .sum();
        assert!(units >= 4, "{widths}");
        let top1: f64 = r[col("top1")].parse().unwrap();
        assert!((0.0..=100.0).contains(&top1));
    }
    let report = std::fs::read_to_string(dir.join("r.md")).unwrap();
    assert!(report.contains("## The front") && report.contains("## Mixed against uniform"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn search_mistakes_name_the_field() {
    let dir = temp("bad");
    for (edit, expect) in [
        (
            SMALL.replace("weights: [8, 4]", "weights: [8, 1]"),
            "weights",
        ),
        (
            SMALL.replace("copies: [2, 8]", "copies: [0]"),
            "accelerator.copies",
        ),
        (
            SMALL.replace("\"*.attn.qkv\"", "\"*.nothing\""),
            "*.nothing",
        ),
        (
            SMALL.replace("heldout_images: 200", "heldout_images: 0"),
            "stages.heldout_images",
        ),
        (
            SMALL.replace("base: \"trio-vit-zcu102\"", "base: \"systolic-zcu102\""),
            "Trio-ViT",
        ),
        (
            SMALL.replace("copies: [2, 8]", "copies: [4000]"),
            "none of the 4 designs fits the zcu102",
        ),
    ] {
        let o = search(&dir, &edit, &["--out", "x.csv"]);
        assert!(!o.status.success(), "{expect}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(expect), "{expect}: {e}");
    }
    let o = search(&dir, SMALL, &["--out", "x.txt"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains(".csv"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A space on efficientvit-micro with trio-vit, whose output-aware range search (cut to 8
/// images) makes a mixed row's plan depend on where the search ran.
const TRIO: &str = r#"Search(
    name: "trio",
    model: "efficientvit-micro",
    recipe: Some("trio-quick.ron"),
    weights: [8, 4],
    activations: [8, 4],
    groups: [(name: "attention", layers: "*.context_module.*")],
    accelerator: (
        base: "trio-vit-zcu102",
        mat_pes: [16],
        mat_lanes: [8],
        rmac_pes: [16],
        rmac_lanes: [8],
        copies: [2, 8],
        packing: [PerLayer],
    ),
    stages: (
        sample_images: 16,
        confirm_allocations: 4,
        heldout_images: 100,
        executor: Int,
        test_images: Some(200),
    ),
)"#;

/// Every row written with `--projects` is a project that `qvit eval` and `qvit cost` reproduce:
/// the same test top-1 (the mixed rows' plans splice their widths into the base plan's search,
/// as the search built them), FPS and DSPs.
#[test]
fn each_row_is_a_project_that_eval_and_cost_reproduce() {
    let dir = temp("projects");
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/presets/quant/trio-vit.ron"
    ))
    .unwrap();
    let quick = preset.replace("OutputSearch(images: 64)", "OutputSearch(images: 8)");
    assert_ne!(quick, preset);
    std::fs::write(dir.join("trio-quick.ron"), quick).unwrap();
    let calibrated = qvit(
        &dir,
        &["calibrate", "efficientvit-micro", "--out", "micro.calib"],
    );
    assert!(calibrated.status.success());
    let o = search(
        &dir,
        TRIO,
        &[
            "--calibration",
            "micro.calib",
            "--out",
            "f.csv",
            "--projects",
            "rows",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(dir.join("f.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let mixed = rows.iter().filter(|r| r[col("uniform")] == "false").count();
    assert!(mixed > 0, "{csv}");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = qvit(&dir, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Every uniform row and the first two mixed ones.
    let checked = rows
        .iter()
        .filter(|r| r[col("uniform")] == "true")
        .chain(rows.iter().filter(|r| r[col("uniform")] == "false").take(2));
    for r in checked {
        let project = format!("rows/{}", r[col("project")]);
        let eval = json(&["eval", &project, "--limit", "200", "--format", "json"]);
        let top1 = eval["top1_percent"].as_f64().unwrap();
        assert_eq!(format!("{top1:.2}"), r[col("top1")], "{project}: {eval}");
        assert_eq!(eval["executor"], "int", "{project}");
        let cost = json(&["cost", &project, "--format", "json"]);
        assert_eq!(
            format!("{:.3}", cost["fps"].as_f64().unwrap()),
            r[col("fps")],
            "{project}"
        );
        assert_eq!(cost["dsps"].to_string(), r[col("dsps")], "{project}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With `--state`, a search keeps its stages' results and a later run reads them back. Split
/// in two shards sharing the folder, each run does its share of a stage and waits at the first
/// the other has not finished; run again, they get through sensitivity, held-out and test
/// top-1, and the run that finds every share there writes the CSV of a search without state.
/// A top-1 kept in the folder is what a resumed run reports (it measures nothing kept).
#[test]
fn a_search_split_in_shards_and_resumed_gives_the_csv_of_one_run() {
    let dir = temp("state");
    // Every run here reads one statistics file rather than calibrating again (each would take
    // most of its time); the other tests calibrate inside the search.
    let calibrated = qvit(
        &dir,
        &["calibrate", "deit-micro", "--out", "calib.safetensors"],
    );
    assert!(calibrated.status.success(), "{calibrated:?}");
    let search = |dir: &std::path::Path, space: &str, extra: &[&str]| {
        let mut args = vec!["--calibration", "calib.safetensors"];
        args.extend_from_slice(extra);
        search(dir, space, &args)
    };
    let plain = search(&dir, SMALL, &["--out", "plain.csv"]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let mut waits = Vec::new();
    'rounds: for _ in 0..3 {
        for shard in ["0/2", "1/2"] {
            let o = search(
                &dir,
                SMALL,
                &["--state", "kept", "--shard", shard, "--out", "sharded.csv"],
            );
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(o.status.success(), "{err}");
            if dir.join("sharded.csv").exists() {
                break 'rounds;
            }
            let stage = err
                .split("kept its share of the ")
                .nth(1)
                .and_then(|rest| rest.split(" stage").next())
                .unwrap_or_else(|| panic!("{shard} neither waited nor finished: {err}"));
            waits.push(format!("{shard} {stage}"));
        }
    }
    assert_eq!(
        waits,
        ["0/2 sensitivity", "1/2 held-out top-1", "0/2 test top-1"]
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(read("sharded.csv"), read("plain.csv"));
    let mut kept: Vec<String> = std::fs::read_dir(dir.join("kept"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 4, "{kept:?}");
    // Each shard's sensitivity, the merged table and the top-1s.
    assert!(kept[0].ends_with("-shard-0-of-2.ron") && kept[1].ends_with("-shard-1-of-2.ron"));
    assert!(kept[2].starts_with("sensitivity-") && kept[3].starts_with("top1-"));
    // Resumed: a kept test top-1, edited, is what the search reports.
    let path = dir.join("kept").join(&kept[3]);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"test:"))
        .expect("a kept test top-1")
        .to_string();
    let (allocation, _) = line.trim().trim_start_matches('"').split_once('"').unwrap();
    let widths = allocation.trim_start_matches("test:").to_string();
    std::fs::write(
        &path,
        text.replace(&line, &format!("\"{allocation}\": 12.34,")),
    )
    .unwrap();
    let resumed = search(&dir, SMALL, &["--state", "kept", "--out", "resumed.csv"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let csv = read("resumed.csv");
    assert!(
        csv.lines()
            .any(|l| l.contains(&format!(",{widths},")) && l.contains(",12.34,")),
        "{widths}: {csv}"
    );
    // Kept results are checked before use: a top-1 outside 0–100 and a sensitivity row for a
    // layer the model does not have are refused, naming the file or folder.
    let refused = |expect: &[&str]| {
        let o = search(&dir, SMALL, &["--state", "kept", "--out", "refused.csv"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{err}");
        for e in expect {
            assert!(err.contains(e), "{e}: {err}");
        }
    };
    let edited = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edited.replace(": 12.34,", ": 123.4,")).unwrap();
    refused(&[&kept[3], "is not a top-1 in percent"]);
    std::fs::write(&path, edited).unwrap();
    let table = dir.join("kept").join(&kept[2]);
    let text = std::fs::read_to_string(&table).unwrap();
    assert!(text.contains("blocks.0.attn.proj"));
    std::fs::write(
        &table,
        text.replace("blocks.0.attn.proj", "blocks.0.attn.gone"),
    )
    .unwrap();
    refused(&[
        "kept",
        "`blocks.0.attn.gone` at W4A8 is not a layer and width of this search",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
}
