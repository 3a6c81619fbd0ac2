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
