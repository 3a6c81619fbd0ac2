//! The PTQ engine on the shipped micro models: calibration statistics saved and reused,
//! plans for every recipe, the fake-quant executor, and the errors for bad input.

use qvit_core::data::{Dataset, Normalize};
use qvit_core::eval::evaluate;
use qvit_core::exec::float::{FloatExecutor, forwards_on_this_thread};
use qvit_core::quant::recipe::Technique;
use qvit_core::quant::{
    self, BitWidths, CalibrationStats, FakeQuantExecutor, LayerBits, Override, QuantSettings,
    Recipe, calibrate, diagnostics,
};
use qvit_core::weights::Weights;

mod common;

use common::{Micro, calibration_set, micro};

fn test_set(n: usize) -> Dataset {
    common::test_set().truncated(n)
}

fn stats(m: &Micro, images: usize) -> CalibrationStats {
    calibrate(
        &m.graph,
        &m.folded,
        &calibration_set(),
        images,
        32,
        &mut |_, _| {},
    )
    .unwrap()
}

fn settings(recipe: &str, bits: &str) -> QuantSettings {
    QuantSettings {
        recipe: recipe.into(),
        bits: bits.parse().unwrap(),
        overrides: Vec::new(),
        ..Default::default()
    }
}

fn plan(m: &Micro, s: &CalibrationStats, recipe: &str, bits: &str) -> quant::QuantPlan {
    let r = Recipe::preset(recipe).unwrap();
    quant::build(&m.graph, &m.folded, s, &r, &settings(recipe, bits)).unwrap()
}

#[test]
fn requantizing_from_saved_statistics_does_not_run_the_model() {
    let m = micro("efficientvit-micro");
    let fresh = stats(&m, 64);
    let dir = std::env::temp_dir().join(format!("qvit-quant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("micro.calib.safetensors");
    fresh.save(&path).unwrap();

    let before = forwards_on_this_thread();
    let loaded = CalibrationStats::load(&path).unwrap();
    loaded.check_matches(&m.graph, &m.folded, "test").unwrap();
    assert_eq!(loaded, fresh, "statistics change in a save/load round trip");
    // Every recipe and bit width builds from the loaded statistics alone (equal to the fresh
    // ones, as asserted above, so the plans are the fresh statistics' plans).
    for recipe in ["minmax", "percentile", "omse", "trio-vit"] {
        for bits in ["w8a8", "w4a4", "w6a6"] {
            plan(&m, &loaded, recipe, bits);
        }
    }
    assert_eq!(
        forwards_on_this_thread(),
        before,
        "building plans from saved statistics ran the float model"
    );
    // Different bits really give a different plan.
    assert_ne!(
        plan(&m, &loaded, "minmax", "w8a8"),
        plan(&m, &loaded, "minmax", "w4a4")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn statistics_record_channels_and_tails() {
    let m = micro("efficientvit-micro");
    let s = stats(&m, 64);
    assert_eq!(s.images, 64);
    let dw_in = s
        .points
        .iter()
        .find(|p| p.name == "backbone.stages.0.op_list.0.main.inverted_conv.act")
        .unwrap();
    assert_eq!(dw_in.channels(), 64);
    // Hardswish output: never below -3/8.
    assert!(dw_in.min >= -0.375 - 1e-6, "{}", dw_in.min);
    // 64 images × 14×14 positions per channel.
    assert_eq!(dw_in.channel_histograms[0].total(), 64 * 14 * 14);
    assert_eq!(dw_in.histogram.total(), 64 * 64 * 14 * 14);
    let b = dw_in.channel_box(3);
    assert!(b.min <= b.p1 && b.p1 <= b.p25 && b.p25 <= b.median && b.median <= b.p75);
    assert!(b.p75 <= b.p99 && b.p99 <= b.max);
}

#[test]
fn calibration_does_not_depend_on_the_thread_count_or_batch() {
    let m = micro("deit-micro");
    let data = calibration_set();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| calibrate(&m.graph, &m.folded, &data, 48, 48, &mut |_, _| {}).unwrap());
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(|| calibrate(&m.graph, &m.folded, &data, 48, 16, &mut |_, _| {}).unwrap());
    assert_eq!(one, two);
}

#[test]
fn every_recipe_says_what_it_did_where() {
    let e = micro("efficientvit-micro");
    let es = stats(&e, 64);
    let trio = plan(&e, &es, "trio-vit", "w8a8");
    let note = |name: &str| {
        trio.activations
            .iter()
            .find(|a| a.point.ends_with(name))
            .map(|a| a.note.clone())
            .unwrap()
    };
    assert!(note("stages.0.op_list.0.main.inverted_conv.act").contains("migration"));
    assert!(note("stages.0.op_list.0.main.depth_conv.act").contains("shift"));
    assert!(note("q_matmul/divisor").contains("4-bit log2"));
    let dw = trio
        .weights
        .iter()
        .find(|w| w.layer.ends_with("stages.0.op_list.0.main.depth_conv.conv"))
        .unwrap();
    assert!(dw.input_scale.is_some() && dw.note.contains("migration"));

    let d = micro("deit-micro");
    let ds = stats(&d, 32);
    let find = |p: &quant::QuantPlan, name: &str| {
        p.activations
            .iter()
            .find(|a| a.point == name)
            .unwrap()
            .clone()
    };
    let fq = plan(&d, &ds, "fq-vit", "w8a8");
    assert!(
        find(&fq, "blocks.0.attn.softmax")
            .note
            .contains("4-bit log2")
    );
    assert!(find(&fq, "blocks.0.attn_add").note.contains("power-of-two"));
    let repq = plan(&d, &ds, "repq-vit", "w8a8");
    assert!(find(&repq, "blocks.0.attn.softmax").note.contains("log√2"));
    assert!(
        find(&repq, "blocks.0.norm1")
            .note
            .contains("reparameterised")
    );
    let qkv = repq
        .weights
        .iter()
        .find(|w| w.layer == "blocks.0.attn.qkv")
        .unwrap();
    assert!(qkv.input_scale.is_some());
    let ptq4vit = plan(&d, &ds, "ptq4vit", "w6a6");
    assert!(
        find(&ptq4vit, "blocks.0.mlp.act")
            .note
            .contains("twin-uniform")
    );
    assert!(
        find(&ptq4vit, "blocks.0.attn.softmax")
            .note
            .contains("twin-uniform")
    );
}

#[test]
fn sixteen_bit_fake_quant_matches_the_float_model() {
    // At 16 bits every quantizer is nearly lossless, so a fake-quant network that applied a
    // migration, shift or reparameterisation to one side only would show here.
    for (model, recipe) in [
        ("efficientvit-micro", "trio-vit"),
        ("deit-micro", "repq-vit"),
        ("deit-micro", "ptq4vit"),
    ] {
        let m = micro(model);
        let s = stats(&m, 32);
        let mut r = Recipe::preset(recipe).unwrap();
        // Clipping ranges (percentile, L_p) would dominate 16-bit rounding; keep the full range.
        r.activations.range = quant::range::RangeMethod::MinMax;
        // The log2 tensors keep their fixed low bit widths; leave them out here.
        r.techniques.retain(|t| {
            !matches!(
                t,
                quant::recipe::Technique::LogDivisor { .. }
                    | quant::recipe::Technique::UniformAttention { .. }
                    | quant::recipe::Technique::LogSqrt2Attention
            )
        });
        let p = quant::build(&m.graph, &m.folded, &s, &r, &settings(recipe, "w16a16")).unwrap();
        let fake = FakeQuantExecutor::new(&m.graph, &m.folded, &p).unwrap();
        // Images the statistics cover, so that no value is clipped at the calibrated range.
        let images = calibration_set().batch(0..16).unwrap().images;
        let a = FloatExecutor::new(&m.graph, &m.folded)
            .unwrap()
            .forward(&images)
            .unwrap();
        let b = fake.forward(&images).unwrap();
        let signal: f64 = a.data.iter().map(|&x| (x as f64).powi(2)).sum();
        let noise: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum();
        let db = diagnostics::sqnr_db(signal, noise);
        assert!(
            db > 50.0,
            "{model} {recipe}: logits SQNR {db:.1} dB at 16 bits"
        );
    }
}

#[test]
fn fake_quant_accuracy_is_close_to_float_at_w8a8_and_deterministic() {
    let m = micro("efficientvit-micro");
    let s = stats(&m, 256);
    let p = plan(&m, &s, "trio-vit", "w8a8");
    let fake = FakeQuantExecutor::new(&m.graph, &m.folded, &p).unwrap();
    let data = test_set(1000);
    let q = evaluate(&fake, &data, 100, None, &mut |_| {}).unwrap();
    let f = evaluate(
        &FloatExecutor::new(&m.graph, &m.folded).unwrap(),
        &data,
        100,
        None,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        q.top1() > f.top1() - 3.0,
        "W8A8 {:.2} vs FP32 {:.2}",
        q.top1(),
        f.top1()
    );
    // W2A2 must be far worse: the quantizers do something.
    let p2 = plan(&m, &s, "minmax", "w2a2");
    let q2 = evaluate(
        &FakeQuantExecutor::new(&m.graph, &m.folded, &p2).unwrap(),
        &data,
        100,
        None,
        &mut |_| {},
    )
    .unwrap();
    assert!(q2.top1() < f.top1() - 20.0, "W2A2 {:.2}", q2.top1());
    // Same logits whatever the thread count.
    let images = data.batch(0..24).unwrap().images;
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| fake.forward(&images).unwrap())
    };
    assert_eq!(run(1).data, run(2).data);
    // `forward` runs the 24 images in groups (three of them); `forward_observed` runs them as
    // one batch: the same logits.
    assert_eq!(
        fake.forward(&images).unwrap(),
        fake.forward_observed(&images, &mut |_, _| {}).unwrap()
    );
}

#[test]
fn overrides_set_bits_by_glob_and_later_ones_win() {
    let m = micro("efficientvit-micro");
    let s = stats(&m, 32);
    let r = Recipe::preset("minmax").unwrap();
    let mut set = settings("minmax", "w8a8");
    set.overrides = vec![
        "stages.3.*=w4a6".parse().unwrap(),
        "stages.3.op_list.1.local_module.*=w6a4".parse().unwrap(),
    ];
    let p = quant::build(&m.graph, &m.folded, &s, &r, &set).unwrap();
    let w = |name: &str| {
        p.weights
            .iter()
            .find(|w| w.layer.ends_with(name))
            .unwrap()
            .bits
    };
    let a = |name: &str| {
        p.activations
            .iter()
            .find(|a| a.point.ends_with(name))
            .unwrap()
            .bits
    };
    assert_eq!(w("stages.2.op_list.0.main.point_conv.conv"), 8);
    assert_eq!(w("stages.3.op_list.0.main.point_conv.conv"), 4);
    assert_eq!(w("stages.3.op_list.1.local_module.main.point_conv.conv"), 6);
    // A conv's activation bits land on the tensor that stores its output (after BN / act).
    assert_eq!(a("stages.3.op_list.0.main.inverted_conv.act"), 6);
    assert_eq!(
        a("stages.3.op_list.1.local_module.main.inverted_conv.act"),
        4
    );
    assert_eq!(a("stages.2.op_list.0.main.inverted_conv.act"), 8);
}

#[test]
fn bad_input_gets_clear_errors() {
    let m = micro("efficientvit-micro");
    let s = stats(&m, 16);
    let r = Recipe::preset("minmax").unwrap();

    // An override that matches nothing names the pattern and shows real layer names.
    let mut set = settings("minmax", "w8a8");
    set.overrides = vec![Override {
        layers: "blocks.*".into(),
        bits: BitWidths::W8A8,
    }];
    let e = quant::build(&m.graph, &m.folded, &s, &r, &set)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blocks.*") && e.contains("matches no layer") && e.contains("backbone."),
        "{e}"
    );

    // Bits outside 2–16.
    for bad in ["w1a8", "w8a17", "w0a0"] {
        let e = bad.parse::<BitWidths>().unwrap_err().to_string();
        assert!(e.contains("from 2 to 16"), "{bad}: {e}");
    }
    let text = quant::recipe::PRESETS
        .iter()
        .find(|(n, _)| *n == "trio-vit")
        .unwrap()
        .1;
    let e = Recipe::from_ron(
        &text.replace("LogDivisor(bits: 4)", "LogDivisor(bits: 1)"),
        "my.ron",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("my.ron") && e.contains("from 2 to 16"), "{e}");

    // A recipe for the other family.
    let d = micro("deit-micro");
    let ds = stats(&d, 8);
    let trio = Recipe::preset("trio-vit").unwrap();
    let e = quant::build(
        &d.graph,
        &d.folded,
        &ds,
        &trio,
        &settings("trio-vit", "w8a8"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("EfficientViT") && e.contains("deit-micro"),
        "{e}"
    );

    // An empty calibration set.
    let empty = Dataset::from_bytes(
        "empty.idx",
        [1, 28, 28],
        Vec::new(),
        Vec::new(),
        Normalize::fashion_mnist(),
    )
    .unwrap();
    let e = calibrate(&m.graph, &m.folded, &empty, 64, 32, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.idx") && e.contains("empty"), "{e}");

    // Statistics of another model, or taken with other weights.
    let e = ds
        .check_matches(&m.graph, &m.folded, "deit.calib")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("deit.calib") && e.contains("deit-micro") && e.contains("qvit calibrate"),
        "{e}"
    );
    let other = Weights::random(&m.graph, 3).fold(&m.graph).unwrap();
    let e = s
        .check_matches(&m.graph, &other, "micro.calib")
        .unwrap_err()
        .to_string();
    assert!(e.contains("different weights"), "{e}");

    // A cancelled calibration returns no statistics, and says so.
    let m = micro("efficientvit-micro");
    let e = quant::calibrate_until(
        &m.graph,
        &m.folded,
        &calibration_set(),
        64,
        32,
        &std::sync::atomic::AtomicBool::new(true),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("calibration") && e.contains("cancelled"), "{e}");

    // A corrupt statistics file.
    let e = CalibrationStats::from_safetensors(b"not a file", "broken.calib")
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.calib"), "{e}");

    // An output-aware search on no images; statistics without a sample (as older qvit wrote
    // them) for a recipe that searches, while other recipes still build from them.
    let e = Recipe::from_ron(
        &text.replace("OutputSearch(images: 64)", "OutputSearch(images: 0)"),
        "my.ron",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("my.ron") && e.contains("OutputSearch"), "{e}");
    let mut old = s.clone();
    old.sample = None;
    let old =
        CalibrationStats::from_safetensors(&old.to_safetensors().unwrap(), "old.calib").unwrap();
    assert!(old.sample.is_none());
    let e = quant::build(
        &m.graph,
        &m.folded,
        &old,
        &trio,
        &settings("trio-vit", "w8a8"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("trio-vit") && e.contains("sample") && e.contains("qvit calibrate"),
        "{e}"
    );
    quant::build(&m.graph, &m.folded, &old, &r, &settings("minmax", "w8a8")).unwrap();
    // A cancelled search returns no plan.
    let e = quant::build_reporting(
        &m.graph,
        &m.folded,
        &s,
        &trio,
        &settings("trio-vit", "w8a8"),
        &std::sync::atomic::AtomicBool::new(true),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("search") && e.contains("cancelled"), "{e}");
}

#[test]
fn the_calibration_sample_is_the_first_images_with_their_float_logits() {
    let m = micro("efficientvit-micro");
    let s = stats(&m, 48);
    let sample = s.sample.as_ref().unwrap();
    let first = calibration_set().batch(0..48).unwrap().images;
    assert_eq!(sample.images, first);
    let float = FloatExecutor::new(&m.graph, &m.folded).unwrap();
    assert_eq!(sample.logits, float.forward(&first).unwrap());
    // Never more than 128 images.
    assert_eq!(stats(&m, 160).sample.unwrap().images.batch(), 128);
}

#[test]
fn output_search_lowers_the_sample_error_step_by_step_and_reports_what_it_did() {
    use quant::output_search::{self, mean_squared_error};
    let m = micro("efficientvit-micro");
    let s = stats(&m, 64);
    let sample = s.sample.as_ref().unwrap();
    let before = plan(&m, &s, "percentile", "w8a8");
    let search = |threads: usize| {
        let mut p = before.clone();
        let (initial, chosen) = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                output_search::search(
                    &m.graph,
                    &m.folded,
                    &mut p,
                    sample,
                    64,
                    &std::sync::atomic::AtomicBool::new(false),
                    &mut |_, _| {},
                )
            })
            .unwrap();
        (p, initial, chosen)
    };
    let (after, initial, chosen) = search(2);
    let sample_error = |p: &quant::QuantPlan| {
        let fake = FakeQuantExecutor::new(&m.graph, &m.folded, p).unwrap();
        mean_squared_error(
            &fake.forward(&sample.images).unwrap().data,
            &sample.logits.data,
        )
    };
    // The errors the search reports are the fake-quant executor's, exactly.
    assert_eq!(initial, sample_error(&before));
    let last = chosen.last().unwrap().error;
    assert_eq!(last, sample_error(&after));
    // Each choice keeps or lowers the error; the whole search cuts it by more than a third
    // (measured: 0.0182 → 0.0092).
    let mut previous = initial;
    for c in &chosen {
        assert!(c.error <= previous, "{c:?} after {previous}");
        previous = c.error;
    }
    let searched = chosen.iter().filter(|c| c.searched).count();
    println!(
        "percentile W8A8 sample error {initial:.5} → {last:.5}; {searched} of {} quantizers searched",
        chosen.len()
    );
    assert!(last < 0.67 * initial, "{initial} → {last}");
    // The figures `output_search.rs` quotes: 9 of 48 searched, 0.0182 → 0.0092. Fixed images
    // and any thread count give the same search, but the f32 kernels differ between CPUs
    // (AVX-512, AVX2), which may tip a borderline quantizer: hence the small margins.
    assert_eq!(chosen.len(), 48);
    assert!((8..=10).contains(&searched), "{searched} searched");
    assert!(
        (initial - 0.0182).abs() < 2e-4 && (last - 0.0092).abs() < 2e-4,
        "{initial} → {last}"
    );
    // Only the steps it reports changed, by the factors it reports, and the notes say so.
    let step = |p: &quant::QuantPlan, i: usize| match &p.activations[i].quantizer {
        quant::Quantizer::Uniform(u) => u.scale.clone(),
        q => panic!("{q:?}"),
    };
    let mut moved = 0;
    for c in &chosen {
        let want: Vec<f32> = step(&before, c.point).iter().map(|s| s * c.alpha).collect();
        assert_eq!(step(&after, c.point), want);
        assert_eq!(
            after.activations[c.point].note.contains("output-aware"),
            c.alpha != 1.0
        );
        assert!(c.searched || c.alpha == 1.0);
        moved += usize::from(c.alpha != 1.0);
    }
    assert!(moved > 0);
    for (i, (a, b)) in before
        .activations
        .iter()
        .zip(&after.activations)
        .enumerate()
    {
        if !chosen.iter().any(|c| c.point == i) {
            assert_eq!(a, b, "{} is not searched", a.point);
        }
    }
    assert_eq!(before.weights, after.weights);
    // Whatever the thread count.
    let (one_thread, ..) = search(1);
    assert_eq!(one_thread, after);
}

#[test]
fn plans_are_plain_data_and_boxes_show_migration() {
    let m = micro("efficientvit-micro");
    let s = stats(&m, 64);
    let p = plan(&m, &s, "trio-vit", "w6a6");
    let text = qvit_core::ron_io::to_string(&p).unwrap();
    let back: quant::QuantPlan = qvit_core::ron_io::parse(&text, "plan.ron").unwrap();
    assert_eq!(back, p);

    // Channel-wise migration evens out the channels' ranges as the quantizer sees them.
    let point = "backbone.stages.3.op_list.1.local_module.main.inverted_conv.act";
    let (before, after) = diagnostics::channel_boxes(&s, &p, point).unwrap();
    assert_eq!(before.len(), 384);
    let spread = |b: &[qvit_core::quant::stats::BoxStats]| {
        let mut r: Vec<f32> = b.iter().map(|x| x.max - x.min).collect();
        r.sort_by(f32::total_cmp);
        r[r.len() - 1] / r[r.len() / 2]
    };
    assert!(
        spread(&after) < 0.5 * spread(&before),
        "{} → {}",
        spread(&before),
        spread(&after)
    );
    // A point without migration or shift has the same boxes before and after.
    let (b, a) =
        diagnostics::channel_boxes(&s, &p, "backbone.stages.3.op_list.1.local_module.add").unwrap();
    assert_eq!(a, b);
}

#[test]
fn cached_statistics_are_computed_once_and_recomputed_when_corrupt() {
    use qvit_core::pipeline::{Model, cached_statistics};
    use qvit_core::project::{CalibrationSet, Project};
    let dir = std::env::temp_dir().join(format!("qvit-calib-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = Model::load(&Project::for_model("efficientvit-micro")).unwrap();
    let never = std::sync::atomic::AtomicBool::new(false);
    let set = CalibrationSet {
        images: Some(64),
        ..CalibrationSet::fashion_mnist()
    };
    let set = Some(&set);
    let mut calls = 0;
    let (first, file) =
        cached_statistics(&model, &dir, set, &never, &mut |_, _| calls += 1).unwrap();
    assert_eq!(file.parent(), Some(dir.as_path()));
    assert!(file.is_file(), "the statistics are kept in the file named");
    assert!(calls > 0, "the first call calibrates");
    let mut calls = 0;
    let again = cached_statistics(&model, &dir, set, &never, &mut |_, _| calls += 1)
        .unwrap()
        .0;
    assert_eq!(calls, 0, "the second call reads the file");
    assert_eq!(again.points.len(), first.points.len());
    assert_eq!(again.points[3].channel_max, first.points[3].channel_max);
    // A corrupt cache file is replaced by a fresh calibration.
    std::fs::write(&file, b"garbage").unwrap();
    let mut calls = 0;
    let (_, replaced) =
        cached_statistics(&model, &dir, set, &never, &mut |_, _| calls += 1).unwrap();
    assert_eq!(replaced, file);
    assert!(calls > 0);
    assert!(CalibrationStats::load(&file).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

/// The widths the cost model prices before calibrating ([`LayerBits::for_recipe`]) are the
/// widths every recipe's plan quantizes to, overrides included: the settings' widths, and the
/// ones the recipe fixes (image, attention products, log2 divisors, log2 attention); where a
/// node stores two points (a linear-attention product and its divisor), the wider.
#[test]
fn the_cost_models_widths_are_the_plans() {
    let all = [
        "minmax",
        "percentile",
        "omse",
        "ptq4vit",
        "fq-vit",
        "repq-vit",
        "trio-vit",
        "trio-vit-lp",
    ];
    for (model, layer) in [
        ("efficientvit-micro", "stages.1.op_list.0.*"),
        ("deit-micro", "blocks.1.*"),
    ] {
        let m = micro(model);
        let s = stats(&m, 16);
        for name in all {
            let mut recipe = Recipe::preset(name).unwrap();
            if recipe.check_family(m.graph.family, model).is_err() {
                continue;
            }
            // The range search moves ranges, not widths.
            recipe
                .techniques
                .retain(|t| !matches!(t, Technique::OutputSearch { .. }));
            for bits in ["w4a4", "w6a8"] {
                let mut settings = settings(name, bits);
                settings.overrides.push(Override {
                    layers: layer.into(),
                    bits: "w3a6".parse().unwrap(),
                });
                let plan = quant::build(&m.graph, &m.folded, &s, &recipe, &settings).unwrap();
                let priced = LayerBits::for_recipe(&m.graph, &settings, &recipe).unwrap();
                let mut stored = std::collections::BTreeMap::new();
                for a in &plan.activations {
                    let widest = stored.entry(a.node).or_insert(0);
                    *widest = a.bits.max(*widest);
                }
                for (node, bits) in stored {
                    let name = &m.graph.node(node).name;
                    assert_eq!(priced.activations[node], bits, "{model} {name}: {bits:?}");
                }
                for w in &plan.weights {
                    assert_eq!(priced.weights[w.node], w.bits, "{model} {}", w.layer);
                }
            }
        }
    }
}
