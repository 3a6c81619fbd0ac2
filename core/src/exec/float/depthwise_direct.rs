//! The depthwise conv padded by half its kernel read straight from the map, with AVX-512 or
//! AVX2 (eight outputs of a row per register, four rows at a time: [`avx2`]). With AVX-512, at
//! stride 1 (the same size), sixteen consecutive outputs of the flattened plane per register
//! (across row ends), each tap one masked load of the input plane. At stride 2, sixteen
//! outputs of a row per register: each kernel row's 48 input columns from the block's first
//! tap in three masked loads, their even and odd columns gathered by two permutes each, and
//! each tap those shifted by whole lanes (`valignd`) — the phase-plane kernel's copy of every
//! channel into two planes of even and odd columns first had cost more than its sums
//! (`run_channel`, 4 % of EfficientViT-B1's fp32 time at batch 8 against 1.3 % for the sums).
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

use super::product::Activation;
use crate::graph::Conv2d;

/// Outputs per register.
const LANES: usize = 16;

/// Below this many multiply-accumulates an image's conv runs on one thread (as the
/// phase-plane kernel's `PARALLEL_MACS`).
const PARALLEL_MACS: usize = 1 << 17;

/// One channel's conv: its index, input plane, weights and output plane.
type ChannelConv<'a> = dyn Fn(usize, &[f32], &[f32], &mut [f32]) + Sync + 'a;

/// Whether [`depthwise`] runs this conv: a 3×3, 5×5 or 7×7 kernel padded by half its size, at
/// stride 1 or 2, and AVX-512F or AVX2.
pub fn applies(c: &Conv2d, in_hw: (usize, usize), out_hw: (usize, usize)) -> bool {
    let halved = |side: usize| side.div_ceil(2);
    let sides = match c.stride {
        1 => in_hw == out_hw,
        2 => out_hw == (halved(in_hw.0), halved(in_hw.1)),
        _ => false,
    };
    let lanes = crate::exec::cpu::float_lanes() >= crate::exec::cpu::FloatLanes::Avx2Fma;
    sides && matches!(c.kernel, 3 | 5 | 7) && 2 * c.padding + 1 == c.kernel && lanes
}

/// The depthwise conv `c` of `x` (`[C, h, w]`) into `out` (`[C, h, w]`, or `[C, ⌈h/2⌉, ⌈w/2⌉]`
/// at stride 2), each output finished by `act` in its register, for a conv that [`applies`].
pub fn depthwise(
    c: &Conv2d,
    x: &[f32],
    (h, w): (usize, usize),
    (weight, bias): (&[f32], &[f32]),
    act: Activation,
    out: &mut [f32],
) {
    let out_hw = match c.stride {
        2 => (h.div_ceil(2), w.div_ceil(2)),
        _ => (h, w),
    };
    assert!(
        applies(c, (h, w), out_hw),
        "the direct depthwise kernel does not run {c:?}"
    );
    let (k, plane, out_plane) = (c.kernel, h * w, out_hw.0 * out_hw.1);
    assert!(x.len() >= bias.len() * plane && weight.len() >= bias.len() * k * k);
    assert_eq!(out.len(), bias.len() * out_plane);
    if out_plane == 0 {
        return;
    }
    // Channel `ch`'s input plane, weights and output plane, on the pool's threads when large.
    let mut for_channels = |run: &ChannelConv| {
        let channel = |(ch, o): (usize, &mut [f32])| {
            run(
                ch,
                &x[ch * plane..][..plane],
                &weight[ch * k * k..][..k * k],
                o,
            )
        };
        if out.len() * k * k < PARALLEL_MACS {
            out.chunks_mut(out_plane).enumerate().for_each(channel);
        } else {
            out.par_chunks_mut(out_plane).enumerate().for_each(channel);
        }
    };
    if !super::has_avx512f() {
        return for_channels(&|ch, xc, wc, o| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` checked AVX2; the slices have the sizes asserted above.
            #[allow(unsafe_code)]
            unsafe {
                avx2_channel((k, c.stride), (h, w), xc, wc, (bias[ch], act), o)
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (ch, xc, wc, o);
        });
    }
    if c.stride == 2 {
        return for_channels(&|ch, xc, wc, o| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` checked AVX-512F; the slices have the sizes asserted above.
            #[allow(unsafe_code)]
            unsafe {
                match k {
                    3 => lanes::halving::<3>((h, w), xc, wc, (bias[ch], act), o),
                    5 => lanes::halving::<5>((h, w), xc, wc, (bias[ch], act), o),
                    _ => lanes::halving::<7>((h, w), xc, wc, (bias[ch], act), o),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (ch, xc, wc, o);
        });
    }
    let masks = tap_masks_for((h, w), k);
    for_channels(&|ch, xc, wc, o| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `applies` checked AVX-512F; the slices have the sizes asserted above, and
        // `masks` was made for this geometry.
        #[allow(unsafe_code)]
        unsafe {
            match k {
                3 => lanes::channel::<3>(w, &masks, xc, wc, (bias[ch], act), o),
                5 => lanes::channel::<5>(w, &masks, xc, wc, (bias[ch], act), o),
                _ => lanes::channel::<7>(w, &masks, xc, wc, (bias[ch], act), o),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (ch, xc, wc, o, &masks);
    });
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
mod avx2;

/// [`avx2::channel`] for a `k × k` kernel at `stride`: one channel's `h × w` plane `x`, its
/// weights `wt`, its bias and the activation that finishes its outputs, its output plane
/// `out`.
///
/// # Safety
/// The CPU has AVX2; `k` is 3, 5 or 7 and `stride` 1 or 2 (padding `k/2`); the slices hold
/// the plane, `k²` weights and the output plane.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
unsafe fn avx2_channel(
    (k, stride): (usize, usize),
    hw: (usize, usize),
    x: &[f32],
    wt: &[f32],
    finish: (f32, Activation),
    out: &mut [f32],
) {
    // SAFETY (all): the caller's promises.
    unsafe {
        match (k, stride) {
            (3, 1) => avx2::channel::<3, 1>(hw, x, wt, finish, out),
            (5, 1) => avx2::channel::<5, 1>(hw, x, wt, finish, out),
            (_, 1) => avx2::channel::<7, 1>(hw, x, wt, finish, out),
            (3, _) => avx2::channel::<3, 2>(hw, x, wt, finish, out),
            (5, _) => avx2::channel::<5, 2>(hw, x, wt, finish, out),
            _ => avx2::channel::<7, 2>(hw, x, wt, finish, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    use super::{Activation, LANES};
    use crate::exec::float::hardswish_lanes;

    /// `sum + bias`, then `act`.
    #[inline(always)]
    fn finished(sum: __m512, bias: __m512, act: Activation) -> __m512 {
        // SAFETY (both): called only from functions compiled for AVX-512F.
        let v = unsafe { _mm512_add_ps(sum, bias) };
        match act {
            Activation::None => v,
            Activation::Hardswish => unsafe { hardswish_lanes::avx512(v) },
        }
    }

    /// One channel: `x` its plane (`w` columns), `wt` its `K × K` weights, `out` its output
    /// plane, `masks` from [`super::tap_masks`] for this geometry, each output finished by the
    /// bias and the activation.
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
        (bias, act): (f32, Activation),
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
            unsafe { _mm512_mask_storeu_ps(to, store, finished(acc, bias, act)) };
        }
    }

    /// One channel at stride 2: `x` its `h × w` plane, `wt` its `K × K` weights, `out` its
    /// `⌈h/2⌉ × ⌈w/2⌉` output plane, each output finished by the bias and the activation.
    /// Output `(oy, ox)` reads tap `(ky, kx)` at row `2·oy + ky − p`, column `2·ox + kx − p`
    /// (`p = K/2`): for sixteen outputs from `ox`, every other column from `c = 2·ox − p +
    /// kx`. With `e` the even columns from `c₀ = 2·ox − p` (lanes
    /// of the first two of three vectors from `c₀`) and `o` the odd ones, tap `kx` is `e` for
    /// `kx = 0`, `o` for 1, and for `kx ≥ 2` the same moved down `kx/2` lanes, the last lanes
    /// filled from the third vector's even or odd columns. Rows of padding add nothing: their
    /// products are zeros, and adding a zero to a sum that started at +0 changes nothing.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds the plane, `wt` `K²` values and `out` the output plane.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn halving<const K: usize>(
        (h, w): (usize, usize),
        x: &[f32],
        wt: &[f32],
        (bias, act): (f32, Activation),
        out: &mut [f32],
    ) {
        let (pad, (oh, ow)) = (K / 2, (h.div_ceil(2), w.div_ceil(2)));
        let mut weights = [[_mm512_setzero_ps(); K]; K];
        for (ky, row) in weights.iter_mut().enumerate() {
            for (kx, v) in row.iter_mut().enumerate() {
                *v = _mm512_set1_ps(wt[ky * K + kx]);
            }
        }
        let bias = _mm512_set1_ps(bias);
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let even = _mm512_add_epi32(lane, lane);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let columns = _mm512_set1_epi32(w as i32);
        for oy in 0..oh {
            for ox in (0..ow).step_by(LANES) {
                let first = 2 * ox as isize - pad as isize;
                // The lanes of the three vectors from `first` inside the row (a column left
                // of it wraps to a large unsigned one).
                let inside: [__mmask16; 3] = std::array::from_fn(|v| {
                    let at = _mm512_set1_epi32((first + (v * LANES) as isize) as i32);
                    _mm512_cmplt_epu32_mask(_mm512_add_epi32(at, lane), columns)
                });
                let mut acc = _mm512_setzero_ps();
                for (ky, row_weights) in weights.iter().enumerate() {
                    let Some(iy) = (2 * oy + ky).checked_sub(pad).filter(|&iy| iy < h) else {
                        continue;
                    };
                    let from = x[iy * w..].as_ptr().wrapping_offset(first);
                    // SAFETY: the lanes each mask keeps lie in row `iy`, inside `x`.
                    let v: [__m512; 3] = std::array::from_fn(|v| unsafe {
                        _mm512_maskz_loadu_ps(inside[v], from.wrapping_add(v * LANES))
                    });
                    let e = _mm512_castps_si512(_mm512_permutex2var_ps(v[0], even, v[1]));
                    let o = _mm512_castps_si512(_mm512_permutex2var_ps(v[0], odd, v[1]));
                    let e_next = _mm512_castps_si512(_mm512_permutexvar_ps(even, v[2]));
                    let o_next = _mm512_castps_si512(_mm512_permutexvar_ps(odd, v[2]));
                    for (kx, &weight) in row_weights.iter().enumerate() {
                        let tap = match kx {
                            0 => e,
                            1 => o,
                            2 => _mm512_alignr_epi32::<1>(e_next, e),
                            3 => _mm512_alignr_epi32::<1>(o_next, o),
                            4 => _mm512_alignr_epi32::<2>(e_next, e),
                            5 => _mm512_alignr_epi32::<2>(o_next, o),
                            _ => _mm512_alignr_epi32::<3>(e_next, e),
                        };
                        let tap = _mm512_castsi512_ps(tap);
                        acc = _mm512_add_ps(acc, _mm512_mul_ps(tap, weight));
                    }
                }
                let store = ((1u32 << (ow - ox).min(LANES)) - 1) as __mmask16;
                let to = out[oy * ow + ox..].as_mut_ptr();
                // SAFETY: the lanes `store` keeps write outputs of row `oy`, in `out`.
                unsafe { _mm512_mask_storeu_ps(to, store, finished(acc, bias, act)) };
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::exec::float::product;
    use crate::rng::Rng;

    /// The AVX2 kernel on its own (a CPU with AVX-512 runs the other through [`depthwise`],
    /// which the phase-plane kernel's tests check), bit for bit against the definition, with
    /// and without the Hardswish after it: 3×3,
    /// 5×5 and 7×7 at strides 1 and 2 on every map up to 20 × 20 (rows narrower than a block,
    /// partial blocks, fewer rows than a group) and on B1's 112² and 28² (channel 0's bias 0).
    #[test]
    #[allow(unsafe_code)]
    fn avx2_kernel_equals_the_definition() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: the AVX2 depthwise kernel is not tested");
            return;
        }
        let mut rng = Rng::new(11);
        let small = (1..=20).flat_map(|h| (1..=20).map(move |w| (h, w)));
        for (h, w) in small.chain([(112, 112), (28, 28)]) {
            for (k, stride) in [(3, 1), (5, 1), (7, 1), (3, 2), (5, 2), (7, 2)] {
                let c = Conv2d::depthwise(2, k, stride);
                let x: Vec<f32> = (0..2 * h * w).map(|_| rng.normal()).collect();
                let wt: Vec<f32> = (0..2 * k * k).map(|_| rng.normal()).collect();
                let bias = [0.0, rng.normal()];
                let sums = super::super::depthwise::tests::reference(&c, &x, (h, w), &wt, &bias);
                for act in [Activation::None, Activation::Hardswish] {
                    let mut want = sums.clone();
                    product::activate(act, &mut want);
                    let mut got = vec![f32::NAN; want.len()];
                    let out_plane = want.len() / 2;
                    for (ch, o) in got.chunks_mut(out_plane).enumerate() {
                        let (xc, wc) = (&x[ch * h * w..][..h * w], &wt[ch * k * k..][..k * k]);
                        // SAFETY: the CPU has AVX2; the conv pads by half its kernel, and the
                        // planes have its sizes.
                        unsafe { avx2_channel((k, stride), (h, w), xc, wc, (bias[ch], act), o) };
                    }
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{h}×{w}, k {k}, stride {stride}, {act:?}");
                }
            }
        }
    }
}
