//! Calibration speed: both passes over EfficientViT-B1 @ 224 (random weights) on 64 images,
//! and re-quantizing from the statistics (what a bit-width change in the explorer costs),
//! with and without trio-vit's output-aware range search (on the shipped micro EfficientViT).
//!
//! cargo bench -p qvit-core --bench calibration

use qvit_core::arch::ArchSpec;
use qvit_core::data::{Dataset, Normalize};
use qvit_core::graph::Graph;
use qvit_core::quant::recipe::Technique;
use qvit_core::quant::{self, CalibrationStats, QuantSettings, Recipe, calibrate};
use qvit_core::rng::Rng;
use qvit_core::weights::{FoldedWeights, Weights};

fn main() {
    divan::main();
}

fn b1() -> (Graph, FoldedWeights) {
    let graph = Graph::build(&ArchSpec::preset("efficientvit-b1").unwrap()).unwrap();
    let folded = Weights::random(&graph, 1).fold(&graph).unwrap();
    (graph, folded)
}

fn images(n: usize) -> Dataset {
    let mut rng = Rng::new(5);
    let bytes = (0..n * 3 * 224 * 224)
        .map(|_| rng.below(256) as u8)
        .collect();
    Dataset::from_bytes(
        "random",
        [3, 224, 224],
        bytes,
        vec![0; n],
        Normalize::imagenet(),
    )
    .unwrap()
}

/// Both calibration passes of EfficientViT-B1 @ 224 over 64 images.
#[divan::bench(sample_count = 3)]
fn efficientvit_b1_64_images(bencher: divan::Bencher) {
    let (graph, folded) = b1();
    let data = images(64);
    bencher.bench_local(|| calibrate(&graph, &folded, &data, 64, 32, &mut |_, _| {}).unwrap());
}

fn b1_stats() -> (Graph, FoldedWeights, CalibrationStats) {
    let (graph, folded) = b1();
    let stats = calibrate(&graph, &folded, &images(4), 4, 4, &mut |_, _| {}).unwrap();
    (graph, folded, stats)
}

/// A new quant plan for EfficientViT-B1 from saved statistics (no model run). trio-vit
/// without its output-aware search, which runs the quantized model and is measured below;
/// omse (p = 2) and trio-vit-lp (p = 2.4) search 100 clipping ranges per weight channel.
#[divan::bench(args = ["minmax", "trio-vit", "omse", "trio-vit-lp"], sample_count = 5)]
fn efficientvit_b1_plan(bencher: divan::Bencher, recipe: &str) {
    let (graph, folded, stats) = b1_stats();
    let mut recipe = Recipe::preset(recipe).unwrap();
    recipe
        .techniques
        .retain(|t| !matches!(t, Technique::OutputSearch { .. }));
    let settings = QuantSettings {
        recipe: recipe.name.clone(),
        ..QuantSettings::default()
    };
    bencher.bench_local(|| quant::build(&graph, &folded, &stats, &recipe, &settings).unwrap());
}

/// The `Lp` clipping-range search on its own: 1,024 weight channels of 1,024 normal values at
/// 8 bits, 100 candidate ranges each (100 M scored points), at OMSE's p = 2 and Trio-ViT's
/// p = 2.4.
#[divan::bench(args = [2.0, 2.4], sample_count = 5)]
fn lp_range_search_1m_weights(bencher: divan::Bencher, p: f32) {
    use qvit_core::quant::histogram::Distribution;
    use qvit_core::quant::range::{RangeMethod, uniform_per_channel};
    let mut rng = Rng::new(3);
    let channels: Vec<Distribution> = (0..1024)
        .map(|_| {
            let values: Vec<f32> = (0..1024).map(|_| 0.02 * rng.normal()).collect();
            Distribution::from_values(&values)
        })
        .collect();
    bencher.bench_local(|| uniform_per_channel(&channels, 8, true, RangeMethod::Lp(p)));
}

/// trio-vit's whole plan for the shipped micro EfficientViT, output-aware search included
/// (64 sample images), from statistics of the 1,024 shipped calibration images.
#[divan::bench(sample_count = 3)]
fn efficientvit_micro_trio_vit_plan(bencher: divan::Bencher) {
    use qvit_core::assets;
    let graph = Graph::build(&ArchSpec::preset("efficientvit-micro").unwrap()).unwrap();
    let folded = Weights::load(&assets::weights("efficientvit-micro"), &graph)
        .unwrap()
        .fold(&graph)
        .unwrap();
    let (images, labels) = assets::fashion_mnist_calibration();
    let data = Dataset::idx(&images, &labels, Normalize::fashion_mnist()).unwrap();
    let stats = calibrate(&graph, &folded, &data, 1024, 32, &mut |_, _| {}).unwrap();
    let recipe = Recipe::preset("trio-vit").unwrap();
    let settings = QuantSettings {
        recipe: recipe.name.clone(),
        ..QuantSettings::default()
    };
    bencher.bench_local(|| quant::build(&graph, &folded, &stats, &recipe, &settings).unwrap());
}

/// The digest that keys the explorer's remembered plans and accuracies: EfficientViT-B1's
/// statistics, digested once each time a model is loaded.
#[divan::bench(sample_count = 5)]
fn efficientvit_b1_statistics_digest(bencher: divan::Bencher) {
    let (_, _, stats) = b1_stats();
    bencher.bench_local(|| stats.digest());
}

/// A remembered EfficientViT-B1 plan (trio-vit's ranges, no search) read back from the cache
/// folder, what the explorer does instead of building it again on a later run.
#[divan::bench(sample_count = 5)]
fn efficientvit_b1_cached_plan_read(bencher: divan::Bencher) {
    use qvit_core::cache::Store;
    let (graph, folded, stats) = b1_stats();
    let mut recipe = Recipe::preset("trio-vit").unwrap();
    recipe
        .techniques
        .retain(|t| !matches!(t, Technique::OutputSearch { .. }));
    let settings = QuantSettings {
        recipe: recipe.name.clone(),
        ..QuantSettings::default()
    };
    let plan = quant::build(&graph, &folded, &stats, &recipe, &settings).unwrap();
    let dir = std::env::temp_dir().join(format!("qvit-bench-cache-{}", std::process::id()));
    let store = Store::new(&dir);
    store.put_plan(1, &plan).unwrap();
    bencher.bench_local(|| store.plan(1, &graph).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}
