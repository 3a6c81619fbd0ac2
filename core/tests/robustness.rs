//! Reproducers from fuzzing qvit as an adversarial user would: each input once made qvit panic,
//! abort or answer wrongly without a word, and each is now a clear error naming what is wrong.

use qvit_core::accel::AccelConfig;
use qvit_core::arch::ArchSpec;
use qvit_core::data::{Dataset, Normalize};
use qvit_core::eval::evaluate;
use qvit_core::exec::float::FloatExecutor;
use qvit_core::explore::DesignSpace;
use qvit_core::graph::Graph;
use qvit_core::quant::{CalibrationStats, calibrate};
use qvit_core::weights::Weights;

fn micro() -> (Graph, Weights) {
    let g = Graph::build(&ArchSpec::resolve("deit-micro").unwrap()).unwrap();
    let w = Weights::random(&g, 5);
    (g, w)
}

#[test]
fn a_label_beyond_the_models_classes_is_an_error_not_a_panic() {
    let (g, w) = micro();
    let folded = w.fold(&g).unwrap();
    let exec = FloatExecutor::new(&g, &folded).unwrap();
    let data = Dataset::from_bytes(
        "bad-labels",
        [1, 28, 28],
        vec![0; 2 * 28 * 28],
        vec![3, 200],
        Normalize::fashion_mnist(),
    )
    .unwrap();
    let e = evaluate(&exec, &data, 8, None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad-labels") && e.contains("image 1 has label 200") && e.contains("10 classes"),
        "{e}"
    );
}

#[test]
fn absurd_model_sizes_are_refused_before_anything_is_built() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../presets/models/efficientvit-micro.ron"
    ))
    .unwrap();
    let huge_depth = regex_like_replace(&text, "depth_list: [", "depth_list: [1000000000, ");
    let started = std::time::Instant::now();
    let e = ArchSpec::from_ron(&huge_depth, "deep.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("deep.ron") && e.contains("depth_list"), "{e}");
    assert!(started.elapsed().as_secs() < 1);

    let spec = ArchSpec::resolve("efficientvit-micro").unwrap();
    let e = spec
        .with_resolution(4_611_686_018_427_387_904)
        .unwrap_err()
        .to_string();
    assert!(e.contains("resolution"), "{e}");

    let deit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../presets/models/deit-micro.ron"
    ))
    .unwrap();
    for (from, to, field) in [
        ("mlp_ratio: 4.0", "mlp_ratio: 1e300", "mlp_ratio"),
        ("depth: 6", "depth: 1000000000", "depth"),
        ("embed_dim: 64", "embed_dim: 4294967296", "embed_dim"),
    ] {
        let e = ArchSpec::from_ron(&deit.replace(from, to), "d.ron")
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{to}: {e}");
    }
}

/// The first `from` in `text` followed by `to` in its place (the presets have one of each).
fn regex_like_replace(text: &str, from: &str, to: &str) -> String {
    let i = text.find(from).unwrap();
    let end = text[i..].find(']').unwrap() + i;
    let rest: Vec<&str> = text[i + from.len()..end].split(',').collect();
    format!(
        "{}{}{}{}",
        &text[..i],
        to,
        rest[1..].join(","),
        &text[end..]
    )
}

#[test]
fn accelerators_beyond_any_fpga_are_refused() {
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../presets/accelerators/trio-vit-zcu102.ron"
    ))
    .unwrap();
    for (from, to, field) in [
        ("copies: 8", "copies: 4611686018427387904", "copies"),
        (
            "mat: (pes: 16, lanes: 8)",
            "mat: (pes: 4294967296, lanes: 4294967296)",
            "mat.pes",
        ),
        (
            "bandwidth_gbps: 19.2",
            "bandwidth_gbps: 1e-300",
            "bandwidth_gbps",
        ),
        ("clock_mhz: 200.0", "clock_mhz: inf", "clock_mhz"),
        (
            "weight_buffer_kib: 1024",
            "weight_buffer_kib: 18446744073709551615",
            "weight_buffer",
        ),
    ] {
        assert!(base.contains(from), "{from}");
        let e = match AccelConfig::from_ron(&base.replace(from, to), "a.ron") {
            Ok(_) => panic!("{to} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("a.ron") && e.contains(field), "{to}: {e}");
    }
    let space = r#"DesignSpace(name: "s", models: ["efficientvit-micro"], base: "trio-vit-zcu102",
        mat_pes: [8], mat_lanes: [8], rmac_pes: [8], rmac_lanes: [8],
        copies: [72057594037927936], bits: ["w8a8"])"#;
    let e = DesignSpace::from_ron(space, "s.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.ron") && e.contains("copies"), "{e}");
}

#[test]
fn impossible_statistics_are_refused_when_loaded() {
    let (g, w) = micro();
    let folded = w.fold(&g).unwrap();
    let data = Dataset::idx(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/fashion-mnist/calib-1024-images-idx3-ubyte.gz"
        )),
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/fashion-mnist/calib-1024-labels-idx1-ubyte.gz"
        )),
        Normalize::fashion_mnist(),
    )
    .unwrap();
    let stats = calibrate(&g, &folded, &data, 4, 4, &mut |_, _| {}).unwrap();
    let round_trip = |s: &CalibrationStats| {
        CalibrationStats::from_safetensors(&s.to_safetensors().unwrap(), "c.safetensors")
    };
    round_trip(&stats).unwrap();
    let name = stats.points[2].name.clone();
    type Spoil = Box<dyn Fn(&mut CalibrationStats)>;
    let cases: Vec<(Spoil, &str)> = vec![
        (
            Box::new(|s| {
                s.points[2].min = 5.0;
                s.points[2].max = -5.0;
            }),
            "range [5, -5]",
        ),
        (Box::new(|s| s.points[2].min = 2f32.powi(31)), "range"),
        // JSON has no NaN: it is written as null and refused by the parser.
        (Box::new(|s| s.points[2].max = f32::NAN), "expected f32"),
        (
            Box::new(|s| s.points[2].histogram.counts.iter_mut().for_each(|c| *c = 0)),
            "histogram is empty",
        ),
        (
            Box::new(|s| s.points[2].channel_max[0] = s.points[2].max + 1.0),
            "channel 0",
        ),
        (
            Box::new(|s| s.sample.as_mut().unwrap().images.data[7] = f32::NAN),
            "sample",
        ),
    ];
    for (spoil, needle) in cases {
        let mut bad = stats.clone();
        spoil(&mut bad);
        let e = round_trip(&bad).unwrap_err().to_string();
        assert!(
            e.contains("c.safetensors") && e.contains(needle),
            "{needle}: {e}"
        );
        if !["sample", "expected f32"].contains(&needle) {
            assert!(e.contains(&name), "{e}");
        }
    }
}

#[test]
fn weights_that_make_the_model_non_finite_stop_calibration() {
    // Finite weights whose activations overflow: calibration names the first point that does.
    let (g, _) = micro();
    let mut w = Weights::random(&g, 5);
    let big = Weights::random(&g, 5)
        .names()
        .find(|n| n.ends_with("patch_embed.proj.weight"))
        .unwrap()
        .to_string();
    let scaled = {
        let t = w.get(&big).unwrap().clone();
        qvit_core::tensor::Tensor::new(t.shape.clone(), t.data.iter().map(|v| v * 3e38).collect())
    };
    w.replace(&big, scaled).unwrap();
    let folded = w.fold(&g).unwrap();
    let data = Dataset::from_bytes(
        "ones",
        [1, 28, 28],
        vec![255; 2 * 28 * 28],
        vec![0, 1],
        Normalize::fashion_mnist(),
    )
    .unwrap();
    let e = calibrate(&g, &folded, &data, 2, 2, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("activations reach"), "{e}");
}

#[test]
fn normalisation_must_be_a_real_one() {
    for (mean, std, field) in [
        (f32::NAN, 0.3, "normalize.mean"),
        (0.3, 1e-45, "normalize.std"),
        (0.3, f32::INFINITY, "normalize.std"),
    ] {
        let e = Dataset::from_bytes(
            "n",
            [1, 2, 2],
            vec![0; 4],
            vec![0],
            Normalize {
                mean: vec![mean],
                std: vec![std],
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(field), "{e}");
    }
}
