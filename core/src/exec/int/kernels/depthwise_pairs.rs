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
    row_words: usize,
    /// Per tap pair, its word offset from the output column.
    offsets: [usize; 4],
}

impl PairPlane {
    /// Room for `vector`-wide blocks of output columns.
    fn new(s: &DwShape, vector: usize) -> PairPlane {
        let pairs = s.kernel.div_ceil(2);
        let columns = s.out_hw.1.next_multiple_of(vector);
        let (row_words, step) = match s.stride {
            1 => (columns + 2 * pairs, 2),
            _ => (columns + pairs, 1),
        };
        let rows = (s.out_hw.0 - 1) * s.stride + s.kernel;
        let mut offsets = [0; 4];
        for (p, o) in offsets.iter_mut().enumerate().take(pairs) {
            *o = step * p;
        }
        PairPlane {
            words: vec![0; rows * row_words],
            row_words,
            offsets,
        }
    }

    /// Lays out one channel's `plane` of codes (`in_hw`), less their zero-point `zero`,
    /// straight from the codes (a centred i16 copy of the planes and a padded row per input
    /// row, copied with `memmove`, had cost a pass over the activations and 9 % of
    /// EfficientViT-B1's integer time by `perf`). Only the words that can hold a code are
    /// written: which those are depends on the shape alone, so the padding's words, zeroed by
    /// [`PairPlane::new`], stay zero for every channel of the call (writing them per row was
    /// half the words of a 7-wide plane, one by one).
    #[inline(always)]
    fn fill(&mut self, s: &DwShape, plane: &[i32], zero: i32) {
        let (h, w) = s.in_hw;
        let pad = s.padding;
        let rw = self.row_words;
        // Padded columns the words hold; input columns further right feed no output.
        let len = if s.stride == 1 { rw + 1 } else { 2 * rw };
        let n = w.min(len.saturating_sub(pad));
        for (y, words) in self.words.chunks_exact_mut(rw).enumerate() {
            let iy = y as isize - pad as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let row = Row {
                codes: &plane[iy as usize * w..][..n],
                pad,
                zero,
            };
            if s.stride == 1 {
                row.stride1_words(words);
            } else {
                row.stride2_words(words);
            }
        }
    }
}

/// One input row's codes as the padded, centred row `P`: `P[j] = codes[j − pad] − zero` for
/// `pad ≤ j < pad + codes.len()`, 0 elsewhere.
struct Row<'a> {
    codes: &'a [i32],
    pad: usize,
    zero: i32,
}

impl Row<'_> {
    #[inline(always)]
    fn at(&self, j: usize) -> i16 {
        match j.checked_sub(self.pad).and_then(|i| self.codes.get(i)) {
            Some(&q) => centred(q, self.zero),
            None => 0,
        }
    }

    /// Stride 1: word `c` is `(P[c], P[c + 1])`; for `pad ≤ c < pad + n − 1` both come from
    /// the codes, the words either side hold one code and a zero, and all others are zero
    /// (left as they are: see [`PairPlane::fill`]).
    #[inline(always)]
    fn stride1_words(&self, words: &mut [i32]) {
        let n = self.codes.len();
        let first = self.pad.min(words.len());
        let end = (self.pad + n.saturating_sub(1)).clamp(first, words.len());
        if let Some(c) = first.checked_sub(1) {
            words[c] = pair(self.at(c), self.at(c + 1));
        }
        let z = self.zero;
        let pairs = self
            .codes
            .iter()
            .zip(self.codes.get(1..).unwrap_or_default());
        for (word, (&a, &b)) in words[first..end].iter_mut().zip(pairs) {
            *word = pair(centred(a, z), centred(b, z));
        }
        if let Some(word) = words.get_mut(end) {
            *word = pair(self.at(end), self.at(end + 1));
        }
    }

    /// Stride 2: word `m` is `(P[2m], P[2m + 1])`; words whose both columns are codes start
    /// at `⌈pad / 2⌉` and end before `⌊(pad + n) / 2⌋`, the words either side may hold one
    /// code, and all others are zero (left as they are: see [`PairPlane::fill`]).
    #[inline(always)]
    fn stride2_words(&self, words: &mut [i32]) {
        let n = self.codes.len();
        let first = self.pad.div_ceil(2).min(words.len());
        let end = ((self.pad + n) / 2).clamp(first, words.len());
        if let Some(m) = first.checked_sub(1) {
            words[m] = pair(self.at(2 * m), self.at(2 * m + 1));
        }
        let z = self.zero;
        let inside = &self.codes[(2 * first).saturating_sub(self.pad).min(n)..];
        for (word, two) in words[first..end].iter_mut().zip(inside.chunks_exact(2)) {
            *word = pair(centred(two[0], z), centred(two[1], z));
        }
        if let Some(word) = words.get_mut(end) {
            *word = pair(self.at(2 * end), self.at(2 * end + 1));
        }
    }
}

/// A code less its zero-point as the i16 the products take (codes of at most 8 bits less their
/// zero-point fit; wider ones wrap as the definition's `as i16` does).
#[inline(always)]
fn centred(q: i32, zero: i32) -> i16 {
    q.wrapping_sub(zero) as i16
}

/// Weight pairs of one channel, row by row: `(w[i][2p], w[i][2p + 1] or 0)`.
fn weight_pairs<const K: usize>(kernel: &[i16]) -> [[i32; 4]; K] {
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
/// `out` i32 planes.
///
/// AVX2 on every x86 CPU that has it: on the AVX-512 machine measured (AMD EPYC, BENCHMARKS.md)
/// a 16-lane version of this loop was slower than 8 lanes on every stride-1 shape.
#[target_feature(enable = "avx2")]
pub fn avx2<const K: usize>(s: &DwShape, x: &[i32], zero: &[i32], w: &[i16], out: &mut [i32]) {
    const LANES: usize = 8;
    let (h, wd) = s.in_hw;
    let (oh, ow) = s.out_hw;
    let pairs = K.div_ceil(2);
    let mut plane = PairPlane::new(s, LANES);
    let rw = plane.row_words;
    let rows = plane.words.len() / rw;
    assert!(x.len() >= s.channels * h * wd && w.len() >= s.channels * K * K);
    assert!(zero.len() >= s.channels);
    assert!(out.len() >= s.channels * oh * ow);
    // Every read below stays inside the plane: the last block's words end at
    // `columns + offsets[pairs − 1] ≤ row_words` on row `(oh − 1)·stride + K − 1`.
    assert!((oh - 1) * s.stride + K <= rows);
    assert!(ow.next_multiple_of(LANES) + plane.offsets[pairs - 1] <= rw);
    for c in 0..s.channels {
        plane.fill(s, &x[c * h * wd..(c + 1) * h * wd], zero[c]);
        let wp = weight_pairs::<K>(&w[c * K * K..(c + 1) * K * K]);
        let mut wv = [[_mm256_setzero_si256(); 4]; K];
        for (vr, pr) in wv.iter_mut().zip(&wp) {
            for (v, &p) in vr.iter_mut().zip(pr) {
                *v = _mm256_set1_epi32(p);
            }
        }
        let o = &mut out[c * oh * ow..(c + 1) * oh * ow];
        let words = plane.words.as_ptr();
        for oy in 0..oh {
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
                let dst = &mut o[oy * ow + l0..(oy + 1) * ow];
                if dst.len() >= LANES {
                    // SAFETY: `dst` holds at least one whole vector.
                    unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, acc) };
                } else {
                    // The row's last columns, fewer than a vector: a masked store (a copy
                    // through a stack vector was a call to `memmove`, 4 % of B1's time).
                    let first = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(dst.len() as i32), first);
                    // SAFETY: only the lanes below `dst.len()` are written.
                    unsafe { _mm256_maskstore_epi32(dst.as_mut_ptr(), mask, acc) };
                }
                l0 += LANES;
            }
        }
    }
}
