//! Every loader fed mutated copies of a valid input — bytes flipped, cut short, numbers swapped
//! for huge, negative, zero or non-finite ones — must give a clean error or a value that the
//! next stage accepts without panicking. Bounded (a few dozen cases per loader) so that the
//! suite stays fast; `PROPTEST_CASES=5000 cargo test --release --test fuzz_loaders` runs more.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use qvit_core::accel::{AccelConfig, Workload, cost};
use qvit_core::arch::ArchSpec;
use qvit_core::data::{EvalTransform, idx};
use qvit_core::explore::DesignSpace;
use qvit_core::graph::Graph;
use qvit_core::project::Project;
use qvit_core::quant::{CalibrationStats, Recipe};
use qvit_core::weights::Weights;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap()
}

/// Numbers an adversary puts in a text file in place of a valid one.
const NASTY: [&str; 12] = [
    "0",
    "-1",
    "1e300",
    "-1e300",
    "NaN",
    "inf",
    "1e-300",
    "4294967296",
    "18446744073709551615",
    "4611686018427387904",
    "3.4e38",
    "1000000000",
];

/// One mutation of `bytes`: flip bits, cut, or (for text) swap the `n`-th number for a nasty
/// one.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Vec<(usize, u8)>),
    Cut(usize),
    Number(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..4).prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), 0..NASTY.len()).prop_map(|(n, k)| Mutation::Number(n, k)),
    ]
}

fn apply(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match m {
        Mutation::Flip(flips) => {
            for &(at, x) in flips {
                let i = at % out.len();
                out[i] ^= x;
            }
        }
        Mutation::Cut(at) => out.truncate(at % out.len()),
        Mutation::Number(n, k) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let numbers: Vec<(usize, usize)> = number_spans(&text);
            if let Some(&(a, b)) = numbers.get(n % numbers.len().max(1)) {
                out = format!("{}{}{}", &text[..a], NASTY[*k], &text[b..]).into_bytes();
            }
        }
    }
    out
}

/// Byte spans of the decimal numbers in a text.
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                i += 1;
            }
            spans.push((start, i));
        }
        i += 1;
    }
    spans
}

/// Runs `f`, turning a panic into a test failure that shows the input.
fn no_panic(what: &str, input: &[u8], f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!(
            "{what} panicked on: {}",
            String::from_utf8_lossy(&input[..input.len().min(400)])
        );
    }
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qvit-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// 48 cases per loader, or `PROPTEST_CASES`.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_specs(m in mutation()) {
        for file in ["presets/models/efficientvit-micro.ron", "presets/models/deit-micro.ron"] {
            let bytes = apply(&read(file), &m);
            no_panic("a model spec", &bytes, || {
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(spec) = ArchSpec::from_ron(&text, "m.ron")
                    && let Ok(graph) = Graph::build(&spec)
                {
                    let w = Workload::uniform(&graph, 8, 8);
                    let _ = cost(&w, &AccelConfig::preset("trio-vit-zcu102").unwrap());
                }
            });
        }
    }

    #[test]
    fn accelerators_and_spaces(m in mutation()) {
        let graph = Graph::build(&ArchSpec::resolve("efficientvit-micro").unwrap()).unwrap();
        let w = Workload::uniform(&graph, 8, 8);
        let bytes = apply(&read("presets/accelerators/trio-vit-zcu102.ron"), &m);
        no_panic("an accelerator", &bytes, || {
            if let Ok(a) = AccelConfig::from_ron(&String::from_utf8_lossy(&bytes), "a.ron")
                && let Ok(r) = cost(&w, &a)
            {
                assert!(r.fps.is_finite() && r.fps >= 0.0 && r.dsps > 0, "{r:?}");
            }
        });
        let bytes = apply(&read("presets/sweeps/trio-vit-zcu102.ron"), &m);
        no_panic("a design space", &bytes, || {
            let _ = DesignSpace::from_ron(&String::from_utf8_lossy(&bytes), "s.ron");
        });
    }

    #[test]
    fn recipes_and_projects(m in mutation()) {
        let bytes = apply(&read("presets/quant/trio-vit.ron"), &m);
        no_panic("a recipe", &bytes, || {
            let _ = Recipe::from_ron(&String::from_utf8_lossy(&bytes), "r.ron");
        });
        let bytes = apply(&read("presets/projects/efficientvit-b1-imagenet.ron"), &m);
        no_panic("a project", &bytes, || {
            let path = temp("p.ron", &bytes);
            if let Ok(p) = Project::load(&path) {
                let _ = p.spec();
                let _ = p.accel_config();
            }
        });
    }

    #[test]
    fn weights(m in mutation()) {
        let graph = Graph::build(&ArchSpec::resolve("deit-micro").unwrap()).unwrap();
        for file in ["assets/deit-micro.safetensors", "tests/fixtures/checkpoints/deit-micro.deit.pth"] {
            let bytes = apply(&read(file), &m);
            no_panic("a weights file", &bytes, || {
                let path = temp("w.bin", &bytes);
                if let Ok(w) = Weights::load(&path, &graph) {
                    w.fold(&graph).unwrap();
                }
            });
        }
    }

    #[test]
    fn idx_files(m in mutation()) {
        let raw = idx::encode(&[3, 4, 4], &[7; 48]);
        for bytes in [apply(&raw, &m), apply(&read("assets/fashion-mnist/calib-1024-labels-idx1-ubyte.gz"), &m)] {
            no_panic("an IDX file", &bytes, || {
                let _ = idx::read(&temp("x-images-idx3-ubyte", &bytes));
            });
        }
    }

    #[test]
    fn images(m in mutation()) {
        let t = EvalTransform::efficientvit(32, 0.95);
        for file in ["tests/fixtures/images/small.png", "tests/fixtures/images/grey.jpg"] {
            let bytes = apply(&read(file), &m);
            let name = Path::new(file).file_name().unwrap().to_str().unwrap().to_string();
            no_panic("an image", &bytes, || {
                if let Ok(v) = t.load(&temp(&name, &bytes)) {
                    assert!(v.len() == 3 * 32 * 32 && v.iter().all(|x| (0.0..=1.0).contains(x)));
                }
            });
        }
    }
}

/// Statistics files are larger: made once, mutated in one test.
#[test]
fn calibration_statistics() {
    let graph = Graph::build(&ArchSpec::resolve("deit-micro").unwrap()).unwrap();
    let folded = Weights::random(&graph, 2).fold(&graph).unwrap();
    let data = qvit_core::data::Dataset::from_bytes(
        "d",
        [1, 28, 28],
        (0..2 * 28 * 28).map(|i| (i % 251) as u8).collect(),
        vec![0, 1],
        qvit_core::data::Normalize::fashion_mnist(),
    )
    .unwrap();
    let stats = qvit_core::quant::calibrate(&graph, &folded, &data, 2, 2, &mut |_, _| {}).unwrap();
    let bytes = stats.to_safetensors().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&mutation(), |m| {
            let spoiled = apply(&bytes, &m);
            no_panic("a statistics file", &spoiled, || {
                if let Ok(s) = CalibrationStats::from_safetensors(&spoiled, "c") {
                    let _ = s.check_matches(&graph, &folded, "c");
                }
            });
            Ok(())
        })
        .unwrap();
}

/// Sweep CSVs, as `read_designs` and `merge` read them back.
#[test]
fn sweep_csvs() {
    use qvit_core::explore::sweep::{self, Shard};
    let space = DesignSpace::from_ron(
        r#"DesignSpace(name: "f", base: "trio-vit-zcu102", models: ["efficientvit-micro"],
            mat_pes: [8, 16], mat_lanes: [8], rmac_pes: [8], rmac_lanes: [8], copies: [1, 2],
            bits: ["w8a8"])"#,
        "f",
    )
    .unwrap();
    let good = temp("good.csv", b"");
    std::fs::remove_file(&good).unwrap();
    sweep::run(&space, &good, Shard::ALL, false, &mut |_| {}).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&mutation(), |m| {
            let spoiled = apply(&bytes, &m);
            no_panic("a sweep CSV", &spoiled, || {
                let path = temp("s.csv", &spoiled);
                let _ = sweep::read_designs(&path);
                let _ = sweep::merge(std::slice::from_ref(&path), &temp("m.csv", b""), true);
                let _ = sweep::run(&space, &path, Shard::ALL, true, &mut |_| {});
            });
            Ok(())
        })
        .unwrap();
}
