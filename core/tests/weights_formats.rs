//! Checkpoints as they are published: torch.save zips (MIT's `{"state_dict"}`, DeiT's
//! `{"model"}`), the legacy torch format in f16, timm's EfficientViT names; and what must be
//! refused: pickled code, two keys for one parameter, values no trained model has.

use std::path::{Path, PathBuf};

use qvit_core::arch::ArchSpec;
use qvit_core::data::{Dataset, Normalize};
use qvit_core::eval::evaluate;
use qvit_core::exec::float::FloatExecutor;
use qvit_core::graph::Graph;
use qvit_core::weights::Weights;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/checkpoints").join(name)
}

fn graph(model: &str) -> Graph {
    Graph::build(&ArchSpec::resolve(model).unwrap()).unwrap()
}

fn shipped(model: &str, g: &Graph) -> Weights {
    Weights::load(&root().join(format!("assets/{model}.safetensors")), g).unwrap()
}

fn same_tensors(a: &Weights, b: &Weights, round: impl Fn(f32) -> f32) {
    assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
    for name in a.names() {
        let (x, y) = (a.get(name).unwrap(), b.get(name).unwrap());
        assert_eq!(x.shape, y.shape, "{name}");
        assert!(
            x.data.iter().zip(&y.data).all(|(p, q)| round(*p) == *q),
            "{name} differs"
        );
    }
}

/// Top-1 counts of the first 300 test images.
fn top1(g: &Graph, w: &Weights) -> usize {
    let data = Dataset::idx(
        &root().join("assets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
        &root().join("assets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        Normalize::fashion_mnist(),
    )
    .unwrap();
    let folded = w.fold(g).unwrap();
    let exec = FloatExecutor::new(g, &folded).unwrap();
    evaluate(&exec, &data, 100, Some(300), &mut |_| {})
        .unwrap()
        .top1_correct
}

#[test]
fn mit_and_deit_zips_hold_exactly_the_shipped_weights() {
    for (model, file) in [
        ("efficientvit-micro", "efficientvit-micro.mit.pt"),
        ("deit-micro", "deit-micro.deit.pth"),
    ] {
        let g = graph(model);
        let torch = Weights::load(&fixture(file), &g).unwrap();
        let reference = shipped(model, &g);
        same_tensors(&torch, &reference, |v| v);
        assert_eq!(top1(&g, &torch), top1(&g, &reference), "{model}");
    }
}

#[test]
fn legacy_f16_file_holds_the_shipped_weights_rounded_to_f16() {
    let g = graph("efficientvit-micro");
    let legacy = Weights::load(&fixture("efficientvit-micro.legacy-f16.pt"), &g).unwrap();
    let reference = shipped("efficientvit-micro", &g);
    same_tensors(&reference, &legacy, |v| half::f16::from_f32(v).to_f32());
    // The same f16 values from a safetensors file give the same top-1.
    let dir = std::env::temp_dir().join(format!("qvit-f16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f16.safetensors");
    legacy.save(&path).unwrap();
    let again = Weights::load(&path, &g).unwrap();
    assert_eq!(top1(&g, &legacy), top1(&g, &again));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pickled_code_is_refused_with_what_and_where() {
    let g = graph("deit-micro");
    let e = Weights::load(&fixture("malicious.pt"), &g)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("malicious.pt") && e.contains("`hook` is a `posix.system`"),
        "{e}"
    );
}

/// A safetensors file of `tensors` (name, shape, f32 values).
fn safetensors_file(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                name.as_str(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Every tensor of `w` as (name, shape, values), named by `rename` (official name → key).
fn tensors_of(w: &Weights, rename: impl Fn(&str) -> String) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    w.names()
        .map(|n| {
            let t = w.get(n).unwrap();
            (rename(n), t.shape.clone(), t.data.clone())
        })
        .collect()
}

/// The official name under timm's EfficientViT naming (the inverse of qvit's mapping, written
/// out from timm's module tree).
fn timm_name(official: &str) -> String {
    let rules: [(&str, &str); 6] = [
        ("backbone.input_stem.op_list.0.", "stem.in_conv."),
        ("backbone.stages.", "stages."),
        ("head.op_list.0.", "head.in_conv."),
        ("head.op_list.2.linear.", "head.classifier.0."),
        ("head.op_list.2.norm.", "head.classifier.1."),
        ("head.op_list.3.linear.", "head.classifier.4."),
    ];
    if let Some(rest) = official.strip_prefix("backbone.input_stem.op_list.")
        && !rest.starts_with("0.")
    {
        let (k, rest) = rest.split_once('.').unwrap();
        return format!("stem.res{}.{rest}", k.parse::<usize>().unwrap() - 1);
    }
    for (from, to) in rules {
        if let Some(rest) = official.strip_prefix(from) {
            return if from == "backbone.stages." {
                let (s, rest) = rest.split_once(".op_list.").unwrap();
                format!("stages.{s}.blocks.{rest}")
            } else {
                format!("{to}{rest}")
            };
        }
    }
    panic!("no timm name for {official}")
}

#[test]
fn timm_efficientvit_names_load_as_the_official_ones() {
    let g = graph("efficientvit-micro");
    let reference = shipped("efficientvit-micro", &g);
    let tensors = tensors_of(&reference, timm_name);
    assert!(tensors.iter().any(|(n, _, _)| n.starts_with("stem.res0.")));
    let dir = std::env::temp_dir().join(format!("qvit-timm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("timm.safetensors");
    safetensors_file(&path, &tensors);
    same_tensors(&Weights::load(&path, &g).unwrap(), &reference, |v| v);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn duplicates_and_impossible_values_are_named() {
    let g = graph("deit-micro");
    let reference = shipped("deit-micro", &g);
    let all = tensors_of(&reference, str::to_string);
    let dir = std::env::temp_dir().join(format!("qvit-bad-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let load = |tensors: &[(String, Vec<usize>, Vec<f32>)]| {
        safetensors_file(&path, tensors);
        Weights::load(&path, &g).unwrap_err().to_string()
    };

    let mut twice = all.clone();
    let norm = all.iter().find(|t| t.0 == "norm.weight").unwrap();
    twice.push(("model.norm.weight".into(), norm.1.clone(), norm.2.clone()));
    let e = load(&twice);
    assert!(
        e.contains("`model.norm.weight` and `norm.weight` both stand for `norm.weight`")
            || e.contains("`norm.weight` and `model.norm.weight` both stand for `norm.weight`"),
        "{e}"
    );

    for (value, needle) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let mut bad = all.clone();
        let t = bad
            .iter_mut()
            .find(|t| t.0 == "blocks.0.attn.qkv.weight")
            .unwrap();
        t.2[5] = value;
        let e = load(&bad);
        assert!(
            e.contains("`blocks.0.attn.qkv.weight` holds") && e.contains(needle),
            "{e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let g = graph("efficientvit-micro");
    let reference = shipped("efficientvit-micro", &g);
    let var = reference
        .names()
        .find(|n| n.ends_with("running_var"))
        .unwrap()
        .to_string();
    let mut tensors = tensors_of(&reference, str::to_string);
    tensors.iter_mut().find(|t| t.0 == var).unwrap().2[0] = -1.0;
    let dir = std::env::temp_dir().join(format!("qvit-bad-var-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    safetensors_file(&path, &tensors);
    let e = Weights::load(&path, &g).unwrap_err().to_string();
    assert!(e.contains(&var) && e.contains("cannot be negative"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_of_another_model_says_so() {
    let e = Weights::load(
        &fixture("deit-micro.deit.pth"),
        &graph("efficientvit-micro"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("another model"), "{e}");
    assert!(
        e.lines().count() < 50,
        "summarised, not hundreds of lines: {e}"
    );
}
