//! The LayerNorm step: decode each channel to one common integer scale (FQ-ViT's power-of-two
//! factors become left shifts), promote to about 16 bits (a left shift, so the integer mean and
//! the ten Newton steps of I-LayerNorm work in their accurate range), normalise with
//! I-LayerNorm, and let the epilogue apply γ, β and any fused activation: the normalised value
//! `z·√C/2^30` has per-channel scale `γ_c·√C/2^30` and offset `β_c`.

use super::super::nonlinear::i_layernorm;
use super::super::requant::Epilogue;
use super::Scratch;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub dim: usize,
    pub zero: Vec<i32>,
    /// Left shift per channel: its power-of-two factor plus the common promotion.
    pub shift: Vec<u32>,
    pub out: Epilogue,
}

impl LayerNorm {
    pub fn run(&self, x: &[i32], out: &mut Vec<i32>, s: &mut Scratch) {
        out.clear();
        out.resize(x.len(), 0);
        let d = self.dim;
        let mut centred = vec![0i64; d];
        s.wide.resize(d, 0);
        for (row, orow) in x.chunks(d).zip(out.chunks_mut(d)) {
            for (c, (dst, &q)) in centred.iter_mut().zip(row).enumerate() {
                *dst = ((q - self.zero[c]) as i64) << self.shift[c];
            }
            i_layernorm(&centred, &mut s.wide[..d]);
            for (c, o) in orow.iter_mut().enumerate() {
                *o = self.out.apply(s.wide[c], c);
            }
        }
    }
}
