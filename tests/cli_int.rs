//! The integer executor from the command line: `qvit eval --executor int`, the project's
//! `executor`, and `qvit vectors`.

use std::process::Command;

fn qvit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_and_vectors_on_the_integer_executor() {
    let dir = std::env::temp_dir().join(format!("qvit-cli-int-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stats = dir.join("micro.calib.safetensors");
    let stats_arg = stats.to_str().unwrap();
    ok(&qvit(&[
        "calibrate",
        "--images",
        "128",
        "--out",
        stats_arg,
        "-f",
        "json",
    ]));

    let common = ["--calibration", stats_arg, "--limit", "300", "-f", "json"];
    let int = ok(&qvit(
        &[&["eval", "--executor", "int"][..], &common].concat(),
    ));
    assert_eq!(int["executor"], "int");
    assert_eq!(int["recipe"], "trio-vit");
    assert!(int["top1_percent"].as_f64().unwrap() > 85.0, "{int}");

    // The same choice from a project file.
    let project = dir.join("int.ron");
    std::fs::write(
        &project,
        format!(
            "(model: \"efficientvit-micro\", calibration: Some({stats_arg:?}), \
             quant: Some(recipe: \"trio-vit\", bits: \"w8a8\", executor: Int))"
        ),
    )
    .unwrap();
    let from_project = ok(&qvit(&[
        "eval",
        project.to_str().unwrap(),
        "--limit",
        "300",
        "-f",
        "json",
    ]));
    assert_eq!(from_project["executor"], "int");
    assert_eq!(from_project["top1_percent"], int["top1_percent"]);

    // Golden vectors: a manifest naming every step's files, all present.
    let out = dir.join("golden");
    let done = qvit(&[
        "vectors",
        project.to_str().unwrap(),
        "--image",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let steps = manifest["steps"].as_array().unwrap();
    assert!(steps.len() > 40);
    for s in steps {
        assert!(out.join(s["output"]["file"].as_str().unwrap()).is_file());
    }

    // An image index past the end is an error that says how many there are.
    let bad = qvit(&[
        "vectors",
        "--image",
        "10000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("10000 images"));
    std::fs::remove_dir_all(&dir).unwrap();
}
