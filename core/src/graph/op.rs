//! The typed operations of a model graph.
//!
//! Tensors are described per image, without a batch axis: feature maps are `[C, H, W]`, token
//! sequences `[N, D]`, pooled features `[D]`. Each op knows how to infer its output shape, how many
//! multiply-accumulates it performs and which parameter tensors it owns, under the names and
//! shapes of the official PyTorch modules.

use serde::{Deserialize, Serialize};

/// A 2-D convolution (`nn.Conv2d`), weight `[out, in/groups, k, k]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv2d {
    /// A k×k conv with the official "same" padding `k/2`.
    pub fn same(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
            groups: 1,
            bias: false,
        }
    }

    /// A depthwise k×k conv (one group per channel).
    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            groups: channels,
            ..Self::same(channels, channels, kernel, stride)
        }
    }

    pub fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    pub fn with_bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }

    /// True when every output channel reads exactly one input channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// Output side for an input side, as PyTorch computes it.
    pub fn output_side(&self, input: usize) -> Option<usize> {
        (input + 2 * self.padding)
            .checked_sub(self.kernel)
            .map(|span| span / self.stride + 1)
    }

    fn weight_shape(&self) -> Vec<usize> {
        vec![
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel,
            self.kernel,
        ]
    }
}

/// A fully connected layer (`nn.Linear`), weight `[out, in]`, applied to the last axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

/// One operation of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The image, `[C, H, W]`.
    Input,
    Conv2d(Conv2d),
    /// Inference-mode BatchNorm over the channel axis; folds into the conv before it.
    BatchNorm2d {
        channels: usize,
        eps: f64,
    },
    Linear(Linear),
    /// LayerNorm over the last axis, with affine weight and bias.
    LayerNorm {
        dim: usize,
        eps: f64,
    },
    /// `x · relu6(x + 3) / 6`.
    Hardswish,
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// Softmax over the last axis.
    Softmax,
    /// Element-wise sum of two tensors of one shape (residual connections).
    Add,
    /// Concatenation along the first (channel) axis.
    Concat,
    /// Mean over the spatial axes: `[C, H, W]` → `[C]`.
    GlobalAvgPool,
    /// Non-overlapping patch conv, flattened to tokens: `[C, H, W]` → `[H/p · W/p, D]`.
    PatchEmbed(Conv2d),
    /// Prepends the learned class token and adds the learned position table: `[N, D]` → `[N+1, D]`.
    ClassTokenPosEmbed {
        dim: usize,
        tokens: usize,
    },
    /// Takes the class token: `[N, D]` → `[D]`.
    TakeClassToken,
    /// Softmax attention logits per head, `q·kᵀ·scale`, from the fused qkv tensor `[N, 3D]` whose
    /// columns are `[q | k | v]`, head `h` at columns `h·d..(h+1)·d` of each: → `[heads, N, N]`.
    AttentionScores {
        heads: usize,
        head_dim: usize,
        scale: f64,
    },
    /// Attention probabilities times values: inputs `([heads, N, N], qkv [N, 3D])` → `[N, D]`.
    AttentionMix {
        heads: usize,
        head_dim: usize,
    },
    /// ReLU linear attention, step 1: per head `[v; 1] · relu(k)ᵀ` from the multi-scale tensor
    /// `[heads·3d, H, W]` (per head: d channels of q, then k, then v) → `[heads, d+1, d]`. Row `d`
    /// is `Σ_m relu(k_m)`, the normaliser's ingredient.
    LinearAttentionContext {
        heads: usize,
        head_dim: usize,
    },
    /// ReLU linear attention, step 2: `context · relu(q)`; inputs (multi-scale tensor, context)
    /// → `[heads, d+1, N]`: rows `0..d` are the dividends, row `d` the divisor.
    LinearAttentionQuery {
        heads: usize,
        head_dim: usize,
    },
    /// ReLU linear attention, step 3: dividends / (divisor + eps), laid out as channels
    /// `head·d + c`: `[heads, d+1, H·W]` → `[heads·d, H, W]`.
    LinearAttentionNormalize {
        heads: usize,
        head_dim: usize,
        height: usize,
        width: usize,
        eps: f64,
    },
}

/// What a parameter tensor is, so later stages can treat each kind right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParamRole {
    Weight,
    Bias,
    NormWeight,
    NormBias,
    RunningMean,
    RunningVar,
    NumBatchesTracked,
    ClassToken,
    PosEmbed,
}

impl ParamRole {
    /// Learned parameters, as opposed to BatchNorm's running statistics and counter.
    pub fn is_learnable(self) -> bool {
        !matches!(
            self,
            ParamRole::RunningMean | ParamRole::RunningVar | ParamRole::NumBatchesTracked
        )
    }
}

/// One parameter tensor in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Full state-dict name, e.g. `backbone.stages.0.op_list.0.main.inverted_conv.conv.weight`.
    pub name: String,
    /// Shape as PyTorch stores it (`[]` for scalars).
    pub shape: Vec<usize>,
    pub role: ParamRole,
}

impl ParamSpec {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

fn dims(shape: &[usize]) -> String {
    if shape.is_empty() {
        "scalar".to_string()
    } else {
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    }
}

impl Op {
    /// Short lower-case name of the operation.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d(_) => "conv2d",
            Op::BatchNorm2d { .. } => "batch_norm",
            Op::Linear(_) => "linear",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Hardswish => "hardswish",
            Op::Relu => "relu",
            Op::Gelu => "gelu",
            Op::Softmax => "softmax",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::GlobalAvgPool => "avg_pool",
            Op::PatchEmbed(_) => "patch_embed",
            Op::ClassTokenPosEmbed { .. } => "cls_pos_embed",
            Op::TakeClassToken => "take_cls_token",
            Op::AttentionScores { .. } => "attn_scores",
            Op::AttentionMix { .. } => "attn_mix",
            Op::LinearAttentionContext { .. } => "linear_attn_context",
            Op::LinearAttentionQuery { .. } => "linear_attn_query",
            Op::LinearAttentionNormalize { .. } => "linear_attn_normalize",
        }
    }

    /// The op-type bucket used in totals: convs by kernel and grouping (`conv1x1`, `dwconv3x3`,
    /// `groupconv1x1`, …), `matmul` for attention products, otherwise [`Op::kind`].
    pub fn category(&self) -> String {
        match self {
            Op::Conv2d(c) => {
                let k = c.kernel;
                if c.is_depthwise() {
                    format!("dwconv{k}x{k}")
                } else if c.groups > 1 {
                    format!("groupconv{k}x{k}")
                } else {
                    format!("conv{k}x{k}")
                }
            }
            Op::AttentionScores { .. }
            | Op::AttentionMix { .. }
            | Op::LinearAttentionContext { .. }
            | Op::LinearAttentionQuery { .. } => "matmul".to_string(),
            other => other.kind().to_string(),
        }
    }

    /// The op's settings in a few words, for tables.
    pub fn detail(&self) -> String {
        match self {
            Op::Conv2d(c) | Op::PatchEmbed(c) => format!(
                "k{} s{} p{} g{}{}",
                c.kernel,
                c.stride,
                c.padding,
                c.groups,
                if c.bias { " +bias" } else { "" }
            ),
            Op::Linear(l) => format!(
                "{}→{}{}",
                l.in_features,
                l.out_features,
                if l.bias { " +bias" } else { "" }
            ),
            Op::BatchNorm2d { eps, .. } | Op::LayerNorm { eps, .. } => format!("eps {eps:e}"),
            Op::AttentionScores {
                heads,
                head_dim,
                scale,
            } => format!("{heads} heads × d{head_dim}, scale {scale:.4}"),
            Op::AttentionMix { heads, head_dim }
            | Op::LinearAttentionContext { heads, head_dim }
            | Op::LinearAttentionQuery { heads, head_dim } => {
                format!("{heads} heads × d{head_dim}")
            }
            Op::LinearAttentionNormalize {
                heads,
                head_dim,
                eps,
                ..
            } => format!("{heads} heads × d{head_dim}, eps {eps:e}"),
            _ => String::new(),
        }
    }

    /// Number of inputs the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input => 0,
            Op::Add | Op::AttentionMix { .. } | Op::LinearAttentionQuery { .. } => 2,
            Op::Concat => 2,
            _ => 1,
        }
    }

    /// Output shape for the given input shapes, or why they do not fit.
    pub fn infer_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        if inputs.len() != self.arity() {
            return Err(format!(
                "{} takes {} input(s), got {}",
                self.kind(),
                self.arity(),
                inputs.len()
            ));
        }
        let expect_rank = |shape: &[usize], rank: usize, what: &str| {
            if shape.len() == rank {
                Ok(())
            } else {
                Err(format!("expected {what}, got shape [{}]", dims(shape)))
            }
        };
        match self {
            Op::Input => unreachable!("arity 0"),
            Op::Conv2d(c) | Op::PatchEmbed(c) => {
                let x = inputs[0];
                expect_rank(x, 3, "a [C, H, W] feature map")?;
                if x[0] != c.in_channels {
                    return Err(format!(
                        "expected {} input channels, got {}",
                        c.in_channels, x[0]
                    ));
                }
                if c.groups == 0
                    || !c.in_channels.is_multiple_of(c.groups)
                    || !c.out_channels.is_multiple_of(c.groups)
                {
                    return Err(format!(
                        "{} groups do not divide {} input and {} output channels",
                        c.groups, c.in_channels, c.out_channels
                    ));
                }
                let side = |s: usize| {
                    c.output_side(s).filter(|&o| o > 0).ok_or_else(|| {
                        format!("input side {s} is smaller than kernel {}", c.kernel)
                    })
                };
                let (h, w) = (side(x[1])?, side(x[2])?);
                Ok(match self {
                    Op::PatchEmbed(_) => vec![h * w, c.out_channels],
                    _ => vec![c.out_channels, h, w],
                })
            }
            Op::BatchNorm2d { channels, .. } => {
                expect_rank(inputs[0], 3, "a [C, H, W] feature map")?;
                if inputs[0][0] != *channels {
                    return Err(format!(
                        "expected {channels} channels, got {}",
                        inputs[0][0]
                    ));
                }
                Ok(inputs[0].to_vec())
            }
            Op::Linear(l) => {
                let x = inputs[0];
                match x.last() {
                    Some(&d) if d == l.in_features => {
                        let mut out = x.to_vec();
                        *out.last_mut().expect("non-empty") = l.out_features;
                        Ok(out)
                    }
                    _ => Err(format!(
                        "expected last axis of {}, got shape [{}]",
                        l.in_features,
                        dims(x)
                    )),
                }
            }
            Op::LayerNorm { dim, .. } => match inputs[0].last() {
                Some(d) if d == dim => Ok(inputs[0].to_vec()),
                _ => Err(format!(
                    "expected last axis of {dim}, got shape [{}]",
                    dims(inputs[0])
                )),
            },
            Op::Hardswish | Op::Relu | Op::Gelu | Op::Softmax => Ok(inputs[0].to_vec()),
            Op::Add => {
                if inputs[0] == inputs[1] {
                    Ok(inputs[0].to_vec())
                } else {
                    Err(format!(
                        "cannot add shapes [{}] and [{}]",
                        dims(inputs[0]),
                        dims(inputs[1])
                    ))
                }
            }
            Op::Concat => {
                let (a, b) = (inputs[0], inputs[1]);
                if a.len() != b.len() || a.is_empty() || a[1..] != b[1..] {
                    return Err(format!(
                        "cannot concatenate shapes [{}] and [{}] along axis 0",
                        dims(a),
                        dims(b)
                    ));
                }
                let mut out = a.to_vec();
                out[0] += b[0];
                Ok(out)
            }
            Op::GlobalAvgPool => {
                expect_rank(inputs[0], 3, "a [C, H, W] feature map")?;
                Ok(vec![inputs[0][0]])
            }
            Op::ClassTokenPosEmbed { dim, tokens } => {
                let x = inputs[0];
                if x != [*tokens, *dim] {
                    return Err(format!(
                        "expected [{tokens}, {dim}] patch tokens, got [{}]",
                        dims(x)
                    ));
                }
                Ok(vec![tokens + 1, *dim])
            }
            Op::TakeClassToken => {
                expect_rank(inputs[0], 2, "[N, D] tokens")?;
                Ok(vec![inputs[0][1]])
            }
            Op::AttentionScores {
                heads, head_dim, ..
            } => {
                let x = inputs[0];
                expect_rank(x, 2, "[N, 3D] fused qkv")?;
                if x[1] != 3 * heads * head_dim {
                    return Err(format!(
                        "expected {} qkv columns for {heads} heads × d{head_dim}, got {}",
                        3 * heads * head_dim,
                        x[1]
                    ));
                }
                Ok(vec![*heads, x[0], x[0]])
            }
            Op::AttentionMix { heads, head_dim } => {
                let (p, qkv) = (inputs[0], inputs[1]);
                expect_rank(qkv, 2, "[N, 3D] fused qkv")?;
                let n = qkv[0];
                if p != [*heads, n, n] || qkv[1] != 3 * heads * head_dim {
                    return Err(format!(
                        "expected probabilities [{heads}, {n}, {n}] and qkv [{n}, {}], got [{}] and [{}]",
                        3 * heads * head_dim,
                        dims(p),
                        dims(qkv)
                    ));
                }
                Ok(vec![n, heads * head_dim])
            }
            Op::LinearAttentionContext { heads, head_dim } => {
                let x = inputs[0];
                expect_rank(x, 3, "a [C, H, W] multi-scale map")?;
                if x[0] != 3 * heads * head_dim {
                    return Err(format!(
                        "expected {} channels (q, k, v of {heads} heads × d{head_dim}), got {}",
                        3 * heads * head_dim,
                        x[0]
                    ));
                }
                Ok(vec![*heads, head_dim + 1, *head_dim])
            }
            Op::LinearAttentionQuery { heads, head_dim } => {
                let (x, ctx) = (inputs[0], inputs[1]);
                expect_rank(x, 3, "a [C, H, W] multi-scale map")?;
                if x[0] != 3 * heads * head_dim || ctx != [*heads, head_dim + 1, *head_dim] {
                    return Err(format!(
                        "expected a {}-channel map and a [{heads}, {}, {head_dim}] context, got [{}] and [{}]",
                        3 * heads * head_dim,
                        head_dim + 1,
                        dims(x),
                        dims(ctx)
                    ));
                }
                Ok(vec![*heads, head_dim + 1, x[1] * x[2]])
            }
            Op::LinearAttentionNormalize {
                heads,
                head_dim,
                height,
                width,
                ..
            } => {
                let x = inputs[0];
                if x != [*heads, head_dim + 1, height * width] {
                    return Err(format!(
                        "expected [{heads}, {}, {}], got [{}]",
                        head_dim + 1,
                        height * width,
                        dims(x)
                    ));
                }
                Ok(vec![heads * head_dim, *height, *width])
            }
        }
    }

    /// Multiply-accumulates for one image: convolutions, linear layers and attention products.
    /// Norms, activations, adds, divisions and pooling count zero (they are not MACs).
    pub fn macs(&self, inputs: &[&[usize]], output: &[usize]) -> u64 {
        let p = |xs: &[usize]| xs.iter().map(|&d| d as u64).product::<u64>();
        match self {
            Op::Conv2d(c) | Op::PatchEmbed(c) => {
                p(output) * (c.in_channels / c.groups) as u64 * (c.kernel * c.kernel) as u64
            }
            Op::Linear(l) => p(output) * l.in_features as u64,
            Op::AttentionScores { head_dim, .. } => p(output) * *head_dim as u64,
            Op::AttentionMix { .. } => p(output) * inputs[1][0] as u64,
            Op::LinearAttentionContext { .. } => p(output) * (inputs[0][1] * inputs[0][2]) as u64,
            Op::LinearAttentionQuery { head_dim, .. } => p(output) * *head_dim as u64,
            _ => 0,
        }
    }

    /// The parameter tensors the op owns: `(name suffix, role, shape)`.
    pub fn param_layout(&self) -> Vec<(&'static str, ParamRole, Vec<usize>)> {
        match self {
            Op::Conv2d(c) | Op::PatchEmbed(c) => {
                let mut v = vec![("weight", ParamRole::Weight, c.weight_shape())];
                if c.bias {
                    v.push(("bias", ParamRole::Bias, vec![c.out_channels]));
                }
                v
            }
            Op::Linear(l) => {
                let mut v = vec![(
                    "weight",
                    ParamRole::Weight,
                    vec![l.out_features, l.in_features],
                )];
                if l.bias {
                    v.push(("bias", ParamRole::Bias, vec![l.out_features]));
                }
                v
            }
            Op::BatchNorm2d { channels, .. } => vec![
                ("weight", ParamRole::NormWeight, vec![*channels]),
                ("bias", ParamRole::NormBias, vec![*channels]),
                ("running_mean", ParamRole::RunningMean, vec![*channels]),
                ("running_var", ParamRole::RunningVar, vec![*channels]),
                ("num_batches_tracked", ParamRole::NumBatchesTracked, vec![]),
            ],
            Op::LayerNorm { dim, .. } => vec![
                ("weight", ParamRole::NormWeight, vec![*dim]),
                ("bias", ParamRole::NormBias, vec![*dim]),
            ],
            Op::ClassTokenPosEmbed { dim, tokens } => vec![
                ("cls_token", ParamRole::ClassToken, vec![1, 1, *dim]),
                ("pos_embed", ParamRole::PosEmbed, vec![1, tokens + 1, *dim]),
            ],
            _ => Vec::new(),
        }
    }
}

/// `3×224×224`-style rendering of a shape.
pub fn shape_string(shape: &[usize]) -> String {
    dims(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_and_macs(op: &Op, inputs: &[&[usize]]) -> (Vec<usize>, u64) {
        let out = op.infer_shape(inputs).unwrap();
        let macs = op.macs(inputs, &out);
        (out, macs)
    }

    #[test]
    fn conv_shapes_and_macs_by_hand() {
        // 3×224×224, 3×3 stride 2 pad 1 → 16×112×112; MACs = 16·112·112·3·9.
        let stem = Op::Conv2d(Conv2d::same(3, 16, 3, 2));
        assert_eq!(
            shape_and_macs(&stem, &[&[3, 224, 224]]),
            (vec![16, 112, 112], 5_419_008)
        );
        // Depthwise 5×5 on 384×14×14: 384·196·25 = 1,881,600.
        let dw = Op::Conv2d(Conv2d::depthwise(384, 5, 1));
        assert_eq!(
            shape_and_macs(&dw, &[&[384, 14, 14]]),
            (vec![384, 14, 14], 1_881_600)
        );
        assert_eq!(dw.category(), "dwconv5x5");
        // Grouped 1×1 with 24 groups: 384·196·16 = 1,204,224.
        let g = Op::Conv2d(Conv2d::same(384, 384, 1, 1).with_groups(24));
        assert_eq!(
            shape_and_macs(&g, &[&[384, 14, 14]]),
            (vec![384, 14, 14], 1_204_224)
        );
        assert_eq!(g.category(), "groupconv1x1");
        // Odd input side with stride 2: floor((7 + 2 - 3) / 2) + 1 = 4.
        assert_eq!(
            Op::Conv2d(Conv2d::same(8, 8, 3, 2))
                .infer_shape(&[&[8, 7, 7]])
                .unwrap(),
            vec![8, 4, 4]
        );
    }

    #[test]
    fn attention_products_by_hand() {
        // EfficientViT B1 stage 3: 16 heads (8 × two scales), d = 16, 14×14 tokens.
        let ms: &[usize] = &[16 * 48, 14, 14];
        let ctx = Op::LinearAttentionContext {
            heads: 16,
            head_dim: 16,
        };
        let (ctx_shape, ctx_macs) = shape_and_macs(&ctx, &[ms]);
        assert_eq!(ctx_shape, vec![16, 17, 16]);
        assert_eq!(ctx_macs, 852_992);
        let q = Op::LinearAttentionQuery {
            heads: 16,
            head_dim: 16,
        };
        let (q_shape, q_macs) = shape_and_macs(&q, &[ms, &ctx_shape]);
        assert_eq!(q_shape, vec![16, 17, 196]);
        assert_eq!(q_macs, 852_992);
        // DeiT-T: 3 heads × 64, 197 tokens: 3·197·197·64 = 7,451,328 for each product.
        let scores = Op::AttentionScores {
            heads: 3,
            head_dim: 64,
            scale: 0.125,
        };
        let (s, s_macs) = shape_and_macs(&scores, &[&[197, 576]]);
        assert_eq!((s.clone(), s_macs), (vec![3, 197, 197], 7_451_328));
        let mix = Op::AttentionMix {
            heads: 3,
            head_dim: 64,
        };
        assert_eq!(
            shape_and_macs(&mix, &[&s, &[197, 576]]),
            (vec![197, 192], 7_451_328)
        );
    }

    #[test]
    fn mismatched_inputs_are_explained() {
        let conv = Op::Conv2d(Conv2d::same(16, 32, 1, 1));
        let err = conv.infer_shape(&[&[8, 4, 4]]).unwrap_err();
        assert!(err.contains("expected 16 input channels, got 8"), "{err}");
        let err = Op::Add.infer_shape(&[&[2, 3], &[3, 2]]).unwrap_err();
        assert!(err.contains("cannot add"), "{err}");
    }
}
