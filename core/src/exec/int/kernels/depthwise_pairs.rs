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

/// Whether the pair kernels run this shape (the others take the portable loops).
pub fn supports(s: &DwShape) -> bool {
    matches!(s.stride, 1 | 2) && matches!(s.kernel, 3 | 5 | 7)
}

/// `(l, h)` as one word: `l` in the low i16, `h` in the high one (`vpmaddwd`'s operand order).
#[inline(always)]
fn pair(l: i16, h: i16) -> i32 {
    (l as u16 as u32 | (h as u16 as u32) << 16) as i32
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

    /// Lays out channel `plane` (`in_hw`, centred i16); `row` is scratch.
    #[inline(always)]
    fn fill(&mut self, s: &DwShape, plane: &[i16], row: &mut Vec<i16>) {
        let (h, w) = s.in_hw;
        let pad = s.padding;
        let rw = self.row_words;
        // The padded row, long enough for every word.
        let len = if s.stride == 1 { rw + 1 } else { 2 * rw };
        row.clear();
        row.resize(len, 0);
        for (y, words) in self.words.chunks_exact_mut(rw).enumerate() {
            let iy = y as isize - pad as isize;
            if iy < 0 || iy >= h as isize {
                words.fill(0);
                continue;
            }
            let src = &plane[iy as usize * w..][..w];
            // Input columns the padded row holds (those further right feed no output). An
            // element loop: these runs are too short for a call to `memcpy` to pay.
            let n = w.min(len - pad);
            for (d, &v) in row[pad..pad + n].iter_mut().zip(&src[..n]) {
                *d = v;
            }
            if s.stride == 1 {
                for (c, word) in words.iter_mut().enumerate() {
                    *word = pair(row[c], row[c + 1]);
                }
            } else {
                for (word, two) in words.iter_mut().zip(row.chunks_exact(2)) {
                    *word = pair(two[0], two[1]);
                }
            }
        }
    }
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

/// Every channel of `s`: `x` centred i16 planes, `w` `[C, K, K]`, `out` i32 planes.
///
/// AVX2 on every x86 CPU that has it: on the AVX-512 machine measured (AMD EPYC, BENCHMARKS.md)
/// a 16-lane version of this loop was slower than 8 lanes on every stride-1 shape.
#[target_feature(enable = "avx2")]
pub fn avx2<const K: usize>(s: &DwShape, x: &[i16], w: &[i16], out: &mut [i32]) {
    const LANES: usize = 8;
    let (h, wd) = s.in_hw;
    let (oh, ow) = s.out_hw;
    let pairs = K.div_ceil(2);
    let mut plane = PairPlane::new(s, LANES);
    let mut row = Vec::new();
    let rw = plane.row_words;
    let rows = plane.words.len() / rw;
    assert!(x.len() >= s.channels * h * wd && w.len() >= s.channels * K * K);
    assert!(out.len() >= s.channels * oh * ow);
    // Every read below stays inside the plane: the last block's words end at
    // `columns + offsets[pairs − 1] ≤ row_words` on row `(oh − 1)·stride + K − 1`.
    assert!((oh - 1) * s.stride + K <= rows);
    assert!(ow.next_multiple_of(LANES) + plane.offsets[pairs - 1] <= rw);
    let mut tail = [0i32; LANES];
    for c in 0..s.channels {
        plane.fill(s, &x[c * h * wd..(c + 1) * h * wd], &mut row);
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
                    // SAFETY: `tail` is one vector.
                    unsafe { _mm256_storeu_si256(tail.as_mut_ptr() as *mut __m256i, acc) };
                    let n = dst.len();
                    dst.copy_from_slice(&tail[..n]);
                }
                l0 += LANES;
            }
        }
    }
}
