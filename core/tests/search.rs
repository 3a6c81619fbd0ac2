//! Choosing bit widths: spliced plans equal the plans they stand for, and sensitivity scans
//! measure what a direct fake-quant run measures, the same for any thread count.

mod common;

use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use common::{Micro, micro};
use qvit_core::data::Dataset;
use qvit_core::quant::{
    self, BitWidths, CalibrationStats, FakeQuantExecutor, Override, QuantSettings, Recipe,
};
use qvit_core::search::Splicer;
use qvit_core::search::metrics::mean_kl;
use qvit_core::search::sensitivity::{self, SensitivityOptions};

fn model(name: &str) -> &'static (Micro, CalibrationStats) {
    static EFFICIENTVIT: OnceLock<(Micro, CalibrationStats)> = OnceLock::new();
    static DEIT: OnceLock<(Micro, CalibrationStats)> = OnceLock::new();
    let cell = match name {
        "efficientvit-micro" => &EFFICIENTVIT,
        "deit-micro" => &DEIT,
        other => panic!("no statistics for {other}"),
    };
    cell.get_or_init(|| {
        let m = micro(name);
        let stats = quant::calibrate(
            &m.graph,
            &m.folded,
            &common::calibration_set(),
            256,
            64,
            &mut |_, _| {},
        )
        .unwrap();
        (m, stats)
    })
}

fn settings(recipe: &str, bits: &str) -> QuantSettings {
    QuantSettings {
        recipe: recipe.into(),
        bits: bits.parse().unwrap(),
        ..Default::default()
    }
}

fn splicer<'m>(m: &'m Micro, stats: &'m CalibrationStats, recipe: &Recipe) -> Splicer<'m> {
    let s = settings(&recipe.name, "w8a8");
    let base = quant::build(&m.graph, &m.folded, stats, recipe, &s).unwrap();
    Splicer::new(&m.graph, &m.folded, stats, recipe, &s, base).unwrap()
}

fn heldout() -> Dataset {
    let (images, labels) = qvit_core::assets::fashion_mnist_heldout();
    Dataset::idx(
        &images,
        &labels,
        qvit_core::data::Normalize::fashion_mnist(),
    )
    .unwrap()
}

#[test]
fn the_heldout_images_are_training_images_outside_the_calibration_set() {
    let heldout = heldout();
    assert_eq!(heldout.len(), 2000);
    let mut per_class = [0usize; 10];
    for &l in &heldout.labels {
        per_class[l as usize] += 1;
    }
    assert_eq!(per_class, [200; 10]);
    let item = |d: &Dataset, i: usize| d.batch(i..i + 1).unwrap().images.data;
    let calibration = common::calibration_set();
    let test = common::test_set();
    let seen: std::collections::HashSet<Vec<u32>> = (0..calibration.len())
        .map(|i| item(&calibration, i).iter().map(|x| x.to_bits()).collect())
        .chain((0..test.len()).map(|i| item(&test, i).iter().map(|x| x.to_bits()).collect()))
        .collect();
    for i in 0..heldout.len() {
        let bits: Vec<u32> = item(&heldout, i).iter().map(|x| x.to_bits()).collect();
        assert!(
            !seen.contains(&bits),
            "held-out image {i} is a calibration or test image"
        );
    }
}

/// `recipe` without its output-aware search.
fn searchless(recipe: &str) -> Recipe {
    let mut r = Recipe::preset(recipe).unwrap();
    r.techniques
        .retain(|t| !matches!(t, quant::recipe::Technique::OutputSearch { .. }));
    r
}

#[test]
fn a_splice_without_a_search_is_the_plan_built_with_the_override() {
    // Every technique that reaches from a point into the layers reading it: Trio-ViT's
    // migration and shift, RepQ-ViT's reparameterisation, FQ-ViT's power-of-two factors.
    for (name, recipe) in [
        ("efficientvit-micro", "percentile"),
        ("efficientvit-micro", "trio-vit"),
        ("deit-micro", "repq-vit"),
        ("deit-micro", "fq-vit"),
    ] {
        let (m, stats) = model(name);
        let recipe = searchless(recipe);
        let s = splicer(m, stats, &recipe);
        let layers = sensitivity::layers(&m.graph, &m.folded);
        for (layer, bits) in [(3, "w4a8"), (3, "w8a4"), (1, "w2a6"), (6, "w3a4")] {
            let o: Override = format!("{}={bits}", layers[layer]).parse().unwrap();
            let mut direct = settings(&recipe.name, "w8a8");
            direct.overrides.push(o.clone());
            let built = quant::build(&m.graph, &m.folded, stats, &recipe, &direct).unwrap();
            assert_eq!(
                s.with(&[o]).unwrap(),
                built,
                "{name} {} {}={bits}",
                recipe.name,
                layers[layer]
            );
        }
    }
}

#[test]
fn a_splice_keeps_the_searched_ranges_of_every_layer_it_leaves_alone() {
    let (m, stats) = model("efficientvit-micro");
    let mut recipe = Recipe::preset("trio-vit").unwrap();
    for t in &mut recipe.techniques {
        if let quant::recipe::Technique::OutputSearch { images } = t {
            *images = 8;
        }
    }
    let s = splicer(m, stats, &recipe);
    let layer = "backbone.stages.1.op_list.0.main.point_conv.conv";
    let plan = s.with(&[format!("{layer}=w4a6").parse().unwrap()]).unwrap();
    let node = m
        .graph
        .nodes()
        .iter()
        .position(|n| n.name == layer)
        .unwrap();
    let mut changed_weights = Vec::new();
    for (a, b) in s.base().weights.iter().zip(&plan.weights) {
        if a != b {
            changed_weights.push(b.layer.clone());
            assert_eq!(b.bits, 4);
        }
    }
    assert_eq!(changed_weights, [layer]);
    let changed_points: Vec<&str> = s
        .base()
        .activations
        .iter()
        .zip(&plan.activations)
        .filter(|(a, b)| a != b)
        .map(|(_, b)| {
            assert_eq!(b.bits, 6, "{}", b.point);
            assert!(b.node >= node, "{} is before the layer", b.point);
            b.point.as_str()
        })
        .collect();
    assert_eq!(changed_points.len(), 1, "{changed_points:?}");
    // The searched notes survive elsewhere.
    assert!(
        plan.activations
            .iter()
            .any(|a| a.note.contains("output-aware search")),
        "the base plan's searched ranges are kept"
    );
}

fn options(candidates: &[&str], heldout_images: usize) -> SensitivityOptions {
    SensitivityOptions {
        candidates: candidates.iter().map(|b| b.parse().unwrap()).collect(),
        sample_images: 32,
        heldout_images,
        ..Default::default()
    }
}

#[test]
fn the_base_width_as_a_candidate_changes_nothing_and_rows_match_a_direct_run() {
    let (m, stats) = model("deit-micro");
    let recipe = Recipe::preset("repq-vit").unwrap();
    let s = splicer(m, stats, &recipe);
    let data = heldout();
    let never = AtomicBool::new(false);
    let report = sensitivity::scan(
        &s,
        Some(&data),
        &options(&["w8a8", "w3a8"], 200),
        &never,
        &|_, _| {},
    )
    .unwrap();
    let layers = sensitivity::layers(&m.graph, &m.folded);
    assert_eq!(report.rows.len(), 2 * layers.len());
    for row in &report.rows {
        if row.bits == BitWidths::W8A8 {
            assert_eq!(row.kl_increase, 0.0, "{}", row.layer);
            assert_eq!(row.top1_drop, Some(0.0), "{}", row.layer);
        }
    }
    // Each row is what running its plan from the first layer gives.
    let sample = stats.sample.as_ref().unwrap();
    let images = qvit_core::tensor::Tensor::new(
        [vec![32], sample.images.shape[1..].to_vec()].concat(),
        sample.images.data[..32 * sample.images.item_len()].to_vec(),
    );
    let float = qvit_core::tensor::Tensor::new(
        vec![32, sample.logits.shape[1]],
        sample.logits.data[..32 * sample.logits.item_len()].to_vec(),
    );
    for row in report
        .rows
        .iter()
        .filter(|r| r.bits.weights == 3)
        .step_by(5)
    {
        let plan = s
            .with(&[Override {
                layers: row.layer.clone(),
                bits: row.bits,
            }])
            .unwrap();
        let exec = FakeQuantExecutor::new(&m.graph, &m.folded, &plan).unwrap();
        assert_eq!(mean_kl(&float, &exec.forward(&images).unwrap()), row.kl);
        let acc = qvit_core::eval::evaluate(&exec, &data, 64, Some(200), &mut |_| {}).unwrap();
        assert_eq!(Some(acc.top1()), row.top1, "{}", row.layer);
    }
    // Three bits of weights hurt somewhere.
    assert!(report.rows.iter().any(|r| r.kl_increase > 0.01));
}

#[test]
fn sensitivity_does_not_depend_on_the_thread_count() {
    let (m, stats) = model("efficientvit-micro");
    let recipe = Recipe::preset("percentile").unwrap();
    let s = splicer(m, stats, &recipe);
    let data = heldout();
    let never = AtomicBool::new(false);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                sensitivity::scan(
                    &s,
                    Some(&data),
                    &options(&["w2a8"], 100),
                    &never,
                    &|_, _| {},
                )
            })
            .unwrap()
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn a_scan_without_a_sample_or_candidates_says_what_is_missing() {
    let (m, stats) = model("deit-micro");
    let recipe = Recipe::preset("minmax").unwrap();
    let s = splicer(m, stats, &recipe);
    let never = AtomicBool::new(false);
    let err = sensitivity::scan(&s, None, &options(&[], 0), &never, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("candidates"), "{err}");
    let mut no_sample = stats.clone();
    no_sample.sample = None;
    let s = splicer(m, &no_sample, &recipe);
    let err = sensitivity::scan(&s, None, &options(&["w4a8"], 0), &never, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("calibrate") && err.contains("sample"), "{err}");
}
