//! The integer executor against the fake-quant executor on the shipped micro models: top-1 on
//! test images and, per quantization point, how many integer codes are within ±1 of the codes
//! the fake-quant executor's values have.

use qvit_core::data::Dataset;
use qvit_core::exec::int::{IntExecutor, compile};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use qvit_core::arch::ArchSpec;
use qvit_core::data::Normalize;
use qvit_core::eval::Classifier;
use qvit_core::graph::Graph;
use qvit_core::pipeline;
use qvit_core::project::Project;
use qvit_core::quant::{
    self, CalibrationStats, FakeQuantExecutor, QuantPlan, QuantSettings, Recipe, calibrate,
};
use qvit_core::tensor::Tensor;
use qvit_core::weights::{FoldedWeights, Weights};

mod common;

use common::{Agreement, Micro, micro, report};

fn dataset(test: bool) -> Dataset {
    if test {
        common::test_set()
    } else {
        common::calibration_set()
    }
}

/// Each micro model's statistics as `qvit eval` computes them (the shipped 1,024 calibration
/// images), once for the whole file, so the top-1 figures here are the documented ones.
fn stats(m: &Micro) -> &'static CalibrationStats {
    static EFFICIENTVIT: OnceLock<CalibrationStats> = OnceLock::new();
    static DEIT: OnceLock<CalibrationStats> = OnceLock::new();
    let cell = match m.graph.model.as_str() {
        "efficientvit-micro" => &EFFICIENTVIT,
        "deit-micro" => &DEIT,
        other => panic!("no statistics for {other}"),
    };
    cell.get_or_init(|| {
        let model = pipeline::Model::load(&Project::for_model(&m.graph.model)).unwrap();
        let never = AtomicBool::new(false);
        pipeline::statistics(&model, None, None, &never, &mut |_, _| {}).unwrap()
    })
}

/// The plan of a preset recipe at `bits`, built once per (model, recipe, bits) for the whole
/// file: trio-vit's output-aware search is the slow part of these tests.
fn plan(m: &Micro, recipe: &str, bits: &str) -> QuantPlan {
    static PLANS: Mutex<BTreeMap<(String, String, String), QuantPlan>> =
        Mutex::new(BTreeMap::new());
    let key = (m.graph.model.clone(), recipe.to_string(), bits.to_string());
    let mut plans = PLANS.lock().unwrap();
    plans
        .entry(key)
        .or_insert_with(|| {
            let settings = QuantSettings {
                recipe: recipe.into(),
                bits: bits.parse().unwrap(),
                overrides: Vec::new(),
                ..Default::default()
            };
            quant::build(
                &m.graph,
                &m.folded,
                stats(m),
                &Recipe::preset(recipe).unwrap(),
                &settings,
            )
            .unwrap()
        })
        .clone()
}

/// Every code within ±1 (measured: all of them), but for one in 100,000: fake-quant's codes
/// come from f32 kernels that sum in another order on another CPU, which can move a value
/// lying on a rounding boundary by one code.
fn all_but_float_ties(within: usize, n: usize) -> bool {
    within + n / 100_000 >= n
}

/// docs/int-executor.md's share of codes within ±1 in the table row or sentence that starts
/// with `prefix`: the first figure written `N.NNN %` or `N.N %` after it.
fn documented_share(prefix: &str) -> f64 {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/int-executor.md"
    ))
    .unwrap();
    let at = docs
        .find(prefix)
        .unwrap_or_else(|| panic!("docs/int-executor.md has no `{prefix}`"));
    let rest = &docs[at + prefix.len()..];
    let end = rest.find(" %").expect("a percentage");
    let figure = rest[..end].rsplit(|c: char| !(c.is_ascii_digit() || c == '.'));
    figure
        .into_iter()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no figure after `{prefix}`"))
}

/// The documented share of codes within ±1 is the measured one, to the allowance for float
/// ties (one code in 100,000, so 0.001 points) and the doc's rounding.
fn assert_documented_share(prefix: &str, measured: f64, allowance: f64) {
    let documented = documented_share(prefix);
    assert!(
        (documented - measured).abs() <= allowance + 0.0005,
        "docs/int-executor.md `{prefix}` says {documented} %, measured {measured:.3} %"
    );
}

/// Per point: (name, elements, within ±1, max |difference|) on test images `0..images`.
fn agreement(m: &Micro, plan: &QuantPlan, images: usize, local: bool) -> Vec<Agreement> {
    let batch = dataset(true).batch(0..images).unwrap();
    common::agreement(&m.graph, &m.folded, plan, &batch.images, local)
}

#[test]
fn efficientvit_trio_vit_codes_match_fake_quant() {
    let m = micro("efficientvit-micro");
    let p = plan(&m, "trio-vit", "w8a8");
    // End to end, ±1 differences propagate (86.8 % of codes within ±1 measured); layer by
    // layer every code is within ±1.
    let end_to_end = agreement(&m, &p, 32, false);
    let share = report("efficientvit-micro trio-vit end to end", "", &end_to_end);
    assert!(share >= 85.0, "{share:.3} % within ±1 LSB end to end");
    // The doc writes one decimal; ties may move a few codes on another CPU.
    assert_documented_share("end to end instead", share, 0.1);
    let rows = agreement(&m, &p, 64, true);
    let share = report("efficientvit-micro", "trio-vit, layer by layer", &rows);
    for (name, n, within, _) in &rows {
        assert!(all_but_float_ties(*within, *n), "{name}: {within} of {n}");
    }
    assert_documented_share("| efficientvit-micro, trio-vit W8A8 |", share, 0.001);
}

/// Whether docs/int-executor.md's accuracy table has this row (to 0.02 points: two images,
/// for f32 summation order on another CPU).
fn documented_top1(model: &str, recipe: &str, fake: f64, int: f64) -> bool {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/int-executor.md"
    ))
    .unwrap();
    docs.lines()
        .filter(|l| l.starts_with(&format!("| {model} | {recipe} | ")))
        .any(|l| {
            let cells: Vec<f64> = l
                .split('|')
                .skip(3)
                .filter_map(|c| c.trim().parse().ok())
                .collect();
            cells.len() >= 2
                && (cells[0] - fake).abs() <= 0.02 + 1e-9
                && (cells[1] - int).abs() <= 0.02 + 1e-9
        })
}

/// The predicted class of every image of `data`.
fn predictions(exec: &dyn Classifier, data: &Dataset) -> Vec<usize> {
    (0..data.len())
        .step_by(250)
        .flat_map(|start| {
            let batch = data.batch(start..(start + 250).min(data.len())).unwrap();
            let logits = exec.logits(&batch.images).unwrap();
            (0..logits.batch())
                .map(|i| {
                    let row = logits.item(i);
                    (0..row.len()).fold(0, |best, c| if row[c] > row[best] { c } else { best })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Top-1 of the int and fake-quant executors on the whole shipped test set, and on how many
/// images their predictions differ (a net top-1 difference can hide disagreements that cancel).
fn top1_int_and_fake(m: &Micro, p: &QuantPlan) -> (f64, f64, usize) {
    let program = compile(&m.graph, &m.folded, p).unwrap();
    let data = dataset(true);
    let int = predictions(&IntExecutor::new(&program), &data);
    let fake = predictions(
        &FakeQuantExecutor::new(&m.graph, &m.folded, p).unwrap(),
        &data,
    );
    let top1 = |pred: &[usize]| {
        let right = pred
            .iter()
            .zip(&data.labels)
            .filter(|(p, l)| **p == **l as usize)
            .count();
        100.0 * right as f64 / data.len() as f64
    };
    let differ = int.iter().zip(&fake).filter(|(a, b)| a != b).count();
    (top1(&int), top1(&fake), differ)
}

/// Of the 10,000 test images, on how many the int and fake-quant executors may predict
/// different classes: the measured count (63 for efficientvit-micro trio-vit, 146 for
/// deit-micro fq-vit, 2026-11-28) with room for a quarter more, so that a change that flips
/// predictions fails even where the flips cancel in top-1.
const MAX_DIFFERING_EFFICIENTVIT: usize = 79;
const MAX_DIFFERING_DEIT: usize = 183;

#[test]
fn efficientvit_int_top1_matches_fake_quant() {
    let m = micro("efficientvit-micro");
    let (int, fake, differ) = top1_int_and_fake(&m, &plan(&m, "trio-vit", "w8a8"));
    eprintln!(
        "efficientvit-micro trio-vit on the full test set: top-1 int {int:.2} %, fake {fake:.2} %, \
         predictions differ on {differ} images"
    );
    assert!((int - fake).abs() <= 0.2);
    assert!(differ <= MAX_DIFFERING_EFFICIENTVIT, "{differ} images");
    assert!(documented_top1("efficientvit-micro", "trio-vit", fake, int));
    // The README quotes the same run: `qvit eval --recipe trio-vit --executor int  # int % (fake-quant: fake %)`.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("qvit eval --recipe trio-vit --executor int"))
        .expect("the README's integer executor example");
    let figures: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        figures.len() == 2
            && (figures[0] - int).abs() <= 0.02 + 1e-9
            && (figures[1] - fake).abs() <= 0.02 + 1e-9,
        "README: `{line}`, measured int {int:.2} %, fake {fake:.2} %"
    );
}

#[test]
fn deit_codes_match_fake_quant_including_softmax_and_gelu() {
    // The integer Softmax and GELU approximate exp and erf (within 0.3 % and 0.0006), close
    // enough that their points, too, match fake-quant's exact functions to ±1 almost
    // everywhere; every other point matches to ±1 on every element.
    let m = micro("deit-micro");
    for recipe in ["fq-vit", "repq-vit"] {
        let p = plan(&m, recipe, "w8a8");
        let rows = agreement(&m, &p, 16, true);
        let share = report("deit-micro", &format!("{recipe}, layer by layer"), &rows);
        assert!(share >= 99.99, "{recipe}: {share:.3} % within ±1 LSB");
        assert_documented_share(&format!("| deit-micro, {recipe} W8A8 |"), share, 0.001);
        for (name, n, within, _) in &rows {
            if name.ends_with("softmax") || name.ends_with("mlp.act") {
                assert!(*within as f64 >= 0.999 * *n as f64, "{recipe}: {name}");
            } else {
                assert_eq!(within, n, "{recipe}: {name}");
            }
        }
    }
}

#[test]
fn deit_int_top1_matches_fake_quant() {
    let m = micro("deit-micro");
    let (int, fake, differ) = top1_int_and_fake(&m, &plan(&m, "fq-vit", "w8a8"));
    eprintln!(
        "deit-micro fq-vit on the full test set: top-1 int {int:.2} %, fake {fake:.2} %, \
         predictions differ on {differ} images"
    );
    assert!((int - fake).abs() <= 0.2);
    assert!(differ <= MAX_DIFFERING_DEIT, "{differ} images");
    assert!(documented_top1("deit-micro", "fq-vit", fake, int));
}

#[test]
fn golden_vectors_replay_step_by_step() {
    use qvit_core::exec::int::vectors::{self, read_npy_i32};
    let m = micro("efficientvit-micro");
    let p = plan(&m, "trio-vit", "w8a8");
    let program = compile(&m.graph, &m.folded, &p).unwrap();
    let int = IntExecutor::new(&program);
    let dir = std::env::temp_dir().join(format!("qvit-vectors-{}", std::process::id()));
    let image = dataset(true).batch(3..4).unwrap().images;
    let manifest = vectors::write(&m.graph, &int, image.item(0), &dir).unwrap();
    assert_eq!(manifest.steps.len(), program.steps.len());
    let mut scratch = Default::default();
    for (entry, step) in manifest.steps.iter().zip(&program.steps) {
        let inputs: Vec<Vec<i32>> = entry
            .inputs
            .iter()
            .map(|a| read_npy_i32(&dir.join(&a.file)).unwrap().1)
            .collect();
        let views: Vec<&[i32]> = inputs.iter().map(Vec::as_slice).collect();
        let (shape, want) = read_npy_i32(&dir.join(&entry.output.file)).unwrap();
        assert_eq!(shape, m.graph.node(step.node).shape);
        assert_eq!(
            *int.run_step(step, &views, &mut scratch),
            want,
            "{}",
            entry.name
        );
        if entry.kind == "weighted" {
            let names: Vec<&str> = entry.constants.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names[..2], ["weights", "bias"], "{}", entry.name);
        }
    }
    // The last step's output is the logits the executor reports.
    let logits = int.forward(&image).unwrap();
    let last = read_npy_i32(&dir.join(&manifest.steps.last().unwrap().output.file))
        .unwrap()
        .1;
    let scaled: Vec<f32> = last
        .iter()
        .map(|&v| (v as f64 * manifest.logit_scale) as f32)
        .collect();
    assert_eq!(logits.data, scaled);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tensor_left_unquantized_is_named() {
    let m = micro("efficientvit-micro");
    let mut p = plan(&m, "trio-vit", "w8a8");
    let gone = p.activations.remove(7).point;
    let err = compile(&m.graph, &m.folded, &p).unwrap_err().to_string();
    assert!(err.contains(&gone) && err.contains("unquantized"), "{err}");
    // A plan for another model.
    let other = plan(&micro("deit-micro"), "fq-vit", "w8a8");
    let err = compile(&m.graph, &m.folded, &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("deit-micro"), "{err}");
    // Twin-uniform codes have no integer form yet: the error says which tensor and what to do.
    let d = micro("deit-micro");
    let twin = plan(&d, "ptq4vit", "w8a8");
    let err = compile(&d.graph, &d.folded, &twin).unwrap_err().to_string();
    assert!(
        err.contains("twin-uniform") && err.contains("blocks.0"),
        "{err}"
    );
}

/// A thread keeps its spare buffers from image to image and model to model
/// (`Scratch::with_thread_local`); they must stay as many as an image needs, not grow with every
/// image run.
#[test]
fn spare_buffers_do_not_grow_with_the_images_run() {
    use qvit_core::exec::int::ops::Scratch;
    let m = micro("efficientvit-micro");
    let program = compile(&m.graph, &m.folded, &plan(&m, "trio-vit", "w8a8")).unwrap();
    let images = dataset(true).batch(0..8).unwrap().images;
    let exec = IntExecutor::new(&program);
    let spares = |n: usize| {
        for b in 0..n {
            exec.run_image(images.item(b), &|_| false);
        }
        Scratch::with_thread_local(|s| s.spare.len())
    };
    let after_two = spares(2);
    assert!(after_two > 0, "the run kept no spare buffers");
    // `run_image` hands each image's logits over with their buffer, so the spares may settle
    // lower than after the first images, never higher.
    let after_eight = spares(6);
    assert!(
        after_eight <= after_two,
        "{after_eight} spare buffers after 8 images, {after_two} after 2"
    );
    assert_eq!(
        spares(6),
        after_eight,
        "spare buffers after 8 and 14 images"
    );
}

#[test]
fn results_do_not_depend_on_threads_or_kernels() {
    use qvit_core::exec::int::kernels::Isa;
    let m = micro("efficientvit-micro");
    let p = plan(&m, "trio-vit", "w8a8");
    let program = compile(&m.graph, &m.folded, &p).unwrap();
    let images = dataset(true).batch(0..24).unwrap().images;
    let want = IntExecutor::new(&program)
        .with_isa(Isa::Scalar)
        .forward(&images)
        .unwrap();
    for isa in Isa::available() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool
                .install(|| IntExecutor::new(&program).with_isa(isa).forward(&images))
                .unwrap();
            assert_eq!(got, want, "{} with {threads} threads", isa.name());
        }
    }
}

/// The values that pass between convs as bytes (`byte_codes`: on efficientvit-micro its
/// MBConvs' expanded channels, into and out of their depthwise convs) change no code: every
/// ISA gives the logits that every value in i32 codes gives, and so does every kept node.
#[test]
fn byte_codes_change_no_code() {
    use qvit_core::exec::int::byte_codes::{self, Store};
    use qvit_core::exec::int::kernels::Isa;
    let m = micro("efficientvit-micro");
    let p = plan(&m, "trio-vit", "w8a8");
    let program = compile(&m.graph, &m.folded, &p).unwrap();
    let stores = byte_codes::plan(&program);
    let bytes = stores.iter().filter(|s| **s != Store::Codes).count();
    assert!(bytes >= 4, "{bytes} values stored as bytes");
    let images = dataset(true).batch(0..8).unwrap().images;
    let codes = IntExecutor::new(&program)
        .with_isa(Isa::Scalar)
        .with_byte_codes(false);
    let want = codes.forward(&images).unwrap();
    let every_node = codes.run_image(&images.data[..images.item_len()], &|_| true);
    for isa in Isa::available() {
        let exec = IntExecutor::new(&program)
            .with_isa(isa)
            .with_byte_codes(true);
        assert_eq!(exec.forward(&images).unwrap(), want, "{}", isa.name());
        let kept = exec.run_image(&images.data[..images.item_len()], &|_| true);
        assert!(kept == every_node, "{}: every node's codes", isa.name());
    }
}

#[test]
fn low_and_wide_bit_widths_compile_and_match() {
    // 4-bit weights run in the int8 kernels; 12-bit activations take the wide i64 path.
    let m = micro("efficientvit-micro");
    for bits in ["w4a8", "w8a12"] {
        let p = plan(&m, "trio-vit", bits);
        let rows = agreement(&m, &p, 8, true);
        let share = report(
            "efficientvit-micro",
            &format!("trio-vit {bits}, layer by layer"),
            &rows,
        );
        assert_documented_share(
            "| efficientvit-micro, trio-vit W4A8 and W8A12 (images 0–7) |",
            share,
            0.001,
        );
        for (name, n, within, _) in &rows {
            assert!(
                all_but_float_ties(*within, *n),
                "{bits}: {name}: {within} of {n}"
            );
        }
    }
}

/// A hardware team's check: from the golden-vector files alone — input codes, `.weights.npy`,
/// `.bias.npy` and the manifest's rescale record — every plain linear layer and 1×1 conv
/// recomputes its output codes exactly (`Σ w·x + bias` over raw codes, then the record's
/// multiply, addend, half-up shift and saturation).
#[test]
fn golden_vector_rescale_records_rebuild_the_outputs() {
    use qvit_core::exec::int::vectors::{self, read_npy_i32};
    for (model, recipe) in [
        ("deit-micro", "repq-vit"),
        ("efficientvit-micro", "trio-vit"),
    ] {
        let m = micro(model);
        let p = plan(&m, recipe, "w8a8");
        let program = compile(&m.graph, &m.folded, &p).unwrap();
        let int = IntExecutor::new(&program);
        let dir = std::env::temp_dir().join(format!(
            "qvit-rescale-{model}-{recipe}-{}",
            std::process::id()
        ));
        let image = dataset(true).batch(5..6).unwrap().images;
        vectors::write(&m.graph, &int, image.item(0), &dir).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let read =
            |file: &serde_json::Value| read_npy_i32(&dir.join(file.as_str().unwrap())).unwrap();
        let read64 = |file: &serde_json::Value| {
            let bytes = std::fs::read(dir.join(file.as_str().unwrap())).unwrap();
            let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            bytes[10 + len..]
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<i64>>()
        };
        let mut rebuilt = 0;
        for step in manifest["steps"].as_array().unwrap() {
            let rescale = step["rescale"].as_array().unwrap();
            let plain = step["kind"] == "weighted"
                && rescale.len() == 1
                && step["nonlinear"].is_null()
                && step["thresholds"].as_array().unwrap().is_empty();
            let constants: std::collections::HashMap<&str, &serde_json::Value> = step["constants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c[0].as_str().unwrap(), &c[1]["file"]))
                .collect();
            if !plain {
                continue;
            }
            let (x_shape, x) = read(&step["inputs"][0]["file"]);
            let (w_shape, w) = read(constants["weights"]);
            let bias = read64(constants["bias"]);
            let (out_shape, want) = read(&step["output"]["file"]);
            let (outs, k) = (w_shape[0], w_shape[1]);
            // Token-major linear ([T, in] → [T, out]) or a 1×1 conv ([in, P] → [out, P]).
            let token_major = x_shape.len() == 2 && x_shape[1] == k;
            let one_by_one =
                x_shape.len() == 3 && x_shape[0] == k && out_shape[1..] == x_shape[1..];
            if !token_major && !one_by_one {
                continue;
            }
            let positions = x.len() / k;
            let r = &rescale[0];
            let at = |v: &serde_json::Value, o: usize| {
                let a = v.as_array().unwrap();
                a[o.min(a.len() - 1)].clone()
            };
            let (lo, hi) = (
                r["saturate"][0].as_i64().unwrap(),
                r["saturate"][1].as_i64().unwrap(),
            );
            for o in 0..outs {
                let m = at(&r["multiplier"], o).as_i64().unwrap() as i128;
                let shift = at(&r["shift"], o).as_u64().unwrap() as u32;
                let addend = at(&r["addend"], o).as_i64().unwrap() as i128;
                for pos in 0..positions {
                    let acc: i64 = (0..k)
                        .map(|c| {
                            let xv = if token_major {
                                x[pos * k + c]
                            } else {
                                x[c * positions + pos]
                            };
                            w[o * k + c] as i64 * xv as i64
                        })
                        .sum::<i64>()
                        + bias[o];
                    let v = acc as i128 * m + addend;
                    let v = if shift == 0 {
                        v
                    } else {
                        (v + (1i128 << (shift - 1))) >> shift
                    };
                    let got = v.clamp(lo as i128, hi as i128) as i32;
                    let idx = if token_major {
                        pos * outs + o
                    } else {
                        o * positions + pos
                    };
                    assert_eq!(
                        got, want[idx],
                        "{model} {}: channel {o}, position {pos}",
                        step["name"]
                    );
                }
            }
            rebuilt += 1;
        }
        eprintln!("{model} {recipe}: {rebuilt} layers rebuilt from the golden-vector files");
        assert!(rebuilt >= 4, "{model}: only {rebuilt} layers checked");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A one-block DeiT (16 wide, 2 heads) over `resolution`² images of `channels` channels cut
/// into `patch`² patches: the compiler's bounds at shapes the micro models do not have.
fn one_block_deit(name: &str, resolution: usize, channels: usize, patch: usize) -> Graph {
    let spec = ArchSpec::from_ron(
        &format!(
            "DeiT(name: \"{name}\", resolution: {resolution}, in_channels: {channels}, \
             num_classes: 10, patch_size: {patch}, embed_dim: 16, depth: 1, num_heads: 2, \
             mlp_ratio: 2.0, qkv_bias: true, ln_eps: 1e-6)"
        ),
        "test spec",
    )
    .unwrap();
    Graph::build(&spec).unwrap()
}

/// The W8A8 plan of a preset recipe, calibrated on the first `images` of `data`.
fn w8a8_plan(
    graph: &Graph,
    folded: &FoldedWeights,
    data: &Dataset,
    images: usize,
    recipe: &str,
) -> QuantPlan {
    let stats = calibrate(graph, folded, data, images, images, &mut |_, _| {}).unwrap();
    let settings = QuantSettings {
        recipe: recipe.into(),
        ..Default::default()
    };
    quant::build(
        graph,
        folded,
        &stats,
        &Recipe::preset(recipe).unwrap(),
        &settings,
    )
    .unwrap()
}

/// A patch embedding over 64 channels of 34×34 patches is a GEMM with K = 73,984; with
/// full-scale weights (every code ±127) its i32 accumulator could reach 73,984·127·255 >
/// 2^31, so compiling refuses it and names the layer.
#[test]
fn a_gemm_whose_accumulator_can_overflow_is_refused() {
    let graph = one_block_deit("deit-wide-patch", 68, 64, 34);
    let mut weights = Weights::random(&graph, 3);
    let name = "patch_embed.proj.weight";
    let shape = weights.get(name).unwrap().shape.clone();
    let n: usize = shape.iter().product();
    let full_scale = (0..n)
        .map(|i| if i % 2 == 0 { 0.01 } else { -0.01 })
        .collect();
    weights
        .replace(name, Tensor::new(shape, full_scale))
        .unwrap();
    let folded = weights.fold(&graph).unwrap();
    let pixels = 64 * 68 * 68;
    let bytes = (0..4 * pixels).map(|i| (i * 37 % 251) as u8).collect();
    let data = Dataset::from_bytes(
        "test images",
        [64, 68, 68],
        bytes,
        vec![0, 1, 2, 3],
        Normalize {
            mean: vec![0.5; 64],
            std: vec![0.25; 64],
        },
    )
    .unwrap();
    let plan = w8a8_plan(&graph, &folded, &data, 4, "minmax");
    let err = compile(&graph, &folded, &plan).unwrap_err().to_string();
    assert!(
        err.contains("patch_embed.proj")
            && err.contains("73984 inputs")
            && err.contains("accumulator"),
        "{err}"
    );
}

/// `P·V` is bounded by the probabilities' row sum, not by tokens × the largest probability: a
/// DeiT over 785 tokens (28×28 patches of one pixel) with repq-vit's log√2 probabilities,
/// which a per-token bound (785·2^15·255 > 2^31) refused, compiles and matches fake-quant.
#[test]
fn attention_over_many_tokens_compiles_and_matches() {
    let graph = one_block_deit("deit-many-tokens", 28, 1, 1);
    let folded = Weights::random(&graph, 9).fold(&graph).unwrap();
    let plan = w8a8_plan(&graph, &folded, &dataset(false), 8, "repq-vit");
    let images = dataset(true).batch(0..1).unwrap().images;
    let rows = common::agreement(&graph, &folded, &plan, &images, true);
    let share = report("deit-many-tokens", "repq-vit, layer by layer", &rows);
    assert!(share >= 99.9, "{share:.3} %");
}

/// A thread's run of images takes the 1×1 convs of the small maps for all its images at once
/// (`Weighted::run_stacked`): the logits are those of the run image by image, on every ISA,
/// for runs of 2 to 9 images (5 images on 2 threads: runs of 3 and 2; 9 on one thread:
/// stacked in groups of 8 and 1).
#[test]
fn stacked_layers_give_the_logits_of_image_by_image() {
    use qvit_core::exec::int::kernels::Isa;
    use qvit_core::exec::int::program::StepOp;
    let m = micro("efficientvit-micro");
    let program = compile(&m.graph, &m.folded, &plan(&m, "trio-vit", "w8a8")).unwrap();
    let tail = program.token_tail().expect("a classifier head").start;
    let stacked: Vec<&str> = program.steps[..tail]
        .iter()
        .filter(|s| matches!(&s.op, StepOp::Weighted(w) if w.stacks()))
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        stacked.len() >= 4 && program.stacked_from(tail) < tail,
        "the micro model's 7×7 stages stack: {stacked:?}"
    );
    let images = dataset(true).batch(0..9).unwrap().images;
    for isa in Isa::available() {
        for (threads, batch) in [(1, 9), (1, 2), (2, 5)] {
            let images = Tensor::new(
                [&[batch][..], &images.shape[1..]].concat(),
                images.data[..batch * images.item_len()].to_vec(),
            );
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let [alone, together] = [false, true].map(|stacking| {
                let exec = IntExecutor::new(&program)
                    .with_isa(isa)
                    .with_stacking(stacking);
                pool.install(|| exec.forward(&images)).unwrap()
            });
            assert_eq!(
                together,
                alone,
                "{} with {threads} threads, batch {batch}",
                isa.name()
            );
        }
    }
}

/// The token tail is the classifier head (EfficientViT's linear, LayerNorm + Hardswish,
/// linear; DeiT's linear after the class token), and a batch run through it a run of images at
/// a time gives every image the logits it gets alone through every step.
#[test]
fn the_token_tail_is_the_head_and_a_run_through_it_gives_each_image_its_own_logits() {
    let cases = [
        (
            "efficientvit-micro",
            "trio-vit",
            &[
                "head.op_list.2.linear",
                "head.op_list.2.act",
                "head.op_list.3.linear",
            ][..],
        ),
        ("deit-micro", "repq-vit", &["head"][..]),
    ];
    let images = dataset(true).batch(0..7).unwrap().images;
    for (model, recipe, head) in cases {
        let m = micro(model);
        let p = plan(&m, recipe, "w8a8");
        let program = compile(&m.graph, &m.folded, &p).unwrap();
        let tail = program.token_tail().expect("a classifier head");
        let names: Vec<&str> = program.steps[tail.start..]
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, head, "{model}");
        assert_eq!(program.steps[tail.start].inputs, [tail.input], "{model}");
        let executor = IntExecutor::new(&program);
        // 7 images on 2 threads: runs of 4 and 3 tokens through the tail.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let batch = pool.install(|| executor.forward(&images)).unwrap();
        let classes = batch.item_len();
        for (i, image) in images.data.chunks(images.item_len()).enumerate() {
            let codes = &executor.run_image(image, &|_| false)[program.output];
            let alone: Vec<f32> = codes
                .iter()
                .map(|&v| (v as f64 * program.logit_scale) as f32)
                .collect();
            assert_eq!(
                batch.data[i * classes..(i + 1) * classes],
                alone,
                "{model}: image {i}"
            );
        }
    }
}

/// `time_steps` gives every step of the program, in order, a time, and each weighted layer
/// the MACs of its graph node (the convolutions, patch embedding and linear layers of the
/// graph, one step each).
#[test]
fn step_times_cover_every_step_with_the_products_macs() {
    use qvit_core::graph::Op;
    for (model, recipe) in [
        ("efficientvit-micro", "trio-vit"),
        ("deit-micro", "repq-vit"),
    ] {
        let m = micro(model);
        let p = plan(&m, recipe, "w8a8");
        let program = compile(&m.graph, &m.folded, &p).unwrap();
        let image = dataset(true).batch(0..1).unwrap().images;
        let times = IntExecutor::new(&program).time_steps(&image.data, 3);
        assert_eq!(times.len(), program.steps.len(), "{model}");
        for (t, step) in times.iter().zip(&program.steps) {
            assert_eq!(t.name, step.name, "{model}");
            assert!(t.seconds > 0.0, "{model}: {}", t.name);
        }
        let products: u64 = m
            .graph
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::Conv2d(_) | Op::PatchEmbed(_) | Op::Linear(_)))
            .map(|n| n.macs)
            .sum();
        assert_eq!(
            times.iter().map(|t| t.macs).sum::<u64>(),
            products,
            "{model}"
        );
    }
}
