//! Stride-1 depthwise convolution on AVX-512 VNNI and VBMI over flattened padded planes of
//! *bytes*: one `vpdpbusd` multiplies four taps of a kernel row for 16 outputs and adds them,
//! where [`super::depthwise_flat`]'s `vpdpwssd` takes two. A 3×3 kernel then costs 3
//! products per 16 outputs instead of 6; 5×5 and 7×7, 10 and 14 instead of 15 and 28.
//!
//! The flattening is [`super::depthwise_flat`]'s: a channel's padded plane `P` (`h + 2p` rows
//! of `wp = w + 2p`) read as one long row, output `(y, x)` at flat position `n = y·wp + x`, its
//! tap `(i, j)` at `P[n + i·wp + j]`, and the `k − 1` positions past each row's end computed and
//! dropped when the sums are stored. Here `P` holds each code plus `lift` (the layer's shift
//! that makes every code a u8) and padding holds `zero + lift`; quad `m` is the four bytes
//! `P[m..m + 4]`, and quad `t` of kernel row `i` for output `n` is quad `n + i·wp + 4t` (taps
//! past the row's end weigh 0). So each sum is `Σ w·(q + lift)` over the window, padding
//! included, and starts at `−(zero + lift)·Σ w`, which leaves exactly `Σ w·(q − zero)` over
//! the taps inside the plane: the definition's sums, in the same wrapping i32.
//!
//! A channel's quads are built 16 at a time straight from its codes, as `depthwise_flat` builds its
//! words: a masked load of the codes a vector of positions holds, spread to their lanes by
//! `vpexpandd` (padding lanes `pad`), and the low bytes of two such vectors spread into quads by
//! one `vpermt2b`; one channel ahead of their use, so that the products' loads do not wait on
//! stores still in flight. The kernel runs only where its operands are bytes: every weight an i8,
//! every padding byte and every code plus `lift` inside `0..=255`; it checks all three and
//! otherwise reports that it did not run.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::depthwise::DwShape;
use super::depthwise_flat::{Lanes, flattens, plane_lanes, store_kept};

/// Lanes of a vector of quads or sums.
const LANES: usize = 16;

/// The most quads a channel may take: two channels' quads then fit in a 32 KiB L1 data
/// cache, as [`super::depthwise_flat`]'s words do.
const L1_QUADS: usize = 4096;

/// Whether the kernel can run this shape (its operands are checked when it runs): stride 1,
/// kernels 3, 5 and 7 with the padding that keeps the map's size or less, planes that fit L1.
pub fn supports(s: &DwShape) -> bool {
    flattens(s) && Quads::vectors(s).1 * LANES <= L1_QUADS
}

/// Whether this CPU has what the kernel is compiled for beyond AVX-512 F, BW, VL and VNNI.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512vbmi")
}

/// A channel's codes as the kernel reads them: i32 codes, or bytes (each a code plus the
/// layer's `lift` already, so the kernel adds a `lift` of 0).
pub trait Code: Copy {
    /// Whether the codes hold their `lift` already (bytes).
    const LIFTED: bool;
    /// 32-bit lanes of the codes at `at`, as many as `mask`'s low lanes (0 in the others).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VL; the lanes `mask` sets lie inside one slice from `at`.
    unsafe fn load(at: *const Self, mask: __mmask16) -> __m512i;
}

impl Code for i32 {
    const LIFTED: bool = false;
    #[inline(always)]
    unsafe fn load(at: *const i32, mask: __mmask16) -> __m512i {
        // SAFETY: the caller's promise.
        unsafe { _mm512_maskz_loadu_epi32(mask, at) }
    }
}

impl Code for u8 {
    const LIFTED: bool = true;
    #[inline(always)]
    unsafe fn load(at: *const u8, mask: __mmask16) -> __m512i {
        // SAFETY: the caller's promise.
        unsafe { _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, at.cast())) }
    }
}

/// Quads of a kernel row: `⌈K/4⌉`.
pub(super) const fn row_quads(k: usize) -> usize {
    k.div_ceil(4)
}

/// Where a call's codes, quads and sums lie, the same for every channel.
struct Quads {
    /// The padded row's width.
    wp: usize,
    /// Per vector of flat positions `16u..16u + 16`, the lanes holding a code (the others are
    /// padding): one more than the quads, whose last vector reads three positions past its own.
    codes: Vec<Lanes>,
    /// Per vector of outputs, the lanes of real ones (`x < ow`, `y < oh`).
    keep: Vec<Lanes>,
    /// Vectors of quads a channel needs: the last output vector's last quad is
    /// `16·outputs − 1 + (k − 1)·wp + 4·(quads − 1)`.
    quad_vectors: usize,
    /// `vpermt2b`'s indices: byte `4l + j` of the quads is the low byte of position `l + j`.
    spread: __m512i,
}

impl Quads {
    /// Vectors of outputs (flat positions `0..oh·wp`) and of quads for the shape `s`.
    fn vectors(s: &DwShape) -> (usize, usize) {
        let (k, wp) = (s.kernel, s.in_hw.1 + 2 * s.padding);
        let out_vectors = (s.out_hw.0 * wp).div_ceil(LANES);
        let last_quad = out_vectors * LANES - 1 + (k - 1) * wp + 4 * (row_quads(k) - 1);
        (out_vectors, (last_quad + 1).div_ceil(LANES))
    }

    #[target_feature(enable = "avx512f")]
    fn new(s: &DwShape) -> Quads {
        let (out_vectors, quad_vectors) = Quads::vectors(s);
        let (codes, keep) = plane_lanes(s, quad_vectors + 1, out_vectors);
        // Byte `j` of quad `l`: the low byte of position `l + j` of two vectors' 32 (`here`'s
        // 16, then `next`'s), byte `4(l + j)` of the two registers' 128.
        let spread: [i8; 64] = std::array::from_fn(|b| (4 * (b / 4 + b % 4)) as i8);
        Quads {
            wp: s.in_hw.1 + 2 * s.padding,
            codes,
            keep,
            quad_vectors,
            // SAFETY: 64 bytes into a 64-byte vector.
            spread: unsafe { _mm512_loadu_si512(spread.as_ptr().cast()) },
        }
    }

    /// Lays out the quads of the channel whose `h·w` codes are `codes`: each code plus
    /// `lift`, `pad` around them. Returns whether every code plus `lift` is a u8 (if not, the
    /// quads hold their low bytes).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VL and VBMI; `codes` holds the `h·w` codes of the shape
    /// `Quads::new` was made for; `quads` holds `quad_vectors` vectors.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn fill<C: Code>(&self, codes: &[C], lift: i32, pad: u8, quads: &mut [i32]) -> bool {
        debug_assert!(quads.len() >= self.quad_vectors * LANES);
        let (lift, pads) = (_mm512_set1_epi32(lift), _mm512_set1_epi32(i32::from(pad)));
        // Every value made, OR-ed: none is a u8 unless no bit above the eighth is set.
        let mut bits = _mm512_setzero_si512();
        let mut taken = 0;
        // Flat positions `16u..16u + 16`, one per 32-bit lane: the codes the vector holds plus
        // `lift`, spread to their lanes, `pad` in the others.
        let mut positions = |lanes: &Lanes| {
            // SAFETY: the masks' lanes count the channel's codes exactly once each
            // (`Quads::new`), so the `count` read lie inside `codes`; the others are not read.
            let v = unsafe { C::load(codes.as_ptr().add(taken), lanes.first) };
            taken += lanes.count;
            let v = _mm512_add_epi32(v, lift);
            bits = _mm512_or_si512(bits, v);
            _mm512_mask_expand_epi32(pads, lanes.at, v)
        };
        let mut next = positions(&self.codes[0]);
        for (u, out) in quads
            .chunks_exact_mut(LANES)
            .take(self.quad_vectors)
            .enumerate()
        {
            let here = next;
            next = positions(&self.codes[u + 1]);
            // Quad `16u + l` from the low bytes of positions `16u + l..16u + l + 4`.
            let quad = _mm512_permutex2var_epi8(here, self.spread, next);
            // SAFETY: `out` holds one whole vector.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), quad) };
        }
        _mm512_test_epi32_mask(bits, _mm512_set1_epi32(!0xff)) == 0
    }

    /// The sums of one channel from its quads, from `start` (the correction), stored
    /// compactly (`oh·ow`) at the start of `out`, which holds them and any later channels' of
    /// the call (written after these).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and VNNI; `quads` was filled by [`Quads::fill`] for this
    /// shape; `out` holds at least `oh·ow` sums.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn products<const K: usize>(
        &self,
        quads: &[i32],
        taps: &[[i32; 2]; K],
        start: i32,
        out: &mut [i32],
    ) {
        let quads = quads.as_ptr();
        let start = _mm512_set1_epi32(start);
        let mut stored = 0;
        for (v, keep) in self.keep.iter().enumerate() {
            let mut acc = start;
            for (i, row) in taps.iter().enumerate() {
                for (t, &tap) in row.iter().enumerate().take(row_quads(K)) {
                    // SAFETY: the last read ends at quad `16·quad_vectors` (`Quads::vectors`),
                    // inside `quads`.
                    let q = unsafe {
                        _mm512_loadu_si512(quads.add(v * LANES + i * self.wp + 4 * t).cast())
                    };
                    acc = _mm512_dpbusd_epi32(acc, q, _mm512_set1_epi32(tap));
                }
            }
            // SAFETY: the kept lanes number `oh·ow` ≤ `out.len()` over the vectors.
            stored = unsafe { store_kept(out, stored, keep, acc) };
        }
    }
}

/// A channel's weights as quads, row by row: `(w[i][4t], …, w[i][4t + 3])` as i8, 0 past the
/// row; `None` if a weight is not an i8.
pub(super) fn weight_quads<const K: usize>(kernel: &[i16]) -> Option<[[i32; 2]; K]> {
    let mut out = [[0; 2]; K];
    for (i, row) in out.iter_mut().enumerate() {
        for (t, quad) in row.iter_mut().enumerate().take(row_quads(K)) {
            let mut bytes = [0u8; 4];
            for (j, byte) in bytes.iter_mut().enumerate() {
                if 4 * t + j < K {
                    *byte = i8::try_from(kernel[i * K + 4 * t + j]).ok()? as u8;
                }
            }
            *quad = i32::from_le_bytes(bytes);
        }
    }
    Some(out)
}

/// Every channel of `s` (which [`supports`]): `x` planes of codes with per-channel
/// `zero`-points, each code plus `lift` a u8, `w` `[C, K, K]`, `out` i32 planes; nothing past
/// the planes is written (codes given as bytes hold each code plus `lift` already: `lift` is
/// then the one they were made with). Returns `false` where the operands are not bytes (a
/// weight outside i8, a `zero + lift` or code plus `lift` outside `0..=255`): `out` then
/// holds nothing of use, and the caller runs another kernel.
///
/// # Safety
/// The CPU has AVX-512 F, BW, VL, VNNI and VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub unsafe fn avx512<const K: usize, C: Code>(
    s: &DwShape,
    x: &[C],
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) -> bool {
    assert!(supports(s) && s.kernel == K);
    let plane = s.in_hw.0 * s.in_hw.1;
    let out_plane = s.out_hw.0 * s.out_hw.1;
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
    // Whole vectors are stored up to the end of the call's planes, never past it.
    let out = &mut out[..s.channels * out_plane];
    let layout = Quads::new(s);
    let codes = |c: usize| &x[c * plane..(c + 1) * plane];
    // Two channels' quads: the next one's are built before this one's are read.
    let len = layout.quad_vectors * LANES;
    let mut quads = vec![0i32; 2 * len];
    let (mut ready, mut building) = quads.split_at_mut(len);
    // SAFETY (all `unsafe` below): the CPU has AVX-512 F, BW, VL, VNNI and VBMI (the caller's
    // promise); each quad buffer holds `quad_vectors` vectors and each channel's output
    // `oh·ow` sums.
    let add = if C::LIFTED { 0 } else { lift };
    let mut inside = unsafe { layout.fill(codes(0), add, channels[0].1, ready) };
    for (c, &(taps, _, start)) in channels.iter().enumerate() {
        if let Some(&(_, pad, _)) = channels.get(c + 1) {
            inside &= unsafe { layout.fill(codes(c + 1), add, pad, building) };
        }
        let dst = &mut out[c * out_plane..];
        unsafe { layout.products::<K>(ready, &taps, start, dst) };
        std::mem::swap(&mut ready, &mut building);
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel runs on byte operands and declines every other (the sums it gives are
    /// checked against the definition with the other kernels', in `depthwise`'s tests).
    #[test]
    fn runs_on_bytes_alone() {
        if !(available() && std::arch::is_x86_feature_detected!("avx512vnni")) {
            eprintln!("runs_on_bytes_alone: no AVX-512 VNNI and VBMI on this CPU; not run");
            return;
        }
        let s = DwShape {
            channels: 2,
            in_hw: (14, 14),
            out_hw: (14, 14),
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let run = |codes: &[i32], zero: &[i32], lift: i32, w: &[i16]| {
            let mut out = vec![0; 2 * 196];
            // SAFETY: the CPU has AVX-512 F, BW, VL, VNNI and VBMI (checked above).
            unsafe { avx512::<3, i32>(&s, codes, zero, lift, w, &mut out) }
        };
        let codes: Vec<i32> = (0..2 * 196).map(|i| i % 256 - 128).collect();
        let w: Vec<i16> = (0..18).map(|i| i * 15 - 128).collect();
        assert!(run(&codes, &[-128, 127], 128, &w), "bytes");
        assert!(
            !run(&codes, &[-128, 127], 0, &w),
            "codes and padding below 0, unlifted"
        );
        assert!(
            !run(&codes, &[-128, 128], 128, &w),
            "a zero-point past a byte"
        );
        let mut wide = w.clone();
        wide[17] = 128;
        assert!(!run(&codes, &[-128, 127], 128, &wide), "a weight past i8");
        let mut high = codes.clone();
        high[391] = 128;
        assert!(!run(&high, &[-128, 127], 128, &w), "a code past a byte");
    }
}
