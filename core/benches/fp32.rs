//! fp32 kernels on one core, on layer-sized shapes: the depthwise conv, GELU, Softmax's
//! exponentials, the 1×1 convs' products and fake-quant's lanes (uniform and log); and the CPU's
//! measured fp32 peaks (register-only FMAs in 8 and 16 lanes), to read against the int8 peaks of
//! the `int8` bench. `cargo bench -p qvit-core --bench fp32`; figures in BENCHMARKS.md.

use qvit_core::exec::float::depthwise::depthwise;
use qvit_core::exec::float::product::Activation;
use qvit_core::exec::float::{exp_shifted, gelu, gelu_in_place};
use qvit_core::exec::peak::{peak_loop_avx512, peak_loop_fma};
use qvit_core::graph::Conv2d;
use qvit_core::quant::Rounding;
use qvit_core::quant::log_codes::Coder;
use qvit_core::quant::quantizer::Log;
use qvit_core::quant::uniform_lanes::{
    Grid, Param, Params, Reciprocals, code_bound, fake_channels, fake_slice, reciprocals,
};
use qvit_core::rng::Rng;

mod common;
use common::DW_SHAPES;

fn main() {
    divan::main();
}

/// 10,000 rounds of 12 8-lane FMAs: 960,000 MACs (1.92 M flops) per iteration — the fp32 peak
/// of an AVX2 machine.
#[divan::bench]
fn peak_fma(bencher: divan::Bencher) {
    if peak_loop_fma(1).is_none() {
        return;
    }
    bencher
        .counter(divan::counter::ItemsCount::new(2 * 10_000 * 12 * 8usize))
        .bench_local(|| peak_loop_fma(divan::black_box(10_000)));
}

/// 10,000 rounds of 12 16-lane FMAs: 1.92 M MACs per iteration — the fp32 peak with AVX-512,
/// which the `gemm` crate's kernels use where the CPU has it.
#[divan::bench]
fn peak_fma_avx512(bencher: divan::Bencher) {
    if peak_loop_avx512(1).is_none() {
        return;
    }
    bencher
        .counter(divan::counter::ItemsCount::new(2 * 10_000 * 12 * 16usize))
        .bench_local(|| peak_loop_avx512(divan::black_box(10_000)));
}

/// The conv followed by the Hardswish, as EfficientViT's depthwise convs are.
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
        .bench_local(|| {
            let (params, act) = ((&w[..], &bias[..]), Activation::Hardswish);
            depthwise(&conv, &x, (side, side), params, act, &mut out, (o, o))
        });
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

/// Softmax's exponentials on one DeiT-T head's scores, 197 rows of 197, normal with a spread
/// of 3 or of 30 (a sixth of whose scores lie more than 110 below their row's maximum), each row
/// less its maximum: [`exp_shifted`] (`LANES`) and `f32::exp`, which it equals.
#[divan::bench(args = [3.0, 30.0], consts = [true, false])]
fn exp_deit_tiny_scores<const LANES: bool>(bencher: divan::Bencher, spread: f32) {
    const TOKENS: usize = 197;
    let mut rng = Rng::new(4);
    let x: Vec<f32> = (0..TOKENS * TOKENS)
        .map(|_| spread * rng.normal())
        .collect();
    let maxima: Vec<f32> = x
        .chunks(TOKENS)
        .map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let mut y = vec![0.0; x.len()];
    bencher
        .counter(divan::counter::ItemsCount::new(x.len()))
        .bench_local(|| {
            let rows = x.chunks(TOKENS).zip(y.chunks_mut(TOKENS)).zip(&maxima);
            for ((row, out), &max) in rows {
                if LANES {
                    exp_shifted(row, max, out);
                } else {
                    out.iter_mut()
                        .zip(row)
                        .for_each(|(o, &v)| *o = (v - max).exp());
                }
            }
        });
}

/// RepQ-ViT's log√2 fake-quant (8 bits, zero code, `Δ` the largest probability) of one
/// DeiT-T head's 197×197 attention probabilities, from scores `spread·N(0, 1)`: the lanes
/// against [`Log::fake_with`] per element.
#[divan::bench(args = [3.0, 30.0], consts = [true, false])]
fn fake_log_deit_tiny_probs<const LANES: bool>(bencher: divan::Bencher, spread: f32) {
    const TOKENS: usize = 197;
    let mut rng = Rng::new(5);
    let mut probs: Vec<f32> = (0..TOKENS * TOKENS)
        .map(|_| spread * rng.normal())
        .collect();
    for row in probs.chunks_mut(TOKENS) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
    let log = Log {
        bits: 8,
        root: 2,
        scale: probs.iter().copied().fold(0.0, f32::max),
        zero_code: true,
    };
    let coder = Coder::new(2, Rounding::HalfUp);
    let mut y = probs.clone();
    bencher
        .counter(divan::counter::ItemsCount::new(probs.len()))
        .bench_local(|| {
            y.copy_from_slice(&probs);
            if LANES {
                log.fake_slice(&coder, &mut y);
            } else {
                y.iter_mut().for_each(|v| *v = log.fake_with(&coder, *v));
            }
        });
}

/// EfficientViT-B1 @ 224's activation maps (channels, values per channel): the MBConvs'
/// expanded maps at 112², 56², 28², 14² and 7².
const FAKE_QUANT_MAPS: [(usize, usize); 5] = [
    (64, 112 * 112),
    (128, 56 * 56),
    (256, 28 * 28),
    (512, 14 * 14),
    (1024, 7 * 7),
];

/// Trio-ViT's fake-quant of one such map, per-channel migration factors and shifts and 8-bit
/// per-channel scales, with the reciprocals prepared points keep: [`fake_channels`] over the
/// whole map, against [`fake_slice`] called for each channel's run. The map is quantized in
/// place again and again (its values stay on the grid, each quantized as any other value).
#[divan::bench(args = FAKE_QUANT_MAPS, consts = [true, false])]
fn fake_quant_channels<const ONE_CALL: bool>(bencher: divan::Bencher, shape: (usize, usize)) {
    let (channels, inner) = shape;
    let mut rng = Rng::new(11);
    let mut x: Vec<f32> = (0..channels * inner).map(|_| 2.0 * rng.normal()).collect();
    let per_channel = |rng: &mut Rng, lo, hi| -> Vec<f32> {
        (0..channels).map(|_| rng.uniform(lo, hi)).collect()
    };
    let (scale, m, h) = (
        per_channel(&mut rng, 0.01, 0.05),
        per_channel(&mut rng, 0.5, 2.0),
        per_channel(&mut rng, -0.5, 0.5),
    );
    let zero = vec![0.0; channels];
    let grid = Grid {
        qmin: -128.0,
        qmax: 127.0,
        rounding: Rounding::HalfUp,
    };
    let (inverse, inverse_m) = (reciprocals(&scale).unwrap(), reciprocals(&m).unwrap());
    let p = Params {
        scale: Param::Each(&scale),
        zero: Param::Each(&zero),
        migration: Some((Param::Each(&m), Param::Each(&h))),
        reciprocals: Some(Reciprocals {
            scale: Param::Each(&inverse),
            migration: Some(Param::Each(&inverse_m)),
            bound: code_bound(&grid, &zero).unwrap(),
        }),
    };
    bencher
        .counter(divan::counter::ItemsCount::new(x.len()))
        .bench_local(|| {
            if ONE_CALL {
                fake_channels(&mut x, inner, &p, &grid);
                return;
            }
            for (c, run) in x.chunks_exact_mut(inner).enumerate() {
                let one = Params {
                    scale: Param::One(scale[c]),
                    zero: Param::One(0.0),
                    migration: Some((Param::One(m[c]), Param::One(h[c]))),
                    reciprocals: Some(Reciprocals {
                        scale: Param::One(inverse[c]),
                        migration: Some(Param::One(inverse_m[c])),
                        ..p.reciprocals.unwrap()
                    }),
                };
                fake_slice(run, &one, &grid);
            }
        });
}

/// EfficientViT-B1 @ 224's 1×1 convs (output channels, input channels, map side), one image.
const POINTWISE_SHAPES: [(usize, usize, usize); 8] = [
    (16, 16, 112),
    (64, 16, 112),
    (128, 32, 56),
    (32, 128, 56),
    (256, 64, 28),
    (512, 128, 14),
    (128, 512, 14),
    (1024, 256, 7),
];

/// A 1×1 conv's product with its bias: the `gemm` crate's kernels then a bias pass, or the
/// tiles of `exec::float::product` (weights packed beforehand, as a layer keeps them).
#[divan::bench(args = POINTWISE_SHAPES, consts = [false, true])]
fn pointwise_f32<const TILES: bool>(bencher: divan::Bencher, shape: (usize, usize, usize)) {
    use qvit_core::exec::float::product;
    use qvit_core::exec::matmul::{MatMut, MatRef, matmul};
    let (m, k, side) = shape;
    let n = side * side;
    if TILES && !product::available() {
        return;
    }
    let mut rng = Rng::new(4);
    let w: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
    let x: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
    let bias: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
    let panels = product::panels(&w, m, k);
    let mut out = vec![0.0; m * n];
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * k * n))
        .bench_local(|| {
            if TILES {
                product::product(&mut out, &panels, &x, k, &bias, product::Activation::None);
            } else {
                matmul(
                    MatMut::row_major(&mut out, m, n),
                    MatRef::row_major(&w, m, k),
                    MatRef::row_major(&x, k, n),
                    false,
                );
                for (row, b) in out.chunks_mut(n).zip(&bias) {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
        });
}

/// EfficientViT-B1 @ 224's 1×1 convs on its 7×7 and 14×14 maps (output channels, input
/// channels, map side), for eight images: each image's product on its own, or the images'
/// columns side by side as one product (`exec::float::product::product_images`, which the fp32
/// executor runs on a batch's maps of at most `kernels::STACKED_PLANE` pixels).
const STACKED_SHAPES: [(usize, usize, usize); 4] = [
    (1024, 256, 7),
    (256, 1024, 7),
    (512, 128, 14),
    (128, 512, 14),
];

#[divan::bench(args = STACKED_SHAPES, consts = [false, true])]
fn pointwise_images_f32<const STACKED: bool>(
    bencher: divan::Bencher,
    shape: (usize, usize, usize),
) {
    use qvit_core::exec::float::product::{self, Activation};
    const IMAGES: usize = 8;
    let (m, k, side) = shape;
    let n = side * side;
    if !product::available() {
        return;
    }
    let mut rng = Rng::new(5);
    let w: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
    let x: Vec<f32> = (0..IMAGES * k * n).map(|_| rng.normal()).collect();
    let bias: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
    let panels = product::panels(&w, m, k);
    let xs: Vec<&[f32]> = x.chunks_exact(k * n).collect();
    let mut out = vec![0.0; IMAGES * m * n];
    bencher
        .counter(divan::counter::ItemsCount::new(2 * IMAGES * m * k * n))
        .bench_local(|| {
            let mut outs: Vec<&mut [f32]> = out.chunks_exact_mut(m * n).collect();
            if STACKED {
                product::product_images(&mut outs, &panels, &xs, k, &bias, Activation::None);
            } else {
                for (o, x) in outs.iter_mut().zip(&xs) {
                    product::product(o, &panels, x, k, &bias, Activation::None);
                }
            }
        });
}
