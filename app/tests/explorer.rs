//! The explorer driven through its widgets (egui_kittest, no window): bit widths, the engine
//! copies slider, opening a project and a malformed one. Accuracy runs on the first 500 test
//! images to keep the tests short; everything else is the shipped default.

use std::path::Path;
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use qvit_app::Explorer;

const EVAL_IMAGES: usize = 500;

fn explorer() -> Harness<'static, Explorer> {
    let mut harness = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(|cc| {
            // One calibration for every harness of every run (keyed by the weights and the
            // images, as the explorer keeps it on a desktop); the first harness computes it.
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer-calibration");
            let mut e = Explorer::new(&cc.egui_ctx, Explorer::default_project(), None, Some(cache));
            e.eval_images = Some(EVAL_IMAGES);
            e
        });
    settle(&mut harness);
    harness
}

/// Steps frames until every background job has finished.
fn settle(harness: &mut Harness<'static, Explorer>) {
    let started = Instant::now();
    loop {
        harness.step();
        if !harness.state().busy() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "jobs did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.run_steps(3);
}

/// The text of the one label that starts with `prefix`.
fn label(harness: &Harness<'static, Explorer>, prefix: &str) -> String {
    let matches: Vec<String> = harness
        .query_all_by_label_contains(prefix)
        .filter_map(|n| {
            // A `Role::Label` keeps its text as the value.
            let node = n.accesskit_node();
            if node.role() == Role::Label {
                node.value()
            } else {
                node.label()
            }
        })
        .filter(|l| l.starts_with(prefix))
        .collect();
    assert_eq!(
        matches.len(),
        1,
        "labels starting with `{prefix}`: {matches:?}"
    );
    matches[0].clone()
}

fn click(harness: &mut Harness<'static, Explorer>, text: &str) {
    harness.get_by_label(text).click();
    harness.run_steps(2);
}

/// File → Open recent → `path`, through the menus.
fn open_recent(harness: &mut Harness<'static, Explorer>, path: &Path) {
    click(harness, "File");
    click(harness, "Open recent");
    click(harness, &path.display().to_string());
}

#[test]
fn layer_activation_bits_move_dsp_efficiency_and_sqnr() {
    let mut h = explorer();
    let top1 = label(&h, "top-1 ");
    assert!(top1.ends_with('%'), "{top1}");
    // Select the first depthwise conv through the tree.
    click(&mut h, "backbone.stages.0.op_list.0");
    click(&mut h, "main.depth_conv.conv");
    click(&mut h, "Quantization");
    let fps = label(&h, "FPS ");
    let gops_per_dsp = label(&h, "GOPS/DSP ");
    let fps_per_dsp = label(&h, "FPS/DSP ");
    let selected = label(&h, "selected layer ");
    assert!(
        selected.contains("depth_conv")
            && selected.contains("weights W8")
            && selected.contains("output A8"),
        "{selected}"
    );

    h.get_by_label_contains("Override the selected layer")
        .click();
    h.run_steps(2);
    h.get_by_role_and_label(Role::Slider, "override 1 activation bits")
        .set_value_accesskit(16.0);
    h.run_steps(2);
    settle(&mut h);

    // The layer now writes 16-bit activations, which the projection conv after it reads:
    // 16-bit operands take a DSP per multiplier instead of two MACs per DSP, so the same FPS
    // costs twice the DSPs.
    let selected_now = label(&h, "selected layer ");
    assert!(selected_now.contains("output A16"), "{selected_now}");
    assert_eq!(label(&h, "FPS "), fps);
    let value = |s: &str| -> f64 { s.split(' ').nth(1).unwrap().parse().unwrap() };
    for (name, before) in [("GOPS/DSP ", &gops_per_dsp), ("FPS/DSP ", &fps_per_dsp)] {
        let now = label(&h, name);
        let ratio = value(&now) / value(before);
        assert!(
            (ratio - 0.5).abs() < 0.005,
            "{before} → {now}: twice the DSPs"
        );
    }
    // The output's SQNR moves with its bits (8 → 16 bits: 34.3 → 43.1 dB; the recipe's
    // 99.99th-percentile range clips the same values at any width, which caps the gain).
    let sqnr = |s: &str| -> f64 {
        let at = s.find("output A").expect("output in the summary");
        let at = at + s[at..].find(" at ").unwrap() + 4;
        s[at..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        sqnr(&selected_now) > sqnr(&selected) + 5.0,
        "{selected} → {selected_now}"
    );

    // Every layer at 4-bit activations: re-quantized and re-evaluated, top-1 falls.
    h.get_by_role_and_label(Role::Slider, "global activation bits")
        .set_value_accesskit(4.0);
    h.run_steps(2);
    settle(&mut h);
    let percent = |s: &str| -> f64 { s[6..s.len() - 2].parse().unwrap() };
    let top1_a4 = label(&h, "top-1 ");
    assert!(
        percent(&top1_a4) < percent(&top1) - 5.0,
        "{top1} → {top1_a4}"
    );
}

#[test]
fn more_engine_copies_give_more_fps() {
    let mut h = explorer();
    click(&mut h, "Accelerator");
    let fps = label(&h, "FPS ");
    let dsps = label(&h, "DSPs ");
    h.get_by_role_and_label(Role::Slider, "L: engine copies")
        .set_value_accesskit(2.0);
    h.run_steps(2);
    // Priced in the same frames, no background job.
    assert!(!h.state().busy());
    let parse = |s: &str| -> f64 { s.split(' ').nth(1).unwrap().parse().unwrap() };
    let fps_now = label(&h, "FPS ");
    assert!(
        (parse(&fps_now) - parse(&fps) / 4.0).abs() < 0.1,
        "8 → 2 copies: {fps} → {fps_now}"
    );
    // A quarter of the copies, a quarter of the DSPs.
    let dsps_now = label(&h, "DSPs ");
    assert_eq!(parse(&dsps_now) * 4.0, parse(&dsps), "{dsps} → {dsps_now}");
}

/// The weight buffer is a setting: below the model's weights they no longer stay on chip, and
/// every image reads them from off-chip memory again (the micro model's 8-bit weights; its
/// activations fit the activation buffer).
#[test]
fn a_smaller_weight_buffer_streams_the_weights() {
    let mut h = explorer();
    click(&mut h, "Accelerator");
    let traffic = |h: &Harness<'static, Explorer>| h.state().cost.as_ref().unwrap().bytes_moved;
    assert_eq!(traffic(&h), 0, "the default holds every weight on chip");
    assert!(label(&h, "utilization ").ends_with(" 0 bytes off-chip per image"));
    h.get_by_role_and_label(Role::Slider, "weight buffer, shared by the copies (KiB)")
        .set_value_accesskit(128.0);
    h.run_steps(2);
    assert_eq!(
        h.state()
            .project
            .accelerator
            .as_ref()
            .unwrap()
            .weight_buffer_kib,
        128
    );
    let graph = h.state().graph.clone().unwrap();
    let weight_bytes: u64 = qvit_core::accel::Workload::uniform(&graph, 8, 8)
        .layers
        .iter()
        .map(|l| l.weights)
        .sum();
    assert_eq!(traffic(&h), weight_bytes);
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn opens_a_project_and_keeps_the_current_one_when_a_file_is_malformed() {
    let dir = std::env::temp_dir().join(format!("qvit-explorer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = write(
        &dir,
        "deit.ron",
        r#"Project(model: "deit-micro", quant: Some(recipe: "fq-vit", bits: "w8a8"))"#,
    );
    let bad = write(
        &dir,
        "broken.ron",
        "Project(model: \"deit-micro\", quant: Some(bits: \"w8a99\"))",
    );
    // Well-formed RON, but a model that does not exist: refused before anything is replaced.
    let unknown = write(&dir, "unknown.ron", r#"Project(model: "efficientvit-b9")"#);
    let mut h = explorer();
    h.state_mut().recent = vec![good.clone(), bad.clone(), unknown.clone()];

    // Open the DeiT project from File → Open recent.
    open_recent(&mut h, &good);
    settle(&mut h);
    assert_eq!(h.state().project.model, "deit-micro");
    assert!(label(&h, "deit-micro · ").contains("deit.ron"));
    let fps = label(&h, "FPS ");
    let top1 = label(&h, "top-1 ");

    // A malformed one: its error is shown, naming the file and the field, and nothing changes.
    open_recent(&mut h, &bad);
    h.run_steps(2);
    let error = label(&h, "error: ");
    assert!(
        error.contains("broken.ron")
            && error.contains("from 2 to 16")
            && error.contains("current one stays open"),
        "{error}"
    );
    assert_eq!(h.state().project.model, "deit-micro");
    assert_eq!(label(&h, "FPS "), fps);
    assert_eq!(label(&h, "top-1 "), top1);
    assert!(!h.state().busy(), "a bad file must not start new work");

    open_recent(&mut h, &unknown);
    h.run_steps(2);
    let error = label(&h, "error: ");
    assert!(error.contains("efficientvit-b9"), "{error}");
    assert_eq!(h.state().project.model, "deit-micro");
    assert_eq!(label(&h, "FPS "), fps);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sweep_runs_in_the_background_and_a_design_loads() {
    let mut h = explorer();
    click(&mut h, "Explore");
    {
        let s = &mut h.state_mut().explore;
        s.mat_pes = "8, 16".into();
        s.mat_lanes = "8".into();
        s.rmac_pes = "16".into();
        s.rmac_lanes = "8".into();
        s.copies = "1, 2, 4".into();
        s.bits = "w8a8".into();
    }
    // Accuracy off (it is on by default), then run.
    h.get_by_label_contains("measure top-1 per bit width")
        .click();
    h.run_steps(2);
    // Before any sweep the empty plot says how to fill it.
    assert!(label(&h, "No designs yet").contains("Run sweep"));
    click(&mut h, "Run sweep");
    settle(&mut h);
    let summary = label(&h, "6 designs priced");
    assert!(
        summary.contains("on the Pareto front of FPS and GOPS/DSP"),
        "{summary}"
    );
    let designs = h.state().explore.designs.clone();
    assert_eq!(designs.len(), 6);
    // More copies: more FPS at the same DSP efficiency, so only the most copies are optimal.
    let best = designs.iter().filter(|d| d.pareto).map(|d| d.copies).max();
    assert_eq!(best, Some(4));

    // The scatter as a figure: title, axis titles, legend and every design, as SVG.
    let dir = std::env::temp_dir().join(format!("qvit-figure-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let export = |h: &mut Harness<'static, Explorer>, path: &Path| {
        click(h, "Export figure…");
        h.state_mut().dialog.as_mut().expect("a dialog").name = path.display().to_string();
        click(h, "Save");
    };
    // On top-1, which this sweep did not measure, there is nothing to draw, and it says so.
    export(&mut h, &dir.join("empty.svg"));
    assert!(label(&h, "error: could not export the figure").contains("no design has both"));
    h.state_mut().explore.y = qvit_core::explore::scatter::Axis::GopsPerDsp;
    let svg = dir.join("designs.svg");
    export(&mut h, &svg);
    let text = std::fs::read_to_string(&svg).unwrap();
    for needed in [
        "efficientvit-micro: 6 designs",
        "FPS",
        "GOPS/DSP",
        "Pareto front",
    ] {
        assert!(text.contains(needed), "`{needed}` missing from the figure");
    }
    let on_front = designs.iter().filter(|d| d.pareto).count();
    // One circle per design off the front, one more in the legend.
    assert_eq!(text.matches("<circle").count(), 6 - on_front + 1);
    std::fs::remove_dir_all(&dir).ok();

    let pick = designs
        .iter()
        .find(|d| d.copies == 2 && d.mat_pes == 8)
        .unwrap();
    qvit_app::views::explore::load_design(h.state_mut(), pick);
    h.run_steps(2);
    assert_eq!(label(&h, "FPS "), format!("FPS {:.1}", pick.fps));
    assert_eq!(h.state().project.accelerator.as_ref().unwrap().copies, 2);

    // Designs over the part's DSPs are priced but not drawn, and the summary says how many.
    h.state_mut().explore.copies = "1, 64".into();
    click(&mut h, "Run sweep");
    settle(&mut h);
    let summary = label(&h, "4 designs priced");
    assert!(
        summary.contains(", 2 over the DSP budget left out"),
        "{summary}"
    );
    assert_eq!(h.state().explore.designs.len(), 2);
}

/// `root/<class>/<image>.png`: `classes` folders of two images of odd sizes.
fn image_folder(root: &Path, classes: usize) {
    for c in 0..classes {
        let dir = root.join(format!("class{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2u32 {
            let (w, h) = (230 + 17 * i, 260 + 9 * c as u32);
            image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x % 256) as u8,
                    (y % 256) as u8,
                    (40 * c as u32 + 90 * i) as u8,
                ])
            })
            .save(dir.join(format!("{i}.png")))
            .unwrap();
        }
    }
}

#[test]
fn a_full_size_project_with_folder_data_reaches_a_top1() {
    use qvit_core::arch::ArchSpec;
    use qvit_core::graph::Graph;
    use qvit_core::weights::Weights;
    let dir = std::env::temp_dir().join(format!("qvit-explorer-b1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let graph = Graph::build(&ArchSpec::resolve("efficientvit-b1").unwrap()).unwrap();
    Weights::random(&graph, 3)
        .save(&dir.join("b1.safetensors"))
        .unwrap();
    image_folder(&dir.join("val"), 3);
    image_folder(&dir.join("train"), 2);
    let project = write(
        &dir,
        "b1.ron",
        r#"Project(
            model: "efficientvit-b1",
            weights: Some("b1.safetensors"),
            data: Some(ImageFolder(root: "val")),
            calibration_data: Some(data: ImageFolder(root: "train"), images: Some(4)),
            quant: Some(recipe: "minmax", bits: "w8a8", executor: Int),
        )"#,
    );
    let mut h = explorer();
    h.state_mut().recent = vec![project.clone()];
    open_recent(&mut h, &project);
    settle(&mut h);
    assert_eq!(h.state().project.model, "efficientvit-b1");
    assert_eq!(h.state().accuracy.as_ref().map(|a| a.images), Some(6));
    let top1 = label(&h, "top-1 ");
    assert!(top1.contains('%'), "{top1}");
    // At full size too, every plot of the Distributions and Accelerator tabs is a figure.
    for tab in ["Distributions", "Accelerator"] {
        click(&mut h, tab);
        h.run_steps(2);
        let plots: Vec<String> = h.state().plots.iter().map(|(n, _)| n.clone()).collect();
        assert!(!plots.is_empty(), "{tab} shows no plot");
        for (i, plot) in plots.iter().enumerate() {
            let svg = dir.join(format!("{tab}-{i}.svg"));
            qvit_app::views::figures::export(h.state_mut(), plot, &svg);
            let text = std::fs::read_to_string(&svg)
                .unwrap_or_else(|e| panic!("B1 {plot}: {e}; {:?}", h.state().notice));
            assert!(text.contains("<svg"), "B1 {plot}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The file dialogs are qvit's own, so they work where the system's cannot open (this harness
/// has no desktop portal at all): Save project as, Open project (a missing file is refused in
/// the dialog, which stays open), Export per-layer cost as CSV, and Cancel.
#[test]
fn file_dialogs_work_without_a_desktop_portal() {
    let dir = std::env::temp_dir().join(format!("qvit-dialog-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut h = explorer();
    let choose = |h: &mut Harness<'static, Explorer>, name: &Path, button: &str| {
        h.state_mut()
            .dialog
            .as_mut()
            .expect("a dialog is open")
            .name = name.display().to_string();
        click(h, button);
    };

    click(&mut h, "File");
    click(&mut h, "Save project as… (runs headless)");
    assert!(h.query_by_label("Save project as").is_some());
    let saved = dir.join("mine.ron");
    // The kind's extension is added to a bare name.
    choose(&mut h, &dir.join("mine"), "Save");
    assert!(h.state().dialog.is_none());
    assert!(
        std::fs::read_to_string(&saved)
            .unwrap()
            .starts_with("Project(")
    );
    assert_eq!(h.state().project_path.as_deref(), Some(saved.as_path()));

    click(&mut h, "File");
    click(&mut h, "Open project…");
    choose(&mut h, &dir.join("missing.ron"), "Open");
    assert!(
        label(&h, &dir.join("missing.ron").display().to_string()).ends_with("is not a file"),
        "a missing file is refused in the dialog"
    );
    assert!(h.state().dialog.is_some());
    choose(&mut h, &saved, "Open");
    assert!(h.state().dialog.is_none());
    assert!(label(&h, "opened ").contains("mine.ron"));

    click(&mut h, "File");
    click(&mut h, "Export per-layer cost as CSV…");
    // The dialog starts in the project's folder.
    assert_eq!(h.state().dialog.as_ref().unwrap().folder, dir);
    let csv = dir.join("cost.csv");
    choose(&mut h, &csv, "Save");
    assert!(
        std::fs::read_to_string(&csv)
            .unwrap()
            .starts_with("name,stage,op,")
    );

    click(&mut h, "File");
    click(&mut h, "Open project…");
    click(&mut h, "Cancel");
    assert!(h.state().dialog.is_none());
    std::fs::remove_dir_all(&dir).ok();
}

/// A baseline's top-1 is compared only with a top-1 on the same images: evaluated on fewer, the
/// bar shows the baseline's figure and how many images it had, not a difference.
#[test]
fn baseline_top1_is_compared_on_the_same_images_only() {
    let mut h = explorer();
    click(&mut h, "Pin as baseline");
    assert_eq!(label(&h, "+0.00 points"), "+0.00 points");
    let reevaluate = |h: &mut Harness<'static, Explorer>, images: usize| {
        h.state_mut().eval_images = Some(images);
        h.state_mut().changes.quant = true;
        settle(h);
    };
    reevaluate(&mut h, 200);
    let shown = label(&h, "baseline ");
    assert!(
        shown.ends_with(&format!("on {EVAL_IMAGES} images")),
        "{shown}"
    );
    assert!(h.query_by_label_contains(" points").is_none());
    reevaluate(&mut h, EVAL_IMAGES);
    assert_eq!(label(&h, "+0.00 points"), "+0.00 points");
}

/// At 1400×900 and 1600×1000 the Quantization view's override row keeps its remove button and
/// both bit sliders inside the window, and the recipe's notes wrap inside their column rather
/// than running off the window's right edge.
#[test]
fn quantization_rows_fit_the_window() {
    let mut h = explorer();
    click(&mut h, "Quantization");
    click(&mut h, "Add override");
    for [width, height] in [[1400.0f32, 900.0], [1600.0, 1000.0]] {
        h.set_size(egui::vec2(width, height));
        h.run_steps(3);
        let slider = |h: &Harness<'static, Explorer>, label: &str| {
            h.get_by_role_and_label(Role::Slider, label).rect()
        };
        let rects = [
            ("remove", h.get_by_label("remove").rect()),
            ("weight bits", slider(&h, "override 1 weight bits")),
            ("activation bits", slider(&h, "override 1 activation bits")),
        ];
        for (widget, rect) in rects {
            assert!(
                rect.max.x <= width && rect.min.x >= 0.0,
                "{widget} at {rect:?} in a {width}-wide window"
            );
        }
        if width >= 1600.0 {
            // The notes of the output-aware search are the longest; each ends in the window.
            let notes: Vec<egui::Rect> = h
                .query_all_by_label_contains("by output-aware search on")
                .map(|n| n.rect())
                .collect();
            assert!(!notes.is_empty());
            for note in notes {
                assert!(note.max.x <= width, "a note at {note:?}");
            }
        }
    }
}

/// Going back to bit widths evaluated before shows their quantization and top-1 in the frame
/// that asks (no job started, under 100 ms), marked as remembered; a new explorer on the same
/// cache folder reads that plan and top-1 from disk instead of searching and evaluating again.
#[test]
fn a_setting_evaluated_before_shows_its_answer_at_once() {
    let mut h = explorer();
    let w8a8 = h.state().accuracy.clone().expect("the default's top-1");
    let set_bits = |h: &mut Harness<'static, Explorer>, bits: &str| {
        h.state_mut().settings().bits = bits.parse().unwrap();
        h.state_mut().changes.quant = true;
    };
    set_bits(&mut h, "w4a8");
    settle(&mut h);
    let w4a8 = h.state().accuracy.clone().unwrap();
    assert_ne!(
        w4a8, w8a8,
        "W4A8 and W8A8 should differ on {EVAL_IMAGES} images"
    );

    set_bits(&mut h, "w8a8");
    let started = Instant::now();
    h.state_mut().step();
    let took = started.elapsed();
    let e = h.state();
    assert!(!e.busy(), "a job was started for an answer known before");
    assert_eq!(e.quantized.as_ref().unwrap().plan.bits.to_string(), "W8A8");
    assert_eq!(e.accuracy.as_ref(), Some(&w8a8));
    assert!(e.accuracy_cached);
    assert!(took < Duration::from_millis(100), "{took:?}");
    h.run_steps(2);
    let shown = label(&h, &format!("on {EVAL_IMAGES} test images"));
    assert!(shown.ends_with("remembered"), "{shown}");

    // The next run (another explorer on the same cache folder) finds both on disk.
    let next = explorer();
    let e = next.state();
    assert!(
        e.quantized.as_ref().unwrap().cached,
        "the plan was built again"
    );
    assert!(e.accuracy_cached, "the top-1 was measured again");
    assert_eq!(e.accuracy.as_ref(), Some(&w8a8));
}

/// At 1400×900 and 1600×1000 the Distributions view's three plots (the input's channel boxes,
/// its histogram with the quantizer's levels, the weights' boxes) end above the results bar,
/// their axes included: none is cut off.
#[test]
fn distribution_plots_fit_above_the_results_bar() {
    let mut h = explorer();
    for [width, height] in [[1400.0f32, 900.0], [1600.0, 1000.0]] {
        h.set_size(egui::vec2(width, height));
        h.run_steps(3);
        let bar_top = h.get_by_label("Pin as baseline").rect().min.y;
        let plots = h.state().plots.clone();
        let names: Vec<&str> = plots.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"histogram and quantizer levels")
                && names.contains(&"channel boxes (weights)")
                && names.contains(&"channel boxes (calibrated)"),
            "{names:?}"
        );
        for (name, rect) in plots {
            // Under the plot's frame come its tick labels and axis title, about 27 points.
            assert!(
                rect.max.y + 27.0 < bar_top && rect.max.x <= width && rect.height() >= 140.0,
                "{name} at {rect:?}, the results bar at y = {bar_top} in a {width}×{height} window"
            );
        }
    }
}

/// File → Export plot as figure writes every plot on screen as a figure for a paper: the
/// Distributions view's boxes and histogram and the Accelerator's cycles, each with its title
/// and axis titles, as SVG (and PNG when the name says so).
#[test]
fn every_plot_on_screen_exports_as_a_figure() {
    let dir = std::env::temp_dir().join(format!("qvit-figures-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut h = explorer();
    let mut written = Vec::new();
    for tab in ["Distributions", "Accelerator"] {
        click(&mut h, tab);
        h.run_steps(2);
        let plots: Vec<String> = h.state().plots.iter().map(|(n, _)| n.clone()).collect();
        assert!(!plots.is_empty(), "{tab} shows no plot");
        for (i, plot) in plots.iter().enumerate() {
            click(&mut h, "File");
            click(&mut h, "Export plot as figure (SVG/PNG)");
            click(&mut h, plot);
            let path = dir.join(format!("{tab}-{i}.svg"));
            h.state_mut().dialog.as_mut().expect("a dialog").name = path.display().to_string();
            click(&mut h, "Save");
            let svg = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{plot}: {e}; notice {:?}", h.state().notice));
            written.push((plot.clone(), svg));
        }
    }
    let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
    for (plot, axes) in [
        ("channel boxes (calibrated)", ["\nchannel\n", "\nvalue\n"]),
        ("channel boxes (weights)", ["\nchannel\n", "\nweight\n"]),
        (
            "histogram and quantizer levels",
            ["clipping range", "\ncount\n"],
        ),
        (
            "per-layer cycles",
            ["compute-bound", "\ncycles per image per copy\n"],
        ),
    ] {
        let (_, svg) = written
            .iter()
            .find(|(n, _)| n == plot)
            .unwrap_or_else(|| panic!("`{plot}` not among {names:?}"));
        for text in axes {
            assert!(svg.contains(text), "{plot}: `{text}` missing");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The Explore sweep's accuracy phase reads the statistics the explorer already has (the file
/// in its cache folder) instead of calibrating again; a space kept in the project does not
/// carry that machine-local file, so a headless run calibrates.
#[test]
fn the_sweep_measures_top1_on_the_explorers_own_statistics() {
    let mut h = explorer();
    let file = h
        .state()
        .loaded
        .as_ref()
        .and_then(|l| l.stats_file.clone())
        .expect("statistics kept in the cache folder");
    assert!(file.is_file());
    let space = h.state().explore.space(h.state()).unwrap();
    assert_eq!(space.accuracy.unwrap().calibration, vec![file]);
    qvit_app::views::explore::keep_in_project(h.state_mut()).unwrap();
    let kept = h.state().project.sweep.clone().unwrap();
    assert!(kept.accuracy.unwrap().calibration.is_empty());
}

/// A search on the open model, its statistics and its 500 test images: trio-vit (its range
/// search cut to 8 images) so that a mixed row's plan depends on where the range search ran.
fn write_search_space(dir: &Path) -> std::path::PathBuf {
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../presets/quant/trio-vit.ron"
    ))
    .unwrap();
    let quick = preset.replace("OutputSearch(images: 64)", "OutputSearch(images: 8)");
    assert_ne!(quick, preset);
    let recipe = write(dir, "trio-quick.ron", &quick);
    let space = format!(
        r#"Search(
            name: "tab",
            model: "efficientvit-micro",
            recipe: Some("{}"),
            weights: [8, 4],
            activations: [8, 4],
            accelerator: (
                base: "trio-vit-zcu102",
                mat_pes: [16], mat_lanes: [8], rmac_pes: [16], rmac_lanes: [8],
                copies: [2, 8],
                packing: [PerLayer],
            ),
            stages: (
                sample_images: 16,
                confirm_allocations: 3,
                heldout_images: 100,
                executor: Int,
                test_images: Some({EVAL_IMAGES}),
            ),
        )"#,
        recipe.display()
    );
    write(dir, "space.ron", &space)
}

#[test]
fn a_search_runs_in_the_background_and_a_row_loads_with_its_top1_and_fps() {
    let dir = std::env::temp_dir().join(format!("qvit-search-tab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let space = write_search_space(&dir);
    let mut h = explorer();
    click(&mut h, "Search");
    assert!(label(&h, "No search yet").contains("Run search"));
    h.state_mut().search.space = space.display().to_string();
    click(&mut h, "Run search");
    settle(&mut h);
    let summary = label(&h, "efficientvit-micro on trio-vit-zcu102");
    assert!(summary.contains("designs on the front"), "{summary}");
    let searched = h.state().search.result.clone().expect("a search result");
    let rows = &searched.outcome.rows;
    let mixed = rows
        .iter()
        .position(|r| r.on_front && !r.allocation.is_uniform())
        .expect("a mixed design on the front");
    // Loading the row re-quantizes the open model with its widths (the range search at the
    // base widths, as the search built it) and prices its design: the explorer shows the
    // search's own test top-1 and FPS.
    qvit_app::views::search::load_row(h.state_mut(), &searched, mixed);
    settle(&mut h);
    let state = h.state();
    let quant = state.project.quant.as_ref().unwrap();
    assert!(quant.search_at_base && !quant.overrides.is_empty());
    let top1 = state
        .accuracy
        .as_ref()
        .unwrap_or_else(|| {
            panic!(
                "no accuracy: quantization error {:?}, accuracy error {:?}, notice {:?}, \
                 quantized {}",
                state.quant_error,
                state.accuracy_error,
                state.notice,
                state.quantized.is_some()
            )
        })
        .top1();
    assert_eq!(format!("{top1:.2}"), format!("{:.2}", rows[mixed].top1));
    let fps = state.cost.as_ref().unwrap().fps;
    assert_eq!(
        format!("{fps:.3}"),
        format!("{:.3}", rows[mixed].totals.fps)
    );
    std::fs::remove_dir_all(&dir).ok();
}
