//! `out[c] = Σ_j w[j]·x_j[c]`: one attention row's probabilities times the value rows (`P·V`).
//! For the usual head sizes (16, 32, 64) the output row is a fixed-size array the compiler keeps
//! in registers for the whole sum, so each value row costs one load and a multiply-add per
//! register instead of loading and storing the row for every key (the axpy it replaces). Rows
//! whose weight is 0 (probabilities under the smallest level) are skipped. One portable body,
//! compiled for AVX2 and AVX-512 as well and chosen at run time; integers, so every path gives
//! the same result.
#![allow(unsafe_code)]

use super::Isa;

/// `out[c] = Σ_j weights[j]·rows[j·d + c]` with `d = out.len()` (wrapping is impossible for
/// the callers' bounds, which the compiler checks).
pub fn weighted_rows(isa: Isa, weights: &[i32], rows: &[i32], out: &mut [i32]) {
    assert_eq!(
        rows.len(),
        weights.len() * out.len(),
        "rows of another width"
    );
    by_width!(isa, avx512, avx2, portable, (weights, rows, out))
}

#[inline(always)]
fn portable(weights: &[i32], rows: &[i32], out: &mut [i32]) {
    match out.len() {
        16 => fixed::<16>(weights, rows, out),
        32 => fixed::<32>(weights, rows, out),
        64 => fixed::<64>(weights, rows, out),
        d => {
            out.fill(0);
            if d == 0 {
                return;
            }
            for (&w, row) in weights.iter().zip(rows.chunks_exact(d)) {
                if w != 0 {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += w * v;
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn fixed<const D: usize>(weights: &[i32], rows: &[i32], out: &mut [i32]) {
    let mut acc = [0i32; D];
    for (&w, row) in weights.iter().zip(rows.chunks_exact(D)) {
        if w != 0 {
            let row: &[i32; D] = row.try_into().expect("a row of D");
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += w * v;
            }
        }
    }
    out.copy_from_slice(&acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2(weights: &[i32], rows: &[i32], out: &mut [i32]) {
    portable(weights, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512(weights: &[i32], rows: &[i32], out: &mut [i32]) {
    portable(weights, rows, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn every_isa_and_width_equals_the_definition() {
        let mut rng = Rng::new(8);
        for (d, n) in [
            (64, 197),
            (32, 65),
            (16, 50),
            (24, 7),
            (1, 3),
            (0, 4),
            (64, 1),
        ] {
            // Probabilities up to 2^15 (a third of them 0) against centred codes.
            let weights: Vec<i32> = (0..n)
                .map(|_| match rng.below(3) {
                    0 => 0,
                    _ => rng.below(1 << 15) as i32 + 1,
                })
                .collect();
            let rows: Vec<i32> = (0..n * d).map(|_| rng.below(511) as i32 - 255).collect();
            let want: Vec<i32> = (0..d)
                .map(|c| (0..n).map(|j| weights[j] * rows[j * d + c]).sum())
                .collect();
            for isa in Isa::available() {
                let mut got = vec![-1; d];
                weighted_rows(isa, &weights, &rows, &mut got);
                assert_eq!(got, want, "{} d = {d}, n = {n}", isa.name());
            }
        }
    }
}
