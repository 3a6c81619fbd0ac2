//! `out[j] = Σ_c q[c]·k_j[c]`: one attention query against every key, on centred codes held
//! as i16 so each pair of products is one `vpmaddwd` lane (exact: |q|, |k| ≤ 255, so a pair
//! sums to at most 2·255², and a head of up to 2^15 dimensions stays inside i32). One portable
//! body, compiled for AVX2 and AVX-512 as well and chosen at run time.
#![allow(unsafe_code)]

use super::{Isa, Width, width};

/// `out[j]` = the dot product of `q` with key `j`, the keys stored one after another
/// (`keys.len() = out.len()·q.len()`).
pub fn dots(isa: Isa, q: &[i16], keys: &[i16], out: &mut [i32]) {
    assert_eq!(
        keys.len(),
        out.len() * q.len(),
        "keys of another length than the query"
    );
    match width(isa) {
        // SAFETY (both): `width` found the features the function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => unsafe { dots_avx512(q, keys, out) },
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => unsafe { dots_avx2(q, keys, out) },
        _ => dots_portable(q, keys, out),
    }
}

#[inline(always)]
fn dots_portable(q: &[i16], keys: &[i16], out: &mut [i32]) {
    if q.is_empty() {
        out.fill(0);
        return;
    }
    for (o, k) in out.iter_mut().zip(keys.chunks_exact(q.len())) {
        *o = q
            .iter()
            .zip(k)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2(q: &[i16], keys: &[i16], out: &mut [i32]) {
    dots_portable(q, keys, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn dots_avx512(q: &[i16], keys: &[i16], out: &mut [i32]) {
    dots_portable(q, keys, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn every_isa_equals_the_definition() {
        let mut rng = Rng::new(21);
        // DeiT's head sizes and odd ones, codes at the extremes included.
        for (d, n) in [(64, 197), (32, 65), (1, 3), (7, 9), (0, 4), (33, 1)] {
            let code = |rng: &mut Rng| match rng.below(4) {
                0 => 255,
                1 => -255,
                _ => rng.below(511) as i16 - 255,
            };
            let q: Vec<i16> = (0..d).map(|_| code(&mut rng)).collect();
            let keys: Vec<i16> = (0..d * n).map(|_| code(&mut rng)).collect();
            let want: Vec<i32> = (0..n)
                .map(|j| (0..d).map(|c| q[c] as i32 * keys[j * d + c] as i32).sum())
                .collect();
            for isa in Isa::available() {
                let mut got = vec![-1; n];
                dots(isa, &q, &keys, &mut got);
                assert_eq!(got, want, "{} d = {d}, n = {n}", isa.name());
            }
        }
    }
}
