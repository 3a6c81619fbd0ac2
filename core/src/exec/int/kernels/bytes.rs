//! Codes to bytes and back, for values stored as bytes between steps (see
//! [`crate::exec::int::byte_codes`]). One portable body, also compiled for AVX2 and AVX-512,
//! which the compiler vectorises (`vpmovdb` with AVX-512).

#![allow(unsafe_code)]

use super::Isa;

/// `dst[i] = src[i] + lift` as a byte: codes the plan has checked lie in a u8 once lifted.
pub fn narrow(isa: Isa, src: &[i32], lift: i32, dst: &mut [u8]) {
    debug_assert!(src.iter().all(|&v| (0..=255).contains(&(v + lift))));
    by_width!(
        isa,
        narrow_avx512,
        narrow_avx2,
        narrow_portable,
        (src, lift, dst)
    )
}

#[inline(always)]
fn narrow_portable(src: &[i32], lift: i32, dst: &mut [u8]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = v.wrapping_add(lift) as u8;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn narrow_avx2(src: &[i32], lift: i32, dst: &mut [u8]) {
    narrow_portable(src, lift, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn narrow_avx512(src: &[i32], lift: i32, dst: &mut [u8]) {
    narrow_portable(src, lift, dst)
}

/// `dst[i] = src[i] − lift`: the codes of bytes.
pub fn widen(isa: Isa, src: &[u8], lift: i32, dst: &mut [i32]) {
    by_width!(
        isa,
        widen_avx512,
        widen_avx2,
        widen_portable,
        (src, lift, dst)
    )
}

#[inline(always)]
fn widen_portable(src: &[u8], lift: i32, dst: &mut [i32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = i32::from(b) - lift;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn widen_avx2(src: &[u8], lift: i32, dst: &mut [i32]) {
    widen_portable(src, lift, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn widen_avx512(src: &[u8], lift: i32, dst: &mut [i32]) {
    widen_portable(src, lift, dst)
}
