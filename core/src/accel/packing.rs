//! How many multiply-accumulates a DSP slice performs per cycle, by the bit widths of the two
//! operands, and what the MAC array costs in LUTs: the rules that let fewer bits buy hardware.
//!
//! Every packing rule has a published source:
//!
//! | DSP slice | weight × activation bits | MACs per DSP | source |
//! |---|---|---:|---|
//! | DSP48E2 | ≤ 4 × ≤ 4 | 4 | FINN's RTL matrix-vector unit `mvu_4sx4u` (`dsp_estimation`: `⌈PE/4⌉·SIMD` DSPs) |
//! | DSP48E2 | ≤ 8 × ≤ 8 | 2 | Xilinx WP486 (two INT8 products sharing one operand); FINN's `mvu_8sx8u_dsp48` (`⌈PE/2⌉·SIMD`); Trio-ViT's "two 8-bit multiplications within each DSP" |
//! | DSP58 | ≤ 8 × ≤ 9 | 3 | FINN's `mvu_vvu_8sx9_dsp58` (`PE·⌈SIMD/3⌉` DSPs), which FINN also uses for 4-bit operands |
//! | either | up to 16 × 16 | 1 | fpgaConvNet's multiplier model `⌈w₁/18⌉·⌈w₂/27⌉` DSPs per product (one for 16-bit operands) |
//!
//! A W4A8 product packs as W8A8 does (both operands must be ≤ 4 bits for four per DSP48E2): on
//! DSPs its saving is in weight traffic and buffers, and in LUTs where the multipliers are built
//! from LUTs.
//!
//! LUTs are estimated as FINN estimates its matrix-vector unit (`lut_estimation`): per lane of
//! `P` multipliers on `W`-bit weights and `A`-bit activations, an adder tree of
//! `(W + A)·(2P − 1)` LUTs and an accumulator of `W + A + ⌈log₂ P⌉` bits; a multiplier built from
//! LUTs adds `(2⌈(W + A)/6⌉ − 1)·(W + A)`; the sum is scaled by 1.1 and 300 added per engine.

use serde::{Deserialize, Serialize};

/// The DSP slice of an FPGA family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DspKind {
    /// UltraScale / UltraScale+: a 27 × 18 multiplier.
    Dsp48E2,
    /// Versal: a 27 × 24 multiplier and a three-term INT8 dot product.
    Dsp58,
}

/// How an accelerator's datapath packs products into its DSP slices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Packing {
    /// Built once for the widest operands of any layer (the envelope): every layer runs at that
    /// packing, as a datapath synthesized for one operand format does.
    #[default]
    Envelope,
    /// Precision-scalable: the DSPs are those the envelope needs, and each layer packs as densely
    /// as its own operands allow (a W4A4 layer runs twice the products of a W8A8 layer on a
    /// DSP48E2). The operand multiplexers this needs are LUTs that qvit does not estimate.
    PerLayer,
}

/// MACs one DSP slice of `kind` performs per cycle on `weight_bits` × `act_bits` operands
/// (2–16 bits each; see the module's table for the source of each rule).
pub fn macs_per_dsp(kind: DspKind, weight_bits: u8, act_bits: u8) -> usize {
    match kind {
        DspKind::Dsp48E2 if weight_bits <= 4 && act_bits <= 4 => 4,
        DspKind::Dsp48E2 if weight_bits <= 8 && act_bits <= 8 => 2,
        DspKind::Dsp58 if weight_bits <= 8 && act_bits <= 9 => 3,
        _ => 1,
    }
}

/// The widest operand pair of `layers` (`(weight bits, activation bits)` of each layer that
/// multiplies): the envelope a datapath built once must support. `(8, 8)` when there is none.
pub fn envelope(layers: impl IntoIterator<Item = (u8, u8)>) -> (u8, u8) {
    layers
        .into_iter()
        .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
        .unwrap_or((8, 8))
}

/// Whether the multipliers are DSP slices or built from LUTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multipliers {
    Dsp,
    Lut,
}

/// FINN-style LUT estimate of one engine: `lanes` lanes of `pes` multipliers on `weight_bits` ×
/// `act_bits` operands (see the module documentation).
pub fn engine_luts(
    pes: usize,
    lanes: usize,
    weight_bits: u8,
    act_bits: u8,
    multipliers: Multipliers,
) -> u64 {
    let (p, l) = (pes as f64, lanes as f64);
    let operand = f64::from(weight_bits) + f64::from(act_bits);
    let multiplier = match multipliers {
        Multipliers::Dsp => 0.0,
        Multipliers::Lut => (2.0 * (operand / 6.0).ceil() - 1.0) * operand,
    };
    let adder_tree = operand * (2.0 * p - 1.0);
    let accumulator = operand + p.log2().ceil();
    (300.0 + 1.1 * l * (p * multiplier + adder_tree + accumulator)).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_follows_the_published_rules() {
        use DspKind::*;
        // FINN mvu_4sx4u: both operands within 4 bits, four products per DSP48E2.
        assert_eq!(macs_per_dsp(Dsp48E2, 4, 4), 4);
        assert_eq!(macs_per_dsp(Dsp48E2, 2, 3), 4);
        // WP486 / FINN mvu_8sx8u_dsp48: two products per DSP48E2 up to 8 × 8 bits, which is
        // where W4A8 and W6A6 land: one 8-bit operand is enough to lose the 4-bit packing.
        assert_eq!(macs_per_dsp(Dsp48E2, 8, 8), 2);
        assert_eq!(macs_per_dsp(Dsp48E2, 4, 8), 2);
        assert_eq!(macs_per_dsp(Dsp48E2, 8, 4), 2);
        assert_eq!(macs_per_dsp(Dsp48E2, 6, 6), 2);
        assert_eq!(macs_per_dsp(Dsp48E2, 5, 4), 2);
        // fpgaConvNet: ⌈16/18⌉·⌈16/27⌉ = one DSP per product.
        assert_eq!(macs_per_dsp(Dsp48E2, 9, 8), 1);
        assert_eq!(macs_per_dsp(Dsp48E2, 16, 16), 1);
        // FINN mvu_vvu_8sx9_dsp58: three per DSP58, 4-bit operands included.
        assert_eq!(macs_per_dsp(Dsp58, 8, 9), 3);
        assert_eq!(macs_per_dsp(Dsp58, 4, 4), 3);
        assert_eq!(macs_per_dsp(Dsp58, 8, 10), 1);
        assert_eq!(macs_per_dsp(Dsp58, 12, 8), 1);
    }

    #[test]
    fn fewer_bits_never_pack_fewer_products() {
        for kind in [DspKind::Dsp48E2, DspKind::Dsp58] {
            for w in 2..=16u8 {
                for a in 2..=16u8 {
                    let here = macs_per_dsp(kind, w, a);
                    if w > 2 {
                        assert!(macs_per_dsp(kind, w - 1, a) >= here, "{kind:?} w{w}a{a}");
                    }
                    if a > 2 {
                        assert!(macs_per_dsp(kind, w, a - 1) >= here, "{kind:?} w{w}a{a}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_envelope_is_the_widest_of_each_operand() {
        assert_eq!(envelope([(4, 8), (8, 4), (2, 2)]), (8, 8));
        assert_eq!(envelope([(4, 4), (3, 4)]), (4, 4));
        assert_eq!(envelope([]), (8, 8));
    }

    #[test]
    fn luts_follow_finns_estimate() {
        // One lane of 16 DSP multipliers at W8A8: 300 + 1.1·(16·31 + 16 + 4) = 867.6.
        assert_eq!(engine_luts(16, 1, 8, 8, Multipliers::Dsp), 868);
        // LUT multipliers at W4A4: (2·⌈8/6⌉ − 1)·8 = 24 LUTs each;
        // 300 + 1.1·(16·24 + 8·31 + 8 + 4) = 1008.4.
        assert_eq!(engine_luts(16, 1, 4, 4, Multipliers::Lut), 1008);
        // Eight lanes: a W4A8 LUT multiplier is (2·2 − 1)·12 = 36 LUTs, W8A8's (2·3 − 1)·16 = 80:
        // 300 + 1.1·8·(16·36 + 12·31 + 16) = 8783.2 against 300 + 1.1·8·(16·80 + 16·31 + 20).
        assert_eq!(engine_luts(16, 8, 4, 8, Multipliers::Lut), 8783);
        assert_eq!(engine_luts(16, 8, 8, 8, Multipliers::Lut), 16105);
    }
}
