//! Sweeps: resuming after an interruption, sharding and merging, and bad design spaces.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use qvit_core::explore::DesignSpace;
use qvit_core::explore::accuracy::{AccuracyProgress, Step};
use qvit_core::explore::sweep::{self, Progress, Shard};

const SPACE: &str = r#"DesignSpace(
    name: "test",
    base: "trio-vit-zcu102",
    models: ["efficientvit-micro", "efficientvit-b1"],
    resolutions: [],
    mat_pes: [8, 16],
    mat_lanes: [4, 8],
    rmac_pes: [8, 16],
    rmac_lanes: [8],
    copies: [1, 8, 32],
    bits: ["w8a8", "w4a4"],
)"#;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qvit-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Designs on the Pareto front of [`SPACE`] (the cost model is exact f64 arithmetic).
const FRONT: u64 = 4;

fn space() -> DesignSpace {
    DesignSpace::from_ron(SPACE, "test space").unwrap()
}

fn full_run(path: &PathBuf) -> Vec<u8> {
    sweep::run(&space(), path, Shard::ALL, false, &mut |_| {}).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn an_interrupted_sweep_resumes_to_the_same_file() {
    let d = dir("resume");
    let whole = full_run(&d.join("whole.csv"));
    assert_eq!(whole.iter().filter(|&&b| b == b'\n').count(), 1 + 96);
    // Interrupted halfway through a row: the partial line is dropped and the run continues.
    let cut = d.join("cut.csv");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    assert!(
        !whole[..whole.len() / 2].ends_with(b"\n"),
        "cut inside a row"
    );
    let outcome = sweep::run(&space(), &cut, Shard::ALL, true, &mut |_| {}).unwrap();
    assert!(outcome.resumed > 0 && outcome.evaluated > 0);
    assert_eq!(std::fs::read(&cut).unwrap(), whole);
    // Resuming a finished sweep changes nothing.
    let again = sweep::run(&space(), &cut, Shard::ALL, true, &mut |_| {}).unwrap();
    assert_eq!(again.evaluated, 0);
    assert_eq!(std::fs::read(&cut).unwrap(), whole);
}

#[test]
fn resuming_checks_the_kept_rows_and_redoes_from_the_first_bad_one() {
    let d = dir("bad-rows");
    let whole = full_run(&d.join("whole.csv"));
    let text = String::from_utf8(whole.clone()).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let path = d.join("damaged.csv");
    for (what, damaged, first_bad) in [
        // Row 5 deleted from the middle: row 5 now holds point 5 where point 4 belongs.
        ("deleted", [&lines[..5], &lines[6..40]].concat().concat(), 5),
        // A number edited in a row that is recomputed (row 1, the first).
        ("edited", lines[..30].concat().replacen(",ok", "0,ok", 1), 1),
        // A field cut off.
        (
            "short",
            [
                lines[..3].concat(),
                "2,efficientvit-micro\n".into(),
                lines[4..20].concat(),
            ]
            .concat(),
            3,
        ),
    ] {
        std::fs::write(&path, &damaged).unwrap();
        let outcome = sweep::run(&space(), &path, Shard::ALL, true, &mut |_| {}).unwrap();
        assert_eq!(outcome.resumed, first_bad - 1, "{what}");
        let why = outcome.repaired.unwrap();
        assert!(
            why.starts_with(&format!("row {first_bad} ")),
            "{what}: {why}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), whole, "{what}");
    }
    // Rows that are all right are kept as they are.
    std::fs::write(&path, lines[..50].concat()).unwrap();
    let outcome = sweep::run(&space(), &path, Shard::ALL, true, &mut |_| {}).unwrap();
    assert_eq!((outcome.resumed, outcome.repaired), (49, None));
}

#[test]
fn a_sweep_killed_before_its_header_was_whole_starts_afresh() {
    let d = dir("killed-early");
    let whole = full_run(&d.join("whole.csv"));
    let header_end = whole.iter().position(|&b| b == b'\n').unwrap() + 1;
    for (name, cut, resume) in [
        ("empty-fresh.csv", 0, false),
        ("empty-resume.csv", 0, true),
        ("half-header.csv", header_end / 2, true),
        ("header-only.csv", header_end, true),
    ] {
        let path = d.join(name);
        std::fs::write(&path, &whole[..cut]).unwrap();
        let outcome = sweep::run(&space(), &path, Shard::ALL, resume, &mut |_| {}).unwrap();
        assert_eq!((outcome.resumed, outcome.evaluated), (0, 96), "{name}");
        assert_eq!(std::fs::read(&path).unwrap(), whole, "{name}");
    }
}

#[test]
fn an_existing_file_is_never_overwritten_without_resume() {
    let d = dir("exists");
    let path = d.join("s.csv");
    std::fs::write(&path, "precious").unwrap();
    let err = sweep::run(&space(), &path, Shard::ALL, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    let err = sweep::run(&space(), &path, Shard::ALL, true, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a qvit sweep CSV"), "{err}");
}

#[test]
fn merged_shards_equal_the_unsharded_sweep() {
    let d = dir("shards");
    let whole = full_run(&d.join("whole.csv"));
    let shards: Vec<PathBuf> = (0..3).map(|i| d.join(format!("shard{i}.csv"))).collect();
    for (i, path) in shards.iter().enumerate() {
        let shard = Shard::parse(&format!("{i}/3")).unwrap();
        sweep::run(&space(), path, shard, false, &mut |_| {}).unwrap();
    }
    let merged = d.join("merged.csv");
    assert_eq!(sweep::merge(&shards, &merged, false).unwrap(), 96);
    assert_eq!(std::fs::read(&merged).unwrap(), whole);
    let err = sweep::merge(
        &[shards[0].clone(), shards[0].clone()],
        &d.join("twice.csv"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("shard0.csv: field `index`: point 0 is also in") && err.contains("run twice"),
        "{err}"
    );
    // Shard 1 of 3 left out: its points 1, 4, 7, … are named, and nothing is written.
    let two = [shards[0].clone(), shards[2].clone()];
    let partial = d.join("partial.csv");
    let err = sweep::merge(&two, &partial, false).unwrap_err().to_string();
    assert!(
        err.contains("points 1, 4, 7") && err.contains("(32 in all)"),
        "{err}"
    );
    assert!(!partial.exists());
    assert_eq!(sweep::merge(&two, &partial, true).unwrap(), 64);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let d = dir("threads");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    one.install(|| sweep::run(&space(), &d.join("one.csv"), Shard::ALL, false, &mut |_| {}))
        .unwrap();
    let whole = full_run(&d.join("many.csv"));
    assert_eq!(std::fs::read(d.join("one.csv")).unwrap(), whole);
}

#[test]
fn infeasible_designs_are_rows_that_say_why_and_the_front_skips_them() {
    let d = dir("front");
    let path = d.join("s.csv");
    full_run(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    // 32 copies of 16×8 + 16×8 need 4,096 DSPs; the ZCU102 has 2,520.
    assert!(
        text.contains("needs 4096 DSP slices but the zcu102 has 2520"),
        "{text}"
    );
    let front = sweep::write_pareto(&path).unwrap();
    let pareto = std::fs::read_to_string(sweep::pareto_path(&path)).unwrap();
    assert_eq!(pareto.lines().count() as u64, 1 + front);
    assert_eq!(front, FRONT, "{pareto}");
    assert!(pareto.lines().skip(1).all(|l| l.ends_with(",ok")));
}

#[test]
fn malformed_spaces_are_clear_errors() {
    let err = DesignSpace::from_ron(
        &SPACE.replace("copies: [1, 8, 32]", "copies: [1, 0]"),
        "s.ron",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("copies") && err.contains("entry 1 is 0"),
        "{err}"
    );
    let err = DesignSpace::from_ron(&SPACE.replace("\"w4a4\"", "\"w1a4\""), "s.ron")
        .unwrap_err()
        .to_string();
    assert!(err.contains("from 2 to 16"), "{err}");
    let err = DesignSpace::from_ron(&SPACE.replace("mat_lanes:", "mat_lane:"), "s.ron")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("s.ron:") && err.contains("mat_lanes"),
        "{err}"
    );
    assert!(
        Shard::parse("3/3").is_err() && Shard::parse("1/0").is_err() && Shard::parse("x").is_err()
    );
}

#[test]
fn random_sampling_is_a_function_of_the_seed() {
    let text = SPACE.replace(")\"#", "");
    let random = format!(
        "{}    sampling: Random(count: 50, seed: 7),\n)",
        &text[..text.rfind(')').unwrap()]
    );
    let s = DesignSpace::from_ron(&random, "r").unwrap();
    assert_eq!(s.len(), 50);
    let again = DesignSpace::from_ron(&random, "r").unwrap();
    assert!((0..50).all(|i| s.point(i) == again.point(i)));
    assert!((0..50).any(|i| s.point(i) != s.point(0)));
}

#[test]
fn a_sweep_needs_a_trio_vit_base() {
    let d = dir("systolic");
    let s = DesignSpace::from_ron(
        &SPACE.replace("base: \"trio-vit-zcu102\"", "base: \"systolic-zcu102\""),
        "s.ron",
    )
    .unwrap();
    let err = sweep::run(&s, &d.join("x.csv"), Shard::ALL, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("systolic-zcu102") && err.contains("Trio-ViT"),
        "{err}"
    );
    assert!(
        !d.join("x.csv").exists(),
        "nothing is written for a space that cannot run"
    );
}

#[test]
fn accuracy_is_a_third_objective_and_published_points_sit_beside() {
    let space = DesignSpace::from_ron(
        r#"DesignSpace(
            name: "accuracy",
            base: "trio-vit-zcu102",
            models: ["efficientvit-micro"],
            mat_pes: [8, 16],
            mat_lanes: [8],
            rmac_pes: [16],
            rmac_lanes: [8],
            copies: [1, 8],
            bits: ["w8a8", "w4a4"],
            accuracy: Some(recipe: "trio-vit", images: Some(500), calibration_images: 128),
        )"#,
        "accuracy space",
    )
    .unwrap();
    let d = dir("accuracy");
    let csv = d.join("a.csv");
    let never = AtomicBool::new(false);
    let mut reports = Vec::new();
    sweep::run_until(&space, &csv, Shard::ALL, false, &never, &mut |p| {
        reports.push(p)
    })
    .unwrap();
    // The accuracy phase reports each pair's calibration (the first only: one model), range
    // search and evaluation, in order and to their ends, before the first design is priced.
    let accuracy: Vec<&AccuracyProgress> = reports
        .iter()
        .map_while(|p| match p {
            Progress::Accuracy(a) => Some(a),
            Progress::Designs(_) => None,
        })
        .collect();
    assert!(accuracy.windows(2).all(|w| w[0].pair <= w[1].pair));
    for (pair, label) in ["efficientvit-micro w8a8", "efficientvit-micro w4a4"]
        .iter()
        .enumerate()
    {
        let steps: Vec<&AccuracyProgress> = accuracy
            .iter()
            .copied()
            .filter(|a| a.pair == pair)
            .collect();
        assert!(steps.iter().all(|a| a.pairs == 2 && a.done <= a.total));
        let last = steps.last().unwrap();
        assert_eq!(last.label, *label);
        assert_eq!(
            (last.step, last.done, last.total),
            (Step::Evaluating, 500, 500)
        );
        assert!(steps.iter().any(|a| a.step == Step::Searching));
        assert_eq!(pair == 0, steps.iter().any(|a| a.step == Step::Calibrating));
    }
    assert!(
        reports[accuracy.len()..]
            .iter()
            .all(|p| matches!(p, Progress::Designs(_)))
    );
    assert_eq!(reports.last(), Some(&Progress::Designs(8)));
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let top1 = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "top1")
        .unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let acc = |bits: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| &r[9] == bits)
            .map(|r| r[top1].parse().unwrap())
            .collect()
    };
    let (w8, w4) = (acc("w8a8"), acc("w4a4"));
    assert_eq!((w8.len(), w4.len()), (4, 4));
    // One evaluation per bit width, shared by every design; W8A8 beats W4A4 on accuracy.
    assert!(w8.iter().all(|&a| a == w8[0]) && w4.iter().all(|&a| a == w4[0]));
    assert!(w8[0] > 85.0 && w8[0] > w4[0], "{w8:?} {w4:?}");
    // With accuracy as an objective, the best-accuracy designs join the front.
    sweep::write_pareto(&csv).unwrap();
    let front = std::fs::read_to_string(sweep::pareto_path(&csv)).unwrap();
    assert!(front.contains("w8a8"), "{front}");
    let published = sweep::write_published(&csv).unwrap();
    // Every reference point of presets/published/.
    assert_eq!(published, 16);
    let text = std::fs::read_to_string(sweep::published_path(&csv)).unwrap();
    assert!(text.starts_with("name,platform,model,precision,fps,gops"));

    // Saved statistics give the same figures as calibrating in the sweep.
    let m = qvit_core::graph::Graph::build(
        &qvit_core::arch::ArchSpec::preset("efficientvit-micro").unwrap(),
    )
    .unwrap();
    let folded =
        qvit_core::weights::Weights::load(&qvit_core::assets::weights("efficientvit-micro"), &m)
            .unwrap()
            .fold(&m)
            .unwrap();
    let (images, labels) = qvit_core::assets::fashion_mnist_calibration();
    let data = qvit_core::data::Dataset::idx(
        &images,
        &labels,
        qvit_core::data::Normalize::fashion_mnist(),
    )
    .unwrap();
    let stats = qvit_core::quant::calibrate(&m, &folded, &data, 128, 32, &mut |_, _| {}).unwrap();
    let saved = d.join("micro.calib.safetensors");
    stats.save(&saved).unwrap();
    let with_file = DesignSpace::from_ron(
        &format!(
            r#"DesignSpace(name: "f", base: "trio-vit-zcu102", models: ["efficientvit-micro"],
            mat_pes: [8], mat_lanes: [8], rmac_pes: [16], rmac_lanes: [8], copies: [1],
            bits: ["w8a8"], accuracy: Some(images: Some(500), calibration: [{saved:?}]))"#
        ),
        "file space",
    )
    .unwrap();
    let csv2 = d.join("f.csv");
    sweep::run(&with_file, &csv2, Shard::ALL, false, &mut |_| {}).unwrap();
    let row = csv::Reader::from_path(&csv2)
        .unwrap()
        .records()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(row[top1].parse::<f64>().unwrap(), w8[0]);

    // Accuracy needs trained weights, and the model's own resolution.
    let b1 = DesignSpace::from_ron(
        r#"DesignSpace(name: "b1", base: "trio-vit-zcu102", models: ["efficientvit-b1"],
            mat_pes: [8], mat_lanes: [8], rmac_pes: [8], rmac_lanes: [8], copies: [1],
            bits: ["w8a8"], accuracy: Some())"#,
        "b1 space",
    )
    .unwrap();
    let err = sweep::run(&b1, &d.join("b1.csv"), Shard::ALL, false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no shipped trained weights"), "{err}");
    let err = DesignSpace::from_ron(
        r#"DesignSpace(name: "r", base: "trio-vit-zcu102", models: ["efficientvit-micro"],
            resolutions: [32], mat_pes: [8], mat_lanes: [8], rmac_pes: [8], rmac_lanes: [8],
            copies: [1], bits: ["w8a8"], accuracy: Some())"#,
        "r space",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("own resolution"), "{err}");
}

#[test]
fn no_design_uses_more_multipliers_than_it_has() {
    // The shipped space mixes unequal MAT and R-MAC engines; utilization (MACs over cycles ×
    // multipliers) must stay at most 1 for every feasible design.
    let space = DesignSpace::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../presets/sweeps/trio-vit-zcu102.ron"
    )))
    .unwrap();
    let d = dir("utilization");
    let csv_path = d.join("u.csv");
    sweep::run(&space, &csv_path, Shard::ALL, false, &mut |_| {}).unwrap();
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (u, status) = (col("utilization"), col("status"));
    let mut feasible = 0;
    for r in reader.records().map(Result::unwrap) {
        if &r[status] == "ok" {
            feasible += 1;
            let v: f64 = r[u].parse().unwrap();
            assert!(v <= 1.0, "utilization {v} in {r:?}");
        }
    }
    assert!(feasible > 1000);
}

#[test]
fn a_cancelled_sweep_stops_with_whole_rows_and_resumes() {
    use std::sync::atomic::AtomicBool;
    let d = dir("cancel");
    let whole = full_run(&d.join("whole.csv"));
    let path = d.join("cancelled.csv");
    let stop = AtomicBool::new(true);
    let outcome = sweep::run_until(&space(), &path, Shard::ALL, false, &stop, &mut |_| {}).unwrap();
    assert!(outcome.cancelled && outcome.evaluated == 0, "{outcome:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1, "only the header: {text}");
    let resumed = sweep::run(&space(), &path, Shard::ALL, true, &mut |_| {}).unwrap();
    assert!(!resumed.cancelled && resumed.evaluated == 96);
    assert_eq!(std::fs::read(&path).unwrap(), whole);
}

#[test]
fn typed_designs_carry_the_pareto_front_of_the_file() {
    let d = dir("designs");
    let path = d.join("s.csv");
    full_run(&path);
    let designs = sweep::read_designs(&path).unwrap();
    let front = sweep::write_pareto(&path).unwrap();
    // The front by definition, by brute force (not through `pareto::front`, which both
    // `read_designs` and `write_pareto` use): a design is on it when no other is at least as
    // good in FPS and GOPS/DSP and better in one; of designs with equal figures the first
    // stands for all (as documented in `pareto::front`).
    let dominated = |d: &sweep::Design| {
        designs.iter().any(|o| {
            let better = o.fps > d.fps || o.gops_per_dsp > d.gops_per_dsp;
            let equal = o.fps == d.fps && o.gops_per_dsp == d.gops_per_dsp;
            o.fps >= d.fps
                && o.gops_per_dsp >= d.gops_per_dsp
                && (better || (equal && o.index < d.index))
        })
    };
    for d in &designs {
        assert_eq!(d.pareto, !dominated(d), "design {}", d.index);
    }
    assert!(front >= 2, "a front of {front}");
    assert_eq!(designs.iter().filter(|d| d.pareto).count() as u64, front);
    let pareto = std::fs::read_to_string(sweep::pareto_path(&path)).unwrap();
    for d in designs.iter().filter(|d| d.pareto) {
        assert!(
            pareto
                .lines()
                .any(|l| l.starts_with(&format!("{},", d.index))),
            "design {} is on the front",
            d.index
        );
    }
    // Designs are feasible rows only: every one has FPS and a DSP count.
    let bad: Vec<_> = designs
        .iter()
        .filter(|d| !(d.fps > 0.0 && d.dsps > 0))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn a_project_sweeps_around_its_own_accelerator_and_model() {
    use qvit_core::project::Project;
    let d = dir("project");
    let path = d.join("p.ron");
    std::fs::write(
        &path,
        r#"Project(
            model: "efficientvit-micro",
            accelerator: Some(
                name: "mine", part: "zcu102", clock_mhz: 250.0, copies: 2,
                architecture: TrioVit(mat: (pes: 16, lanes: 8), rmac: (pes: 16, lanes: 8), model: Corrected),
                activation_buffer_kib: 256, weight_buffer_kib: 1024, bandwidth_gbps: 19.2,
            ),
            sweep: Some(name: "around", mat_pes: [8, 16], mat_lanes: [8],
                rmac_pes: [16], rmac_lanes: [8], copies: [1, 2], bits: ["w8a8"]),
        )"#,
    )
    .unwrap();
    let project = Project::load(&path).unwrap();
    let space = project.design_space("p.ron").unwrap().unwrap();
    assert_eq!(space.models, ["efficientvit-micro"]);
    assert_eq!(space.base_config.as_ref().unwrap().name, "mine");
    let out = d.join("around.csv");
    sweep::run(&space, &out, Shard::ALL, false, &mut |_| {}).unwrap();
    let designs = sweep::read_designs(&out).unwrap();
    assert_eq!(designs.len(), 4);
    // The project's clock, not the preset's 200 MHz.
    assert!(designs.iter().all(|d| d.clock_mhz == 250.0));

    // A space file must name its base; a project without a sweep has none.
    let e = DesignSpace::from_ron(
        &SPACE.replace("base: \"trio-vit-zcu102\",", ""),
        "nobase.ron",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nobase.ron") && e.contains("base"), "{e}");
    assert!(Project::default().design_space("x").unwrap().is_none());
}

/// Cancelling a sweep during its accuracy phase is an error (a partial count is no top-1), and
/// nothing is written.
#[test]
fn a_sweep_cancelled_while_measuring_top1_writes_nothing() {
    let space = DesignSpace::from_ron(
        r#"DesignSpace(
            name: "cancelled",
            base: "trio-vit-zcu102",
            models: ["efficientvit-micro"],
            mat_pes: [8],
            mat_lanes: [8],
            rmac_pes: [16],
            rmac_lanes: [8],
            copies: [1],
            bits: ["w8a8"],
            accuracy: Some(recipe: "minmax", images: Some(1000), calibration_images: 32),
        )"#,
        "cancelled space",
    )
    .unwrap();
    let csv = dir("cancelled").join("c.csv");
    let cancel = AtomicBool::new(false);
    let err = sweep::run_until(&space, &csv, Shard::ALL, false, &cancel, &mut |p| {
        if matches!(&p, Progress::Accuracy(a) if a.step == Step::Evaluating) {
            cancel.store(true, Ordering::Relaxed);
        }
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("cancelled"), "{err}");
    assert!(!csv.exists());
}
