//! `qvit sweep` end to end: the shipped space runs out of the box; resume after an interruption.

use std::process::Command;

fn qvit(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qvit"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_shipped_space_runs_and_resumes_to_the_same_csv() {
    let dir = std::env::temp_dir().join(format!("qvit-cli-sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let space = std::fs::canonicalize("presets/sweeps/trio-vit-zcu102.ron").unwrap();
    let space = space.to_str().unwrap();
    let out = qvit(&dir, &["sweep", space]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = std::fs::read(dir.join("trio-vit-zcu102.csv")).unwrap();
    assert_eq!(whole.iter().filter(|&&b| b == b'\n').count(), 1 + 7290);
    let pareto = std::fs::read_to_string(dir.join("trio-vit-zcu102.pareto.csv")).unwrap();
    // The header and the 16 designs on the front (the cost model is exact f64 arithmetic).
    assert_eq!(pareto.lines().count(), 1 + 16);

    // Without --resume an existing file is refused; with it, a file cut mid-row is completed.
    let refused = qvit(&dir, &["sweep", space]);
    assert!(!refused.status.success());
    std::fs::write(
        dir.join("trio-vit-zcu102.csv"),
        &whole[..whole.len() * 2 / 5],
    )
    .unwrap();
    let resumed = qvit(&dir, &["sweep", space, "--resume", "--threads", "1"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        std::fs::read(dir.join("trio-vit-zcu102.csv")).unwrap(),
        whole
    );

    // Two shards merged equal the whole.
    for i in 0..2 {
        let s = format!("{i}/2");
        let o = format!("s{i}.csv");
        assert!(
            qvit(&dir, &["sweep", space, "--shard", &s, "--out", &o])
                .status
                .success()
        );
    }
    let merged = qvit(
        &dir,
        &["sweep", "merge", "s0.csv", "s1.csv", "--out", "merged.csv"],
    );
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    assert_eq!(std::fs::read(dir.join("merged.csv")).unwrap(), whole);
    // What `s*.csv` expands to (each shard's Pareto and published files beside it) merges too.
    let mut glob: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('s') && n.ends_with(".csv"))
        .collect();
    glob.sort();
    assert!(glob.contains(&"s0.pareto.csv".to_string()), "{glob:?}");
    let mut args = vec!["sweep", "merge"];
    args.extend(glob.iter().map(String::as_str));
    args.extend(["--out", "globbed.csv"]);
    let globbed = qvit(&dir, &args);
    assert!(
        globbed.status.success(),
        "{}",
        String::from_utf8_lossy(&globbed.stderr)
    );
    assert_eq!(std::fs::read(dir.join("globbed.csv")).unwrap(), whole);
}

/// `qvit plot` draws a sweep as a figure: the title counts the CSV's feasible designs and its
/// front, the axes are titled, every design off the front is a circle, and the one published
/// EfficientViT figure (GOPS only) is a labelled reference line on a GOPS axis. Mistakes in
/// the flags are said by name.
#[test]
fn plot_draws_a_sweep_as_a_figure() {
    let dir = std::env::temp_dir().join(format!("qvit-cli-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let space = std::fs::canonicalize("presets/sweeps/trio-vit-zcu102.ron").unwrap();
    assert!(
        qvit(&dir, &["sweep", space.to_str().unwrap(), "--out", "s.csv"])
            .status
            .success()
    );
    let csv = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    let feasible = csv.lines().filter(|l| l.ends_with(",ok")).count();
    let on_front = std::fs::read_to_string(dir.join("s.pareto.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;

    let out = qvit(&dir, &["plot", "s.csv", "--y", "gops", "--out", "f.svg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(dir.join("f.svg")).unwrap();
    let title = format!(
        "efficientvit-b1, efficientvit-b2: {feasible} designs, {on_front} on the Pareto front"
    );
    // SVG keeps each text on a line of its own.
    for needed in [
        title.as_str(),
        "\nFPS\n",
        "\nGOPS\n",
        "EfficientViT-FPGA (EfficientViT, W8A8)",
    ] {
        assert!(svg.contains(needed), "`{needed}` missing");
    }
    assert_eq!(svg.matches("<circle").count(), feasible - on_front + 1);

    let out = qvit(
        &dir,
        &[
            "plot", "s.csv", "--out", "f.png", "--size", "400x300", "--dpi", "96",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = image::open(dir.join("f.png")).unwrap();
    assert_eq!((png.width(), png.height()), (400, 300));

    for (args, says) in [
        (vec!["--out", "f.pdf"], ".svg or .png"),
        (vec!["--out", "f.svg", "--x", "latency"], "gops-per-dsp"),
        (vec!["--out", "f.svg", "--size", "big"], "WIDTHxHEIGHT"),
        (vec!["--out", "f.svg", "--y", "top1"], "no design has both"),
    ] {
        let mut all = vec!["plot", "s.csv"];
        all.extend(args);
        let out = qvit(&dir, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{all:?}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
