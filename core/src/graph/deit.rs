//! DeiT graphs, module by module as timm's `VisionTransformer` constructs them, so node and
//! parameter names are the checkpoint's.

use super::builder::Builder;
use super::op::{Conv2d, Linear};
use super::{Graph, Op};
use crate::arch::{DeitSpec, Family};
use crate::error::Result;

pub(super) fn build(spec: &DeitSpec) -> Result<Graph> {
    let d = spec.embed_dim;
    let mut b = Builder::new(
        &spec.name,
        vec![spec.in_channels, spec.resolution, spec.resolution],
    );

    b.stage("embed");
    let patch = Conv2d {
        in_channels: spec.in_channels,
        out_channels: d,
        kernel: spec.patch_size,
        stride: spec.patch_size,
        padding: 0,
        groups: 1,
        bias: true,
    };
    let mut x = b.add("patch_embed.proj", Op::PatchEmbed(patch), &[0])?;
    let tokens = spec.grid() * spec.grid();
    // cls_token and pos_embed are parameters of the root module, hence the empty prefix.
    x = b.add_with_param_prefix(
        "pos_embed".to_string(),
        "",
        Op::ClassTokenPosEmbed { dim: d, tokens },
        &[x],
    )?;

    let linear = |in_features, out_features, bias| {
        Op::Linear(Linear {
            in_features,
            out_features,
            bias,
        })
    };
    let layer_norm = Op::LayerNorm {
        dim: d,
        eps: spec.ln_eps,
    };
    let (heads, head_dim) = (spec.num_heads, spec.head_dim());
    for i in 0..spec.depth {
        b.stage(format!("blocks.{i}"));
        let blk = format!("blocks.{i}");
        let y = b.add(format!("{blk}.norm1"), layer_norm.clone(), &[x])?;
        let qkv = b.add(
            format!("{blk}.attn.qkv"),
            linear(d, 3 * d, spec.qkv_bias),
            &[y],
        )?;
        let scores = b.add(
            format!("{blk}.attn.scores"),
            Op::AttentionScores {
                heads,
                head_dim,
                scale: (head_dim as f64).powf(-0.5),
            },
            &[qkv],
        )?;
        let probs = b.add(format!("{blk}.attn.softmax"), Op::Softmax, &[scores])?;
        let mixed = b.add(
            format!("{blk}.attn.mix"),
            Op::AttentionMix { heads, head_dim },
            &[probs, qkv],
        )?;
        let y = b.add(format!("{blk}.attn.proj"), linear(d, d, true), &[mixed])?;
        x = b.add(format!("{blk}.attn_add"), Op::Add, &[y, x])?;
        let y = b.add(format!("{blk}.norm2"), layer_norm.clone(), &[x])?;
        let hidden = spec.mlp_hidden();
        let y = b.add(format!("{blk}.mlp.fc1"), linear(d, hidden, true), &[y])?;
        let y = b.add(format!("{blk}.mlp.act"), Op::Gelu, &[y])?;
        let y = b.add(format!("{blk}.mlp.fc2"), linear(hidden, d, true), &[y])?;
        x = b.add(format!("{blk}.mlp_add"), Op::Add, &[y, x])?;
    }

    b.stage("head");
    x = b.add("norm", layer_norm, &[x])?;
    x = b.add("cls_token_out", Op::TakeClassToken, &[x])?;
    b.add("head", linear(d, spec.num_classes, true), &[x])?;
    Ok(b.finish(Family::Deit, spec.resolution, spec.num_classes))
}
