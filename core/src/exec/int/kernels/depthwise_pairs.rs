//! Depthwise convolution in tap pairs: `vpmaddwd` multiplies two i16 pairs and adds them into
//! one i32 lane, so two taps of a kernel row cost one instruction for 8 output columns, which
//! stay in one register over all `k×k` taps.
//!
//! Each channel's input is laid out once as 32-bit words holding the pair of inputs a tap pair
//! `(2p, 2p + 1)` multiplies, such that consecutive output columns read consecutive words:
//!
//! - stride 1: word `c` of a padded row `R` is `(R[c], R[c + 1])`; output `l`'s pair `p` is
//!   word `l + 2p`;
//! - stride 2: word `m` is `(R[2m], R[2m + 1])`, the row itself; output `l`'s pair `p` is word
//!   `l + p`.
//!
//! Rows are padded with the conv's zeros above, below and on both sides, and far enough right
//! that whole vectors never read past them; an odd kernel's last tap pairs with a zero weight.
//! The sums are the definition's integers: exact in i32 for every layer the compiler accepts
//! (its accumulator bound), tested on every small geometry.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::depthwise::DwShape;
use super::pair;

/// Whether the pair kernels run this shape (the others take the portable loops).
pub fn supports(s: &DwShape) -> bool {
    matches!(s.stride, 1 | 2) && matches!(s.kernel, 3 | 5 | 7)
}

/// One channel's input as pair words: `rows` rows of `row_words`, row `y` = input row
/// `y − padding`.
struct PairPlane {
    words: Vec<i32>,
    /// A whole number of vectors, so each row's words are written in whole vectors.
    row_words: usize,
    /// Per tap pair, its word offset from the output column.
    offsets: [usize; 4],
}

/// Lanes of a vector of words or codes.
const LANES: usize = 8;

impl PairPlane {
    /// Room for `LANES`-wide blocks of output columns.
    fn new(s: &DwShape) -> PairPlane {
        let pairs = s.kernel.div_ceil(2);
        let columns = s.out_hw.1.next_multiple_of(LANES);
        let (row_words, step) = match s.stride {
            1 => (columns + 2 * pairs, 2),
            _ => (columns + pairs, 1),
        };
        let rows = (s.out_hw.0 - 1) * s.stride + s.kernel;
        let mut offsets = [0; 4];
        for (p, o) in offsets.iter_mut().enumerate().take(pairs) {
            *o = step * p;
        }
        let row_words = row_words.next_multiple_of(LANES);
        PairPlane {
            words: vec![0; rows * row_words],
            row_words,
            offsets,
        }
    }

    /// Lays out the channel whose codes start at `x[at]` (a plane of `in_hw`) less their
    /// zero-point `zero`, a vector of words at a time, each from the codes it pairs (see
    /// [`Centred`]). Rows of padding are not written: zeroed by [`PairPlane::new`], they stay
    /// zero for every channel of the call. (Made by the compiler's loop, each row's edge words
    /// and its last few went one at a time: the int8 bench's 7×7 maps took 100 µs against 64
    /// now, BENCHMARKS.md. Centred into a padded row first and read back, every word's load
    /// waited on the two stores it straddled.)
    #[target_feature(enable = "avx2")]
    fn fill<T: Code8>(&mut self, s: &DwShape, x: &[T], at: usize, zero: i32) {
        let (h, w) = s.in_hw;
        let (pad, rw) = (s.padding, self.row_words);
        // Words from the first whose columns all lie right of the row are zero for every
        // channel, as `new` left them: not written (on a 7-wide map, half of each row).
        let live = (0..rw)
            .step_by(LANES)
            .take_while(|&c| c * s.stride < w + pad)
            .count()
            * LANES;
        for (y, words) in self.words.chunks_exact_mut(rw).enumerate() {
            let Some(iy) = y.checked_sub(pad).filter(|&iy| iy < h) else {
                continue;
            };
            let row = Centred::new(x, at + iy * w, w, zero);
            let words = &mut words[..live];
            for (c, out) in (0..live).step_by(LANES).zip(words.chunks_exact_mut(LANES)) {
                // Padded column `j` is code `j − pad`.
                let word = match s.stride {
                    1 => row.stride1_words(c as isize - pad as isize),
                    _ => row.stride2_words(2 * c as isize - pad as isize),
                };
                // SAFETY: `out` holds a whole vector.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), word) };
            }
        }
    }
}

/// Codes as the pair kernel reads them: i32 codes, or bytes (each a code plus the layer's
/// `lift`, which the zero-point it is given then holds too).
pub trait Code8: Copy {
    /// Whether [`Code8::edge`] is one masked load (else it reads code by code, and a vector
    /// across a row's end is better read whole from the call's planes where it lies inside
    /// them, then masked).
    const MASKED_EDGE: bool;

    /// 8 codes from `p`, in 32-bit lanes.
    ///
    /// # Safety
    /// The CPU has AVX2; `p` has 8 readable codes.
    unsafe fn load8(p: *const Self) -> __m256i;

    /// Codes `first .. first + 8` of `codes` in 32-bit lanes, 0 for the columns outside it,
    /// which `inside` (all ones) marks; at least one lies inside.
    ///
    /// # Safety
    /// The CPU has AVX2.
    unsafe fn edge(codes: &[Self], first: isize, inside: __m256i) -> __m256i;
}

impl Code8 for i32 {
    const MASKED_EDGE: bool = true;

    #[inline(always)]
    unsafe fn load8(p: *const i32) -> __m256i {
        // SAFETY: the caller's promise.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    unsafe fn edge(codes: &[i32], first: isize, inside: __m256i) -> __m256i {
        // SAFETY: a masked load reads only the lanes of `inside`, which lie inside the row;
        // the address of the others is formed without being read.
        unsafe { _mm256_maskload_epi32(codes.as_ptr().wrapping_offset(first), inside) }
    }
}

impl Code8 for u8 {
    const MASKED_EDGE: bool = false;

    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256i {
        // SAFETY: the caller's promise.
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast())) }
    }

    #[inline(always)]
    unsafe fn edge(codes: &[u8], first: isize, _: __m256i) -> __m256i {
        // AVX2 has no masked byte load: the row's bytes in a zeroed window first.
        let mut window = [0u8; 16];
        for (l, byte) in window[..LANES].iter_mut().enumerate() {
            if let Some(&b) = usize::try_from(first + l as isize)
                .ok()
                .and_then(|c| codes.get(c))
            {
                *byte = b;
            }
        }
        // SAFETY: `window` holds 16 bytes; the caller's promise.
        unsafe { Self::load8(window.as_ptr()) }
    }
}

/// One input row's codes less their zero-point, read a vector at a time with zeros either
/// side: the padded row `R` without a copy.
struct Centred<'a, T> {
    /// The row's codes.
    codes: &'a [T],
    /// Every code of the call, the row among them: a vector of bytes that crosses the row's
    /// ends is loaded from here whenever it lies inside, its lanes outside the row then
    /// zeroed (on 7- and 14-wide maps most vectors cross an end; read byte by byte, they had
    /// made the layout 1.7× the instructions, `callgrind` on the int8 bench's
    /// `depthwise_bytes_int`).
    all: &'a [T],
    /// Where the row starts in `all`.
    start: usize,
    zero: __m256i,
    /// The zero-point in both halves of every word.
    zero_pair: __m256i,
}

impl<'a, T: Code8> Centred<'a, T> {
    /// The row of `width` codes from `all[start]`.
    #[target_feature(enable = "avx2")]
    fn new(all: &'a [T], start: usize, width: usize, zero: i32) -> Self {
        Self {
            codes: &all[start..start + width],
            all,
            start,
            zero: _mm256_set1_epi32(zero),
            zero_pair: _mm256_set1_epi16(zero as i16),
        }
    }

    /// Stride 1: the words `(R[c], R[c + 1])` of 8 consecutive `c`, from the columns
    /// `first .. first + 9`. Inside the row the codes are paired as they are and both halves
    /// centred by one 16-bit subtraction: the low half of `q − zero` is that of `q` less that
    /// of `zero`, so the definition's `as i16` is the same either way.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn stride1_words(&self, first: isize) -> __m256i {
        let pair = |a, b| _mm256_blend_epi16::<0xAA>(a, _mm256_slli_epi32::<16>(b));
        match self.inside(first, LANES + 1) {
            Some(p) => {
                // SAFETY: `inside` found 9 codes from `p`.
                let (a, b) = unsafe { (T::load8(p), T::load8(p.add(1))) };
                _mm256_sub_epi16(pair(a, b), self.zero_pair)
            }
            None => pair(self.at(first), self.at(first + 1)),
        }
    }

    /// Stride 2: the words `(R[2m], R[2m + 1])` of 8 consecutive `m`, from the columns
    /// `first .. first + 16`, centred as [`Centred::stride1_words`] does.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn stride2_words(&self, first: isize) -> __m256i {
        match self.inside(first, 2 * LANES) {
            Some(p) => {
                // SAFETY: `inside` found 16 codes from `p`.
                let (a, b) = unsafe { (T::load8(p), T::load8(p.add(LANES))) };
                _mm256_sub_epi16(low_halves(a, b), self.zero_pair)
            }
            None => low_halves(self.at(first), self.at(first + LANES as isize)),
        }
    }

    /// Where the codes `first .. first + n` start, if they all lie inside the row.
    #[inline(always)]
    fn inside(&self, first: isize, n: usize) -> Option<*const T> {
        let start = usize::try_from(first).ok()?;
        (start + n <= self.codes.len()).then(|| self.codes[start..].as_ptr())
    }

    /// Codes `first .. first + 8` less the zero-point, 0 for the columns outside the row: one
    /// load inside the row, and across its ends one whose lanes outside are then zeroed.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn at(&self, first: isize) -> __m256i {
        let w = self.codes.len() as isize;
        if first >= 0 && first + LANES as isize <= w {
            // SAFETY: the 8 codes lie inside the row.
            let v = unsafe { T::load8(self.codes.as_ptr().offset(first)) };
            return _mm256_sub_epi32(v, self.zero);
        }
        if first >= w || first + LANES as isize <= 0 {
            return _mm256_setzero_si256();
        }
        // Lanes whose column lies inside the row: `0 ≤ first + l < w`.
        let column = _mm256_add_epi32(
            _mm256_set1_epi32(first as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        let inside = _mm256_and_si256(
            _mm256_cmpgt_epi32(column, _mm256_set1_epi32(-1)),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32), column),
        );
        let from = self.start as isize + first;
        let v = if !T::MASKED_EDGE && from >= 0 && from + LANES as isize <= self.all.len() as isize
        {
            // SAFETY: the 8 codes from `from` lie inside `all`.
            unsafe { T::load8(self.all.as_ptr().offset(from)) }
        } else {
            // SAFETY: the CPU has AVX2 (this function's feature); `inside` marks the lanes
            // inside.
            unsafe { T::edge(self.codes, first, inside) }
        };
        _mm256_and_si256(_mm256_sub_epi32(v, self.zero), inside)
    }
}

/// The low halves of the 16 i32 of `a` then `b`, in order, as 16 i16 (the definition's
/// `as i16`): at stride 2, the 8 words `(R[2m], R[2m + 1])` of the values `R[2m..]`.
#[inline]
#[target_feature(enable = "avx2")]
fn low_halves(a: __m256i, b: __m256i) -> __m256i {
    // Each 128-bit half's four low halves to its low 64 bits.
    let low = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, //
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let (a, b) = (_mm256_shuffle_epi8(a, low), _mm256_shuffle_epi8(b, low));
    // Halves [a0 a1 b0 b1 | a2 a3 b2 b3] → [a0 a1 a2 a3 b0 b1 b2 b3].
    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_unpacklo_epi64(a, b))
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
    let pairs = K.div_ceil(2);
    let mut plane = PairPlane::new(s);
    let rw = plane.row_words;
    let rows = plane.words.len() / rw;
    assert!(x.len() >= s.channels * h * wd && w.len() >= s.channels * K * K);
    assert!(zero.len() >= s.channels);
    assert!(out.len() >= s.channels * oh * ow);
    // Blocks store whole vectors up to the end of the call's planes, never past it.
    let out = &mut out[..s.channels * oh * ow];
    // Every read below stays inside the plane: the last block's words end at
    // `columns + offsets[pairs − 1] ≤ row_words` on row `(oh − 1)·stride + K − 1`.
    assert!((oh - 1) * s.stride + K <= rows);
    assert!(ow.next_multiple_of(LANES) + plane.offsets[pairs - 1] <= rw);
    for c in 0..s.channels {
        plane.fill(s, x, c * h * wd, zero[c] + lift);
        let wp = weight_pairs::<K>(&w[c * K * K..(c + 1) * K * K]);
        let mut wv = [[_mm256_setzero_si256(); 4]; K];
        for (vr, pr) in wv.iter_mut().zip(&wp) {
            for (v, &p) in vr.iter_mut().zip(pr) {
                *v = _mm256_set1_epi32(p);
            }
        }
        let words = plane.words.as_ptr();
        for oy in 0..oh {
            // The row and everything after it in the call's planes.
            let row = &mut out[(c * oh + oy) * ow..];
            let mut l0 = 0;
            while l0 < ow {
                let mut acc = _mm256_setzero_si256();
                for (i, vr) in wv.iter().enumerate() {
                    let start = (oy * s.stride + i) * rw + l0;
                    for (wv, &offset) in vr.iter().zip(&plane.offsets).take(pairs) {
                        // SAFETY: inside the plane by the assertions above.
                        let v = unsafe {
                            _mm256_loadu_si256(words.add(start + offset) as *const __m256i)
                        };
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, *wv));
                    }
                }
                // A row's last block may hold fewer columns than lanes: its whole vector is
                // stored anyway, the extra lanes landing on the next row's first columns (or
                // the next channel's), which their own block, stored later, overwrites. Only
                // the output's very end is copied through the stack. (`perf` put 14 % of the
                // 5×5 kernel's samples and 9 % of the 3×3's on the masked store this replaces,
                // on AMD Zen 4, where `vpmaskmovd` to memory is microcoded; every 7-wide row
                // ended in one.)
                let dst = &mut row[l0..];
                if dst.len() >= LANES {
                    // SAFETY: `dst` holds at least one whole vector.
                    unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, acc) };
                } else {
                    let mut lanes = [0i32; LANES];
                    // SAFETY: `lanes` holds one whole vector.
                    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
                    dst.copy_from_slice(&lanes[..dst.len()]);
                }
                l0 += LANES;
            }
        }
    }
}
