//! The stride-1 depthwise conv read straight from the map: AVX-512, sixteen outputs of a row
//! per register, each tap one masked load of the input row.
//!
//! The phase-plane kernel ([`super::depthwise`]) first copies every channel into a
//! zero-padded plane, so that each tap is a plain load: on EfficientViT-B1 the copies
//! (`run_channel` and the `memmove` under it) took 8 % of the fp32 time, as much as the
//! sums of the 3×3 convs at 56² and 28². Here a tap of a block reads its input row where it
//! lies, with the lanes whose column falls outside the map masked to zero, and a kernel row
//! above or below the map is not read at all.
//!
//! The arithmetic is the definition's, as in the phase-plane kernel: every output sums its
//! taps in (row, column) order from +0, products and sums rounded separately, then adds the
//! bias. A masked lane's product is ±0 times a (finite) weight and a skipped row's would be
//! too, and adding a zero to a sum that started at +0 changes nothing.

use rayon::prelude::*;

use crate::graph::Conv2d;

/// Outputs per register.
const LANES: usize = 16;

/// Below this many multiply-accumulates an image's conv runs on one thread (as the
/// phase-plane kernel's `PARALLEL_MACS`).
const PARALLEL_MACS: usize = 1 << 17;

/// Whether [`depthwise`] runs this conv: stride 1, a 3×3, 5×5 or 7×7 kernel, output rows of at
/// least 14 (a 7-wide row would leave most of a register empty; the phase-plane kernel runs
/// those eight at a time), and AVX-512F.
pub fn applies(c: &Conv2d, out_hw: (usize, usize)) -> bool {
    c.stride == 1 && matches!(c.kernel, 3 | 5 | 7) && out_hw.1 >= 14 && has_avx512()
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The depthwise conv `c` of `x` (`[C, h, w]`) into `out` (`[C, oh, ow]`), for a conv that
/// [`applies`].
pub fn depthwise(
    c: &Conv2d,
    x: &[f32],
    (h, w): (usize, usize),
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    (oh, ow): (usize, usize),
) {
    assert!(applies(c, (oh, ow)), "the direct depthwise kernel does not run {c:?}");
    let k = c.kernel;
    let side = |input: usize| (input + 2 * c.padding + 1).saturating_sub(k);
    assert_eq!((oh, ow), (side(h), side(w)), "the output of a stride-1 conv");
    let (plane, per_channel) = (h * w, oh * ow);
    assert!(x.len() >= bias.len() * plane && weight.len() >= bias.len() * k * k);
    assert_eq!(out.len(), bias.len() * per_channel);
    let geometry = Geometry {
        in_hw: (h, w),
        out_hw: (oh, ow),
        pad: c.padding,
    };
    let channel = |(ch, o): (usize, &mut [f32])| {
        let xc = &x[ch * plane..(ch + 1) * plane];
        let wc = &weight[ch * k * k..(ch + 1) * k * k];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `applies` checked AVX-512F; the slices have the sizes asserted above.
        #[allow(unsafe_code)]
        unsafe {
            match k {
                3 => lanes::channel::<3>(&geometry, xc, wc, bias[ch], o),
                5 => lanes::channel::<5>(&geometry, xc, wc, bias[ch], o),
                _ => lanes::channel::<7>(&geometry, xc, wc, bias[ch], o),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (xc, wc, o);
    };
    if out.len() * k * k < PARALLEL_MACS {
        out.chunks_mut(per_channel).enumerate().for_each(channel);
    } else {
        out.par_chunks_mut(per_channel).enumerate().for_each(channel);
    }
}

/// One channel's sizes.
struct Geometry {
    in_hw: (usize, usize),
    out_hw: (usize, usize),
    pad: usize,
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    use super::{Geometry, LANES};

    /// The lanes `l` of a block whose column `first + l` lies in `0..limit`.
    fn inside(first: isize, limit: usize) -> __mmask16 {
        let lo = (-first).clamp(0, LANES as isize);
        let hi = (limit as isize - first).clamp(0, LANES as isize);
        if hi <= lo {
            return 0;
        }
        let below_hi = (1u32 << hi) - 1;
        let below_lo = (1u32 << lo) - 1;
        (below_hi & !below_lo) as __mmask16
    }

    /// One channel: `x` is its `h × w` plane, `w` its `K × K` weights, `out` its `oh × ow`
    /// plane.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds `h·w` values, `wt` `K²`, `out` `oh·ow`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn channel<const K: usize>(
        g: &Geometry,
        x: &[f32],
        wt: &[f32],
        bias: f32,
        out: &mut [f32],
    ) {
        let ((h, w), (oh, ow), pad) = (g.in_hw, g.out_hw, g.pad as isize);
        let weights: [[__m512; K]; K] =
            std::array::from_fn(|ky| std::array::from_fn(|kx| _mm512_set1_ps(wt[ky * K + kx])));
        let bias = _mm512_set1_ps(bias);
        for first in (0..ow).step_by(LANES) {
            // Per tap column, the lanes that read inside the map (the same in every row).
            let masks: [__mmask16; K] =
                std::array::from_fn(|kx| inside(first as isize + kx as isize - pad, w));
            let store = inside(first as isize, ow);
            for oy in 0..oh {
                let mut acc = _mm512_setzero_ps();
                for (ky, row_weights) in weights.iter().enumerate() {
                    let iy = oy as isize + ky as isize - pad;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let row = x.as_ptr().wrapping_add(iy as usize * w);
                    for (kx, &wv) in row_weights.iter().enumerate() {
                        let at = row.wrapping_offset(first as isize + kx as isize - pad);
                        // SAFETY: the lanes the mask keeps read columns `0..w` of row `iy`.
                        let v = unsafe { _mm512_maskz_loadu_ps(masks[kx], at) };
                        acc = _mm512_add_ps(acc, _mm512_mul_ps(v, wv));
                    }
                }
                let dst = out.as_mut_ptr().wrapping_add(oy * ow + first);
                // SAFETY: the lanes `store` keeps write columns `first..ow` of row `oy`.
                unsafe { _mm512_mask_storeu_ps(dst, store, _mm512_add_ps(acc, bias)) };
            }
        }
    }
}
