//! The AVX2 product. AVX2 has no u8×i8 dot product that cannot saturate (`vpmaddubsw` adds two
//! products in i16, and 255·127·2 overflows it), so the u8 activations are widened to i16 and
//! multiplied with `vpmaddwd`, which adds pairs exactly into i32: 16 MACs per instruction. Each
//! accumulator lane holds half of a column's sum; the halves are added once per tile.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{PANEL, PackedA, PackedB};

#[cfg(target_arch = "x86_64")]
pub fn gemm(a: &PackedA, b: &PackedB, out: &mut [i32]) {
    assert!(std::arch::is_x86_feature_detected!("avx2"));
    // SAFETY: AVX2 was checked just above.
    unsafe { gemm_avx2(a, b, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gemm_avx2(a: &PackedA, b: &PackedB, out: &mut [i32]) {
    let panels = b.cols.div_ceil(PANEL);
    let mut r = 0;
    while r < a.rows {
        let mr = (a.rows - r).min(2);
        for p in 0..panels {
            if mr == 2 {
                tile::<2>(a, b, out, r, p);
            } else {
                tile::<1>(a, b, out, r, p);
            }
        }
        r += mr;
    }
}

/// Four i8 weights sign-extended to four i16, repeated over the register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn weights_i16(quad: i32) -> __m256i {
    let w = quad.to_le_bytes();
    let mut v = 0u64;
    for (j, &x) in w.iter().enumerate() {
        v |= ((x as i8 as i16) as u16 as u64) << (16 * j);
    }
    _mm256_set1_epi64x(v as i64)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tile<const MR: usize>(a: &PackedA, b: &PackedB, out: &mut [i32], r0: usize, p: usize) {
    let k4 = a.k4;
    assert!(r0 + MR <= a.rows && (p + 1) * k4 * PANEL * 4 <= b.data.len());
    // acc[i][q]: row i, columns 4q..4q+4, two lanes per column.
    let mut acc = [[_mm256_setzero_si256(); 4]; MR];
    let bptr = b.data.as_ptr();
    for g in 0..k4 {
        let base = (p * k4 + g) * PANEL * 4;
        let mut bv = [_mm256_setzero_si256(); 4];
        for (q, v) in bv.iter_mut().enumerate() {
            // SAFETY: 16 bytes at base + 16q, q < 4, inside this panel's group (asserted).
            let bytes = unsafe { _mm_loadu_si128(bptr.add(base + 16 * q).cast()) };
            *v = _mm256_cvtepu8_epi16(bytes);
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let w = weights_i16(a.quads[(r0 + i) * k4 + g]);
            for (q, c) in row.iter_mut().enumerate() {
                *c = _mm256_add_epi32(*c, _mm256_madd_epi16(bv[q], w));
            }
        }
    }
    let col = p * PANEL;
    let n = (b.cols - col).min(PANEL);
    for (i, row) in acc.iter().enumerate() {
        let mut lanes = [0i32; PANEL];
        for half in 0..2 {
            // hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7] for columns 0–3 and 4–7 of this half.
            let s = _mm256_hadd_epi32(row[2 * half], row[2 * half + 1]);
            let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
            // SAFETY: 8 i32 at lanes[8·half..], inside the 16-lane array.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().add(8 * half).cast(), s) };
        }
        out[(r0 + i) * b.cols + col..(r0 + i) * b.cols + col + n].copy_from_slice(&lanes[..n]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn gemm(a: &PackedA, b: &PackedB, out: &mut [i32]) {
    super::gemm_scalar(a, b, out)
}
