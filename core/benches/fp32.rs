//! fp32 kernels on one core, on layer-sized shapes: the depthwise conv and GELU.
//! `cargo bench -p qvit-core --bench fp32`; figures in BENCHMARKS.md.

use qvit_core::exec::float::depthwise::depthwise;
use qvit_core::exec::float::{gelu, gelu_in_place};
use qvit_core::graph::Conv2d;
use qvit_core::rng::Rng;

fn main() {
    divan::main();
}

/// (channels, input side, kernel, stride): EfficientViT-B1 @ 224's depthwise convs, as in the
/// int8 bench — the stem's 3×3 on 112×112, a stride-2 MBConv, stage-1/2/4 MBConvs, and the 5×5
/// aggregation of stage 4's q, k, v.
const DW_SHAPES: [(usize, usize, usize, usize); 6] = [
    (16, 112, 3, 1),
    (64, 112, 3, 2),
    (128, 56, 3, 1),
    (256, 28, 3, 1),
    (1024, 7, 3, 1),
    (768, 7, 5, 1),
];

#[divan::bench(args = DW_SHAPES)]
fn depthwise_f32(bencher: divan::Bencher, shape: (usize, usize, usize, usize)) {
    let (channels, side, kernel, stride) = shape;
    let conv = Conv2d::depthwise(channels, kernel, stride);
    let o = (side + 2 * conv.padding - kernel) / stride + 1;
    let mut rng = Rng::new(2);
    let x: Vec<f32> = (0..channels * side * side).map(|_| rng.normal()).collect();
    let w: Vec<f32> = (0..channels * kernel * kernel)
        .map(|_| rng.normal())
        .collect();
    let bias: Vec<f32> = (0..channels).map(|_| rng.normal()).collect();
    let mut out = vec![0.0; channels * o * o];
    bencher
        .counter(divan::counter::ItemsCount::new(
            2 * channels * o * o * kernel * kernel,
        ))
        .bench_local(|| depthwise(&conv, &x, (side, side), &w, &bias, &mut out, (o, o)));
}

/// DeiT-T's fc1 output for one image (197 tokens × 768), unit normal: [`gelu_in_place`] and
/// the per-element definition it equals.
#[divan::bench(args = ["lanes", "per element"])]
fn gelu_deit_tiny_fc1(bencher: divan::Bencher, how: &str) {
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..197 * 768).map(|_| rng.normal()).collect();
    let mut y = x.clone();
    bencher
        .counter(divan::counter::ItemsCount::new(x.len()))
        .bench_local(|| {
            y.copy_from_slice(&x);
            if how == "lanes" {
                gelu_in_place(&mut y);
            } else {
                y.iter_mut().for_each(|v| *v = gelu(*v));
            }
        });
}
