//! A LayerNorm row in lanes: centring and promotion, I-LayerNorm's integer mean, variance and
//! normalisation, and the per-channel output requantization, exactly as
//! [`i_layernorm`](crate::exec::int::nonlinear::i_layernorm) and [`Narrow::apply_i32`] compute
//! them one value at a time. The lanes hold the promoted values in i32 — 16 to an AVX-512
//! register ([`avx512`]), 8 to an AVX2 one ([`avx2`]) — and form every 64-bit product as
//! 32 × 32 bits (`vpmuldq`), the even lanes' and the odd ones' apart; a row whose values leave
//! that range returns `false` and is left to the definition. The compiler's vectorisation of
//! the portable loops had widened every value to i64 (8 or 4 to a register, with the
//! constants' conversions), two thirds of the row's time by `perf`.
//!
//! Two passes over the row: the promoted values, their range, their sum and the sum of their
//! squares (the variance follows from the two sums and the mean, [`variance`]); then their
//! distances from the mean, normalised, and their codes, the output's constants laid out as
//! [`ColumnNarrow`] lanes. A pass of its own for the distances' squares had made three
//! (DeiT-T: 0.993–0.998 of the three passes' time, whole model, in-process alternation).
//! Each pass runs over a [`GROUP`] of rows side by side ([`RowNorm::rows`]).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use super::Isa;
use super::columns::ColumnNarrow;
use super::requant::Narrow;
use crate::exec::int::nonlinear::{newton_sqrt, round_half_even_div};

/// One LayerNorm's per-channel constants: the input's zero-point and left shift, and the
/// output's requantization.
#[derive(Debug, Clone, PartialEq)]
pub struct RowNorm {
    zero: Vec<i32>,
    /// Each below 32.
    shift: Vec<u32>,
    out: ColumnNarrow,
}

impl RowNorm {
    /// From each channel's zero-point, left shift and output requantization; `None` when a
    /// shift reaches 32 (its values could not be held in i32 lanes).
    pub fn new(zero: &[i32], shift: &[u32], out: &[Narrow]) -> Option<Self> {
        assert!(
            zero.len() == shift.len() && shift.len() == out.len(),
            "one zero-point, shift and requantization per channel"
        );
        if shift.iter().any(|&s| s >= 32) {
            return None;
        }
        Some(Self {
            zero: zero.to_vec(),
            shift: shift.to_vec(),
            out: ColumnNarrow::new(out.to_vec()),
        })
    }

    /// The output codes of one row `x` (a value per channel) into `out`, using `centred` (as
    /// long as the row) for the centred values; `false` — `out` then unspecified — when a
    /// centred value, its distance from the mean or a normalised value leaves the range the
    /// lanes are exact in.
    pub fn row(&self, isa: Isa, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> bool {
        let d = self.zero.len();
        assert!(
            x.len() == d && centred.len() == d && out.len() == d,
            "a row of {d} channels"
        );
        d == 0 || self.rows(isa, x, centred, out) == 1
    }

    /// [`RowNorm::row`] of up to [`GROUP`] rows `x`, one after the other, into `out` (as
    /// long), using `centred` (as long too): bit `r` of the result is set where row `r` ran
    /// (its codes in `out`'s row `r`) and clear where it was turned away.
    pub fn rows(&self, isa: Isa, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> u32 {
        let d = self.zero.len();
        assert!(
            d > 0 && x.len().is_multiple_of(d) && x.len() <= GROUP * d,
            "up to {GROUP} rows of {d} channels, not {} values",
            x.len()
        );
        assert!(centred.len() == x.len() && out.len() == x.len());
        by_width!(
            isa,
            avx512::rows,
            avx2::rows,
            rows_portable,
            (self, x, centred, out)
        )
    }
}

/// Rows normalised side by side ([`RowNorm::rows`]): a row's second pass waits on its sums'
/// reductions, the mean's and the factor's divisions and the square root, which the other
/// rows' passes fill, and the rows share each vector's constants. DeiT-T's 197 rows of 192 in
/// groups of four took 0.75× the time of one row at a time with AVX-512, 0.90× with AVX2
/// (`cargo bench -p qvit-core --bench int8 -- layernorm_rows`, Zen 4).
pub const GROUP: usize = 4;

/// [`RowNorm::rows`] one row at a time.
fn rows_portable(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> u32 {
    let d = n.zero.len();
    let rows = x
        .chunks(d)
        .zip(centred.chunks_mut(d))
        .zip(out.chunks_mut(d));
    rows.enumerate().fold(0, |ran, (r, ((x, centred), out))| {
        ran | u32::from(row_portable(n, x, centred, out)) << r
    })
}

/// The mean of a row of `d` promoted values from their range `lo..=hi` and their sum, when
/// every value and its distance from the mean (which lies between `lo` and `hi`) fit in i32.
fn mean_within(lo: i64, hi: i64, sum: i64, d: usize) -> Option<i32> {
    let fits = lo >= i32::MIN as i64 && hi <= i32::MAX as i64 && hi - lo <= i32::MAX as i64;
    // Between `lo` and `hi`, so in i32 too.
    fits.then(|| round_half_even_div(sum, d as i64) as i32)
}

/// The sum of `d` values' squared distances from `mean`, wrapping in u64 as the definition's
/// sum does, from the sum of their squares (`squares`, wrapping) and their sum (`sum`):
/// `Σ(v − m)² = Σv² − 2m·Σv + d·m²`, an identity of integers and so of their residues mod
/// 2^64. The lanes form both sums in the pass that promotes the values, rather than a pass
/// of their own over the distances.
fn variance(squares: u64, sum: i64, mean: i32, d: usize) -> u64 {
    let m = mean as i64;
    (squares as i64)
        .wrapping_sub((2 * m).wrapping_mul(sum))
        .wrapping_add((d as i64).wrapping_mul(m * m)) as u64
}

/// I-LayerNorm's factor `f = (2^31 − 1)/std` for the sum of squares `var`, when every
/// normalised value `(dev·f) >> 1` lies inside ±2^31: when every `|dev·f| < 2^32 − 2`, `dev`
/// lying between `lo − mean` and `hi − mean`.
fn factor_within(var: u64, (lo, hi): (i64, i64), mean: i32) -> Option<i32> {
    let std = newton_sqrt(var);
    // `std ≥ 1` (Newton's steps from 2^16 never reach 0), so `f` fits in i32.
    let f = (i32::MAX as i64 / std as i64) as i32;
    let widest = (hi - mean as i64).max(mean as i64 - lo);
    (widest * (f as i64) < (1 << 32) - 2).then_some(f)
}

/// [`RowNorm::row`] for a non-empty row, one value at a time.
fn row_portable(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> bool {
    // Centre and promote in i64, keeping the range; kept in i32 (its low half) for now.
    let (mut lo, mut hi, mut sum) = (i64::MAX, i64::MIN, 0i64);
    for (((v, &q), &z), &s) in centred.iter_mut().zip(x).zip(&n.zero).zip(&n.shift) {
        let wide = (q as i64 - z as i64) << s;
        lo = lo.min(wide);
        hi = hi.max(wide);
        sum += wide;
        *v = wide as i32;
    }
    let Some(mean) = mean_within(lo, hi, sum, x.len()) else {
        return false;
    };
    // The variance as the definition sums it: squares in u64, wrapping (none does, within the
    // compiler's bound on the variance).
    let mut var = 0u64;
    for v in centred.iter_mut() {
        let dev = *v - mean;
        var = var.wrapping_add((dev as i64 * dev as i64) as u64);
        *v = dev;
    }
    let Some(f) = factor_within(var, (lo, hi), mean) else {
        return false;
    };
    for (c, (o, &dev)) in out.iter_mut().zip(centred.iter()).enumerate() {
        let z = ((dev as i64 * f as i64) >> 1) as i32;
        *o = n.out.channel(c).apply_i32(z);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::requant::Fast;
    use super::*;
    use crate::exec::int::nonlinear::i_layernorm;
    use crate::rng::Rng;

    /// Rows of every width from one channel to DeiT-B's, random zero-points, shifts and
    /// output requantizations, spreads from constant to near the 32-bit edge: every ISA's
    /// lanes give I-LayerNorm's codes through each channel's [`Fast`] on every row they run,
    /// and run every row whose values stay well inside 32 bits.
    #[test]
    fn rows_equal_i_layernorm_and_the_requantization() {
        let mut rng = Rng::new(11);
        for d in [1, 2, 7, 17, 64, 192, 384, 768] {
            let zero: Vec<i32> = (0..d).map(|_| rng.below(21) as i32 - 10).collect();
            let shift: Vec<u32> = (0..d).map(|_| rng.below(11) as u32).collect();
            let fast: Vec<Fast> = (0..d)
                .map(|_| Fast {
                    m: (1 << 30) + rng.below(1 << 30) as i32,
                    lo: rng.below(1 << 40) as i64,
                    hi: rng.below(21) as i64 - 10,
                    k: 50 + rng.below(8) as u32,
                    qmin: -128,
                    qmax: 127,
                })
                .collect();
            let narrow: Vec<Narrow> = fast.iter().map(|f| f.narrow().unwrap()).collect();
            let norm = RowNorm::new(&zero, &shift, &narrow).unwrap();
            // The last spreads reach the ends of i32: differences from the zero-points and
            // shifted values that overflow it, which the lanes must turn away.
            for spread in [
                0,
                1,
                3,
                100,
                5_000,
                1 << 20,
                1 << 22,
                1 << 30,
                i32::MAX as usize,
            ] {
                let x: Vec<i32> = (0..d)
                    .map(|_| (rng.below(2 * spread + 1) as i64 - spread as i64) as i32)
                    .collect();
                let wide: Vec<i64> = (0..d)
                    .map(|c| (x[c] as i64 - zero[c] as i64) << shift[c])
                    .collect();
                // Every value and its distance from the mean inside 32 bits: otherwise each
                // ISA turns the row away (and the definition's sums would leave i64).
                let (lo, hi) = (wide.iter().min().unwrap(), wide.iter().max().unwrap());
                let in_i32 =
                    *lo >= i32::MIN as i64 && *hi <= i32::MAX as i64 && hi - lo <= i32::MAX as i64;
                if !in_i32 {
                    for isa in Isa::available() {
                        let (mut centred, mut got) = (vec![0; d], vec![0; d]);
                        let ran = norm.row(isa, &x, &mut centred, &mut got);
                        assert!(!ran, "{} d = {d}, spread {spread}: ran", isa.name());
                    }
                    continue;
                }
                // The definition's sum of squares wraps past u64 (outside the variance the
                // compiler allows): no codes to compare with.
                let mean = wide.iter().sum::<i64>() as i128 / d as i128;
                let var: i128 = wide.iter().map(|&v| (v as i128 - mean).pow(2)).sum();
                if var >= 1 << 63 {
                    continue;
                }
                let mut z = vec![0; d];
                i_layernorm(&wide, &mut z);
                let want: Vec<i32> = (0..d).map(|c| fast[c].apply(z[c]) as i32).collect();
                // Inside 32 bits: every `z` too.
                let fits = z.iter().all(|v| v.unsigned_abs() < 1 << 30);
                for isa in Isa::available() {
                    let (mut centred, mut got) = (vec![0; d], vec![0; d]);
                    let ran = norm.row(isa, &x, &mut centred, &mut got);
                    let case = format!("{} d = {d}, spread {spread}", isa.name());
                    if fits {
                        assert!(ran, "{case}: turned away");
                    }
                    if ran {
                        assert_eq!(got, want, "{case}");
                    }
                }
            }
        }
    }

    /// Rows of close values at the ends of i32: where the difference from the zero-point or the
    /// shift overflows it (the wrapped values would look like a well-behaved row), every ISA
    /// turns the row away; where they just fit, it runs it and gives I-LayerNorm's codes.
    /// An output requantization to int8 of `z/2^10`, for the tests with fixed rows.
    fn int8_of_z() -> Fast {
        Fast {
            m: 1 << 30,
            lo: 0,
            hi: 0,
            k: 40,
            qmin: -128,
            qmax: 127,
        }
    }

    #[test]
    fn rows_at_the_ends_of_i32() {
        let out = int8_of_z();
        let mut rng = Rng::new(5);
        // (first value, zero-point, shift, whether the promoted values fit in i32)
        let cases = [
            (i32::MAX - 300, -400, 0, false),
            (i32::MIN + 300, 400, 0, false),
            ((1 << 21) + 7, 0, 10, false),
            (-(1 << 21) - 400, 0, 10, false),
            (i32::MAX - 300, 0, 0, true),
            (i32::MIN + 1, 0, 0, true),
            ((1 << 20) - 300, 0, 11, true),
        ];
        for d in [7, 17, 192] {
            for (first, z, s, fits) in cases {
                let zero = vec![z; d];
                let shift = vec![s; d];
                let narrow = vec![out.narrow().unwrap(); d];
                let norm = RowNorm::new(&zero, &shift, &narrow).unwrap();
                let x: Vec<i32> = (0..d)
                    .map(|_| first.saturating_add(rng.below(300) as i32))
                    .collect();
                let wide: Vec<i64> = (0..d).map(|c| (x[c] as i64 - z as i64) << s).collect();
                let mut want = vec![0; d];
                i_layernorm(&wide, &mut want);
                for isa in Isa::available() {
                    let (mut centred, mut got) = (vec![0; d], vec![0; d]);
                    let ran = norm.row(isa, &x, &mut centred, &mut got);
                    let case = format!("{} d = {d}, from {first}, zero {z}, shift {s}", isa.name());
                    assert_eq!(ran, fits, "{case}");
                    if ran {
                        let want: Vec<i32> = want.iter().map(|&v| out.apply(v) as i32).collect();
                        assert_eq!(got, want, "{case}");
                    }
                }
            }
        }
    }

    /// Groups of one to four rows, every subset of them turned away (a row whose difference
    /// from the zero-point overflows): on every ISA the rows that run are marked and hold the
    /// codes each gives alone, and the others are marked as turned away.
    #[test]
    fn groups_mark_each_row() {
        let out = int8_of_z();
        let mut rng = Rng::new(8);
        for d in [7, 17, 192] {
            let norm =
                RowNorm::new(&vec![-400; d], &vec![2; d], &vec![out.narrow().unwrap(); d]).unwrap();
            for count in 1..=GROUP {
                for away in 0..1u32 << count {
                    let x: Vec<i32> = (0..count * d)
                        .map(|i| match away >> (i / d) & 1 {
                            1 => i32::MAX - rng.below(300) as i32,
                            _ => rng.below(2001) as i32 - 1000,
                        })
                        .collect();
                    for isa in Isa::available() {
                        let (mut centred, mut got) = (vec![0; x.len()], vec![0; x.len()]);
                        let ran = norm.rows(isa, &x, &mut centred, &mut got);
                        let case = format!("{} d = {d}, {count} rows, away {away:b}", isa.name());
                        assert_eq!(ran, !away & ((1 << count) - 1), "{case}");
                        for r in (0..count).filter(|r| ran >> r & 1 == 1) {
                            let (mut c, mut want) = (vec![0; d], vec![0; d]);
                            assert!(norm.row(isa, &x[r * d..][..d], &mut c, &mut want));
                            assert_eq!(got[r * d..][..d], want, "{case}, row {r}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shifts_of_32_bits_have_no_lanes() {
        let n = int8_of_z().narrow().unwrap();
        assert!(RowNorm::new(&[0, 0], &[3, 31], &[n, n]).is_some());
        assert!(RowNorm::new(&[0, 0], &[3, 32], &[n, n]).is_none());
    }
}
