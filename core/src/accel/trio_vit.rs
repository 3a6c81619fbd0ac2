//! Trio-ViT's accelerator: a MAT engine (multiplier-adder-tree lanes, input-channel parallel
//! within a lane, output-channel parallel across lanes) and a reconfigurable R-MAC engine that
//! runs depthwise convolutions while the MAT engine starts on the pointwise conv they feed
//! (DW→PW fusion).
//!
//! [`reference_cycles`] implements the analytical model published with Trio-ViT's code
//! (`latency_v2.py`) exactly, quirks included, so that it reproduces the published cycle counts.

use serde::{Deserialize, Serialize};

use super::workload::{HwOp, Role, Workload, vector_cycles};

/// The sizes of the two engines of one accelerator copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engines {
    /// P_m: multipliers per MAT lane (input channels in parallel).
    pub mat_pes: usize,
    /// L_m: MAT lanes (output channels in parallel).
    pub mat_lanes: usize,
    /// P_r: PEs per R-MAC lane.
    pub rmac_pes: usize,
    /// L_r: R-MAC lanes.
    pub rmac_lanes: usize,
}

impl Engines {
    /// Multipliers of one copy: `P_m·L_m + P_r·L_r`.
    pub fn multipliers(&self) -> usize {
        self.mat_pes * self.mat_lanes + self.rmac_pes * self.rmac_lanes
    }

    /// A pointwise-style layer on all PEs: output channels across all lanes, input channels
    /// across a lane's multipliers, `repeats` passes (pixels, times k² for the stem).
    fn all_pes(&self, cout: usize, cin: usize, repeats: usize) -> u64 {
        (cout.div_ceil(self.mat_lanes + self.rmac_lanes) * cin.div_ceil(self.mat_pes) * repeats)
            as u64
    }

    /// [`Engines::all_pes`] for engines whose lanes differ in size: a MAT lane needs
    /// `⌈cin/P_m⌉` cycles per output, an R-MAC lane `⌈cin/P_r⌉`, and outputs go to whichever
    /// lane is free, so a pass takes the least `T` with `L_m·⌊T/a⌋ + L_r·⌊T/b⌋ ≥ cout`. Equal to
    /// the published formula when `P_m = P_r`; without this, unequal engines were credited
    /// with `(L_m + L_r)·P_m` multipliers.
    fn all_pes_balanced(&self, cout: usize, cin: usize, repeats: usize) -> u64 {
        if self.mat_pes == self.rmac_pes {
            return self.all_pes(cout, cin, repeats);
        }
        let (a, b) = (cin.div_ceil(self.mat_pes), cin.div_ceil(self.rmac_pes));
        let outputs = |t: usize| self.mat_lanes * (t / a) + self.rmac_lanes * (t / b);
        let (mut lo, mut hi) = (
            1,
            a.min(b) * cout.div_ceil(self.mat_lanes.min(self.rmac_lanes)),
        );
        while lo < hi {
            let mid = (lo + hi) / 2;
            if outputs(mid) >= cout {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (lo * repeats) as u64
    }

    /// A depthwise conv alone on the R-MAC engine: output rows across lanes, channels across a
    /// lane's PEs.
    fn depthwise(&self, side: usize, channels: usize, kernel: usize) -> u64 {
        (side.div_ceil(self.rmac_lanes) * channels.div_ceil(self.rmac_pes) * side * kernel * kernel)
            as u64
    }

    /// `[v;1]·relu(k)ᵀ` as published: half the heads per engine, `dim` rows over the R-MAC
    /// lanes, tokens over a MAT lane's multipliers.
    fn attn_context(&self, heads: usize, dim: usize, tokens: usize) -> u64 {
        (heads / 2 * dim.div_ceil(self.rmac_lanes) * tokens.div_ceil(self.mat_pes) * dim) as u64
    }

    /// `context·relu(q)` as published.
    fn attn_query(&self, heads: usize, dim: usize, tokens: usize) -> u64 {
        (heads / 2 * dim.div_ceil(self.rmac_lanes) * dim.div_ceil(self.mat_pes) * tokens) as u64
    }

    /// A depthwise conv on the R-MAC engine fused with the conv it feeds on the MAT engine:
    /// the cycles of the pair, as the published model counts them.
    fn dw_pw_fused(
        &self,
        side: usize,
        dw_channels: usize,
        pw_out: usize,
        kernel: usize,
        pw_in: usize,
    ) -> u64 {
        let (pm, lm, pr, lr) = (self.mat_pes, self.mat_lanes, self.rmac_pes, self.rmac_lanes);
        let e2 = side * side;
        let k2 = kernel * kernel;
        let dw = side.div_ceil(lr) * dw_channels.div_ceil(pr) * side * k2;
        let setup = dw_channels.div_ceil(pr) * k2;
        let stored = (lm + lr).min(pw_out);
        let in_passes = pw_in.div_ceil(pm);
        // Pointwise outputs (pixel × lane) the MAT engine finishes while the R-MAC runs the DW.
        let px = (dw - setup) / in_passes * lm;
        let done = px / (2 * lm * e2) * stored;
        let pw = if done >= pw_out {
            0
        } else {
            // The published expression goes negative when the R-MAC has more lanes than the
            // MAT engine (`stored > 2·L_m`); equal engines, as published, never get there. A
            // negative count of pixels is none left: saturate instead of wrapping.
            let remaining_pixels = e2.saturating_sub(px.saturating_sub(done * e2) / stored);
            let mut pw = stored.div_ceil(lm + lr) * in_passes * remaining_pixels;
            let rest = pw_out.saturating_sub(done + stored);
            if rest > 0 {
                pw += rest.div_ceil(lm + lr) * in_passes * e2;
            }
            pw + dw - setup
        };
        dw.max(pw + setup) as u64
    }
}

/// Cycles per workload layer under the published Trio-ViT model (`latency_v2.py`), quirks
/// included:
/// - the grouped 1×1 conv of the multi-scale aggregation is counted with the block width `C`
///   outputs instead of its `3C`;
/// - the attention projection (2C → C) is counted as C → 2C;
/// - the classifier head, the divisions of linear attention, and memory traffic are not counted;
/// - a depthwise conv carries the cycles of the conv it feeds, which counts zero itself.
pub fn reference_cycles(workload: &Workload, engines: &Engines) -> Vec<u64> {
    let fused = workload.fused_into_depthwise();
    workload
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            if layer.role == Role::Head || fused[i] {
                return 0;
            }
            match &layer.op {
                HwOp::Conv {
                    cin,
                    cout,
                    kernel,
                    pixels,
                    ..
                } => match layer.role {
                    Role::Stem => engines.all_pes(*cout, *cin, pixels * kernel * kernel),
                    Role::AttnProjection => engines.all_pes(*cin, *cout, *pixels),
                    _ => engines.all_pes(*cout, *cin, *pixels),
                },
                HwOp::Depthwise {
                    channels,
                    kernel,
                    side,
                    ..
                } => match layer.feeds.map(|t| &workload.layers[t].op) {
                    Some(HwOp::Conv {
                        cin, cout, groups, ..
                    }) => {
                        let (pw_out, pw_in) = if *groups > 1 {
                            (cout / 3, cin / groups)
                        } else {
                            (*cout, *cin)
                        };
                        engines.dw_pw_fused(*side, *channels, pw_out, *kernel, pw_in)
                    }
                    _ => engines.depthwise(*side, *channels, *kernel),
                },
                HwOp::AttnContext { heads, dim, tokens } => {
                    engines.attn_context(*heads, *dim, *tokens)
                }
                HwOp::AttnQuery { heads, dim, tokens } => engines.attn_query(*heads, *dim, *tokens),
                _ => 0,
            }
        })
        .collect()
}

/// Cycles per workload layer under qvit's corrected model: the reference model with its two
/// mistakes corrected —
/// - the grouped 1×1 conv after the aggregation depthwise conv produces all its `3C` outputs;
/// - the attention projection is priced in its real orientation, `2C → C`;
/// - engines of unequal size (`P_m ≠ P_r`) are credited with the multipliers they have: pointwise
///   work balanced over lanes of both sizes, and no layer faster than its MACs over all
///   multipliers (which also restores the ones row of `[v;1]` — the key sums and divisors —
///   that the published attention equations leave out) —
///
/// and what it leaves out added:
/// - the classifier head (its 1×1 conv and linear layers on all PEs);
/// - the division of linear attention, a shift once the divisor is log2-quantized, done by one
///   shifter per lane for every output element (not overlapped, which is conservative);
/// - DeiT's layers (linear layers and attention products on all PEs) so the same engines can be
///   compared across families; Softmax, GELU and LayerNorm run in auxiliary vector units of one
///   lane per MAT and R-MAC lane ([`vector_cycles`]).
pub fn corrected_cycles(workload: &Workload, engines: &Engines) -> Vec<u64> {
    let fused = workload.fused_into_depthwise();
    let lanes = engines.mat_lanes + engines.rmac_lanes;
    let multipliers = engines.multipliers().max(1) as u64;
    workload
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            // No layer (or fused DW→PW pair) finishes faster than its MACs spread over every
            // multiplier: the published equations assume P_m = P_r and, for unequal engines,
            // would credit them with more multipliers than they have.
            let macs = layer.macs + layer.feeds.map_or(0, |t| workload.layers[t].macs);
            let floor = if fused[i] {
                0
            } else {
                macs.div_ceil(multipliers)
            };
            if fused[i] {
                return 0;
            }
            floor.max(match &layer.op {
                HwOp::Conv {
                    cin,
                    cout,
                    groups,
                    kernel,
                    pixels,
                    ..
                } => {
                    let repeats = if layer.role == Role::Stem {
                        pixels * kernel * kernel
                    } else {
                        *pixels
                    };
                    // A grouped conv runs group by group.
                    *groups as u64 * engines.all_pes_balanced(cout / groups, cin / groups, repeats)
                }
                HwOp::Depthwise {
                    channels,
                    kernel,
                    side,
                    ..
                } => match layer.feeds.map(|t| &workload.layers[t].op) {
                    Some(HwOp::Conv {
                        cin, cout, groups, ..
                    }) => engines.dw_pw_fused(*side, *channels, *cout, *kernel, cin / groups),
                    _ => engines.depthwise(*side, *channels, *kernel),
                },
                HwOp::Linear {
                    inputs,
                    outputs,
                    tokens,
                } => engines.all_pes_balanced(*outputs, *inputs, *tokens),
                HwOp::AttnContext { heads, dim, tokens } => {
                    engines.attn_context(*heads, *dim, *tokens)
                }
                HwOp::AttnQuery { heads, dim, tokens } => engines.attn_query(*heads, *dim, *tokens),
                HwOp::AttnDivide { heads, dim, tokens } => {
                    (heads * dim * tokens).div_ceil(lanes) as u64
                }
                HwOp::AttnScores { heads, dim, tokens } => {
                    (*heads as u64) * engines.all_pes_balanced(*tokens, *dim, *tokens)
                }
                HwOp::AttnMix { heads, dim, tokens } => {
                    (*heads as u64) * engines.all_pes_balanced(*dim, *tokens, *tokens)
                }
                HwOp::Vector { kind, elements } => vector_cycles(kind, *elements, lanes),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::graph::Graph;

    const SIXTEEN: Engines = Engines {
        mat_pes: 16,
        mat_lanes: 8,
        rmac_pes: 16,
        rmac_lanes: 8,
    };
    const EIGHT: Engines = Engines {
        mat_pes: 8,
        mat_lanes: 8,
        rmac_pes: 8,
        rmac_lanes: 8,
    };

    fn cycles(model: &str, resolution: usize, engines: &Engines) -> u64 {
        let spec = ArchSpec::preset(model)
            .unwrap()
            .with_resolution(resolution)
            .unwrap();
        let w = Workload::uniform(&Graph::build(&spec).unwrap(), 8, 8);
        reference_cycles(&w, engines).iter().sum()
    }

    #[test]
    fn reproduces_the_published_cycle_counts() {
        let published = [
            (
                "efficientvit-b1",
                [2_060_601, 2_666_841, 3_459_465],
                [4_005_490, 5_186_226, 6_729_490],
            ),
            (
                "efficientvit-b2",
                [6_268_820, 8_129_132, 10_473_796],
                [12_192_147, 15_823_059, 20_384_499],
            ),
            (
                "efficientvit-b3",
                [15_414_930, 20_016_242, 25_702_386],
                [30_579_492, 39_737_572, 51_006_948],
            ),
        ];
        for (model, sixteen, eight) in published {
            for (i, r) in [224, 256, 288].into_iter().enumerate() {
                assert_eq!(cycles(model, r, &SIXTEEN), sixteen[i], "{model}@{r}, 16");
                assert_eq!(cycles(model, r, &EIGHT), eight[i], "{model}@{r}, 8");
            }
        }
    }

    #[test]
    fn pointwise_on_all_pes_by_hand() {
        // 64 → 256 channels over 28×28 pixels on 16×8 + 16×8 PEs:
        // ⌈256/16⌉·⌈64/16⌉·784 = 16·4·784.
        assert_eq!(SIXTEEN.all_pes(256, 64, 784), 50_176);
        // A ragged case: ⌈20/16⌉·⌈17/16⌉·10 = 2·2·10.
        assert_eq!(SIXTEEN.all_pes(20, 17, 10), 40);
        // Unequal engines: 4 MAT lanes of 16 PEs, 16 R-MAC lanes of 4 PEs, 64 inputs, 96
        // outputs: a MAT lane takes 4 cycles per output, an R-MAC lane 16. In T = 48 cycles the
        // MAT lanes finish 4·12 = 48 outputs and the R-MAC lanes 16·3 = 48: 96. (The published
        // formula would give ⌈96/20⌉·⌈64/16⌉ = 20 cycles, as if all 20 lanes had 16 PEs.)
        let uneven = Engines {
            mat_pes: 16,
            mat_lanes: 4,
            rmac_pes: 4,
            rmac_lanes: 16,
        };
        assert_eq!(uneven.all_pes_balanced(96, 64, 1), 48);
        assert_eq!(SIXTEEN.all_pes_balanced(256, 64, 784), 50_176);
    }

    #[test]
    fn fused_depthwise_by_hand() {
        // E = 7, 512 DW channels, 3×3, feeding 512 → 256 on the "16" engines:
        // DW = ⌈7/8⌉·⌈512/16⌉·7·9 = 2016; setup = 32·9 = 288; stored = 16; passes = 32;
        // px = ⌊1728/32⌋·8 = 432; done = ⌊432/(2·8·49)⌋·16 = 0;
        // remaining pixels = 49 − ⌊432/16⌋ = 22; PW = 1·32·22 + ⌈240/16⌉·32·49 + 1728 = 25,952;
        // the pair takes max(2016, 25,952 + 288).
        assert_eq!(SIXTEEN.dw_pw_fused(7, 512, 256, 3, 512), 26_240);
        // More R-MAC lanes than MAT lanes: the published expression would count a negative
        // number of pixels (a wrapped u64 before the fix); the pair costs at least the
        // depthwise conv and at most that plus the pointwise conv on one multiplier.
        let wide_rmac = Engines {
            mat_pes: 8,
            mat_lanes: 4,
            rmac_pes: 16,
            rmac_lanes: 8,
        };
        let pair = wide_rmac.dw_pw_fused(7, 192, 192, 5, 8);
        let dw = wide_rmac.depthwise(7, 192, 5);
        assert!(dw <= pair && pair <= dw + 192 * 8 * 49, "{dw} ≤ {pair}");
    }
}
