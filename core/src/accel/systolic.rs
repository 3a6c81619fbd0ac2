//! A generic weight-stationary systolic array, the baseline Trio-ViT is compared against: one
//! `rows × cols` grid of MACs per copy that runs every layer as a matrix product — no depthwise
//! engine, no DW→PW fusion, no attention pipelining.
//!
//! A product `[M, K] · [K, N]` is cut into `⌈K/rows⌉ · ⌈N/cols⌉` weight tiles; each tile holds
//! its weights while the `M` input rows stream through, and the wavefront needs `rows + cols − 1`
//! more cycles to fill and drain: `⌈K/rows⌉·⌈N/cols⌉·(M + rows + cols − 1)` cycles. Weight loads
//! are double-buffered behind the previous tile. A depthwise conv is one product per channel
//! with `N = 1`, which is why such arrays waste most of their columns on EfficientViT.

use super::workload::{HwOp, Workload, vector_cycles};

/// Cycles of one `[M, K] · [K, N]` product on a `rows × cols` array.
pub fn matmul_cycles(m: usize, k: usize, n: usize, rows: usize, cols: usize) -> u64 {
    (k.div_ceil(rows) * n.div_ceil(cols) * (m + rows + cols - 1)) as u64
}

/// Per-layer cycles of `workload` on one copy of a `rows × cols` array.
pub fn systolic_cycles(workload: &Workload, rows: usize, cols: usize) -> Vec<u64> {
    let mm = |m, k, n| matmul_cycles(m, k, n, rows, cols);
    workload
        .layers
        .iter()
        .map(|layer| match &layer.op {
            HwOp::Conv {
                cin,
                cout,
                groups,
                kernel,
                pixels,
                ..
            } => {
                // im2col: the reduction runs over the receptive field of one group.
                *groups as u64 * mm(*pixels, cin / groups * kernel * kernel, cout / groups)
            }
            HwOp::Depthwise {
                channels,
                kernel,
                side,
                ..
            } => *channels as u64 * mm(side * side, kernel * kernel, 1),
            HwOp::Linear {
                inputs,
                outputs,
                tokens,
            } => mm(*tokens, *inputs, *outputs),
            // [v;1]·relu(k)ᵀ: (d+1)×N times N×d per head.
            HwOp::AttnContext { heads, dim, tokens } => *heads as u64 * mm(dim + 1, *tokens, *dim),
            // relu(q)·context: N×d times d×(d+1) per head.
            HwOp::AttnQuery { heads, dim, tokens } => *heads as u64 * mm(*tokens, *dim, dim + 1),
            // One divider (a shifter once the divisor is log2) per column.
            HwOp::AttnDivide { heads, dim, tokens } => (heads * dim * tokens).div_ceil(cols) as u64,
            HwOp::AttnScores { heads, dim, tokens } => *heads as u64 * mm(*tokens, *dim, *tokens),
            HwOp::AttnMix { heads, dim, tokens } => *heads as u64 * mm(*tokens, *tokens, *dim),
            HwOp::Vector { kind, elements } => vector_cycles(kind, *elements, cols),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::workload::Role;

    #[test]
    fn matmul_by_hand() {
        // 49 rows, K = 64, N = 32 on 16×16: 4 × 2 tiles of 49 + 31 cycles.
        assert_eq!(matmul_cycles(49, 64, 32, 16, 16), 8 * 80);
        // Ragged: K = 17 on 16 rows → 2 row tiles, N = 1 → 1 column tile of 5 + 16 + 4 − 1.
        assert_eq!(matmul_cycles(5, 17, 1, 16, 4), 2 * 24);
    }

    #[test]
    fn depthwise_runs_one_column_per_channel() {
        let w = Workload {
            model: "t".into(),
            resolution: 7,
            layers: vec![super::super::workload::HwLayer {
                name: "dw".into(),
                stage: "s".into(),
                op: HwOp::Depthwise {
                    channels: 3,
                    kernel: 3,
                    stride: 1,
                    side: 7,
                },
                role: Role::Body,
                macs: 3 * 49 * 9,
                feeds: None,
                input_on_chip: false,
                output_on_chip: false,
                weight_bits: 8,
                act_bits: 8,
                weights: 27,
                inputs: 147,
                outputs: 147,
            }],
        };
        // Each channel: ⌈9/16⌉·⌈1/16⌉·(49 + 31) = 80 cycles for 441 MACs on 256 PEs.
        assert_eq!(systolic_cycles(&w, 16, 16), vec![3 * 80]);
    }
}
