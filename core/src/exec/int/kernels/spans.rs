//! A row of i32 values as 8-lane AVX2 vectors when its length is not a multiple of 8: whole
//! vectors by plain loads and stores, the last, part-filled one by a masked load
//! (`vpmaskmovd`, the lanes past the row read as 0) and a store through the stack.
//!
//! Not a masked store: AMD's Zen 2 and Zen 3 run `vpmaskmovd`'s store form in microcode, many
//! times a plain store's cost. On the Zen 3 (AMD EPYC family 25 model 1) the fused Softmax rows
//! had stored every vector that way, and perf put 14 % of the kernel's samples on the
//! instruction after one store (`perf annotate` of `softmax_codes::avx2::rows` under
//! `qvit bench deit-tiny --executors int --batch 1 --threads 1`).
#![allow(unsafe_code)]

use std::arch::x86_64::*;

/// Lanes per vector.
const LANES: usize = 8;

/// One vector of a row: values `at..at + len` of it.
#[derive(Clone, Copy)]
pub(crate) struct Span {
    /// The offset of the vector's first value in the row.
    pub at: usize,
    /// All ones in the lanes that hold values of the row (the first `len`), zero past them.
    pub mask: __m256i,
    len: usize,
}

/// The vectors covering a row of `n` values, all whole but the last.
#[target_feature(enable = "avx2")]
pub(crate) fn spans(n: usize) -> impl Iterator<Item = Span> {
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    (0..n).step_by(LANES).map(move |at| {
        let len = (n - at).min(LANES);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), index);
        Span { at, mask, len }
    })
}

impl Span {
    /// The span's values from `p` (the span's first value), zero in the lanes past them.
    ///
    /// # Safety
    /// The CPU has AVX2; `p` points at `len` readable values.
    #[inline(always)]
    pub(crate) unsafe fn load(self, p: *const i32) -> __m256i {
        // SAFETY: the caller's promises; a masked load reads the first `len` lanes alone.
        unsafe {
            match self.len {
                LANES => _mm256_loadu_si256(p.cast()),
                _ => _mm256_maskload_epi32(p, self.mask),
            }
        }
    }

    /// The first `len` lanes of `v` stored at `p` (the span's first value), nothing past them.
    ///
    /// # Safety
    /// The CPU has AVX2; `p` points at `len` writable values.
    #[inline(always)]
    pub(crate) unsafe fn store(self, p: *mut i32, v: __m256i) {
        // SAFETY: the caller's promises; the copy writes the first `len` values alone.
        unsafe {
            if self.len == LANES {
                _mm256_storeu_si256(p.cast(), v);
            } else {
                let mut lanes = [0i32; LANES];
                _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v);
                std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, self.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row length to past two vectors: the spans cover the row once, in order, their
    /// masks hold their lanes alone, loads read zero past the row and stores write nothing
    /// past it.
    #[test]
    fn spans_cover_a_row_and_touch_nothing_past_it() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: the spans are not tested");
            return;
        }
        #[target_feature(enable = "avx2")]
        fn round_trip(row: &[i32]) -> (Vec<i32>, Vec<[i32; 8]>) {
            let mut out = vec![-1; row.len() + 9];
            let mut masks = Vec::new();
            for s in spans(row.len()) {
                let mut lanes = [0i32; 8];
                // SAFETY: the span lies inside `row` and `out`; AVX2 is this function's.
                unsafe {
                    let v = s.load(row[s.at..].as_ptr());
                    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v);
                    s.store(out[s.at..].as_mut_ptr(), _mm256_add_epi32(v, v));
                    let mut mask = [0i32; 8];
                    _mm256_storeu_si256(mask.as_mut_ptr().cast(), s.mask);
                    masks.push(mask);
                }
                let past = (row.len() - s.at).min(8);
                assert!(
                    lanes[past..].iter().all(|&l| l == 0),
                    "lanes past {}",
                    row.len()
                );
            }
            (out, masks)
        }
        for n in 0..=19 {
            let row: Vec<i32> = (0..n as i32).map(|i| 3 * i - 20).collect();
            // SAFETY: AVX2 was checked above.
            let (out, masks) = unsafe { round_trip(&row) };
            let doubled: Vec<i32> = row.iter().map(|v| 2 * v).collect();
            assert_eq!(out[..n], doubled[..], "{n} values");
            assert!(out[n..].iter().all(|&v| v == -1), "past {n} values");
            assert_eq!(masks.len(), n.div_ceil(8));
            for (v, mask) in masks.iter().enumerate() {
                let inside = (n - 8 * v).min(8);
                let want: Vec<i32> = (0..8).map(|l| if l < inside { -1 } else { 0 }).collect();
                assert_eq!(mask[..], want[..], "vector {v} of {n}");
            }
        }
    }
}
