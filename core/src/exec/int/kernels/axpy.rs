//! `acc[i] += a·x[i]` on i32 — the inner loop of the attention products (`q·kᵀ` row by row,
//! `P·V`, the linear-attention query). One portable body, also compiled for AVX2 and AVX-512 and
//! chosen at run time (the baseline x86-64 target has no packed 32-bit multiply).
#![allow(unsafe_code)]

use super::Isa;

/// `acc[i] += a·x[i]` (wrapping is impossible for the callers' bounds, which they check).
pub fn axpy(isa: Isa, acc: &mut [i32], a: i32, x: &[i32]) {
    by_width!(isa, axpy_avx512, axpy_avx2, axpy_portable, (acc, a, x))
}

#[inline(always)]
fn axpy_portable(acc: &mut [i32], a: i32, x: &[i32]) {
    for (s, &v) in acc.iter_mut().zip(x) {
        *s += a * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn axpy_avx2(acc: &mut [i32], a: i32, x: &[i32]) {
    axpy_portable(acc, a, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn axpy_avx512(acc: &mut [i32], a: i32, x: &[i32]) {
    axpy_portable(acc, a, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_agrees() {
        let x: Vec<i32> = (0..37).map(|i| i * 7 - 100).collect();
        let mut want: Vec<i32> = (0..37).map(|i| i * 3).collect();
        let start = want.clone();
        axpy_portable(&mut want, -13, &x);
        assert_eq!(want[5], 15 + (-13) * (35 - 100));
        if Isa::available().len() == 1 {
            eprintln!("note: this CPU has no AVX2: only the portable axpy was tested");
        }
        for isa in Isa::available() {
            let mut got = start.clone();
            axpy(isa, &mut got, -13, &x);
            assert_eq!(got, want, "{}", isa.name());
        }
    }
}
