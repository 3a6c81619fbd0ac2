//! Integer depthwise convolution: each channel's `k×k` window over its own plane of codes less
//! the channel's zero-point (so padding is 0). The codes come as i32, or as bytes (each a code
//! plus the layer's `lift`: values stored so between convs, `byte_codes`). On x86 the shapes
//! of the real models (kernels 3, 5, 7 at strides 1 and 2) read them directly: codes stored
//! as bytes (or made bytes first), with AVX-512 VNNI and VBMI, by `depthwise_windows` (each
//! vector's four taps permuted from the window it reads, 16 outputs per instruction, where
//! weights and padding are bytes too; at stride 2 and on rows of more than 16 outputs); at
//! stride 1 with AVX-512 VNNI on planes that fit L1, `depthwise_quads`
//! (flattened planes of bytes, four taps and 16 outputs per instruction, with VBMI) or
//! `depthwise_flat` (the same in i16 pairs); otherwise with AVX2 `depthwise_pairs` (8 or
//! 16 output columns of a row from a padded plane of i16). Any other shape or CPU centres the
//! planes to i16 first (bytes widened to codes before) and runs one portable body, also
//! compiled for AVX2 and AVX-512 and picked at run time, which lets the compiler vectorise the
//! inner loop over output columns.
//! All produce the same integers (tested).
#![allow(unsafe_code)]

use std::cell::Cell;

use super::Isa;
use super::bytes::widen;
#[cfg(target_arch = "x86_64")]
use super::narrow_lanes::each64_bytes;
use super::pack::centre_planes;
#[cfg(target_arch = "x86_64")]
use super::{
    Width, depthwise_flat as flat, depthwise_pairs as pairs, depthwise_quads as quads,
    depthwise_windows as windows, width,
};
use crate::exec::spare::{prefix_to_overwrite, with_kept};

/// Shape of one depthwise call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwShape {
    pub channels: usize,
    pub in_hw: (usize, usize),
    pub out_hw: (usize, usize),
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl DwShape {
    /// `channels` square maps of side `side` under a `kernel` with the padding that keeps the
    /// map's size at stride 1 (`kernel / 2`), as the models' depthwise convs have.
    pub fn square(channels: usize, side: usize, kernel: usize, stride: usize) -> DwShape {
        let padding = kernel / 2;
        let out = (side + 2 * padding - kernel) / stride + 1;
        DwShape {
            channels,
            in_hw: (side, side),
            out_hw: (out, out),
            kernel,
            stride,
            padding,
        }
    }
}

/// `out[c][y][x] = Σ w[c][i][j]·(x[c][y·s + i − p][x·s + j − p] − zero[c])` (outside the
/// plane: 0), i32; `x` holds codes of at most 8 bits, so each centred input fits i16. `lift`
/// is the layer's shift that makes each code a u8 (0 or 128): where codes, weights and
/// padding are all bytes, AVX-512 VBMI machines run them as bytes.
pub fn depthwise(
    isa: Isa,
    s: &DwShape,
    x: &[i32],
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) {
    let empty = s.channels == 0 || s.out_hw.0 == 0 || s.out_hw.1 == 0;
    // Codes go to the byte kernel but on 7×7 maps with a 3×3 kernel, where its quads cost more
    // to lay out than they save (`cargo bench -p qvit-core --bench int8 -- depthwise_int`,
    // Intel Xeon: 1,024 × 7² 3×3 36 µs against the word kernel's 30; 512 × 14² 3×3 37 against
    // 44, 128 × 56² 141 against 166). Bytes go to it always: they are laid out as they lie.
    let quads_win = s.kernel > 3 || s.out_hw.0 * s.out_hw.1 >= 14 * 14;
    if empty
        || codes_as_windows(isa, s, x, zero, lift, w, out)
        || (quads_win && as_quads(isa, s, Planes::Codes(x), zero, lift, w, out))
        || halved(isa, s, Planes::Codes(x), zero, lift, w, out)
    {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if width(isa) == Width::Avx512 && flat::supports(s) {
        // SAFETY (all): `Width::Avx512` under `Isa::Avx512Vnni` found AVX-512 F, BW and VNNI.
        match s.kernel {
            3 => return unsafe { flat::avx512::<3>(s, x, zero, w, out) },
            5 => return unsafe { flat::avx512::<5>(s, x, zero, w, out) },
            7 => return unsafe { flat::avx512::<7>(s, x, zero, w, out) },
            _ => {}
        }
    }
    if as_pairs(isa, s, Planes::Codes(x), (zero, 0), w, out) {
        return;
    }
    let plane = s.in_hw.0 * s.in_hw.1;
    let mut centred = Vec::new();
    if plane > 0 {
        centre_planes(isa, &x[..s.channels * plane], plane, zero, &mut centred);
    }
    let x = centred.as_slice();
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512 F/BW were checked just above.
        unsafe { depthwise_avx512(s, x, w, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was checked just above.
        unsafe { depthwise_avx2(s, x, w, out) };
        return;
    }
    depthwise_portable(s, x, w, out)
}

/// [`depthwise`] of codes stored as bytes, each a code plus `lift` (the layer's).
pub fn depthwise_bytes(
    isa: Isa,
    s: &DwShape,
    x: &[u8],
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) {
    let empty = s.channels == 0 || s.out_hw.0 == 0 || s.out_hw.1 == 0;
    // Stride 2 goes to the windows wherever the quads could run it (`halved`, for codes).
    if empty
        || as_windows(isa, s, x, zero, lift, w, out)
        || as_quads(isa, s, Planes::Bytes(x), zero, lift, w, out)
        || as_pairs(isa, s, Planes::Bytes(x), (zero, lift), w, out)
    {
        return;
    }
    // Elsewhere the codes themselves, in this thread's buffer (kept for its next call).
    thread_local! {
        static CODES: Cell<Vec<i32>> = const { Cell::new(Vec::new()) };
    }
    let len = s.channels * s.in_hw.0 * s.in_hw.1;
    with_kept(&CODES, |codes| {
        let codes = prefix_to_overwrite(codes, len);
        widen(isa, &x[..len], lift, codes);
        depthwise(isa, s, codes, zero, lift, w, out);
    });
}

/// A call's input planes: codes, or bytes (each a code plus the layer's `lift`).
#[derive(Clone, Copy)]
enum Planes<'a> {
    Codes(&'a [i32]),
    Bytes(&'a [u8]),
}

/// Runs `s` by [`quads`] where this CPU and the operands allow it; whether it ran.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn as_quads(
    isa: Isa,
    s: &DwShape,
    x: Planes,
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if width(isa) == Width::Avx512 && quads::available() && quads::supports(s) {
        // SAFETY (both): `Width::Avx512` under `Isa::Avx512Vnni` found AVX-512 F, BW, VL and
        // VNNI, `quads::available` VBMI.
        return match x {
            Planes::Codes(x) => unsafe { quads_of(s, x, zero, lift, w, out) },
            Planes::Bytes(x) => unsafe { quads_of(s, x, zero, lift, w, out) },
        };
    }
    false
}

/// Runs `s` by [`windows`] where this CPU and the operands allow it (bytes only) and it pays;
/// whether it ran.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn as_windows(
    isa: Isa,
    s: &DwShape,
    x: &[u8],
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if width(isa) == Width::Avx512 && quads::available() && windows::supports(s) && windows::pays(s)
    {
        // SAFETY (all): `Width::Avx512` under `Isa::Avx512Vnni` found AVX-512 F, BW, VL and
        // VNNI, `quads::available` VBMI.
        return match s.kernel {
            3 => unsafe { windows::avx512::<3>(s, x, zero, lift, w, out) },
            5 => unsafe { windows::avx512::<5>(s, x, zero, lift, w, out) },
            _ => unsafe { windows::avx512::<7>(s, x, zero, lift, w, out) },
        };
    }
    false
}

/// Runs `s` by [`windows`] on codes as [`as_windows`] runs it on bytes, the codes made bytes
/// first (each plus `lift`, in this thread's buffer) where every one is a u8 so; whether it
/// ran. The bytes cost a pass over the input, which the windows repay where it is in cache:
/// B1's 112² 3×3 conv, whose input the residual add reads too and so stays codes, 63 → 36 µs
/// alone (`cargo bench -p qvit-core --bench int8 -- depthwise_int::2`, Emerald Rapids), its
/// step 0.106 → 0.078 ms of an image; an input past L2 (the bench's 64 × 112² at stride 2,
/// 3.2 MB of codes) gains nothing, the pass bound by reading it.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn codes_as_windows(
    isa: Isa,
    s: &DwShape,
    x: &[i32],
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) -> bool {
    // Where the quads kernel runs the codes (stride 1, a plane in L1) it is as fast or faster:
    // 256 × 28² 45 against 48–50 µs, 128 × 56² 115 against 112.
    #[cfg(target_arch = "x86_64")]
    if width(isa) == Width::Avx512
        && quads::available()
        && windows::supports(s)
        && windows::pays(s)
        && !quads::supports(s)
    {
        thread_local! {
            static BYTES: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
        }
        let len = s.channels * s.in_hw.0 * s.in_hw.1;
        return with_kept(&BYTES, |bytes| {
            let bytes = prefix_to_overwrite(bytes, len);
            // SAFETY: `Width::Avx512` found AVX-512 F and BW.
            let all_bytes = unsafe { lifted_bytes(&x[..len], lift, bytes) };
            all_bytes && as_windows(isa, s, bytes, zero, lift, w, out)
        });
    }
    false
}

/// `bytes[i] = codes[i] + lift`, packed 64 a step as the square Hardswish packs its bytes
/// (`each64_bytes`: a masked `vpmovdb` per 16 had taken about 8 cycles, as long as the
/// windows' sums on a stride-2 map); whether every one is a u8. Every value plus `lift` is
/// OR-ed before it is packed: none is a u8 unless no bit above the eighth is set (lanes past
/// the end count as `lift`, which a layer's is: 0 or 128).
///
/// # Safety
/// The CPU has AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn lifted_bytes(codes: &[i32], lift: i32, bytes: &mut [u8]) -> bool {
    use std::arch::x86_64::*;
    let lifts = _mm512_set1_epi32(lift);
    let bits = Cell::new(_mm512_setzero_si512());
    let check = |v| {
        bits.set(_mm512_or_si512(bits.get(), _mm512_add_epi32(v, lifts)));
        v
    };
    // SAFETY: the CPU has AVX-512 F and BW (the caller's promise).
    unsafe { each64_bytes(codes, bytes, lift, check) };
    _mm512_test_epi32_mask(bits.get(), _mm512_set1_epi32(!0xff)) == 0
}

/// The most outputs per channel of the stride-1 map that [`halved`] computes.
const HALVED_FROM: usize = 14 * 14;

/// `s` at stride 1 over the same planes, kernel and padding, where `s` has stride 2: its
/// output `(2y, 2x)` reads the window `s`'s output `(y, x)` reads, so it is the same sum, and
/// `s`'s outputs are every other row and column of it.
fn at_stride_one(s: &DwShape) -> Option<DwShape> {
    let ((h, w), k, p) = (s.in_hw, s.kernel, s.padding);
    if s.stride != 2 || h + 2 * p < k || w + 2 * p < k {
        return None;
    }
    let full = (h + 2 * p + 1 - k, w + 2 * p + 1 - k);
    let halves = (full.0.div_ceil(2), full.1.div_ceil(2));
    (s.out_hw == halves).then_some(DwShape {
        stride: 1,
        out_hw: full,
        ..*s
    })
}

/// Runs a stride-2 `s` on small maps as its stride-1 map by [`quads`], keeping every other
/// row and column; whether it ran. Four times the sums, but in the kernel that multiplies
/// four taps per instruction: B1's 3×3 from 14² to 7² over 512 channels took 0.14 ms by the
/// tap pairs (`qvit bench --steps`), five times a stride-1 3×3 layer on 7²; 0.08 ms so.
fn halved(
    isa: Isa,
    s: &DwShape,
    x: Planes,
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) -> bool {
    let Some(full) = at_stride_one(s).filter(|f| f.out_hw.0 * f.out_hw.1 <= HALVED_FROM) else {
        return false;
    };
    thread_local! {
        static FULL: Cell<Vec<i32>> = const { Cell::new(Vec::new()) };
    }
    let (fh, fw) = full.out_hw;
    let (oh, ow) = s.out_hw;
    with_kept(&FULL, |sums| {
        let sums = prefix_to_overwrite(sums, s.channels * fh * fw);
        if !as_quads(isa, &full, x, zero, lift, w, sums) {
            return false;
        }
        let planes = sums
            .chunks_exact(fh * fw)
            .zip(out.chunks_exact_mut(oh * ow));
        for (sums, out) in planes {
            let rows = sums.chunks_exact(2 * fw).map(|r| &r[..fw]);
            let last = (fh % 2 == 1).then(|| &sums[(fh - 1) * fw..]);
            for (row, o) in rows.chain(last).zip(out.chunks_exact_mut(ow)) {
                for (o, v) in o.iter_mut().zip(row.iter().step_by(2)) {
                    *o = *v;
                }
            }
        }
        true
    })
}

/// Runs `s` by [`pairs`] where this CPU has AVX2 and the kernel takes the shape; whether it
/// ran. Codes given as bytes hold `lift`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn as_pairs(
    isa: Isa,
    s: &DwShape,
    x: Planes,
    zero: (&[i32], i32),
    w: &[i16],
    out: &mut [i32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(width(isa), Width::Avx512 | Width::Avx2) && pairs::supports(s) {
        // SAFETY (both): `width` found AVX2, which the kernels are compiled for.
        match x {
            Planes::Codes(x) => unsafe { pairs_of(s, x, zero, w, out) },
            Planes::Bytes(x) => unsafe { pairs_of(s, x, zero, w, out) },
        }
        return true;
    }
    false
}

/// [`pairs::avx2`] for `s`'s kernel size (3, 5 or 7).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
unsafe fn pairs_of<T: pairs::Code8>(
    s: &DwShape,
    x: &[T],
    zero: (&[i32], i32),
    w: &[i16],
    out: &mut [i32],
) {
    // SAFETY (all): the caller's promise.
    match s.kernel {
        3 => unsafe { pairs::avx2::<3, T>(s, x, zero, w, out) },
        5 => unsafe { pairs::avx2::<5, T>(s, x, zero, w, out) },
        _ => unsafe { pairs::avx2::<7, T>(s, x, zero, w, out) },
    }
}

/// [`quads::avx512`] for `s`'s kernel size.
///
/// # Safety
/// As [`quads::avx512`].
#[cfg(target_arch = "x86_64")]
unsafe fn quads_of<C: quads::Code>(
    s: &DwShape,
    x: &[C],
    zero: &[i32],
    lift: i32,
    w: &[i16],
    out: &mut [i32],
) -> bool {
    // SAFETY (all): the caller's promise.
    match s.kernel {
        3 => unsafe { quads::avx512::<3, C>(s, x, zero, lift, w, out) },
        5 => unsafe { quads::avx512::<5, C>(s, x, zero, lift, w, out) },
        7 => unsafe { quads::avx512::<7, C>(s, x, zero, lift, w, out) },
        _ => false,
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn depthwise_avx2(s: &DwShape, x: &[i16], w: &[i16], out: &mut [i32]) {
    depthwise_portable(s, x, w, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn depthwise_avx512(s: &DwShape, x: &[i16], w: &[i16], out: &mut [i32]) {
    depthwise_portable(s, x, w, out)
}

#[inline(always)]
fn depthwise_portable(s: &DwShape, x: &[i16], w: &[i16], out: &mut [i32]) {
    if s.out_hw.0 * s.out_hw.1 <= SMALL_PLANE {
        depthwise_channels_last(s, x, w, out)
    } else if s.stride == 1 {
        depthwise_stride1(s, x, w, out)
    } else {
        depthwise_strided(s, x, w, out)
    }
}

/// Output planes up to this many pixels run channels-last.
const SMALL_PLANE: usize = 256;

/// Small planes (the late stages: 14×14, 7×7 with hundreds of channels): rows are too short to
/// vectorise, so the planes are transposed to channels-last and every tap becomes one long
/// multiply-add over all channels, then transposed back.
#[inline(always)]
fn depthwise_channels_last(s: &DwShape, x: &[i16], w: &[i16], out: &mut [i32]) {
    let (h, wd) = s.in_hw;
    let (oh, ow) = s.out_hw;
    let (c, k) = (s.channels, s.kernel);
    let mut xt = vec![0i16; h * wd * c];
    for ch in 0..c {
        for (p, &v) in x[ch * h * wd..(ch + 1) * h * wd].iter().enumerate() {
            xt[p * c + ch] = v;
        }
    }
    let mut wt = vec![0i16; k * k * c];
    for ch in 0..c {
        for (t, &v) in w[ch * k * k..(ch + 1) * k * k].iter().enumerate() {
            wt[t * c + ch] = v;
        }
    }
    let mut acc = vec![0i32; c];
    for oy in 0..oh {
        for ox in 0..ow {
            acc.fill(0);
            for i in 0..k {
                let iy = (oy * s.stride + i) as isize - s.padding as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for j in 0..k {
                    let ix = (ox * s.stride + j) as isize - s.padding as isize;
                    if ix < 0 || ix >= wd as isize {
                        continue;
                    }
                    let xs = &xt[(iy as usize * wd + ix as usize) * c..][..c];
                    let ws = &wt[(i * k + j) * c..][..c];
                    for ((a, &xv), &wv) in acc.iter_mut().zip(xs).zip(ws) {
                        *a += xv as i32 * wv as i32;
                    }
                }
            }
            let pixel = oy * ow + ox;
            for (ch, &a) in acc.iter().enumerate() {
                out[ch * oh * ow + pixel] = a;
            }
        }
    }
}

/// Stride 1: every tap reads a contiguous run of its input row directly.
#[inline(always)]
fn depthwise_stride1(s: &DwShape, x: &[i16], w: &[i16], out: &mut [i32]) {
    let (h, wd) = s.in_hw;
    let (oh, ow) = s.out_hw;
    let k = s.kernel;
    let pad = s.padding as isize;
    out[..s.channels * oh * ow].fill(0);
    for c in 0..s.channels {
        let plane = &x[c * h * wd..(c + 1) * h * wd];
        let kern = &w[c * k * k..(c + 1) * k * k];
        let o = &mut out[c * oh * ow..(c + 1) * oh * ow];
        for oy in 0..oh {
            let orow = &mut o[oy * ow..(oy + 1) * ow];
            for i in 0..k {
                let iy = oy as isize + i as isize - pad;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let row = &plane[iy as usize * wd..(iy as usize + 1) * wd];
                for j in 0..k {
                    let off = j as isize - pad;
                    // Output columns whose input column lies inside the row.
                    let lo = (-off).max(0) as usize;
                    let hi = ((wd as isize - off).min(ow as isize)).max(0) as usize;
                    if lo >= hi {
                        continue;
                    }
                    let wv = kern[i * k + j] as i32;
                    let start = (lo as isize + off) as usize;
                    for (ov, &xv) in orow[lo..hi].iter_mut().zip(&row[start..start + hi - lo]) {
                        *ov += wv * xv as i32;
                    }
                }
            }
        }
    }
}

/// Larger strides: see below.
#[inline(always)]
fn depthwise_strided(s: &DwShape, x: &[i16], w: &[i16], out: &mut [i32]) {
    let (h, wd) = s.in_hw;
    let (oh, ow) = s.out_hw;
    let k = s.kernel;
    let st = s.stride;
    let pad = s.padding as isize;
    // Each input row split into `stride` phases (columns ≡ ph mod stride), padded by the
    // kernel's reach on both sides, so every tap reads a contiguous run: output column `ox`
    // of tap `j` reads phase `(j − pad) mod st` at `ox + ⌊(j − pad)/st⌋`.
    let reach = k.div_ceil(st) + 1;
    let phase_len = ow + 2 * reach;
    let mut phases = vec![0i16; st * phase_len];
    out[..s.channels * oh * ow].fill(0);
    for c in 0..s.channels {
        let plane = &x[c * h * wd..(c + 1) * h * wd];
        let kern = &w[c * k * k..(c + 1) * k * k];
        let o = &mut out[c * oh * ow..(c + 1) * oh * ow];
        for iy in 0..h {
            let row = &plane[iy * wd..(iy + 1) * wd];
            phases.fill(0);
            for (ix, &v) in row.iter().enumerate() {
                let slot = ix / st + reach;
                if slot < phase_len {
                    phases[(ix % st) * phase_len + slot] = v;
                }
            }
            // Output rows this input row contributes to, with their tap row i.
            for i in 0..k {
                let num = iy as isize + pad - i as isize;
                if num < 0 || num % st as isize != 0 {
                    continue;
                }
                let oy = (num / st as isize) as usize;
                if oy >= oh {
                    continue;
                }
                let orow = &mut o[oy * ow..(oy + 1) * ow];
                for j in 0..k {
                    let off = j as isize - pad;
                    let ph = off.rem_euclid(st as isize) as usize;
                    let start = (reach as isize + off.div_euclid(st as isize)) as usize;
                    let src = &phases[ph * phase_len + start..ph * phase_len + start + ow];
                    let wv = kern[i * k + j] as i32;
                    for (ov, &xv) in orow.iter_mut().zip(src) {
                        *ov += wv * xv as i32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Direct definition, one output at a time.
    fn reference(s: &DwShape, x: &[i16], w: &[i16]) -> Vec<i32> {
        let (h, wd) = s.in_hw;
        let (oh, ow) = s.out_hw;
        let k = s.kernel;
        let mut out = vec![0; s.channels * oh * ow];
        for c in 0..s.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0;
                    for i in 0..k {
                        for j in 0..k {
                            let iy = (oy * s.stride + i) as isize - s.padding as isize;
                            let ix = (ox * s.stride + j) as isize - s.padding as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                acc += w[c * k * k + i * k + j] as i32
                                    * x[c * h * wd + iy as usize * wd + ix as usize] as i32;
                            }
                        }
                    }
                    out[(c * oh + oy) * ow + ox] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn every_isa_equals_the_definition() {
        let mut rng = Rng::new(3);
        for &(channels, hw, kernel, stride) in &[
            (1, 1, 3, 1),
            (3, 7, 3, 1),
            (5, 7, 3, 2),
            (4, 14, 5, 1),
            (2, 9, 5, 2),
            (6, 16, 3, 2),
            (3, 4, 5, 1),
            (5, 20, 3, 1),
            (4, 33, 3, 2),
            (6, 18, 5, 1),
            // B1's stride-2 3×3 into 7², and 5×5 ones, as stride-1 maps halved.
            (4, 14, 3, 2),
            (3, 14, 5, 2),
            (3, 13, 3, 2),
            // B1 @ 224's stride-1 maps, and planes either side of the flat kernel's L1 bound
            // with a 3×3 kernel (61² runs flat, 62² the tap pairs).
            (5, 7, 5, 1),
            (4, 14, 5, 1),
            (3, 28, 3, 1),
            (3, 56, 3, 1),
            (2, 61, 3, 1),
            (2, 62, 3, 1),
            (3, 14, 7, 1),
        ] {
            let s = DwShape::square(channels, hw, kernel, stride);
            let x: Vec<i16> = (0..channels * hw * hw)
                .map(|_| rng.below(511) as i16 - 255)
                .collect();
            let w: Vec<i16> = (0..channels * kernel * kernel)
                .map(|_| rng.below(255) as i16 - 127)
                .collect();
            check(&mut rng, &s, &x, &w);
        }
    }

    /// Codes that are bytes once lifted (signed with `lift` 128, unsigned with 0), zero-points
    /// among them and i8 weights — the operands [`super::quads`] multiplies as bytes — on B1 @
    /// 224's maps (strides 1 and 2), planes either side of the kernel's L1 bound and tiny ones,
    /// given as codes and as bytes: every ISA's sums are the definition's. A weight or a zero-point outside a
    /// byte takes the other kernels, with the same sums.
    #[test]
    fn byte_operands_equal_the_definition() {
        let mut rng = Rng::new(17);
        for (case, &(channels, hw, kernel, stride)) in [
            (3, 7, 3, 1),
            (5, 7, 5, 1),
            (4, 14, 3, 1),
            (4, 14, 5, 1),
            (3, 14, 7, 1),
            (3, 28, 3, 1),
            (2, 56, 3, 1),
            (2, 61, 3, 1),
            (2, 62, 3, 1),
            (2, 112, 3, 1),
            (2, 1, 3, 1),
            (3, 2, 5, 1),
            (2, 5, 7, 1),
            (2, 17, 5, 1),
            (3, 112, 3, 2),
            (3, 14, 3, 2),
            (2, 13, 5, 2),
            (3, 28, 5, 2),
            (2, 9, 7, 2),
            (2, 1, 3, 2),
        ]
        .iter()
        .enumerate()
        {
            let lift = [0, 128][case % 2];
            let s = DwShape::square(channels, hw, kernel, stride);
            let plane = hw * hw;
            let bytes: Vec<u8> = (0..channels * plane)
                .map(|i| match i % 97 {
                    0 => 0,
                    1 => 255,
                    _ => rng.below(256) as u8,
                })
                .collect();
            let codes: Vec<i32> = bytes.iter().map(|&b| i32::from(b) - lift).collect();
            let mut zero: Vec<i32> = (0..channels)
                .map(|_| rng.below(256) as i32 - lift)
                .collect();
            let mut w: Vec<i16> = (0..channels * kernel * kernel)
                .map(|i| match i % 11 {
                    0 => -128,
                    1 => 127,
                    _ => rng.below(256) as i16 - 128,
                })
                .collect();
            for form in ["bytes", "a weight past i8", "a zero-point past a byte"] {
                match form {
                    "a weight past i8" => w[kernel * kernel] = 200,
                    "a zero-point past a byte" => zero[channels - 1] = 300 - lift,
                    _ => {}
                }
                let centred: Vec<i16> = (codes.iter().enumerate())
                    .map(|(i, &q)| (q - zero[i / plane]) as i16)
                    .collect();
                let want = reference(&s, &centred, &w);
                // Each operand's sums equal the definition's, and nothing past them is written.
                let check = |isa: Isa, operand: &str, run: &dyn Fn(&mut [i32])| {
                    let mut got = vec![7; want.len() + 16];
                    run(&mut got);
                    let name = isa.name();
                    assert_eq!(got[..want.len()], want, "{name} {s:?} {operand}, {form}");
                    assert!(got[want.len()..].iter().all(|&v| v == 7));
                };
                for isa in Isa::available() {
                    check(isa, "codes", &|got| {
                        depthwise(isa, &s, &codes, &zero, lift, &w, got)
                    });
                    check(isa, "bytes", &|got| {
                        depthwise_bytes(isa, &s, &bytes, &zero, lift, &w, got)
                    });
                }
            }
        }
    }

    /// Codes outside a byte once lifted, where the windows would run on bytes made of them
    /// (one in a block of 64 values, or in the last part): the sums are still the
    /// definition's, from another kernel.
    #[test]
    fn codes_past_a_byte_take_another_kernel() {
        let mut rng = Rng::new(29);
        let shapes = [(2, 20, 3, 1), (3, 28, 3, 2), (2, 112, 3, 1), (2, 9, 5, 2)];
        for (channels, hw, kernel, stride) in shapes {
            let s = DwShape::square(channels, hw, kernel, stride);
            let (plane, n) = (hw * hw, channels * hw * hw);
            for (lift, at, past) in [(0, 1, 256), (128, n - 1, -129), (0, n - 1, -1)] {
                let mut codes: Vec<i32> = (0..n).map(|_| rng.below(256) as i32 - lift).collect();
                codes[at] = past;
                let zero: Vec<i32> = (0..channels)
                    .map(|_| rng.below(256) as i32 - lift)
                    .collect();
                let w: Vec<i16> = (0..channels * kernel * kernel)
                    .map(|_| rng.below(256) as i16 - 128)
                    .collect();
                let centred: Vec<i16> = (codes.iter().enumerate())
                    .map(|(i, &q)| (q - zero[i / plane]) as i16)
                    .collect();
                let want = reference(&s, &centred, &w);
                for isa in Isa::available() {
                    let mut got = vec![7; want.len()];
                    depthwise(isa, &s, &codes, &zero, lift, &w, &mut got);
                    assert_eq!(got, want, "{} {s:?}: code {past} at {at}", isa.name());
                }
            }
        }
    }

    /// Every ISA's result against the definition, for the centred inputs `x` given as codes
    /// of random zero-points (one per channel).
    fn check(rng: &mut Rng, s: &DwShape, x: &[i16], w: &[i16]) {
        let want = reference(s, x, w);
        let zero: Vec<i32> = (0..s.channels)
            .map(|_| rng.below(301) as i32 - 150)
            .collect();
        let plane = s.in_hw.0 * s.in_hw.1;
        let codes: Vec<i32> = (x.iter().enumerate())
            .map(|(i, &v)| v as i32 + zero[i / plane.max(1)])
            .collect();
        for isa in Isa::available() {
            // A longer buffer than the planes: the kernels store whole vectors, and must
            // leave everything past the planes as it was.
            let mut got = vec![7; want.len() + 16];
            depthwise(isa, s, &codes, &zero, 128, w, &mut got);
            assert_eq!(got[..want.len()], want, "{} {s:?}", isa.name());
            assert!(
                got[want.len()..].iter().all(|&v| v == 7),
                "{} {s:?}",
                isa.name()
            );
        }
    }

    /// The layer of `channels` planes of `hw` and a `kernel`, `stride` and `padding`.
    fn geometry(
        channels: usize,
        (h, wd): (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> DwShape {
        let out = |n: usize| (n + 2 * padding - kernel) / stride + 1;
        DwShape {
            channels,
            in_hw: (h, wd),
            out_hw: (out(h), out(wd)),
            kernel,
            stride,
            padding,
        }
    }

    /// Bytes on every small geometry the pair kernels take — kernels 3, 5 and 7 at strides 1
    /// and 2 with the usual padding, planes 1–21 wide — so that each row's first and last
    /// vectors, read across the row's ends and across the ends of the call's planes, are
    /// checked against the definition (the codes given as i32 are checked below).
    #[test]
    fn bytes_on_every_small_geometry_equal_the_definition() {
        let mut rng = Rng::new(23);
        // Widths past one vector of outputs too (the stride-2 kernel's rows of 16 outputs
        // read 32 input columns: 112 is B1's stem map), and every padding at stride 2.
        let widths = (1..=21).chain([31, 32, 33, 34, 35, 63, 64, 65, 66, 112]);
        let cases = [3, 5, 7].into_iter().flat_map(|k| {
            let paddings = move |stride: usize| match stride {
                1 => vec![k / 2],
                _ => (0..k).collect(),
            };
            [1, 2]
                .into_iter()
                .flat_map(move |st| paddings(st).into_iter().map(move |p| (k, st, p)))
        });
        for (kernel, stride, padding) in cases {
            let geometries = widths.clone().flat_map(|wd| [(1, wd), (kernel + 2, wd)]);
            for (h, wd) in geometries {
                if h + 2 * padding < kernel || wd + 2 * padding < kernel {
                    continue;
                }
                let s = geometry(3, (h, wd), kernel, stride, padding);
                let plane = h * wd;
                let lift = [0, 128][wd % 2];
                let bytes: Vec<u8> = (0..3 * plane).map(|_| rng.below(256) as u8).collect();
                let zero: Vec<i32> = (0..3).map(|_| rng.below(256) as i32 - lift).collect();
                let w: Vec<i16> = (0..3 * kernel * kernel)
                    .map(|_| rng.below(256) as i16 - 128)
                    .collect();
                let centred: Vec<i16> = (bytes.iter().enumerate())
                    .map(|(i, &b)| (i32::from(b) - lift - zero[i / plane]) as i16)
                    .collect();
                let want = reference(&s, &centred, &w);
                for isa in Isa::available() {
                    let mut got = vec![7; want.len() + 16];
                    depthwise_bytes(isa, &s, &bytes, &zero, lift, &w, &mut got);
                    assert_eq!(got[..want.len()], want, "{} {s:?}", isa.name());
                    assert!(got[want.len()..].iter().all(|&v| v == 7));
                }
            }
        }
    }

    /// Every small geometry — kernel 1–7, stride 1–3, every padding below the kernel, planes
    /// 1–21 wide and a few heights — with the extreme i16 inputs, so the pair kernels'
    /// padding, tails, odd last taps and sign handling are all exercised.
    #[test]
    fn every_small_geometry_equals_the_definition() {
        let mut rng = Rng::new(11);
        for kernel in 1..=7 {
            for stride in 1..=3 {
                for padding in 0..kernel {
                    // Heights `kernel + 5` at stride 2 leave the last input row unread.
                    let heights = [kernel, kernel + 4, kernel + 5];
                    for (h, wd) in (1..=21).flat_map(|wd| heights.map(|h| (h, wd))) {
                        if h + 2 * padding < kernel || wd + 2 * padding < kernel {
                            continue;
                        }
                        let s = geometry(2, (h, wd), kernel, stride, padding);
                        let value = |rng: &mut Rng| match rng.below(8) {
                            0 => i16::MIN,
                            1 => i16::MAX,
                            _ => rng.below(511) as i16 - 255,
                        };
                        let x: Vec<i16> = (0..2 * h * wd).map(|_| value(&mut rng)).collect();
                        let w: Vec<i16> = (0..2 * kernel * kernel)
                            .map(|_| rng.below(511) as i16 - 255)
                            .collect();
                        check(&mut rng, &s, &x, &w);
                    }
                }
            }
        }
    }
}
