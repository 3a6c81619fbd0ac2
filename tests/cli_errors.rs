//! Bad input on the command line ends in an error that names the file and what is wrong, with a
//! non-zero exit, never a panic or a silent success.

use std::process::Command;

fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qvit"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "qvit {args:?} succeeded");
    assert!(
        !stderr.contains("panicked"),
        "qvit {args:?} panicked: {stderr}"
    );
    stderr
}

#[test]
fn explore_refuses_a_bad_project_before_opening_a_window() {
    let dir = std::env::temp_dir().join(format!("qvit-cli-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.ron");
    std::fs::write(
        &bad,
        "Project(model: \"efficientvit-micro\", quant: Some(bits: \"w8a99\"))",
    )
    .unwrap();
    let e = fails(&["explore", bad.to_str().unwrap()]);
    assert!(e.contains("bad.ron") && e.contains("from 2 to 16"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn labels_beyond_the_models_classes_and_huge_resolutions_are_errors() {
    let dir = std::env::temp_dir().join(format!("qvit-cli-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let images = dir.join("x-images-idx3-ubyte");
    let labels = dir.join("x-labels-idx1-ubyte");
    qvit_core::data::idx::write(&images, &[2, 28, 28], &[0; 2 * 28 * 28]).unwrap();
    qvit_core::data::idx::write(&labels, &[2], &[200, 1]).unwrap();
    let e = fails(&["eval", "--data", images.to_str().unwrap()]);
    assert!(e.contains("label 200") && e.contains("10 classes"), "{e}");
    let e = fails(&["cost", "efficientvit-micro", "-r", "4611686018427387904"]);
    assert!(e.contains("resolution"), "{e}");
    let e = fails(&["info", "efficientvit-micro", "-r", "4611686018427387904"]);
    assert!(e.contains("resolution"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_file_is_reported_once_and_presets_are_named_with_their_file() {
    let e = fails(&["eval", "--weights", "/nonexistent/w.safetensors"]);
    assert_eq!(e.matches("No such file").count(), 1, "{e}");
    let dir = std::env::temp_dir().join(format!("qvit-cli-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let space = dir.join("space.ron");
    std::fs::write(
        &space,
        r#"DesignSpace(name: "s", base: "trio-vit-zcu102", models: ["efficientvit-b9"],
            mat_pes: [8], mat_lanes: [8], rmac_pes: [8], rmac_lanes: [8], copies: [1],
            bits: ["w8a8"])"#,
    )
    .unwrap();
    let e = fails(&["sweep", space.to_str().unwrap()]);
    assert!(
        e.contains("space.ron") && e.contains("efficientvit-b9"),
        "{e}"
    );
    let accel = dir.join("accel.ron");
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/presets/accelerators/trio-vit-zcu102.ron"
    ))
    .unwrap();
    std::fs::write(&accel, preset.replace("\"zcu102\"", "\"zcu999\"")).unwrap();
    let e = fails(&[
        "cost",
        "efficientvit-micro",
        "--accel",
        accel.to_str().unwrap(),
    ]);
    assert!(e.contains("accel.ron") && e.contains("zcu999"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_folder_with_more_classes_than_the_model_is_an_error() {
    use qvit_core::arch::ArchSpec;
    use qvit_core::graph::Graph;
    use qvit_core::weights::Weights;
    let dir = std::env::temp_dir().join(format!("qvit-cli-classes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A two-class DeiT on 32×32 RGB images, and a folder of three classes.
    let model = dir.join("two.ron");
    std::fs::write(
        &model,
        r#"DeiT(name: "two", resolution: 32, in_channels: 3, num_classes: 2, patch_size: 16,
            embed_dim: 32, depth: 1, num_heads: 2, mlp_ratio: 2.0, qkv_bias: true, ln_eps: 1e-6)"#,
    )
    .unwrap();
    let graph = Graph::build(&ArchSpec::load(&model).unwrap()).unwrap();
    let weights = dir.join("two.safetensors");
    Weights::random(&graph, 1).save(&weights).unwrap();
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.join("val").join(class)).unwrap();
        image::RgbImage::from_pixel(40, 36, image::Rgb([10, 20, 30]))
            .save(dir.join("val").join(class).join("0.png"))
            .unwrap();
    }
    let e = fails(&[
        "eval",
        model.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        dir.join("val").to_str().unwrap(),
    ]);
    assert!(e.contains("label 2") && e.contains("2 classes"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
