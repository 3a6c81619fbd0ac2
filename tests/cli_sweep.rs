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
