//! The accelerator cost model on whole models: the corrected model against the published one,
//! the published ZCU102 throughput anchor, and configurations that cannot be built.

use qvit_core::accel::trio_vit::{Engines, corrected_cycles, reference_cycles};
use qvit_core::accel::workload::{HwOp, Role};
use qvit_core::accel::{AccelConfig, Bound, Workload, cost};
use qvit_core::arch::ArchSpec;
use qvit_core::graph::Graph;

fn workload(model: &str, resolution: usize) -> Workload {
    let spec = ArchSpec::preset(model)
        .unwrap()
        .with_resolution(resolution)
        .unwrap();
    Workload::uniform(&Graph::build(&spec).unwrap(), 8, 8)
}

/// Prints every layer whose cycles differ between the published and the corrected model with
/// the reason, panics on a difference without one, and counts the reasons.
fn differences(engines: &Engines) -> std::collections::BTreeMap<&'static str, usize> {
    let w = workload("efficientvit-b1", 224);
    let (reference, corrected) = (reference_cycles(&w, engines), corrected_cycles(&w, engines));
    let mut reasons = std::collections::BTreeMap::new();
    println!("{engines:?}");
    for (i, layer) in w.layers.iter().enumerate() {
        if reference[i] == corrected[i] {
            continue;
        }
        let reason = match (&layer.op, layer.role) {
            (_, Role::Head) => "added: the classifier head",
            (HwOp::AttnDivide { .. }, _) => "added: the attention divisions (shifts)",
            // The published equations leave out V's ones column (the key sums and divisors);
            // the floor of MACs over all multipliers puts it back.
            (HwOp::AttnContext { .. } | HwOp::AttnQuery { .. }, _) => {
                "added: the ones row of [v;1] (key sums, divisors)"
            }
            (HwOp::Conv { .. }, Role::AttnProjection) => "corrected: projection is 2C → C",
            (HwOp::Depthwise { .. }, _)
                if layer.feeds.is_some_and(
                    |t| matches!(w.layers[t].op, HwOp::Conv { groups, .. } if groups > 1),
                ) =>
            {
                "corrected: the grouped 1×1 conv has 3C outputs"
            }
            (HwOp::Conv { .. } | HwOp::Depthwise { .. }, _)
                if engines.mat_pes != engines.rmac_pes =>
            {
                "corrected: unequal engines get the multipliers they have"
            }
            _ => panic!("{} differs for no stated reason", layer.name),
        };
        println!(
            "  {:<66} {:>8} → {:>8}  {reason}",
            layer.name, reference[i], corrected[i]
        );
        *reasons.entry(reason).or_insert(0) += 1;
    }
    reasons
}

#[test]
fn corrected_model_differs_from_the_published_one_only_where_it_corrects_or_adds() {
    // The published engines: both corrections happen to cost the same cycles there (the swapped
    // projection's passes multiply out equal, and the 3C grouped conv hides behind the 5×5
    // depthwise conv), so only the additions show: 7 attention blocks' divisions, 3 head layers,
    // and the key-sum row the published attention equations omit.
    let published = differences(&Engines {
        mat_pes: 16,
        mat_lanes: 8,
        rmac_pes: 16,
        rmac_lanes: 8,
    });
    assert_eq!(published.len(), 3, "{published:?}");
    assert!(published["added: the ones row of [v;1] (key sums, divisors)"] >= 1);
    assert_eq!(published["added: the attention divisions (shifts)"], 7);
    assert_eq!(published["added: the classifier head"], 3);
    // Engines where the quirks matter: 20-wide MAT lanes (channel counts no longer divide) and a
    // fast R-MAC engine (the grouped conv no longer hides behind the depthwise conv).
    let skewed = differences(&Engines {
        mat_pes: 20,
        mat_lanes: 8,
        rmac_pes: 64,
        rmac_lanes: 8,
    });
    assert!(skewed["corrected: projection is 2C → C"] >= 1, "{skewed:?}");
    assert!(
        skewed["corrected: the grouped 1×1 conv has 3C outputs"] >= 1,
        "{skewed:?}"
    );
    assert_eq!(skewed["added: the attention divisions (shifts)"], 7);
    assert_eq!(skewed["added: the classifier head"], 3);
}

#[test]
fn zcu102_throughput_is_within_ten_percent_of_the_published_accelerator() {
    let r = cost(
        &workload("efficientvit-b1", 224),
        &AccelConfig::preset("trio-vit-zcu102").unwrap(),
    )
    .unwrap();
    // Shao et al. (same group, ZCU102, 200 MHz, 8-bit): 780.2 GOPS.
    let error = (r.gops - 780.2).abs() / 780.2;
    assert!(error <= 0.10, "{:.1} GOPS", r.gops);
    assert!(r.dsps <= 2520, "{} DSPs", r.dsps);
    assert_eq!(r.dsps, 1024);
    // The corrected model's exact figures (README, `qvit cost efficientvit-b1 -r 224`).
    assert_eq!(r.cycles, 2_208_654);
    assert_eq!(format!("{:.1}", r.gops), "752.3");
    assert_eq!(format!("{:.4}", r.gops_per_dsp), "0.7346");
    assert_eq!(format!("{:.3}", r.utilization), "0.918");
}

#[test]
fn reference_presets_report_the_published_cycles() {
    for (preset, cycles) in [
        ("trio-vit-reference-16", 2_060_601),
        ("trio-vit-reference-8", 4_005_490),
    ] {
        let r = cost(
            &workload("efficientvit-b1", 224),
            &AccelConfig::preset(preset).unwrap(),
        )
        .unwrap();
        assert_eq!(r.cycles, cycles, "{preset}");
        assert_eq!(
            r.bytes_moved, 0,
            "the published model counts no memory traffic"
        );
    }
}

#[test]
fn more_bits_need_more_dsps_and_narrow_operands_pack_tighter() {
    let config = AccelConfig::preset("trio-vit-zcu102").unwrap();
    let spec = ArchSpec::preset("efficientvit-b1").unwrap();
    let g = Graph::build(&spec).unwrap();
    let dsps = |w, a| cost(&Workload::uniform(&g, w, a), &config).map(|r| r.dsps);
    assert_eq!(dsps(4, 4).unwrap(), 512);
    assert_eq!(dsps(4, 8).unwrap(), 1024);
    // 16-bit operands: one MAC per DSP → 2,048 ≤ 2,520.
    assert_eq!(dsps(16, 16).unwrap(), 2048);
}

#[test]
fn impossible_designs_are_errors_that_say_why() {
    let base = include_str!("../../presets/accelerators/trio-vit-zcu102.ron");
    let err = AccelConfig::from_ron(&base.replace("mat: (pes: 16", "mat: (pes: 0"), "z.ron")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("architecture.mat.pes") && err.contains("at least 1"),
        "{err}"
    );
    let err = AccelConfig::from_ron(&base.replace("\"zcu102\"", "\"zcu999\""), "z.ron")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("zcu999") && err.contains("zcu102") && err.contains("vck190"),
        "{err}"
    );
    let err = AccelConfig::from_ron(&base.replace("copies: 8", "copies: 20"), "z.ron")
        .map(|c| cost(&workload("efficientvit-b1", 224), &c))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs 2560 DSP slices but the zcu102 has 2520"),
        "{err}"
    );
    let err = AccelConfig::from_ron(&base.replace("copies: 8", "copies 8"), "z.ron")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("z.ron:"), "{err}");
    let err = AccelConfig::from_ron(
        &base.replace("activation_buffer_kib: 256", "activation_buffer_kib: 4096"),
        "z.ron",
    )
    .map(|c| cost(&workload("efficientvit-b1", 224), &c))
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("KiB of on-chip RAM"), "{err}");
}

#[test]
fn systolic_baseline_prices_every_layer_as_a_matrix_product() {
    let trio = AccelConfig::preset("trio-vit-zcu102").unwrap();
    let systolic = AccelConfig::preset("systolic-zcu102").unwrap();
    assert_eq!(trio.multipliers(), systolic.multipliers());
    let fps = |model: &str, config: &AccelConfig| {
        let g = Graph::build(&ArchSpec::preset(model).unwrap()).unwrap();
        cost(&Workload::uniform(&g, 8, 8), config).unwrap()
    };
    // EfficientViT's depthwise convs waste a plain array's columns: Trio-ViT's engines win big.
    let (t, s) = (
        fps("efficientvit-b1", &trio),
        fps("efficientvit-b1", &systolic),
    );
    assert!(
        t.fps > 2.0 * s.fps,
        "Trio-ViT {:.1} FPS vs systolic {:.1}",
        t.fps,
        s.fps
    );
    assert!(
        s.layers.iter().all(|l| l.bound != Bound::Fused),
        "a plain array fuses nothing"
    );
    // DeiT is dense matrix products: the two designs are close.
    let (t, s) = (fps("deit-tiny", &trio), fps("deit-tiny", &systolic));
    assert!(
        (t.fps / s.fps - 1.0).abs() < 0.2,
        "{:.1} vs {:.1}",
        t.fps,
        s.fps
    );

    let base = include_str!("../../presets/accelerators/systolic-zcu102.ron");
    let err = AccelConfig::from_ron(&base.replace("rows: 16", "rows: 0"), "s.ron")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s.ron") && err.contains("architecture.rows"),
        "{err}"
    );
}

/// `config` with its RON text edited by `edit`.
fn edited(preset: &str, edit: impl Fn(String) -> String) -> AccelConfig {
    let (_, text) = qvit_core::accel::config::PRESETS
        .iter()
        .find(|(name, _)| *name == preset)
        .unwrap();
    AccelConfig::from_ron(&edit(text.to_string()), "edited.ron").unwrap()
}

fn graph(model: &str) -> Graph {
    Graph::build(&ArchSpec::preset(model).unwrap()).unwrap()
}

/// The workload of `model` at `bits`, with `overrides` (glob, (w, a)) applied.
fn mixed(g: &Graph, bits: &str, overrides: &[&str]) -> Workload {
    use qvit_core::quant::{LayerBits, QuantSettings};
    let settings = QuantSettings {
        bits: bits.parse().unwrap(),
        overrides: overrides.iter().map(|o| o.parse().unwrap()).collect(),
        ..Default::default()
    };
    let layer_bits = LayerBits::resolve(g, &settings).unwrap();
    Workload::with_bits(g, |id| layer_bits.operands(g, id))
}

#[test]
fn w4a8_packs_as_w8a8_but_moves_fewer_bytes() {
    // WP486 / FINN: one 8-bit operand keeps two products per DSP48E2, so W4A8 needs the DSPs
    // W8A8 needs; its weights are half the bytes, so a design that streams them is faster.
    for model in ["efficientvit-b1", "deit-tiny"] {
        let g = graph(model);
        let streaming = edited("trio-vit-zcu102", |t| {
            t.replace("weight_buffer_kib: 1024", "weight_buffer_kib: 16")
                .replace("bandwidth_gbps: 19.2", "bandwidth_gbps: 2.0")
        });
        let w8a8 = cost(&mixed(&g, "w8a8", &[]), &streaming).unwrap();
        let w4a8 = cost(&mixed(&g, "w4a8", &[]), &streaming).unwrap();
        assert_eq!(w4a8.dsps, w8a8.dsps, "{model}");
        assert!(w4a8.bytes_moved < w8a8.bytes_moved, "{model}");
        assert!(w4a8.fps > w8a8.fps, "{model}: {} vs {}", w4a8.fps, w8a8.fps);
        // The attention products multiply two 8-bit activations, so the datapath is still built
        // for 8 × 8 operands, LUT multipliers included.
        assert_eq!(w4a8.envelope_bits, (8, 8), "{model}");
        assert_eq!(w4a8.luts_as_lut_multipliers, w8a8.luts_as_lut_multipliers);
    }
}

#[test]
fn versal_dsp58_packs_three_products() {
    let config = edited("trio-vit-zcu102", |t| t.replace("\"zcu102\"", "\"vck190\""));
    let r = cost(&mixed(&graph("efficientvit-b1"), "w8a8", &[]), &config).unwrap();
    // FINN's mvu_vvu_8sx9_dsp58: ⌈2,048 / 3⌉ DSP58s.
    assert_eq!(r.dsps, 683);
    let r = cost(&mixed(&graph("efficientvit-b1"), "w4a4", &[]), &config).unwrap();
    assert_eq!(
        r.dsps, 683,
        "FINN uses the same three-product core for 4-bit operands"
    );
}

#[test]
fn one_wide_layer_sets_the_envelope_unless_packing_is_per_layer() {
    for (model, attention) in [
        ("efficientvit-b1", "*context_module*"),
        ("deit-tiny", "*.attn.*"),
    ] {
        let g = graph(model);
        // Attention at 8 bits, everything else W4A4.
        let workload = mixed(&g, "w4a4", &[&format!("{attention}=w8a8")]);
        let envelope = AccelConfig::preset("trio-vit-zcu102").unwrap();
        let per_layer = edited("trio-vit-zcu102", |t| {
            t.replace(
                "bandwidth_gbps: 19.2,",
                "bandwidth_gbps: 19.2,\n    packing: PerLayer,",
            )
        });
        let uniform4 = cost(&mixed(&g, "w4a4", &[]), &envelope).unwrap();
        let uniform8 = cost(&mixed(&g, "w8a8", &[]), &envelope).unwrap();
        let fixed = cost(&workload, &envelope).unwrap();
        let scalable = cost(&workload, &per_layer).unwrap();
        // Built for the widest layer, the mixed design needs W8A8's DSPs and computes at its
        // speed (its 4-bit weights move fewer bytes).
        let compute = |r: &qvit_core::accel::CostReport| -> u64 {
            r.layers.iter().map(|l| l.compute_cycles).sum()
        };
        assert_eq!(fixed.envelope_bits, (8, 8), "{model}");
        assert_eq!(fixed.dsps, uniform8.dsps, "{model}");
        assert_eq!(compute(&fixed), compute(&uniform8), "{model}");
        assert!(fixed.bytes_moved < uniform8.bytes_moved, "{model}");
        // Smaller LUT multipliers need every product within 4 bits.
        assert!(uniform4.luts_as_lut_multipliers < uniform8.luts_as_lut_multipliers / 2);
        // Precision-scalable, the same DSPs run the W4A4 layers at four products each: faster
        // than W8A8, slower than the all-W4A4 design (which needs half the DSPs).
        assert_eq!(scalable.dsps, uniform8.dsps, "{model}");
        assert!(
            compute(&scalable) < compute(&fixed) && scalable.fps > fixed.fps,
            "{model}: {} vs {}",
            compute(&scalable),
            compute(&fixed)
        );
        // … but slower than all-W4A4 on those DSPs (twice the lanes), where attention packs too.
        let doubled = edited("trio-vit-zcu102", |t| t.replace("lanes: 8", "lanes: 16"));
        let all4 = cost(&mixed(&g, "w4a4", &[]), &doubled).unwrap();
        assert_eq!(all4.dsps, scalable.dsps, "{model}");
        assert!(compute(&scalable) > compute(&all4), "{model}");
        assert_eq!(uniform4.dsps * 2, uniform8.dsps, "{model}");
        // Uniform widths are unaffected by per-layer packing.
        assert_eq!(
            cost(&mixed(&g, "w4a4", &[]), &per_layer).unwrap().cycles,
            uniform4.cycles
        );
    }
}

#[test]
fn per_layer_packing_is_refused_by_the_published_model() {
    let base = include_str!("../../presets/accelerators/trio-vit-reference-16.ron");
    let err = AccelConfig::from_ron(
        &base.replace(
            "bandwidth_gbps: 19.2,",
            "bandwidth_gbps: 19.2,\n    packing: PerLayer,",
        ),
        "p.ron",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("packing") && err.contains("Corrected"),
        "{err}"
    );
}

#[test]
fn a_design_beyond_the_parts_luts_is_refused() {
    // 4,096 copies of one-multiplier engines: 8,192 W4A4 products fit 2,048 DSP48E2s, but each
    // engine's control (FINN's 300 LUTs) alone needs 2.5 million LUTs.
    let config = edited("trio-vit-zcu102", |t| {
        t.replace("copies: 8", "copies: 4096")
            .replace("mat: (pes: 16, lanes: 8)", "mat: (pes: 1, lanes: 1)")
            .replace("rmac: (pes: 16, lanes: 8)", "rmac: (pes: 1, lanes: 1)")
    });
    let err = cost(&mixed(&graph("efficientvit-b1"), "w4a4", &[]), &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LUTs") && err.contains("but the zcu102 has 274080"),
        "{err}"
    );
}
