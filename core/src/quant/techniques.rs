//! The weight-side half of the techniques that move work between an activation and the layer
//! that reads it. The fake-quant executor applies them implicitly (it keeps tensors in their
//! original domain); the integer executor and hardware need them explicitly, and the tests
//! prove each leaves the float layer's output unchanged.

use crate::graph::Conv2d;

/// Trio-ViT channel-wise migration: depthwise weights `[C, 1, k, k]` times `s_c` per channel,
/// to be read with the input divided by `s_c`.
pub fn migrate_depthwise(weight: &[f32], s: &[f32]) -> Vec<f32> {
    let per = weight.len() / s.len();
    weight
        .iter()
        .enumerate()
        .map(|(e, &w)| w * s[e / per])
        .collect()
}

/// Trio-ViT filter-wise shifting: the bias of a conv whose input had `z_i` subtracted from
/// channel `i`: `b̂_j = b_j + Σ_i z_i·Σ_(kh,kw) W[j,i,kh,kw]` (exact for 1×1 convs and away from
/// padded borders for larger kernels; the projection is 1×1).
pub fn shifted_bias(conv: &Conv2d, weight: &[f32], bias: &[f32], z: &[f32]) -> Vec<f32> {
    let in_per_group = conv.in_channels / conv.groups;
    let out_per_group = conv.out_channels / conv.groups;
    let taps = conv.kernel * conv.kernel;
    (0..conv.out_channels)
        .map(|j| {
            let g = j / out_per_group;
            let mut acc = bias[j] as f64;
            for ci in 0..in_per_group {
                let i = g * in_per_group + ci;
                let base = (j * in_per_group + ci) * taps;
                let sum: f64 = weight[base..base + taps].iter().map(|&w| w as f64).sum();
                acc += z[i] as f64 * sum;
            }
            acc as f32
        })
        .collect()
}

/// RepQ-ViT's reparameterisation of a LayerNorm followed by a linear layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reparameterised {
    pub norm_weight: Vec<f32>,
    pub norm_bias: Vec<f32>,
    /// `[out, in]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// The one scale and zero-point the LayerNorm output now takes.
    pub scale: f32,
    pub zero_point: f32,
}

/// Folds per-channel activation quantizers `(s_c, z_c)` of a LayerNorm's output into per-tensor
/// `(s̃, z̃) = (mean s, ⌊mean z⌉)`: with `r1 = s/s̃` and `r2 = z − z̃`, the LayerNorm affine becomes
/// `γ/r1`, `(β + s⊙r2)/r1`, the next weights `W[j,c]·r1_c` and the bias `b_j − Σ_c W[j,c]·s_c·r2_c`.
/// The float output of LayerNorm → linear is unchanged, and per-tensor quantization of the new
/// LayerNorm output equals per-channel quantization of the old one.
pub fn repq_reparameterise(
    norm_weight: &[f32],
    norm_bias: &[f32],
    weight: &[f32],
    bias: &[f32],
    scale: &[f32],
    zero_point: &[f32],
) -> Reparameterised {
    let d = scale.len();
    let s_t = scale.iter().map(|&s| s as f64).sum::<f64>() / d as f64;
    let z_t = (zero_point.iter().map(|&z| z as f64).sum::<f64>() / d as f64 + 0.5).floor();
    let r1: Vec<f64> = scale.iter().map(|&s| s as f64 / s_t).collect();
    let r2: Vec<f64> = zero_point.iter().map(|&z| z as f64 - z_t).collect();
    let out = weight.len() / d;
    Reparameterised {
        norm_weight: (0..d)
            .map(|c| (norm_weight[c] as f64 / r1[c]) as f32)
            .collect(),
        norm_bias: (0..d)
            .map(|c| ((norm_bias[c] as f64 + scale[c] as f64 * r2[c]) / r1[c]) as f32)
            .collect(),
        weight: weight
            .iter()
            .enumerate()
            .map(|(e, &w)| (w as f64 * r1[e % d]) as f32)
            .collect(),
        bias: (0..out)
            .map(|j| {
                let shift: f64 = (0..d)
                    .map(|c| weight[j * d + c] as f64 * scale[c] as f64 * r2[c])
                    .sum();
                (bias[j] as f64 - shift) as f32
            })
            .collect(),
        scale: s_t as f32,
        zero_point: z_t as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantizer::Uniform;
    use crate::rng::Rng;

    fn random(n: usize, rng: &mut Rng, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.normal() * scale).collect()
    }

    fn depthwise3x3(x: &[f32], w: &[f32], c: usize, side: usize) -> Vec<f32> {
        let mut out = vec![0.0; c * side * side];
        for ch in 0..c {
            for y in 0..side {
                for xx in 0..side {
                    let mut acc = 0.0;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) =
                                (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < side && (ix as usize) < side {
                                acc += x[(ch * side + iy as usize) * side + ix as usize]
                                    * w[ch * 9 + ky * 3 + kx];
                            }
                        }
                    }
                    out[(ch * side + y) * side + xx] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn migration_leaves_the_depthwise_output_unchanged() {
        let mut rng = Rng::new(1);
        let (c, side) = (6, 5);
        let x = random(c * side * side, &mut rng, 3.0);
        let w = random(c * 9, &mut rng, 0.5);
        let s: Vec<f32> = (0..c).map(|i| 0.1 + i as f32 * 7.0).collect();
        let migrated_x: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v / s[i / (side * side)])
            .collect();
        let a = depthwise3x3(&x, &w, c, side);
        let b = depthwise3x3(&migrated_x, &migrate_depthwise(&w, &s), c, side);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{p} vs {q}");
        }
    }

    #[test]
    fn shifting_compensates_the_bias_exactly() {
        let mut rng = Rng::new(2);
        let conv = Conv2d::same(8, 4, 1, 1);
        let w = random(4 * 8, &mut rng, 1.0);
        let b = random(4, &mut rng, 1.0);
        let z = random(8, &mut rng, 2.0);
        let x = random(8, &mut rng, 2.0);
        let b_hat = shifted_bias(&conv, &w, &b, &z);
        for j in 0..4 {
            let direct: f64 =
                b[j] as f64 + (0..8).map(|i| (w[j * 8 + i] * x[i]) as f64).sum::<f64>();
            let shifted: f64 = b_hat[j] as f64
                + (0..8)
                    .map(|i| (w[j * 8 + i] * (x[i] - z[i])) as f64)
                    .sum::<f64>();
            assert!((direct - shifted).abs() < 1e-5, "{direct} vs {shifted}");
        }
    }

    fn layer_norm_linear(
        x: &[f32],
        g: &[f32],
        be: &[f32],
        w: &[f32],
        b: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let d = x.len();
        let mean = x.iter().sum::<f32>() / d as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let y: Vec<f32> = (0..d)
            .map(|c| (x[c] - mean) / (var + 1e-6).sqrt() * g[c] + be[c])
            .collect();
        let out = (0..b.len())
            .map(|j| b[j] + (0..d).map(|c| w[j * d + c] * y[c]).sum::<f32>())
            .collect();
        (y, out)
    }

    #[test]
    fn repq_reparameterisation_keeps_float_outputs_and_quantization() {
        let mut rng = Rng::new(3);
        let (d, out) = (16, 5);
        let g: Vec<f32> = (0..d).map(|c| 0.2 + c as f32 * 0.5).collect();
        let be = random(d, &mut rng, 1.0);
        let w = random(out * d, &mut rng, 0.3);
        let b = random(out, &mut rng, 0.3);
        // Per-channel 8-bit quantizers sized to each channel's range.
        let scale: Vec<f32> = g.iter().map(|gc| 6.0 * gc / 255.0).collect();
        let zero: Vec<f32> = (0..d).map(|c| 100.0 + c as f32).collect();
        let r = repq_reparameterise(&g, &be, &w, &b, &scale, &zero);
        let x = random(d, &mut rng, 1.0);
        let (y, before) = layer_norm_linear(&x, &g, &be, &w, &b);
        let (y_t, after) = layer_norm_linear(&x, &r.norm_weight, &r.norm_bias, &r.weight, &r.bias);
        for (p, q) in before.iter().zip(&after) {
            assert!((p - q).abs() < 1e-4, "float outputs differ: {p} vs {q}");
        }
        // Per-tensor quantization of the new output = per-channel quantization of the old.
        let per_channel = Uniform {
            bits: 8,
            symmetric: false,
            scale: scale.clone(),
            zero_point: zero.clone(),
            group: 1,
        };
        let per_tensor = Uniform {
            bits: 8,
            symmetric: false,
            scale: vec![r.scale],
            zero_point: vec![r.zero_point],
            group: 1,
        };
        let q_old: Vec<f32> = (0..d).map(|c| per_channel.code(y[c], c)).collect();
        let q_new: Vec<f32> = (0..d).map(|c| per_tensor.code(y_t[c], 0)).collect();
        let same = q_old.iter().zip(&q_new).filter(|(a, b)| a == b).count();
        assert!(same >= d - 1, "codes differ: {q_old:?} vs {q_new:?}");
    }
}
