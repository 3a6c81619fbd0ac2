//! EfficientViT B-series graphs, module by module as the official `backbone.py` and `cls.py`
//! construct them, so node and parameter names are the checkpoint's.

use super::builder::{Act, Builder};
use super::op::{Conv2d, Linear};
use super::{Graph, NodeId, Op};
use crate::arch::{EfficientVitSpec, Family, LEVELS};
use crate::error::Result;

pub(super) fn build(spec: &EfficientVitSpec) -> Result<Graph> {
    let mut b = Builder::new(
        &spec.name,
        vec![spec.in_channels, spec.resolution, spec.resolution],
    );
    let bn = Some(spec.bn_eps);
    let w = &spec.width_list;

    // Input stem: 3×3 conv, then DSConv blocks with identity shortcuts.
    b.stage("stem");
    let stem = "backbone.input_stem.op_list";
    let mut x = b.conv_layer(
        &format!("{stem}.0"),
        0,
        Conv2d::same(spec.in_channels, w[0], 3, spec.strides[0]),
        bn,
        Some(Act::Hardswish),
    )?;
    for i in 1..=spec.depth_list[0] {
        let main = format!("{stem}.{i}.main");
        let y = b.conv_layer(
            &format!("{main}.depth_conv"),
            x,
            Conv2d::depthwise(w[0], 3, 1),
            bn,
            Some(Act::Hardswish),
        )?;
        let y = b.conv_layer(
            &format!("{main}.point_conv"),
            y,
            Conv2d::same(w[0], w[0], 1, 1),
            bn,
            None,
        )?;
        x = b.add(format!("{stem}.{i}.add"), Op::Add, &[y, x])?;
    }

    for level in 1..LEVELS {
        b.stage(format!("stage{level}"));
        let stages = format!("backbone.stages.{}.op_list", level - 1);
        let attention = level >= 3;
        // Conv stages count the downsampling MBConv in their depth; attention stages add it.
        let local_blocks = if attention { 1 } else { spec.depth_list[level] };
        for j in 0..local_blocks {
            let stride = if j == 0 { spec.strides[level] } else { 1 };
            let cin = if j == 0 { w[level - 1] } else { w[level] };
            x = residual_mbconv(
                &mut b,
                spec,
                &format!("{stages}.{j}"),
                x,
                cin,
                level,
                stride,
                attention,
            )?;
        }
        if attention {
            for j in 1..=spec.depth_list[level] {
                let block = format!("{stages}.{j}");
                let y = lite_mla(
                    &mut b,
                    spec,
                    &format!("{block}.context_module.main"),
                    x,
                    level,
                )?;
                x = b.add(format!("{block}.context_module.add"), Op::Add, &[y, x])?;
                let y = mbconv(
                    &mut b,
                    spec,
                    &format!("{block}.local_module.main"),
                    x,
                    w[level],
                    w[level],
                    1,
                    true,
                )?;
                x = b.add(format!("{block}.local_module.add"), Op::Add, &[y, x])?;
            }
        }
    }

    // Classifier head: 1×1 conv at the last stage's resolution, pool, hidden linear + LN + hswish,
    // output linear.
    b.stage("head");
    let [h0, h1] = [spec.head_width_list[0], spec.head_width_list[1]];
    x = b.conv_layer(
        "head.op_list.0",
        x,
        Conv2d::same(w[LEVELS - 1], h0, 1, 1),
        bn,
        Some(Act::Hardswish),
    )?;
    x = b.add("head.op_list.1", Op::GlobalAvgPool, &[x])?;
    let hidden = Linear {
        in_features: h0,
        out_features: h1,
        bias: false,
    };
    x = b.add("head.op_list.2.linear", Op::Linear(hidden), &[x])?;
    let ln = Op::LayerNorm {
        dim: h1,
        eps: spec.ln_eps,
    };
    x = b.add("head.op_list.2.norm", ln, &[x])?;
    x = b.activation("head.op_list.2.act".into(), Act::Hardswish, x)?;
    let classifier = Linear {
        in_features: h1,
        out_features: spec.num_classes,
        bias: true,
    };
    b.add("head.op_list.3.linear", Op::Linear(classifier), &[x])?;
    Ok(b.finish(Family::EfficientVit, spec.resolution, spec.num_classes))
}

/// `ResidualBlock(MBConv, shortcut)`: the official code adds an identity shortcut exactly when the
/// block keeps the resolution; qvit also requires equal channels, which only differs for custom
/// strides (a stride-1 block that widens the features has no shortcut).
#[allow(clippy::too_many_arguments)]
fn residual_mbconv(
    b: &mut Builder,
    spec: &EfficientVitSpec,
    block: &str,
    x: NodeId,
    cin: usize,
    level: usize,
    stride: usize,
    fewer_norm: bool,
) -> Result<NodeId> {
    let cout = spec.width_list[level];
    let y = mbconv(
        b,
        spec,
        &format!("{block}.main"),
        x,
        cin,
        cout,
        stride,
        fewer_norm,
    )?;
    if stride == 1 && cin == cout {
        b.add(format!("{block}.add"), Op::Add, &[y, x])
    } else {
        Ok(y)
    }
}

/// MBConv: 1×1 expand + hswish, 3×3 depthwise + hswish, 1×1 project. The "fewer norm" variant
/// (attention stages) has biased, un-normalised expand and depthwise convs; the projection always
/// ends in BatchNorm without activation.
#[allow(clippy::too_many_arguments)]
fn mbconv(
    b: &mut Builder,
    spec: &EfficientVitSpec,
    main: &str,
    x: NodeId,
    cin: usize,
    cout: usize,
    stride: usize,
    fewer_norm: bool,
) -> Result<NodeId> {
    let mid = cin * spec.expand_ratio;
    let norm = (!fewer_norm).then_some(spec.bn_eps);
    let y = b.conv_layer(
        &format!("{main}.inverted_conv"),
        x,
        Conv2d::same(cin, mid, 1, 1).with_bias(fewer_norm),
        norm,
        Some(Act::Hardswish),
    )?;
    let y = b.conv_layer(
        &format!("{main}.depth_conv"),
        y,
        Conv2d::depthwise(mid, 3, stride).with_bias(fewer_norm),
        norm,
        Some(Act::Hardswish),
    )?;
    b.conv_layer(
        &format!("{main}.point_conv"),
        y,
        Conv2d::same(mid, cout, 1, 1),
        Some(spec.bn_eps),
        None,
    )
}

/// LiteMLA: qkv 1×1 conv; a multi-scale branch (depthwise k×k, then a grouped 1×1 with one group
/// per q/k/v slice of each head) concatenated with the plain qkv; ReLU linear attention over the
/// doubled set of heads; projection 1×1 conv + BatchNorm.
///
/// The official code switches to an equivalent quadratic form when `H·W ≤ dim`; the result is
/// the same, so only the linear form is modelled.
fn lite_mla(
    b: &mut Builder,
    spec: &EfficientVitSpec,
    main: &str,
    x: NodeId,
    level: usize,
) -> Result<NodeId> {
    let c = spec.width_list[level];
    let d = spec.dim;
    let heads = spec.heads(level);
    let total = heads * d;
    let (height, width) = (b.shape(x)[1], b.shape(x)[2]);

    let qkv = b.add(
        format!("{main}.qkv.conv"),
        Op::Conv2d(Conv2d::same(c, 3 * total, 1, 1)),
        &[x],
    )?;
    let k = spec.aggregation_kernel;
    let agg = b.add(
        format!("{main}.aggreg.0.0"),
        Op::Conv2d(Conv2d::depthwise(3 * total, k, 1)),
        &[qkv],
    )?;
    let agg = b.add(
        format!("{main}.aggreg.0.1"),
        Op::Conv2d(Conv2d::same(3 * total, 3 * total, 1, 1).with_groups(3 * heads)),
        &[agg],
    )?;
    let multiscale = b.add(format!("{main}.multiscale"), Op::Concat, &[qkv, agg])?;

    let all_heads = 2 * heads;
    let context = b.add(
        format!("{main}.kv_matmul"),
        Op::LinearAttentionContext {
            heads: all_heads,
            head_dim: d,
        },
        &[multiscale],
    )?;
    let query = b.add(
        format!("{main}.q_matmul"),
        Op::LinearAttentionQuery {
            heads: all_heads,
            head_dim: d,
        },
        &[multiscale, context],
    )?;
    let attended = b.add(
        format!("{main}.normalize"),
        Op::LinearAttentionNormalize {
            heads: all_heads,
            head_dim: d,
            height,
            width,
            eps: spec.attention_eps,
        },
        &[query],
    )?;
    b.conv_layer(
        &format!("{main}.proj"),
        attended,
        Conv2d::same(2 * total, c, 1, 1),
        Some(spec.bn_eps),
        None,
    )
}
