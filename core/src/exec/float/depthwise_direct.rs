//! The stride-1, same-size depthwise conv read straight from the map: AVX-512, sixteen
//! consecutive outputs of the flattened plane per register (across row ends), each tap one
//! masked load of the input plane.
//!
//! The phase-plane kernel ([`super::depthwise`]) first copies every channel into a
//! zero-padded plane, so that each tap is a plain load: on EfficientViT-B1 the copies
//! (`run_channel` and the `memmove` under it) took 8 % of the fp32 time, as much as the sums
//! of the 3×3 convs at 56² and 28²; and it fills a register with one row's outputs, eight at a
//! time on a 7-wide map. Here output `o` of the flattened plane reads tap `(ky, kx)` at
//! `o + (ky − p)·w + (kx − p)` of the input plane (the same size), so a tap of sixteen
//! consecutive outputs is one load, with the lanes whose tap falls outside the map masked to
//! zero. The masks depend on the geometry only: made once per conv, shared by its channels.
//!
//! The arithmetic is the definition's, as in the phase-plane kernel: every output sums its
//! taps in (row, column) order from +0, products and sums rounded separately, then adds the
//! bias. A masked lane's product is +0 times a (finite) weight, and adding a zero to a sum
//! that started at +0 changes nothing.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::graph::Conv2d;

/// Outputs per register.
const LANES: usize = 16;

/// Below this many multiply-accumulates an image's conv runs on one thread (as the
/// phase-plane kernel's `PARALLEL_MACS`).
const PARALLEL_MACS: usize = 1 << 17;

/// Whether [`depthwise`] runs this conv: stride 1, a 3×3, 5×5 or 7×7 kernel padded to keep
/// the map's size, and AVX-512F.
pub fn applies(c: &Conv2d, in_hw: (usize, usize), out_hw: (usize, usize)) -> bool {
    c.stride == 1
        && matches!(c.kernel, 3 | 5 | 7)
        && 2 * c.padding + 1 == c.kernel
        && in_hw == out_hw
        && super::has_avx512f()
}

/// The depthwise conv `c` of `x` (`[C, h, w]`) into `out` (`[C, h, w]`), for a conv that
/// [`applies`].
pub fn depthwise(
    c: &Conv2d,
    x: &[f32],
    (h, w): (usize, usize),
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    assert!(
        applies(c, (h, w), (h, w)),
        "the direct depthwise kernel does not run {c:?}"
    );
    let (k, plane) = (c.kernel, h * w);
    assert!(x.len() >= bias.len() * plane && weight.len() >= bias.len() * k * k);
    assert_eq!(out.len(), bias.len() * plane);
    if plane == 0 {
        return;
    }
    let masks = tap_masks_for((h, w), k);
    let channel = |(ch, o): (usize, &mut [f32])| {
        let xc = &x[ch * plane..(ch + 1) * plane];
        let wc = &weight[ch * k * k..(ch + 1) * k * k];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `applies` checked AVX-512F; the slices have the sizes asserted above, and
        // `masks` was made for this geometry.
        #[allow(unsafe_code)]
        unsafe {
            match k {
                3 => lanes::channel::<3>(w, &masks, xc, wc, bias[ch], o),
                5 => lanes::channel::<5>(w, &masks, xc, wc, bias[ch], o),
                _ => lanes::channel::<7>(w, &masks, xc, wc, bias[ch], o),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (xc, wc, o, &masks);
    };
    if out.len() * k * k < PARALLEL_MACS {
        out.chunks_mut(plane).enumerate().for_each(channel);
    } else {
        out.par_chunks_mut(plane).enumerate().for_each(channel);
    }
}

/// [`tap_masks`] for this geometry, made once: a conv runs once per image, and making them
/// costs as much as a small map's conv (a 112² map's 7,000 masks, 16 lanes each).
fn tap_masks_for(hw: (usize, usize), k: usize) -> Arc<[u16]> {
    type Made = Vec<(((usize, usize), usize), Arc<[u16]>)>;
    static MADE: Mutex<Made> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, masks)) = made.iter().find(|(key, _)| *key == (hw, k)) {
        return masks.clone();
    }
    let masks: Arc<[u16]> = tap_masks(hw, k).into();
    made.push(((hw, k), masks.clone()));
    masks
}

/// Per block of [`LANES`] outputs of an `h × w` plane, then per tap `(ky, kx)` of a `k × k`
/// kernel (padding `k/2`), the lanes whose output exists and whose tap lies inside the map
/// (bit `l` for output `16·block + l`).
fn tap_masks((h, w): (usize, usize), k: usize) -> Vec<u16> {
    let (plane, pad) = (h * w, k / 2);
    let mut masks = vec![0u16; plane.div_ceil(LANES) * k * k];
    for (block, taps) in masks.chunks_exact_mut(k * k).enumerate() {
        for (tap, mask) in taps.iter_mut().enumerate() {
            for lane in 0..LANES {
                let o = block * LANES + lane;
                // Tap row `y + ky − pad` and column `x + kx − pad`, kept as `+ ky` and `+ kx`
                // against bounds moved by `pad`.
                let (y, x) = (o / w + tap / k, o % w + tap % k);
                if o < plane && (pad..h + pad).contains(&y) && (pad..w + pad).contains(&x) {
                    *mask |= 1 << lane;
                }
            }
        }
    }
    masks
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    use super::LANES;

    /// One channel: `x` its plane (`w` columns), `wt` its `K × K` weights, `out` its output
    /// plane, `masks` from [`super::tap_masks`] for this geometry.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` and `out` hold the plane, `wt` `K²` values, `masks` the
    /// plane's blocks' taps.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn channel<const K: usize>(
        w: usize,
        masks: &[u16],
        x: &[f32],
        wt: &[f32],
        bias: f32,
        out: &mut [f32],
    ) {
        let (pad, w) = ((K / 2) as isize, w as isize);
        // Per tap, its weight in every lane and its offset from the output in the plane.
        let weights: [[__m512; K]; K] =
            std::array::from_fn(|ky| std::array::from_fn(|kx| _mm512_set1_ps(wt[ky * K + kx])));
        let offsets: [[isize; K]; K] = std::array::from_fn(|ky| {
            std::array::from_fn(|kx| (ky as isize - pad) * w + kx as isize - pad)
        });
        let bias = _mm512_set1_ps(bias);
        for (block, taps) in masks.chunks_exact(K * K).enumerate() {
            let first = block * LANES;
            let at = x.as_ptr().wrapping_add(first);
            let mut acc = _mm512_setzero_ps();
            for ky in 0..K {
                for kx in 0..K {
                    let (mask, from) = (taps[ky * K + kx], at.wrapping_offset(offsets[ky][kx]));
                    // SAFETY: the lanes the mask keeps read taps inside the map, in `x`.
                    let v = unsafe { _mm512_maskz_loadu_ps(mask, from) };
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(v, weights[ky][kx]));
                }
            }
            // The centre tap lies inside the map for every output that exists.
            let store = taps[K * K / 2];
            let to = out.as_mut_ptr().wrapping_add(first);
            // SAFETY: the lanes `store` keeps write outputs of the plane, in `out`.
            unsafe { _mm512_mask_storeu_ps(to, store, _mm512_add_ps(acc, bias)) };
        }
    }
}
