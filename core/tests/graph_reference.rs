//! The model graphs against the published reference numbers: parameter counts, MACs, the B1
//! checkpoint's state-dict names and shapes, and per-layer MACs.

use qvit_core::arch::{ArchSpec, preset_names};
use qvit_core::graph::{Graph, Op};

fn graph(name: &str, resolution: usize) -> Graph {
    let spec = ArchSpec::preset(name)
        .unwrap()
        .with_resolution(resolution)
        .unwrap();
    Graph::build(&spec).unwrap()
}

#[test]
fn parameter_counts_match_the_official_models_exactly() {
    for (name, params) in [
        ("efficientvit-b0", 3_410_008),
        ("efficientvit-b1", 9_102_024),
        ("efficientvit-b2", 24_330_712),
        ("efficientvit-b3", 48_646_056),
        ("deit-tiny", 5_717_416),
        ("deit-small", 22_050_664),
        ("deit-base", 86_567_656),
    ] {
        assert_eq!(graph(name, 224).params(), params, "{name}");
    }
}

#[test]
fn parameter_counts_do_not_depend_on_efficientvit_resolution() {
    for r in [224, 256, 288, 320] {
        assert_eq!(graph("efficientvit-b1", r).params(), 9_102_024);
    }
}

#[test]
fn efficientvit_b1_macs_at_224_are_exact() {
    assert_eq!(graph("efficientvit-b1", 224).macs(), 519_214_592);
}

#[test]
fn efficientvit_macs_match_the_reference_totals_exactly() {
    // Reference §4.1: conv + matmul + linear MACs for one image.
    for (name, r, macs) in [
        ("efficientvit-b0", 224, 100_233_216),
        ("efficientvit-b0", 256, 130_123_776),
        ("efficientvit-b0", 288, 163_999_744),
        ("efficientvit-b1", 256, 676_915_712),
        ("efficientvit-b1", 288, 855_643_648),
        ("efficientvit-b2", 224, 1_584_937_984),
        ("efficientvit-b2", 256, 2_067_533_824),
        ("efficientvit-b2", 288, 2_614_475_776),
        ("efficientvit-b3", 224, 3_953_822_208),
        ("efficientvit-b3", 256, 5_161_586_688),
        ("efficientvit-b3", 288, 6_530_386_432),
    ] {
        assert_eq!(graph(name, r).macs(), macs, "{name}@{r}");
    }
}

#[test]
fn efficientvit_macs_round_to_the_readme_figures() {
    let giga = |name, r| {
        let g = graph(name, r).macs() as f64 / 1e9;
        if name == "efficientvit-b1" {
            (g * 100.0).round() / 100.0
        } else {
            (g * 10.0).round() / 10.0
        }
    };
    assert_eq!(
        [224, 256, 288].map(|r| giga("efficientvit-b1", r)),
        [0.52, 0.68, 0.86]
    );
    assert_eq!(
        [224, 256, 288].map(|r| giga("efficientvit-b2", r)),
        [1.6, 2.1, 2.6]
    );
    assert_eq!(
        [224, 256, 288].map(|r| giga("efficientvit-b3", r)),
        [4.0, 5.2, 6.5]
    );
}

#[test]
fn deit_macs_within_half_a_percent_of_the_reference() {
    for (name, reference) in [
        ("deit-tiny", 1.254e9),
        ("deit-small", 4.599e9),
        ("deit-base", 17.564e9),
    ] {
        let macs = graph(name, 224).macs() as f64;
        let error = (macs - reference).abs() / reference;
        assert!(error <= 0.005, "{name}: {macs} vs {reference}");
    }
    // And exactly, from the per-block counts of the reference.
    assert_eq!(graph("deit-tiny", 224).macs(), 1_253_683_200);
    assert_eq!(graph("deit-small", 224).macs(), 4_598_882_304);
    assert_eq!(graph("deit-base", 224).macs(), 17_563_828_224);
}

#[test]
fn efficientvit_b1_state_dict_equals_the_reference_list() {
    let reference: Vec<(String, Vec<usize>)> = include_str!("data/efficientvit-b1-state-dict.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, shape) = l.split_once(' ').unwrap();
            let dims = shape.trim_matches(['[', ']']);
            let shape = if dims.is_empty() {
                Vec::new()
            } else {
                dims.split(',').map(|d| d.parse().unwrap()).collect()
            };
            (name.to_string(), shape)
        })
        .collect();
    assert_eq!(reference.len(), 272);
    let ours: Vec<(String, Vec<usize>)> = graph("efficientvit-b1", 224)
        .state_dict()
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(a, b, "entry {i}");
    }
    assert_eq!(ours.len(), reference.len());
}

#[test]
fn state_dict_entry_counts_match_the_reference() {
    for (name, entries) in [
        ("efficientvit-b0", 197),
        ("efficientvit-b1", 272),
        ("efficientvit-b2", 365),
        ("efficientvit-b3", 514),
        ("deit-tiny", 152),
        ("deit-small", 152),
        ("deit-base", 152),
    ] {
        assert_eq!(graph(name, 224).state_dict().len(), entries, "{name}");
    }
}

#[test]
fn deit_state_dict_follows_timm_order() {
    let names: Vec<String> = graph("deit-tiny", 224)
        .state_dict()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        &names[..6],
        [
            "cls_token",
            "pos_embed",
            "patch_embed.proj.weight",
            "patch_embed.proj.bias",
            "blocks.0.norm1.weight",
            "blocks.0.norm1.bias"
        ]
    );
    assert_eq!(
        &names[names.len() - 4..],
        ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    );
    let pos = graph("deit-tiny", 224)
        .state_dict()
        .into_iter()
        .find(|p| p.name == "pos_embed")
        .unwrap();
    assert_eq!(pos.shape, [1, 197, 192]);
}

#[test]
fn efficientvit_b1_per_layer_macs_equal_the_reference_table() {
    let g = graph("efficientvit-b1", 224);
    let ours: Vec<(String, String, u64)> = g
        .nodes()
        .iter()
        .filter(|n| n.macs > 0)
        .map(|n| (n.name.clone(), n.op.category(), n.macs))
        .collect();
    let reference: Vec<(String, String, u64)> = include_str!("data/efficientvit-b1-224-macs.tsv")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            let name = cells[0]
                .replace("(matmul v_pad@k^T)", ".kv_matmul")
                .replace("(matmul vk@q)", ".q_matmul");
            (name, cells[1].to_string(), cells[2].parse().unwrap())
        })
        .collect();
    assert_eq!(ours, reference);
}

#[test]
fn efficientvit_b1_totals_by_op_type_and_stage() {
    let s = graph("efficientvit-b1", 224).summary();
    let by_type = |name: &str| s.by_op_type.iter().find(|g| g.name == name).unwrap().macs;
    assert_eq!(by_type("conv1x1"), 468_844_544);
    assert_eq!(by_type("dwconv3x3"), 16_934_400);
    assert_eq!(by_type("dwconv5x5"), 9_408_000);
    assert_eq!(by_type("matmul"), 8_529_920);
    assert_eq!(by_type("groupconv1x1"), 6_021_120);
    assert_eq!(by_type("conv3x3"), 5_419_008);
    assert_eq!(by_type("linear"), 4_057_600);
    let by_stage: Vec<(&str, u64)> = s
        .by_stage
        .iter()
        .filter(|g| g.macs > 0)
        .map(|g| (g.name.as_str(), g.macs))
        .collect();
    assert_eq!(
        by_stage,
        [
            ("stem", 10_436_608),
            ("stage1", 50_376_704),
            ("stage2", 75_163_648),
            ("stage3", 162_043_392),
            ("stage4", 197_869_056),
            ("head", 23_325_184),
        ]
    );
    let share: f64 = s.by_stage.iter().map(|g| g.mac_share).sum();
    assert!((share - 100.0).abs() < 1e-9);
}

#[test]
fn every_preset_builds_and_ends_in_its_logits() {
    for name in preset_names() {
        let spec = ArchSpec::preset(name).unwrap();
        let g = Graph::build(&spec).unwrap();
        assert_eq!(g.node(g.output()).shape, [spec.num_classes()], "{name}");
        for (id, node) in g.nodes().iter().enumerate() {
            assert!(
                node.inputs.iter().all(|&i| i < id),
                "{name}: {} reads ahead",
                node.name
            );
        }
    }
}

#[test]
fn micro_models_have_attention_stages_of_at_least_16_tokens() {
    let evit = graph("efficientvit-micro", 28);
    let tokens: Vec<usize> = evit
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::LinearAttentionQuery { .. }))
        .map(|n| n.shape[2])
        .collect();
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|&n| n >= 16), "{tokens:?}");
    assert_eq!(evit.input_shape(), [1, 28, 28]);
    let deit = graph("deit-micro", 28);
    let attn = deit
        .nodes()
        .iter()
        .find(|n| matches!(n.op, Op::AttentionScores { .. }))
        .unwrap();
    assert_eq!(attn.shape[1], 50);
    // Both fit comfortably under the 5 MB shipped-weights budget in f32.
    assert!(evit.params() * 4 < 5_000_000 && deit.params() * 4 < 5_000_000);
}

#[test]
fn every_batch_norm_of_efficientvit_folds_into_its_conv() {
    let g = graph("efficientvit-b1", 224);
    let norms = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNorm2d { .. }))
        .count();
    let pairs = g.foldable_batch_norms();
    assert_eq!(norms, 35);
    assert_eq!(pairs.len(), norms);
    for (conv, bn) in pairs {
        assert_eq!(g.node(bn).name.replace(".norm", ".conv"), g.node(conv).name);
    }
}
