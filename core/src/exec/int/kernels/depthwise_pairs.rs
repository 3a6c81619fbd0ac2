//! Depthwise convolution in tap pairs: `vpmaddwd` multiplies two i16 pairs and adds them into
//! one i32 lane, so two taps of a kernel row cost one instruction for 8 outputs, which stay in
//! one register over all `k×k` taps.
//!
//! Each channel's input is laid out once as a plane of i16, its codes less their zero-point,
//! padded with the conv's zeros above, below and on both sides, and far enough right that
//! whole vectors never read past it. A padded row `R` read from an even column is a vector of
//! the pairs `(R[2m], R[2m + 1])`, the operands of a tap pair `(2p, 2p + 1)`:
//!
//! - stride 2: output `l`'s pair `p` is `(R[2l + 2p], R[2l + 2p + 1])`, so 8 consecutive
//!   outputs read 16 consecutive codes from `2l + 2p`;
//! - stride 1: the even outputs `l = 2t` read `(R[2t + 2p], R[2t + 2p + 1])`, and the odd ones
//!   the same one code further on, so 16 outputs take two loads per pair (8 outputs, at a
//!   row's end, two halves of one).
//!
//! Each code is laid out once: an earlier layout of stride 1 as words `(R[c], R[c + 1])`, each
//! code twice, cost more than the sums themselves (`perf` on the int8 bench's depthwise convs,
//! BENCHMARKS.md). An odd kernel's last tap pairs with a zero weight. The sums are the
//! definition's integers: exact in i32 for every layer the compiler accepts (its accumulator
//! bound), tested on every small geometry.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::depthwise::DwShape;
use super::pair;

/// Whether the pair kernels run this shape (the others take the portable loops).
pub fn supports(s: &DwShape) -> bool {
    matches!(s.stride, 1 | 2) && matches!(s.kernel, 3 | 5 | 7)
}

/// Lanes of a vector of i32.
const LANES: usize = 8;

/// Lanes of a vector of i16.
const CODES: usize = 2 * LANES;

/// One channel's input, centred and padded: `rows` rows of `row_len` i16, row `y` = input row
/// `y − padding`, column `j` = input column `j − padding`.
struct Plane {
    codes: Vec<i16>,
    /// A whole number of vectors.
    row_len: usize,
    /// How many rows `codes` holds.
    rows: usize,
}

impl Plane {
    /// Room for the rows `s`'s blocks read, and for [`Plane::fill`]'s last vector of a row.
    fn new(s: &DwShape) -> Plane {
        let pairs = s.kernel.div_ceil(2);
        let read = match s.stride {
            // The last block's odd outputs read up to `columns + 2·pairs − 1`.
            1 => s.out_hw.1.next_multiple_of(CODES) + 2 * pairs,
            // Its last pair, up to `2·columns + 2·pairs − 1`.
            _ => 2 * s.out_hw.1.next_multiple_of(LANES) + 2 * pairs,
        };
        let written = s.padding + s.in_hw.1 + CODES;
        let row_len = read.max(written).next_multiple_of(CODES);
        let rows = (s.out_hw.0 - 1) * s.stride + s.kernel;
        Plane {
            codes: vec![0; rows * row_len],
            row_len,
            rows,
        }
    }

    /// Lays out the channel whose codes start at `x[at]` (a plane of `in_hw`) less their
    /// zero-point `zero`. Each row's codes go in whole vectors from the row's padding on, the
    /// last running on into the next row's codes, and a vector of zeros then restores the
    /// padding it overwrote: no lane is masked. The padding left of the codes and the rows of
    /// padding are never written: zeroed by [`Plane::new`], they stay zero for every channel
    /// of the call. It runs once per channel, so it walks only the input's rows, by pointer:
    /// a first form that walked every row of the plane (`chunks_exact_mut`, a division per
    /// channel) and checked each took ~16 cycles a row (with a 7×7 map, 40 % of the kernel's
    /// time), as much as the row's sums.
    #[target_feature(enable = "avx2")]
    fn fill<T: Code8>(&mut self, s: &DwShape, x: &[T], at: usize, zero: i32) {
        let (h, w) = s.in_hw;
        let (pad, len) = (s.padding, self.row_len);
        // The input rows the plane holds (at stride 2 a last row may go unread).
        let rows = h.min(self.rows.saturating_sub(pad));
        assert!(pad + w + CODES <= len && (pad + rows) * len <= self.codes.len());
        assert!(at + rows * w <= x.len());
        let plane = self.codes.as_mut_ptr();
        for iy in 0..rows {
            let first = at + iy * w;
            // SAFETY: row `pad + iy` is one of the plane's (`rows` above).
            let to = unsafe { plane.add((pad + iy) * len + pad) };
            let mut c = 0;
            while c < w {
                let codes = match first + c + CODES <= x.len() {
                    // SAFETY: 16 codes from `first + c` lie inside `x`.
                    true => unsafe { T::centred16(x.as_ptr().add(first + c), zero) },
                    // The call's last codes: those left, then zeros.
                    false => {
                        let mut window = [T::default(); CODES];
                        let left = &x[first + c..];
                        window[..left.len()].copy_from_slice(left);
                        // SAFETY: the window holds 16 codes.
                        unsafe { T::centred16(window.as_ptr(), zero) }
                    }
                };
                // SAFETY: `c < w`, so the 16 lanes from `pad + c` lie below `pad + w + 16`,
                // inside the row (asserted).
                unsafe { _mm256_storeu_si256(to.add(c).cast(), codes) };
                c += CODES;
            }
            // SAFETY: as just above.
            unsafe { _mm256_storeu_si256(to.add(w).cast(), _mm256_setzero_si256()) };
        }
    }
}

/// Codes as the pair kernel reads them: i32 codes, or bytes (each a code plus the layer's
/// `lift`, which the zero-point it is given then holds too).
pub trait Code8: Copy + Default {
    /// 16 codes from `p` less `zero`, in 16-bit lanes: each fits one, as the codes have at
    /// most 8 bits (see [`super::depthwise::depthwise`]).
    ///
    /// # Safety
    /// The CPU has AVX2; `p` has 16 readable codes.
    unsafe fn centred16(p: *const Self, zero: i32) -> __m256i;

    /// 8 codes from `p` less `zero`, in the 16-bit lanes of one 128-bit vector.
    ///
    /// # Safety
    /// The CPU has AVX2; `p` has 8 readable codes.
    unsafe fn centred8(p: *const Self, zero: i32) -> __m128i;
}

impl Code8 for i32 {
    #[inline(always)]
    unsafe fn centred16(p: *const i32, zero: i32) -> __m256i {
        // SAFETY: the caller's promises.
        unsafe {
            let zero = _mm256_set1_epi32(zero);
            let a = _mm256_sub_epi32(_mm256_loadu_si256(p.cast()), zero);
            let b = _mm256_sub_epi32(_mm256_loadu_si256(p.add(8).cast()), zero);
            // Saturation never binds: each difference fits i16. The pack takes each 128-bit
            // half's four of `a` then of `b`: [a0 b0 | a1 b1] in quarters, put in order.
            _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b))
        }
    }

    #[inline(always)]
    unsafe fn centred8(p: *const i32, zero: i32) -> __m128i {
        // SAFETY: the caller's promises.
        unsafe {
            // Centred in i32 before the pack, as in `centred16`.
            let a = _mm256_sub_epi32(_mm256_loadu_si256(p.cast()), _mm256_set1_epi32(zero));
            _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a))
        }
    }
}

impl Code8 for u8 {
    #[inline(always)]
    unsafe fn centred16(p: *const u8, zero: i32) -> __m256i {
        // SAFETY: the caller's promises.
        unsafe {
            let codes = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast()));
            _mm256_sub_epi16(codes, _mm256_set1_epi16(zero as i16))
        }
    }

    #[inline(always)]
    unsafe fn centred8(p: *const u8, zero: i32) -> __m128i {
        // SAFETY: the caller's promises.
        unsafe {
            let codes = _mm_cvtepu8_epi16(_mm_loadl_epi64(p.cast()));
            _mm_sub_epi16(codes, _mm_set1_epi16(zero as i16))
        }
    }
}

/// Weight pairs of one channel, row by row: `(w[i][2p], w[i][2p + 1] or 0)`.
pub(super) fn weight_pairs<const K: usize>(kernel: &[i16]) -> [[i32; 4]; K] {
    let mut out = [[0; 4]; K];
    for (i, row) in out.iter_mut().enumerate() {
        for (p, word) in row.iter_mut().enumerate().take(K.div_ceil(2)) {
            let second = if 2 * p + 1 < K {
                kernel[i * K + 2 * p + 1]
            } else {
                0
            };
            *word = pair(kernel[i * K + 2 * p], second);
        }
    }
    out
}

/// Every channel of `s`: `x` planes of codes with per-channel `zero`-points, `w` `[C, K, K]`,
/// `out` i32 planes. Codes given as bytes hold their `lift` (the layer's), which is added to
/// the zero-points; codes given as i32 take a `lift` of 0.
///
/// AVX2 on every x86 CPU that has it: on the AVX-512 machine measured (AMD EPYC, BENCHMARKS.md)
/// a 16-lane version of this loop was slower than 8 lanes on every stride-1 shape.
#[target_feature(enable = "avx2")]
pub fn avx2<const K: usize, T: Code8>(
    s: &DwShape,
    x: &[T],
    (zero, lift): (&[i32], i32),
    w: &[i16],
    out: &mut [i32],
) {
    let (h, wd) = s.in_hw;
    let (oh, ow) = s.out_hw;
    assert!(x.len() >= s.channels * h * wd && w.len() >= s.channels * K * K);
    assert!(zero.len() >= s.channels);
    assert!(out.len() >= s.channels * oh * ow);
    // Blocks store whole vectors up to the end of the call's planes, never past it.
    let out = &mut out[..s.channels * oh * ow];
    if small_map(s) {
        return small::<K, T>(s, x, (zero, lift), w, out);
    }
    let mut plane = Plane::new(s);
    // Every read below stays inside the plane: the last block's rows end at row
    // `(oh − 1)·stride + K − 1`, its columns as `Plane::new` says.
    assert!((oh - 1) * s.stride + K <= plane.rows);
    for c in 0..s.channels {
        plane.fill(s, x, c * h * wd, zero[c] + lift);
        let wv = weight_vectors::<K>(&w[c * K * K..(c + 1) * K * K]);
        // The channel's rows and everything after them in the call's planes.
        let out = &mut out[c * oh * ow..];
        // SAFETY (both): this function's AVX2; the assertions above and `Plane::new`.
        match s.stride {
            1 => unsafe { sums_stride1::<K>(&plane, s, &wv, out) },
            _ => unsafe { sums_stride2::<K>(&plane, s, &wv, out) },
        }
    }
}

/// A channel's weight pairs ([`weight_pairs`]), each in every lane of a vector.
#[inline]
#[target_feature(enable = "avx2")]
fn weight_vectors<const K: usize>(kernel: &[i16]) -> [[__m256i; 4]; K] {
    let wp = weight_pairs::<K>(kernel);
    let mut wv = [[_mm256_setzero_si256(); 4]; K];
    for (vr, pr) in wv.iter_mut().zip(&wp) {
        for (v, &p) in vr.iter_mut().zip(pr) {
            *v = _mm256_set1_epi32(p);
        }
    }
    wv
}

/// The most padded rows [`small`] holds.
const SMALL_ROWS: usize = 16;

/// Whether [`small`] runs `s`: stride 1, rows of at most 8 codes giving at most 8 outputs
/// each (so a row is one block), and at most [`SMALL_ROWS`] padded rows (EfficientViT-B1 @
/// 224's 7×7 maps).
fn small_map(s: &DwShape) -> bool {
    let (h, w) = s.in_hw;
    s.stride == 1 && s.out_hw.1 <= LANES && w <= LANES && h + 2 * s.padding <= SMALL_ROWS
}

/// Every channel of a map that [`small_map`] takes, as [`avx2`] (whose checks it relies on).
/// A row there is a single last block, whose operand per tap pair is `[R[2p..2p + 8] |
/// R[2p + 1..2p + 9]]` of the padded row `R`: on the plane, two half loads per tap pair and
/// output row, each input row read `K` times over, and the plane's stores read back at once
/// (the plane's fill and those loads had been a third and most of the rest of a 7×7 map's
/// time). Here each input row's 8 codes are centred once into a vector whose byte shuffles
/// (`vpshufb`, one per tap pair; padding by zeroing indices) give those operands, kept in a
/// small array of rows that the sums read whole.
#[target_feature(enable = "avx2")]
fn small<const K: usize, T: Code8>(
    s: &DwShape,
    x: &[T],
    (zero, lift): (&[i32], i32),
    w: &[i16],
    out: &mut [i32],
) {
    let (h, wd) = s.in_hw;
    let (oh, ow) = s.out_hw;
    let (pad, pairs) = (s.padding, K.div_ceil(2));
    assert!(small_map(s) && oh + K - 1 == h + 2 * pad && pairs <= 4);
    // For tap pair `p`, the bytes of each lane's 8 words in a row's 8 centred codes (i16, 16
    // bytes, in both lanes): lane 0's words are the padded row from `2p`, lane 1's from
    // `2p + 1`; padding's words take index 0x80, which `vpshufb` zeroes.
    let index: [__m256i; 4] = std::array::from_fn(|p| {
        let mut bytes = [-128i8; 32];
        for (i, pair) in bytes.chunks_exact_mut(2).enumerate() {
            let (half, k) = (i / LANES, i % LANES);
            let column = (2 * p + half + k).checked_sub(pad).filter(|&j| j < wd);
            if let Some(j) = column {
                pair.copy_from_slice(&[2 * j as i8, 2 * j as i8 + 1]);
            }
        }
        // SAFETY: `bytes` holds one whole vector.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    });
    // The padded rows' operands; rows of padding stay zero for every channel.
    let mut rows = [[_mm256_setzero_si256(); 4]; SMALL_ROWS];
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for c in 0..s.channels {
        let z = zero[c] + lift;
        for (iy, row) in rows[pad..pad + h].iter_mut().enumerate() {
            let at = (c * h + iy) * wd;
            let codes = match at + LANES <= x.len() {
                // SAFETY: 8 codes from `at` lie inside `x`.
                true => unsafe { T::centred8(x.as_ptr().add(at), z) },
                // The call's last codes: those left, then codes no index selects.
                false => {
                    let mut window = [T::default(); LANES];
                    let left = &x[at..];
                    window[..left.len()].copy_from_slice(left);
                    // SAFETY: the window holds 8 codes.
                    unsafe { T::centred8(window.as_ptr(), z) }
                }
            };
            let both = _mm256_broadcastsi128_si256(codes);
            for (operand, index) in row.iter_mut().zip(&index).take(pairs) {
                *operand = _mm256_shuffle_epi8(both, *index);
            }
        }
        let wv = weight_vectors::<K>(&w[c * K * K..(c + 1) * K * K]);
        let out = &mut out[c * oh * ow..];
        for oy in 0..oh {
            let mut acc = _mm256_setzero_si256();
            for (row, wr) in rows[oy..oy + K].iter().zip(&wv) {
                for (operand, wv) in row.iter().zip(wr).take(pairs) {
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(*operand, *wv));
                }
            }
            // Outputs [0 2 4 6 | 1 3 5 7], in order.
            // SAFETY: this function's AVX2.
            unsafe { store(_mm256_permutevar8x32_epi32(acc, order), &mut out[oy * ow..]) };
        }
    }
}

/// One channel's sums at stride 2, 8 consecutive outputs at a time, each pair one load. `out`
/// starts at the channel's first output. Inlined into [`avx2`], whose AVX2 it takes.
///
/// # Safety
/// The CPU has AVX2; `plane` holds the rows and columns `avx2` and [`Plane::new`] make room
/// for.
#[inline(always)]
unsafe fn sums_stride2<const K: usize>(
    plane: &Plane,
    s: &DwShape,
    wv: &[[__m256i; 4]; K],
    out: &mut [i32],
) {
    let (oh, ow) = s.out_hw;
    let (len, codes) = (plane.row_len, plane.codes.as_ptr());
    for oy in 0..oh {
        let row = &mut out[oy * ow..];
        let mut l0 = 0;
        while l0 < ow {
            // SAFETY: the CPU has AVX2, and the loads lie inside the plane (the caller's
            // promises).
            unsafe {
                let mut acc = _mm256_setzero_si256();
                for (i, vr) in wv.iter().enumerate() {
                    let start = codes.add((2 * oy + i) * len + 2 * l0);
                    for (p, wv) in vr.iter().enumerate().take(K.div_ceil(2)) {
                        let v = _mm256_loadu_si256(start.add(2 * p).cast());
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, *wv));
                    }
                }
                store(acc, &mut row[l0..]);
            }
            l0 += LANES;
        }
    }
}

/// One channel's sums at stride 1, 16 outputs at a time: the 8 even ones in one register, the
/// 8 odd ones in another, interleaved on the way out. A row's last block, where at most 8
/// outputs remain, takes one register: the even ones in its low half, the odd in its high.
/// `out` starts at the channel's first output. Inlined into [`avx2`], as [`sums_stride2`] is.
///
/// # Safety
/// As [`sums_stride2`].
#[inline(always)]
unsafe fn sums_stride1<const K: usize>(
    plane: &Plane,
    s: &DwShape,
    wv: &[[__m256i; 4]; K],
    out: &mut [i32],
) {
    let (oh, ow) = s.out_hw;
    let (len, codes) = (plane.row_len, plane.codes.as_ptr());
    for oy in 0..oh {
        let row = &mut out[oy * ow..];
        let mut l0 = 0;
        while l0 + LANES < ow {
            // SAFETY: the CPU has AVX2, and the loads lie inside the plane (the caller's
            // promises).
            unsafe {
                let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for (i, vr) in wv.iter().enumerate() {
                    let start = codes.add((oy + i) * len + l0);
                    for (p, wv) in vr.iter().enumerate().take(K.div_ceil(2)) {
                        let e = _mm256_loadu_si256(start.add(2 * p).cast());
                        let o = _mm256_loadu_si256(start.add(2 * p + 1).cast());
                        even = _mm256_add_epi32(even, _mm256_madd_epi16(e, *wv));
                        odd = _mm256_add_epi32(odd, _mm256_madd_epi16(o, *wv));
                    }
                }
                // Outputs [0 1 2 3 | 8 9 10 11] and [4 5 6 7 | 12 13 14 15], then in order.
                let (low, high) = (
                    _mm256_unpacklo_epi32(even, odd),
                    _mm256_unpackhi_epi32(even, odd),
                );
                store(_mm256_permute2x128_si256::<0x20>(low, high), &mut row[l0..]);
                store(
                    _mm256_permute2x128_si256::<0x31>(low, high),
                    &mut row[l0 + LANES..],
                );
            }
            l0 += CODES;
        }
        if l0 < ow {
            // SAFETY: as above.
            unsafe {
                let mut acc = _mm256_setzero_si256();
                for (i, vr) in wv.iter().enumerate() {
                    let start = codes.add((oy + i) * len + l0);
                    for (p, wv) in vr.iter().enumerate().take(K.div_ceil(2)) {
                        let at = start.add(2 * p);
                        let v = _mm256_loadu2_m128i(at.add(1).cast(), at.cast());
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, *wv));
                    }
                }
                // Outputs [0 2 4 6 | 1 3 5 7], in order.
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                store(_mm256_permutevar8x32_epi32(acc, order), &mut row[l0..]);
            }
        }
    }
}

/// Stores the 8 outputs of `acc` at the start of `dst`, a row's block and everything after it
/// in the call's planes. A row's last block may hold fewer columns than lanes: its whole vector
/// is stored anyway, the extra lanes landing on the next row's first columns (or the next
/// channel's), which their own block, stored later, overwrites. Only the output's very end is
/// copied through the stack. (`perf` put 14 % of the 5×5 kernel's samples and 9 % of the 3×3's
/// on the masked store this replaces, on AMD Zen 4, where `vpmaskmovd` to memory is
/// microcoded; every 7-wide row ended in one.)
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn store(acc: __m256i, dst: &mut [i32]) {
    if dst.len() >= LANES {
        // SAFETY: `dst` holds at least one whole vector; the caller's promise.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, acc) };
    } else {
        let mut lanes = [0i32; LANES];
        // SAFETY: `lanes` holds one whole vector; the caller's promise.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
        dst.copy_from_slice(&lanes[..dst.len()]);
    }
}
