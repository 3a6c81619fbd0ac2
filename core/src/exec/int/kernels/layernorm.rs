//! A LayerNorm row in lanes: centring and promotion, I-LayerNorm's integer mean, variance and
//! normalisation, and the per-channel output requantization, exactly as
//! [`i_layernorm`](crate::exec::int::nonlinear::i_layernorm) and [`Narrow::apply_i32`] compute
//! them one value at a time. The lanes hold the centred values in i32 and form every 64-bit
//! product as 32 × 32 bits (`vpmuldq`, which AVX2 has); a row whose values leave that range
//! returns `false` and is left to the definition.
#![allow(unsafe_code)]

use super::Isa;
use super::requant::Narrow;
use crate::exec::int::nonlinear::{newton_sqrt, round_half_even_div};

/// One LayerNorm's per-channel constants as columns: the input's zero-point and left shift,
/// and the output's requantization ([`Narrow`]'s fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowNorm {
    zero: Vec<i32>,
    shift: Vec<u32>,
    m: Vec<i32>,
    lo: Vec<i64>,
    out_shift: Vec<u32>,
    hi: Vec<i32>,
    min: Vec<i32>,
    max: Vec<i32>,
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
            m: out.iter().map(|n| n.m).collect(),
            lo: out.iter().map(|n| n.lo).collect(),
            out_shift: out.iter().map(|n| n.shift).collect(),
            hi: out.iter().map(|n| n.hi).collect(),
            min: out.iter().map(|n| n.min).collect(),
            max: out.iter().map(|n| n.max).collect(),
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
        if d == 0 {
            return true;
        }
        by_width!(
            isa,
            row_avx512,
            row_avx2,
            row_portable,
            (self, x, centred, out)
        )
    }
}

/// [`RowNorm::row`] for a non-empty row, written so that every loop vectorises.
#[inline(always)]
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
    // Every value and its distance from the mean (which lies between `lo` and `hi`) in i32.
    if lo < i32::MIN as i64 || hi > i32::MAX as i64 || hi - lo > i32::MAX as i64 {
        return false;
    }
    let mean = round_half_even_div(sum, x.len() as i64);
    // The variance as the definition sums it: squares in u64, wrapping (none does, within the
    // compiler's bound on the variance).
    let mut var = 0u64;
    for v in centred.iter_mut() {
        let dev = *v - mean as i32;
        var = var.wrapping_add((dev as i64 * dev as i64) as u64);
        *v = dev;
    }
    let std = newton_sqrt(var);
    // `std ≥ 1` (Newton's steps from 2^16 never reach 0), so `f` fits in i32.
    let f = (i32::MAX as i64 / std as i64) as i32;
    // `z = (dev·f) >> 1` lies inside ±2^31 when every `|dev·f| < 2^32 − 2`.
    let widest = (hi - mean).max(mean - lo);
    if widest * f as i64 >= (1 << 32) - 2 {
        return false;
    }
    let d = out.len();
    let (m, add, shift) = (&n.m[..d], &n.lo[..d], &n.out_shift[..d]);
    let (min, max, top) = (&n.min[..d], &n.max[..d], &n.hi[..d]);
    // Indexed: eight columns read in step, each sliced to the row's length above.
    #[allow(clippy::needless_range_loop)]
    for c in 0..d {
        let z = ((centred[c] as i64 * f as i64) >> 1) as i32;
        let x = z as i64 * m[c] as i64 + add[c];
        // `max` then `min`, not `clamp`: its check that `min ≤ max` (true by construction)
        // would keep the loop scalar.
        out[c] = (((x >> 32) as i32) >> shift[c]).max(min[c]).min(max[c]) + top[c];
    }
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_avx2(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> bool {
    row_portable(n, x, centred, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn row_avx512(n: &RowNorm, x: &[i32], centred: &mut [i32], out: &mut [i32]) -> bool {
    row_portable(n, x, centred, out)
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
            for spread in [0, 1, 3, 100, 5_000, 1 << 20, 1 << 22] {
                let x: Vec<i32> = (0..d)
                    .map(|_| rng.below(2 * spread + 1) as i32 - spread as i32)
                    .collect();
                let wide: Vec<i64> = (0..d)
                    .map(|c| ((x[c] - zero[c]) as i64) << shift[c])
                    .collect();
                let mut z = vec![0; d];
                i_layernorm(&wide, &mut z);
                let want: Vec<i32> = (0..d).map(|c| fast[c].apply(z[c]) as i32).collect();
                // Inside 32 bits: every value, its distance from the mean, every `z`.
                let (lo, hi) = (wide.iter().min().unwrap(), wide.iter().max().unwrap());
                let fits = *lo >= i32::MIN as i64
                    && *hi <= i32::MAX as i64
                    && hi - lo <= i32::MAX as i64
                    && z.iter().all(|v| v.unsigned_abs() < 1 << 30);
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

    #[test]
    fn shifts_of_32_bits_have_no_lanes() {
        let n = Fast {
            m: 1 << 30,
            lo: 0,
            hi: 0,
            k: 40,
            qmin: -128,
            qmax: 127,
        }
        .narrow()
        .unwrap();
        assert!(RowNorm::new(&[0, 0], &[3, 31], &[n, n]).is_some());
        assert!(RowNorm::new(&[0, 0], &[3, 32], &[n, n]).is_none());
    }
}
