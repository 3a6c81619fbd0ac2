//! Depthwise convolution at stride 1 or 2 on AVX-512 VNNI and VBMI, straight from rows of
//! *bytes* (each a code plus the layer's `lift`): one `vpdpbusd` multiplies four taps of a
//! kernel row for 16 outputs of an output row, and those four taps' bytes for the 16 outputs
//! are one `vpermb` of the window the 16 outputs read from that input row.
//!
//! Outputs `x0..x0 + 16` of output row `y` read input row `s·y + i − p` from column
//! `s·x0 − p` on, at most `15·s + k` bytes: one masked byte load of 64 lanes, the lanes
//! outside the row (left and right padding) taking the channel's padding byte `zero + lift`,
//! and rows above or below the map the padding byte throughout. Quad `t` of kernel row `i` for
//! output `x0 + l` is window bytes `s·l + 4t .. s·l + 4t + 4` (taps past the row's end weigh
//! 0). So each sum is `Σ w·(q + lift)` over the window, padding included, and starts at
//! `−(zero + lift)·Σ w`, which leaves exactly `Σ w·(q − zero)` over the taps inside the plane:
//! the definition's sums, in the same wrapping i32, as in [`super::depthwise_quads`].
//!
//! Nothing is laid out first. At stride 2 the tap-pair kernel ([`super::depthwise_pairs`])
//! filled a padded plane of i16 per channel and multiplied two taps of 8 outputs per
//! instruction (`perf`: its fill and sums 4.5 % of EfficientViT-B1's integer time at batch 8
//! on Emerald Rapids); at stride 1 the quads kernel builds every position's quad of a
//! flattened padded plane first, and computes and drops the `k − 1` positions past each row's
//! end; planes past L1 took the tap pairs too. Here B1's stride-2 convs run 2.2–2.7× faster
//! alone, its stride-1 3×3 convs on 112², 56² and 28² maps 2.4×, 1.7× and 1.5× (BENCHMARKS.md,
//! sixty-fourth session); on 14² and 7² maps the quads kernel stays ([`pays`]). The kernel
//! runs only where its operands are bytes: every weight an i8 and every padding byte inside
//! `0..=255` (the codes are bytes already); otherwise it reports that it did not run.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::depthwise::DwShape;
use super::depthwise_quads::{row_quads, weight_quads};

/// Outputs per vector.
const LANES: usize = 16;

/// Whether the kernel runs this shape: strides 1 and 2, kernels 3, 5 and 7 (a window of 16
/// outputs then spans at most 37 bytes of a 64-byte load), padding within the kernel.
pub fn supports(s: &DwShape) -> bool {
    matches!(s.stride, 1 | 2) && matches!(s.kernel, 3 | 5 | 7) && s.padding < s.kernel
}

/// Whether the kernel beats the quads kernel on `s` (which [`supports`]), where that one runs
/// too: at stride 2 (which it does not run), and on output rows of more than one vector. On
/// rows of one vector (B1's 14² and 7² maps at stride 1) a vector holds `ow` outputs of 16
/// where the flattened plane holds `16·ow/(ow + k − 1)`, and in the executor's calls of 24
/// channels the quads kernel was 1.06–1.6× faster (`cargo bench -p qvit-core --bench int8 --
/// depthwise_bytes_blocks_int`, Emerald Rapids).
pub fn pays(s: &DwShape) -> bool {
    s.stride == 2 || s.out_hw.1 > LANES
}

/// Every channel of `s` (which [`supports`]): `x` planes of bytes, each a code plus `lift`,
/// with per-channel `zero`-points, `w` `[C, K, K]`, `out` i32 planes; nothing past the planes
/// is written. Returns `false` where the operands are not bytes (a weight outside i8, a
/// `zero + lift` outside `0..=255`): `out` then holds nothing of use, and the caller runs
/// another kernel.
///
/// # Safety
/// The CPU has AVX-512 F, BW, VL, VNNI and VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn avx512<const K: usize>(
    s: &DwShape,
    x: &[u8],
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) -> bool {
    assert!(supports(s) && s.kernel == K);
    let ((h, iw), (oh, ow), p, st) = (s.in_hw, s.out_hw, s.padding, s.stride);
    let (plane, out_plane) = (h * iw, oh * ow);
    assert!(x.len() >= s.channels * plane && w.len() >= s.channels * K * K);
    assert!(zero.len() >= s.channels && out.len() >= s.channels * out_plane);
    // Per channel: its weight quads, padding byte and starting sum `−(zero + lift)·Σ w`.
    let mut channels = Vec::with_capacity(s.channels);
    for (c, &z) in zero[..s.channels].iter().enumerate() {
        let kernel = &w[c * K * K..(c + 1) * K * K];
        let (Some(taps), Ok(pad)) = (weight_quads::<K>(kernel), u8::try_from(z + lift)) else {
            return false;
        };
        let total: i32 = kernel.iter().map(|&v| i32::from(v)).sum();
        channels.push((taps, pad, i32::from(pad).wrapping_mul(total).wrapping_neg()));
    }
    // Per vector of an output row: the window's first column (`s·x0 − p`, below 0 at the
    // left edge), the window's bytes inside the row, and the outputs inside it.
    let vectors: Vec<(isize, __mmask64, __mmask16)> = (0..ow.div_ceil(LANES))
        .map(|v| {
            let first = (st * LANES * v) as isize - p as isize;
            let inside = (0..64)
                .filter(|&b| (0..iw as isize).contains(&(first + b)))
                .fold(0u64, |m, b| m | 1 << b);
            let outputs = (ow - LANES * v).min(LANES);
            (first, inside, ((1u32 << outputs) - 1) as __mmask16)
        })
        .collect();
    // Byte `4l + j` of quad vector `t`: window byte `s·l + 4t + j`.
    let spread: [__m512i; 2] = std::array::from_fn(|t| {
        let bytes: [u8; 64] = std::array::from_fn(|b| (st * (b / 4) + 4 * t + b % 4) as u8);
        // SAFETY: 64 bytes into a 64-byte vector.
        unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
    });
    for (c, (taps, pad, start)) in channels.into_iter().enumerate() {
        let codes = &x[c * plane..(c + 1) * plane];
        let dst = &mut out[c * out_plane..(c + 1) * out_plane];
        let (pads, start) = (_mm512_set1_epi8(pad as i8), _mm512_set1_epi32(start));
        let taps: [[__m512i; 2]; K] = taps.map(|row| row.map(|q| _mm512_set1_epi32(q)));
        for y in 0..oh {
            for (v, &(first, inside, kept)) in vectors.iter().enumerate() {
                let mut acc = start;
                for (i, row_taps) in taps.iter().enumerate() {
                    let r = (st * y + i).wrapping_sub(p);
                    let window = match r < h {
                        // SAFETY: the mask's bytes are columns `0..iw` of row `r`, inside
                        // `codes`; the others are neither read nor faulted on.
                        true => unsafe {
                            let at = codes.as_ptr().add(r * iw).wrapping_offset(first);
                            _mm512_mask_loadu_epi8(pads, inside, at.cast())
                        },
                        false => pads,
                    };
                    for (t, &tap) in row_taps.iter().enumerate().take(row_quads(K)) {
                        let quads = _mm512_permutexvar_epi8(spread[t], window);
                        acc = _mm512_dpbusd_epi32(acc, quads, tap);
                    }
                }
                // SAFETY: the kept lanes are outputs `16v..16v + 16` of row `y` below `ow`,
                // inside `dst`.
                unsafe {
                    let to = dst.as_mut_ptr().add(y * ow + LANES * v);
                    _mm512_mask_storeu_epi32(to, kept, acc);
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::kernels::depthwise_quads::available;

    /// The kernel runs on byte operands and declines every other (the sums it gives are
    /// checked against the definition on every small geometry, in `depthwise`'s tests).
    #[test]
    fn runs_on_bytes_alone() {
        if !(available() && std::arch::is_x86_feature_detected!("avx512vnni")) {
            eprintln!("runs_on_bytes_alone: no AVX-512 VNNI and VBMI on this CPU; not run");
            return;
        }
        let s = DwShape::square(2, 9, 3, 2);
        let bytes: Vec<u8> = (0..2 * 81).map(|i| (i * 37 % 256) as u8).collect();
        let run = |zero: &[i32], lift: i32, w: &[i16]| {
            let mut out = vec![0; 2 * 25];
            // SAFETY: the CPU has AVX-512 F, BW, VL, VNNI and VBMI (checked above).
            unsafe { avx512::<3>(&s, &bytes, zero, lift, w, &mut out) }
        };
        let w: Vec<i16> = (0..18).map(|i| i * 15 - 128).collect();
        assert!(run(&[-128, 127], 128, &w), "bytes");
        assert!(!run(&[-128, 127], 0, &w), "a padding byte below 0");
        assert!(!run(&[-128, 128], 128, &w), "a padding byte past 255");
        let mut wide = w.clone();
        wide[17] = 128;
        assert!(!run(&[-128, 127], 128, &wide), "a weight past i8");
    }
}
