//! The weights loader and the float executor on whole models: file errors, BatchNorm folding,
//! and results that do not depend on the thread count.

use qvit_core::arch::ArchSpec;
use qvit_core::exec::float::{FloatExecutor, GROUP_IMAGES, kept_spare_buffers};
use qvit_core::graph::Graph;
use qvit_core::rng::Rng;
use qvit_core::tensor::Tensor;
use qvit_core::weights::Weights;
use safetensors::{Dtype, tensor::TensorView};

fn graph(name: &str) -> Graph {
    Graph::build(&ArchSpec::preset(name).unwrap()).unwrap()
}

fn images(g: &Graph, batch: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let mut shape = vec![batch];
    shape.extend_from_slice(g.input_shape());
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.normal()).collect())
}

/// A safetensors file holding `weights`, with `edit` applied to each (name, dtype, shape, bytes).
fn file_with(
    weights: &Weights,
    edit: impl Fn(&str, &mut Dtype, &mut Vec<usize>, &mut Vec<u8>) -> bool,
) -> Vec<u8> {
    let mut entries = Vec::new();
    for name in weights.names() {
        let t = weights.get(name).unwrap();
        let mut dtype = Dtype::F32;
        let mut shape = t.shape.clone();
        let mut bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        if edit(name, &mut dtype, &mut shape, &mut bytes) {
            entries.push((name.to_string(), dtype, shape, bytes));
        }
    }
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load_error(g: &Graph, bytes: &[u8]) -> String {
    Weights::from_safetensors(bytes, "w.safetensors", g)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_saved_file_loads_back_exactly_with_any_checkpoint_prefix() {
    let g = graph("efficientvit-micro");
    let w = Weights::random(&g, 1);
    let back = Weights::from_safetensors(&w.to_safetensors().unwrap(), "w", &g).unwrap();
    for name in w.names() {
        assert_eq!(w.get(name), back.get(name), "{name}");
    }
    // Published checkpoints wrap the names, e.g. `state_dict.module.backbone…`.
    let st_bytes = w.to_safetensors().unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                format!("state_dict.module.{n}"),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let prefixed = safetensors::serialize(views, None).unwrap();
    let unwrapped = Weights::from_safetensors(&prefixed, "p", &g).unwrap();
    assert_eq!(unwrapped.len(), w.len());
    for name in w.names() {
        assert_eq!(w.get(name), unwrapped.get(name), "{name}");
    }
}

#[test]
fn half_precision_files_load() {
    let g = graph("deit-micro");
    let w = Weights::random(&g, 2);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let bytes = file_with(&w, |_, d, _, b| {
            let vals: Vec<f32> = b
                .chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            *d = dtype;
            *b = vals
                .iter()
                .flat_map(|&v| match dtype {
                    Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                    _ => half::bf16::from_f32(v).to_le_bytes(),
                })
                .collect();
            true
        });
        let back = Weights::from_safetensors(&bytes, "h", &g).unwrap();
        let a = w.get("blocks.0.attn.qkv.weight").unwrap();
        let b = back.get("blocks.0.attn.qkv.weight").unwrap();
        for (x, y) in a.data.iter().zip(&b.data) {
            assert!((x - y).abs() <= 0.01 * x.abs() + 1e-3);
        }
    }
}

#[test]
fn a_truncated_file_is_reported() {
    let g = graph("efficientvit-micro");
    let bytes = Weights::random(&g, 1).to_safetensors().unwrap();
    let err = load_error(&g, &bytes[..bytes.len() / 2]);
    assert!(err.starts_with("w.safetensors"), "{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn wrong_dtype_missing_and_misshaped_tensors_are_each_listed() {
    let g = graph("efficientvit-micro");
    let w = Weights::random(&g, 1);
    let qkv = "backbone.stages.2.op_list.1.context_module.main.qkv.conv.weight";
    let stem = "backbone.input_stem.op_list.0.conv.weight";
    let head = "head.op_list.3.linear.bias";
    let bytes = file_with(&w, |name, dtype, shape, b| {
        if name == qkv {
            *dtype = Dtype::I32;
        }
        if name == stem {
            shape.swap(0, 1);
        }
        if name == head {
            b.clear();
            return false;
        }
        true
    });
    let err = load_error(&g, &bytes);
    assert!(
        err.contains("do not fit model `efficientvit-micro`"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "tensor `{qkv}` has dtype I32, expected F32, F16 or BF16"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "tensor `{stem}` has shape [1, 16, 3, 3], expected [16, 1, 3, 3]"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("missing tensor `{head}` of shape [10]")),
        "{err}"
    );
}

#[test]
fn an_extra_tensor_is_reported() {
    let g = graph("deit-micro");
    let w = Weights::random(&g, 1);
    let other = graph("efficientvit-micro");
    let err = load_error(&other, &w.to_safetensors().unwrap());
    assert!(
        err.contains("unexpected tensor `blocks.0.attn.qkv.weight`"),
        "{err}"
    );
}

#[test]
fn folding_batch_norm_does_not_change_the_output() {
    let g = graph("efficientvit-micro");
    let w = Weights::random(&g, 3);
    let (folded, unfolded) = (w.fold(&g).unwrap(), w.unfolded(&g).unwrap());
    let x = images(&g, 4, 9);
    let a = FloatExecutor::new(&g, &folded)
        .unwrap()
        .forward(&x)
        .unwrap();
    let b = FloatExecutor::new(&g, &unfolded)
        .unwrap()
        .forward(&x)
        .unwrap();
    assert_eq!(a.shape, [4, 10]);
    for (x, y) in a.data.iter().zip(&b.data) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn results_are_identical_for_one_and_two_threads_and_any_batch_split() {
    for name in ["efficientvit-micro", "deit-micro"] {
        let g = graph(name);
        let folded = Weights::random(&g, 4).fold(&g).unwrap();
        let exec = FloatExecutor::new(&g, &folded).unwrap();
        let x = images(&g, 6, 11);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| exec.forward(&x).unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.data, two.data, "{name}: 1 vs 2 threads");
        // The same image alone gives the same logits as inside the batch.
        let single = Tensor::new(
            [&[1usize][..], g.input_shape()].concat(),
            x.item(5).to_vec(),
        );
        assert_eq!(
            exec.forward(&single).unwrap().data,
            one.item(5),
            "{name}: batch split"
        );
    }
}

#[test]
fn a_pass_stopped_anywhere_and_copied_finishes_with_the_same_logits() {
    let g = graph("efficientvit-micro");
    let folded = Weights::random(&g, 4).fold(&g).unwrap();
    let exec = FloatExecutor::new(&g, &folded).unwrap();
    let x = images(&g, 3, 5);
    let whole = exec.forward(&x).unwrap();
    let n = g.nodes().len();
    for stop in [0, 1, n / 3, n / 2, n - 1] {
        let mut pass = exec.start(&x).unwrap();
        let mut seen = Vec::new();
        exec.advance(&mut pass, stop, &mut |id, _| seen.push(id));
        assert_eq!(pass.next(), stop);
        let mut copy = pass.clone();
        let a = exec.finish(&mut pass, &mut |id, _| seen.push(id));
        let b = exec.finish(&mut copy, &mut |_, _| {});
        assert_eq!(a, whole, "stopped at node {stop}");
        assert_eq!(b, whole, "copy stopped at node {stop}");
        // Every node is run once, in order.
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }
}

/// `forward` runs a batch in groups of `GROUP_IMAGES` images, its convs applying the Hardswish
/// that follows them; the logits are those of one pass over the whole batch
/// (`forward_transformed` with nothing to transform, every node on its own), bit for bit, for a
/// batch that splits into whole groups and a last partial one, on both micro models and at full
/// size (DeiT-T and B1 @ 224, random weights). A pass stopped part-way and finished in groups
/// gives them too, with its convs applying their activations or not.
#[test]
fn a_batch_run_in_groups_of_images_gives_the_logits_of_one_pass() {
    for (name, batch) in [
        ("efficientvit-micro", 2 * GROUP_IMAGES + 3),
        ("deit-micro", 2 * GROUP_IMAGES + 3),
        ("deit-tiny", GROUP_IMAGES + 1),
        ("efficientvit-b1", GROUP_IMAGES + 1),
    ] {
        let g = Graph::build(&ArchSpec::resolve(name).unwrap()).unwrap();
        let folded = Weights::random(&g, 6).fold(&g).unwrap();
        let exec = FloatExecutor::new(&g, &folded).unwrap();
        let x = images(&g, batch, 12);
        let whole = exec.forward_transformed(&x, &mut |_, _| {}).unwrap();
        assert_eq!(exec.forward(&x).unwrap(), whole, "{name}");
        let mut grouped = exec.start_grouped(&x).unwrap();
        exec.advance_grouped(&mut grouped, g.nodes().len() / 2, &|_, _| {});
        let copy = grouped.clone();
        for mut pass in [grouped, copy] {
            assert_eq!(exec.finish_grouped(&mut pass, &|_, _| {}), whole, "{name}");
        }
        // With the convs applying the Hardswish they absorb, stopped half-way and just after
        // the first such conv (and its folded norm), before its activation's node.
        let absorbed = exec.seen_activated();
        let after_a_conv = absorbed
            .first()
            .map(|&c| [c + 1, c + 2])
            .unwrap_or_default();
        for stop in [g.nodes().len() / 2].into_iter().chain(after_a_conv) {
            let mut fused = exec.start_grouped_fused(&x).unwrap();
            exec.advance_grouped(&mut fused, stop, &|_, _| {});
            let logits = exec.finish_grouped(&mut fused, &|_, _| {});
            assert_eq!(logits, whole, "{name} fused, stopped at {stop}");
        }
        // The fused pass's transforms see the first such conv's value activated (Hardswish
        // is at least −3/8); the other pass's see it before.
        if let Some(&conv) = absorbed.first() {
            let least = |mut pass| {
                let least = std::sync::Mutex::new(f32::INFINITY);
                exec.finish_grouped(&mut pass, &|id, t| {
                    if id == conv {
                        let m = t.data.iter().copied().fold(f32::INFINITY, f32::min);
                        let mut least = least.lock().unwrap();
                        *least = least.min(m);
                    }
                });
                least.into_inner().unwrap()
            };
            assert!(
                least(exec.start_grouped_fused(&x).unwrap()) >= -0.375,
                "{name}"
            );
            assert!(least(exec.start_grouped(&x).unwrap()) < -0.375, "{name}");
        }
    }
}

/// `finish_grouped_while` hands over each group's logits in order, those of the whole pass bit
/// for bit, stops at the group it is told to stop at and leaves the pass as it was: on one
/// thread and two (rounds of one group and of two), for 3 whole groups and a partial one.
#[test]
fn a_pass_finished_while_told_gives_each_group_in_order_and_stops_when_told() {
    let g = graph("efficientvit-micro");
    let folded = Weights::random(&g, 4).fold(&g).unwrap();
    let exec = FloatExecutor::new(&g, &folded).unwrap();
    let x = images(&g, 3 * GROUP_IMAGES + 2, 7);
    let whole = exec.forward(&x).unwrap();
    let per_group = GROUP_IMAGES * whole.item_len();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut pass = exec.start_grouped(&x).unwrap();
            exec.advance_grouped(&mut pass, g.nodes().len() / 2, &|_, _| {});
            let mut seen = Vec::new();
            let all = exec.finish_grouped_while(&pass, &|_, _| {}, |logits| {
                seen.extend_from_slice(&logits.data);
                true
            });
            assert!(all);
            assert_eq!(seen, whole.data, "{threads} threads");
            for stop_at in 1..=4 {
                let mut groups = 0;
                let all = exec.finish_grouped_while(&pass, &|_, _| {}, |logits| {
                    let want = &whole.data[groups * per_group..][..logits.data.len()];
                    assert_eq!(logits.data, want, "group {groups}");
                    groups += 1;
                    groups < stop_at
                });
                assert_eq!((all, groups), (false, stop_at), "{threads} threads");
            }
            assert_eq!(exec.finish_grouped(&mut pass, &|_, _| {}), whole);
        });
    }
}

/// A thread keeps the spare buffers of its last whole pass for its next, and no more: their
/// count settles after the first two batches (the second finds the first's buffers cut to the
/// values they last held and may add one), and passes resumed from copies (the output-aware
/// search's candidates, each with copied values to free) leave it as it was.
#[test]
fn the_buffers_a_thread_keeps_between_passes_do_not_grow() {
    let g = graph("efficientvit-micro");
    let folded = Weights::random(&g, 4).fold(&g).unwrap();
    let exec = FloatExecutor::new(&g, &folded).unwrap();
    let x = images(&g, GROUP_IMAGES + 3, 5);
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    one_thread.install(|| {
        let whole = exec.forward(&x).unwrap();
        exec.forward(&x).unwrap();
        let settled = kept_spare_buffers();
        assert!(settled > 0, "a whole pass keeps its buffers");
        for _ in 0..3 {
            assert_eq!(exec.forward(&x).unwrap(), whole);
            assert_eq!(kept_spare_buffers(), settled, "after another batch");
        }
        let mut grouped = exec.start_grouped(&x).unwrap();
        exec.advance_grouped(&mut grouped, g.nodes().len() / 2, &|_, _| {});
        for _ in 0..3 {
            let mut copy = grouped.clone();
            assert_eq!(exec.finish_grouped(&mut copy, &|_, _| {}), whole);
        }
        assert_eq!(kept_spare_buffers(), settled, "after resumed passes");
    });
}

#[test]
fn a_wrongly_shaped_batch_is_an_error_naming_the_expected_shape() {
    let g = graph("efficientvit-micro");
    let folded = Weights::random(&g, 1).fold(&g).unwrap();
    let exec = FloatExecutor::new(&g, &folded).unwrap();
    let err = exec
        .forward(&Tensor::zeros(vec![2, 3, 28, 28]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected a batch of images [B, 1, 28, 28]"),
        "{err}"
    );
    // The same for a grouped pass, and for an empty batch.
    for batch in [
        Tensor::zeros(vec![2, 3, 28, 28]),
        Tensor::zeros(vec![0, 1, 28, 28]),
    ] {
        let err = exec.start_grouped(&batch).unwrap_err().to_string();
        assert!(err.contains("expected a batch of images"), "{err}");
    }
}
