//! The AVX-512 VNNI product: `vpdpbusd` multiplies 4 u8 activations by 4 i8 weights and adds
//! the sum to an i32 lane, 64 MACs per instruction. A tile is `MR` weight rows × `NP` panels of
//! 16 columns, held in `MR·NP` zmm accumulators across the whole `K` loop.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::ops::Range;

use super::{PANEL, PackedA, PackedB};

#[cfg(target_arch = "x86_64")]
pub fn gemm(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    assert!(
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    );
    // SAFETY: the features the function is compiled for were checked just above.
    unsafe { gemm_vnni(a, rows, b, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn gemm_vnni(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    let panels = b.cols.div_ceil(PANEL);
    // `out` holds rows `rows` only: tiles write row `r` at `r − first`.
    let first = rows.start;
    let mut r = first;
    while r < rows.end {
        let mr = (rows.end - r).min(4);
        let mut p = 0;
        while p < panels {
            let np = (panels - p).min(2);
            match (mr, np) {
                (4, 2) => tile::<4, 2>(a, b, out, first, r, p),
                (4, _) => tile::<4, 1>(a, b, out, first, r, p),
                (3, 2) => tile::<3, 2>(a, b, out, first, r, p),
                (3, _) => tile::<3, 1>(a, b, out, first, r, p),
                (2, 2) => tile::<2, 2>(a, b, out, first, r, p),
                (2, _) => tile::<2, 1>(a, b, out, first, r, p),
                (_, 2) => tile::<1, 2>(a, b, out, first, r, p),
                _ => tile::<1, 1>(a, b, out, first, r, p),
            }
            p += np;
        }
        r += mr;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile<const MR: usize, const NP: usize>(
    a: &PackedA,
    b: &PackedB,
    out: &mut [i32],
    first: usize,
    r0: usize,
    p0: usize,
) {
    let k4 = a.k4;
    assert!(r0 + MR <= a.rows && (p0 + NP) * k4 * PANEL * 4 <= b.data.len());
    let mut acc = [[_mm512_setzero_si512(); NP]; MR];
    let bptr = b.data.as_ptr();
    for g in 0..k4 {
        let mut bv = [_mm512_setzero_si512(); NP];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: panel p0 + j < panels and g < k4, so the 64 bytes at this offset lie in
            // `b.data` (asserted above).
            *v = unsafe { _mm512_loadu_si512(bptr.add(((p0 + j) * k4 + g) * PANEL * 4).cast()) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_epi32(a.quads[(r0 + i) * k4 + g]);
            for (j, c) in row.iter_mut().enumerate() {
                *c = _mm512_dpbusd_epi32(*c, bv[j], w);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            let col = (p0 + j) * PANEL;
            let n = (b.cols - col).min(PANEL);
            let at = (r0 + i - first) * b.cols + col;
            let dst = &mut out[at..at + n];
            let mut lanes = [0i32; PANEL];
            // SAFETY: `lanes` holds exactly 16 i32.
            unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), *c) };
            dst.copy_from_slice(&lanes[..n]);
        }
    }
}

/// The CPU's int8 peak on one core, measured: `iters` rounds of 12 independent `vpdpbusd`
/// (64 MACs each) on registers only. Returns the MACs done and a value that keeps the work
/// alive; `None` without AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
pub fn peak_loop(iters: usize) -> Option<(u64, i32)> {
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni"))
    {
        return None;
    }
    // SAFETY: the features were checked just above.
    Some(unsafe { peak_vnni(iters) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn peak_vnni(iters: usize) -> (u64, i32) {
    let a = _mm512_set1_epi32(0x0102_0304);
    let b = _mm512_set1_epi32(0x0101_0101);
    let mut acc = [_mm512_setzero_si512(); 12];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_dpbusd_epi32(*r, a, b);
        }
    }
    let mut sum = _mm512_setzero_si512();
    for r in acc {
        sum = _mm512_add_epi32(sum, r);
    }
    (iters as u64 * 12 * 64, _mm512_reduce_add_epi32(sum))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn peak_loop(_iters: usize) -> Option<(u64, i32)> {
    None
}

#[cfg(not(target_arch = "x86_64"))]
pub fn gemm(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    super::scalar_rows(a, rows, b, out)
}
