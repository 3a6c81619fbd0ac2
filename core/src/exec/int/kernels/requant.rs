//! The requantization loops of the epilogues: one channel's i32 accumulators to codes. One
//! portable body, also compiled for AVX2 and AVX-512 and chosen at run time, so the i64
//! multiply-add-shift-clamp vectorises (`vpmuldq` / `vpmullq`). Same integers on every path.
#![allow(unsafe_code)]

use super::Isa;
use crate::exec::int::code_table::CodeTable;

/// One channel's constants: `((v·m + lo) >> k) + hi`, clamped — equal to the half-up
/// `(v·m + a + 2^(k−1)) >> k` with `a` split at `2^k`. Valid while `|v·m| < 2^62`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fast {
    pub m: i32,
    pub lo: i64,
    pub hi: i64,
    pub k: u32,
    pub qmin: i64,
    pub qmax: i64,
}

impl Fast {
    #[inline(always)]
    pub fn apply(&self, v: i64) -> i64 {
        (((v * self.m as i64 + self.lo) >> self.k) + self.hi).clamp(self.qmin, self.qmax)
    }

    /// [`Fast::apply`] of an i32: written as a 32 × 32 → 64-bit product, which vectorises to
    /// `vpmuldq` where a 64-bit one needs `vpmullq` (AVX-512 DQ) or an emulation (AVX2).
    #[inline(always)]
    pub fn apply_i32(&self, v: i32) -> i64 {
        (((v as i64 * self.m as i64 + self.lo) >> self.k) + self.hi).clamp(self.qmin, self.qmax)
    }
}

/// Hardswish between two requantizations (see `requant::Epilogue::Hardswish`), for `t` and
/// `2^(j+1)` inside i32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastHardswish {
    pub to_t: Fast,
    pub j: u32,
    pub p_range: (i64, i64),
    pub out: Fast,
}

macro_rules! dispatch {
    ($isa:expr, $portable:ident, $avx2:ident, $avx512:ident, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if $isa == Isa::Avx512Vnni && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                // SAFETY: the features were checked just above.
                return unsafe { $avx512($($arg),*) };
            }
            if $isa != Isa::Scalar && std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was checked just above.
                return unsafe { $avx2($($arg),*) };
            }
        }
        $portable($($arg),*)
    }};
}

/// `dst[i] = f(src[i])`.
pub fn requant(isa: Isa, f: &Fast, src: &[i32], dst: &mut [i32]) {
    dispatch!(
        isa,
        requant_portable,
        requant_avx2,
        requant_avx512,
        (f, src, dst)
    )
}

/// `dst[i]` = the Hardswish epilogue of `src[i]`.
pub fn hardswish(isa: Isa, h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    dispatch!(
        isa,
        hardswish_portable,
        hardswish_avx2,
        hardswish_avx512,
        (h, src, dst)
    )
}

/// `dst[i] = table[f(src[i])]`: the requantization, then the code of its result.
pub fn lookup(isa: Isa, f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) {
    assert!(
        table.covers(f.qmin, f.qmax),
        "the table holds every value the requantization gives"
    );
    dispatch!(
        isa,
        lookup_portable,
        lookup_avx2,
        lookup_avx512,
        (f, table, src, dst)
    )
}

#[inline(always)]
fn requant_portable(f: &Fast, src: &[i32], dst: &mut [i32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = f.apply_i32(v) as i32;
    }
}

#[inline(always)]
fn lookup_portable(f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) {
    let codes = &table.codes[..];
    let last = codes.len() - 1;
    for (o, &v) in dst.iter_mut().zip(src) {
        // `f`'s clamp keeps the index inside the table (asserted by the caller); `min`
        // spares the bounds check.
        let i = (f.apply_i32(v) - table.first) as usize;
        *o = codes[i.min(last)];
    }
}

#[inline(always)]
fn hardswish_portable(h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    let three = 1i64 << h.j;
    for (o, &v) in dst.iter_mut().zip(src) {
        // `t` and the clamp are i32 (checked where `h` is made): a `vpmuldq` product.
        let t = h.to_t.apply_i32(v);
        let p = (t as i32 as i64 * (t + three).clamp(0, 2 * three) as i32 as i64)
            .clamp(h.p_range.0, h.p_range.1);
        *o = h.out.apply(p) as i32;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn requant_avx2(f: &Fast, src: &[i32], dst: &mut [i32]) {
    requant_portable(f, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn requant_avx512(f: &Fast, src: &[i32], dst: &mut [i32]) {
    requant_portable(f, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn lookup_avx2(f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) {
    lookup_portable(f, table, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn lookup_avx512(f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) {
    lookup_portable(f, table, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hardswish_avx2(h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    hardswish_portable(h, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn hardswish_avx512(h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    hardswish_portable(h, src, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn by_hand() {
        // m = 3, k = 2, rounding half (lo = 2), zero-point 1: 5·3/4 = 3.75 → 4, + 1 = 5;
        // −5·3/4 = −3.75 → −4 (arithmetic shift), + 1 = −3, clamped to −2.
        let f = Fast {
            m: 3,
            lo: 2,
            hi: 1,
            k: 2,
            qmin: -2,
            qmax: 100,
        };
        let mut out = [0; 4];
        requant_portable(&f, &[5, -5, 0, 1000], &mut out);
        assert_eq!(out, [5, -2, 1, 100]);
    }

    #[test]
    fn every_isa_gives_the_portable_result() {
        let mut rng = Rng::new(11);
        let src: Vec<i32> = (0..1003)
            .map(|_| rng.below(1 << 24) as i32 - (1 << 23))
            .collect();
        let f = Fast {
            m: 1_518_500_250,
            lo: (1 << 39) + 12345,
            hi: 7,
            k: 40,
            qmin: 0,
            qmax: 255,
        };
        let h = FastHardswish {
            to_t: Fast {
                k: 36,
                hi: 0,
                qmin: -(1 << 10),
                qmax: 5000,
                ..f
            },
            j: 10,
            p_range: (-(1 << 30), 1 << 30),
            out: Fast {
                m: 700_001,
                k: 28,
                ..f
            },
        };
        let mut want = vec![0; src.len()];
        requant_portable(&f, &src, &mut want);
        // Independently, in i128: the half-up `(v·m + a) >> k` with `a = lo + hi·2^k`.
        for (&v, &w) in src.iter().zip(&want) {
            let exact = ((v as i128 * f.m as i128 + f.lo as i128 + ((f.hi as i128) << f.k)) >> f.k)
                .clamp(f.qmin as i128, f.qmax as i128);
            assert_eq!(w as i128, exact, "v = {v}");
        }
        if Isa::available().len() == 1 {
            eprintln!("note: this CPU has no AVX2: only the portable requantization was tested");
        }
        let mut want_h = vec![0; src.len()];
        hardswish_portable(&h, &src, &mut want_h);
        for isa in Isa::available() {
            let mut got = vec![0; src.len()];
            requant(isa, &f, &src, &mut got);
            assert_eq!(got, want, "{}", isa.name());
            hardswish(isa, &h, &src, &mut got);
            assert_eq!(got, want_h, "{}", isa.name());
        }
    }
}
