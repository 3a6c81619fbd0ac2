//! One attention row from its `q·kᵀ` sums to the codes of its probabilities, in 32-bit lanes
//! (16 with AVX-512, [`avx512`]; 8 with AVX2, [`avx2`]) and three passes over the row: the
//! logits' requantization and their maximum; the exponentials and their exact sum; the
//! normalisation and the encoding.
//!
//! The same integers as the steps one at a time — the logits' [`Narrow`] requantization,
//! [`softmax_row`] and [`BinadeLookup::encode_all`] — which had been five passes, the
//! exponentials in i64 lanes (8 to an AVX-512 register, 4 to an AVX2 one) and the
//! probabilities through memory to an encoder called once per row, whose last part-vector went
//! one value at a time. The kernel applies where each step has a 32-bit form: the
//! requantization narrow, the input grid in [`LANE32_INPUT_BITS`] (`exps::Exp512`), the
//! encoder's binades of at most two thresholds (a log encoder's), and rows of fewer than
//! [`MAX_TOKENS`], whose sums keep the normalisation's shift below 64. Elsewhere the caller
//! takes the steps one at a time.
//!
//! [`softmax_row`]: crate::exec::int::nonlinear::softmax_row
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use super::exps::LANE32_INPUT_BITS;
use super::requant::{Fast, Narrow};
use super::{Isa, Width, width};
use crate::exec::int::nonlinear::levels::BinadeLookup;
#[cfg(target_arch = "x86_64")]
use crate::exec::int::nonlinear::softmax::Normaliser;
use crate::exec::spare::resize_to_overwrite;

/// Rows shorter than this: their exponentials (each at most 2^30) sum below 2^56, so the
/// normalisation's shift, `bits + 31 − PROBABILITY_BITS`, stays below 64.
pub const MAX_TOKENS: usize = 1 << 26;

/// Rows whose passes run side by side: a row's passes each wait on the one before (its
/// maximum, then its sum and the normalisation's division), which the other rows' work fills.
/// A tile of DeiT-T's rows (`cargo bench -p qvit-core --bench int8 -- softmax_rows`) took
/// 0.86× the time of one row at a time with four, 0.93× with two (AVX-512; four with AVX2
/// 0.93×), and eight 0.85× and 0.91× in two runs: calls alternated on one core by a temporary
/// switch, Zen 4.
const GROUP: usize = 4;

/// An attention's rows → codes, prepared once per run.
#[derive(Debug)]
pub struct RowCodes<'a> {
    lanes: Lanes,
    tokens: usize,
    to_x: Narrow,
    j: u32,
    codes: &'a BinadeLookup<'a>,
}

/// The registers the kernel runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// AVX-512 F, BW, DQ, VL and CD (the bit lengths by `vplzcntd`).
    Avx512,
    Avx2,
}

impl<'a> RowCodes<'a> {
    /// The fused kernel for rows of `tokens` sums, requantized by `to_x` to base-2 logits at
    /// `2^−j` and encoded by `codes`; `None` where it does not apply (see the module's
    /// documentation), or where `isa` runs portable code.
    pub fn new(
        isa: Isa,
        tokens: usize,
        to_x: Option<&Fast>,
        j: u32,
        codes: &'a BinadeLookup<'a>,
    ) -> Option<Self> {
        let lanes = match width(isa) {
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 if std::arch::is_x86_feature_detected!("avx512cd") => Lanes::Avx512,
            Width::Avx512 | Width::Avx2 => Lanes::Avx2,
            Width::Portable => return None,
        };
        if tokens >= MAX_TOKENS || !LANE32_INPUT_BITS.contains(&j) || !codes.has_table() {
            return None;
        }
        Some(Self {
            lanes,
            tokens,
            to_x: to_x?.narrow()?,
            j,
            codes,
        })
    }

    /// The codes of the rows whose sums are `acc` (rows of `tokens`, one after the other)
    /// into `dst` (as long); `scratch` holds a [`GROUP`] of rows' logits, then their
    /// exponentials. The constants are set up once for all the rows (a tile of queries).
    pub fn rows(&self, acc: &[i32], scratch: &mut Vec<i32>, dst: &mut [i32]) {
        let n = self.tokens;
        assert!(
            acc.len() == dst.len() && acc.len().is_multiple_of(n.max(1)),
            "rows of {n} sums: {} of them into {} codes",
            acc.len(),
            dst.len()
        );
        if n == 0 {
            return;
        }
        resize_to_overwrite(scratch, GROUP * n);
        // SAFETY (both): `new` found the features each function is compiled for.
        #[cfg(target_arch = "x86_64")]
        match self.lanes {
            Lanes::Avx512 => unsafe { avx512::rows(self, acc, scratch, dst) },
            Lanes::Avx2 => unsafe { avx2::rows(self, acc, scratch, dst) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("`RowCodes::new` gives none without AVX2")
    }
}

/// A [`Normaliser`]'s reciprocal as a u32 and its shift: the reciprocal lies in
/// (2^31, 2^32], and at 2^32 halving it with the shift one less keeps every quotient
/// `(e·r + 2^(shift−1)) >> shift` (the normalisation's shift is at least 38).
#[cfg(target_arch = "x86_64")]
fn product_form(n: &Normaliser) -> (u32, u32) {
    match u32::try_from(n.reciprocal) {
        Ok(r) => (r, n.shift),
        Err(_) => {
            debug_assert_eq!(n.reciprocal, 1 << 32);
            (1 << 31, n.shift - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::nonlinear::softmax::PROBABILITY_BITS;
    use crate::exec::int::nonlinear::{LevelEncoder, softmax_row};
    use crate::rng::Rng;

    /// The steps one at a time: each sum requantized, the row's Softmax, each probability
    /// encoded by the search.
    fn stepwise(to_x: &Fast, j: u32, encoder: &LevelEncoder, acc: &[i32]) -> Vec<i32> {
        let x: Vec<i32> = acc.iter().map(|&a| to_x.apply_i32(a) as i32).collect();
        let mut p = vec![0; x.len()];
        softmax_row(Isa::Scalar, &x, j, &mut Vec::new(), &mut p);
        p.iter().map(|&p| encoder.encode(p as i64)).collect()
    }

    /// log√2 levels of probabilities at 2^−24 (repq-vit's post-Softmax point, 4 bits and 8),
    /// as the compiler builds them: the thresholds where the code changes over `0..=2^24`.
    fn log_sqrt2(levels: usize) -> LevelEncoder {
        let bounds: Vec<f64> = (1..levels)
            .rev()
            .map(|k| 2f64.powf(-(k as f64 - 0.5) / 2.0))
            .collect();
        let codes: Vec<i32> = (0..levels as i32).rev().collect();
        let levels = LevelEncoder::new(&bounds, codes, 1.0 / (1 << PROBABILITY_BITS) as f64, 0.0);
        LevelEncoder::from_monotone(|p| -levels.encode(p), 0, 1 << PROBABILITY_BITS)
    }

    /// Both [`avx512::Normalise512`] and [`avx2::Normalise256`] against [`Normaliser::apply`]
    /// on row sums from one maximum alone (`r = 2^32`) to 2^56, and exponentials at the
    /// rounding's boundaries, where a product short by `e` rounds down.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_normalisation_lanes_equal_the_scalar_one() {
        use crate::exec::int::nonlinear::softmax::{EXP_BITS, Normaliser};
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn lanes16(n: &Normaliser, e: &[i32; 16]) -> [i32; 16] {
            let mut out = [0; 16];
            // SAFETY: both hold 16 i32; this function is compiled for AVX-512 F.
            unsafe {
                let p = avx512::Normalise512::new(n).of(_mm512_loadu_si512(e.as_ptr().cast()));
                _mm512_storeu_si512(out.as_mut_ptr().cast(), p);
            }
            out
        }
        #[target_feature(enable = "avx2")]
        fn lanes8(n: &Normaliser, e: &[i32; 16]) -> [i32; 16] {
            let mut out = [0; 16];
            for (e, out) in e.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
                // SAFETY: both hold 8 i32; this function is compiled for AVX2.
                unsafe {
                    let p = avx2::Normalise256::new(n).of(_mm256_loadu_si256(e.as_ptr().cast()));
                    _mm256_storeu_si256(out.as_mut_ptr().cast(), p);
                }
            }
            out
        }
        let available = Isa::available();
        let (wide, narrow) = (
            available.contains(&Isa::Avx512Vnni),
            available.contains(&Isa::Avx2),
        );
        if !wide {
            eprintln!("no AVX-512 on this CPU: the 16-lane normalisation is not tested");
        }
        if !narrow {
            eprintln!("no AVX2 on this CPU: the 8-lane normalisation is not tested");
        }
        let mut rng = Rng::new(3);
        let top = 1i64 << EXP_BITS;
        for round in 0..20_000 {
            let sum = match round {
                0 => top,
                1 => 2 * top,
                _ => top + (rng.next_u64() >> (9 + rng.below(30))) as i64,
            };
            let n = Normaliser::new(sum);
            let e: [i32; 16] = std::array::from_fn(|_| {
                // Just past the boundary between probabilities k and k + 1.
                let k = rng.below(1 << PROBABILITY_BITS) as u128;
                let boundary = (2 * k + 1) << (n.shift - 1);
                let e = boundary.div_ceil(n.reciprocal as u128);
                e.min(top as u128) as i32
            });
            let want = e.map(|e| n.apply(e as i64));
            if wide {
                // SAFETY: AVX-512 F is present (checked above).
                assert_eq!(unsafe { lanes16(&n, &e) }, want, "16 lanes, sum {sum}");
            }
            if narrow {
                // SAFETY: AVX2 is present (checked above).
                assert_eq!(unsafe { lanes8(&n, &e) }, want, "8 lanes, sum {sum}");
            }
        }
    }

    /// An encoder whose thresholds sit at the row's probabilities (`p − 1` for the first in
    /// each binade, `p` for the second), so that a probability one unit off changes its code.
    fn probe_encoder(to_x: &Fast, j: u32, acc: &[i32]) -> LevelEncoder {
        let x: Vec<i32> = acc.iter().map(|&a| to_x.apply_i32(a) as i32).collect();
        let mut p = vec![0; x.len()];
        softmax_row(Isa::Scalar, &x, j, &mut Vec::new(), &mut p);
        let mut per_binade = [0; 33];
        let mut thresholds = Vec::new();
        for &p in &p {
            let b = (32 - p.leading_zeros()) as usize;
            let t = [p as i64 - 1, p as i64][per_binade[b].min(1)];
            let tb = (64 - t.max(0).leading_zeros()) as usize;
            if per_binade[b] < 2 && tb == b && t >= 0 && !thresholds.contains(&t) {
                thresholds.push(t);
                per_binade[b] += 1;
            }
        }
        thresholds.sort_unstable();
        LevelEncoder {
            codes: (0..=thresholds.len() as i32).collect(),
            thresholds,
        }
    }

    /// Rows of one token to past DeiT-B's 197 and a few thousand, every grid the kernel takes,
    /// logits spread far past the exponentials' range and narrow, clamped and not, rows of
    /// equal logits (whose sums are powers of two: `r = 2^32`): the stepwise codes exactly,
    /// where the CPU has AVX-512 with CD.
    #[test]
    fn rows_equal_the_steps_one_at_a_time() {
        let mut rng = Rng::new(11);
        let encoders = [log_sqrt2(16), log_sqrt2(256)];
        let lookups: Vec<_> = encoders.iter().map(|e| e.binade_lookup()).collect();
        let isas: Vec<Isa> = [Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .filter(|isa| Isa::available().contains(isa))
            .collect();
        if isas.is_empty() {
            eprintln!("no AVX2 on this CPU: the fused Softmax rows are not tested");
        }
        let mut scratch = Vec::new();
        for (isa, len) in isas.iter().flat_map(|&isa| {
            [1, 2, 7, 8, 9, 15, 16, 17, 31, 64, 197, 200, 1031, 4099].map(|len| (isa, len))
        }) {
            for j in LANE32_INPUT_BITS {
                for (encoder, lookup) in encoders.iter().zip(&lookups) {
                    let k = 32 + rng.below(13) as u32;
                    let clamp = [1 << 29, 20 << j][rng.below(2)];
                    let to_x = Fast {
                        m: (1 << 28) + rng.below(3 << 28) as i32,
                        lo: 1 << (k - 1),
                        hi: rng.below(2001) as i64 - 1000,
                        k,
                        qmin: -clamp,
                        qmax: clamp,
                    };
                    let rc = RowCodes::new(isa, len, Some(&to_x), j, lookup)
                        .expect("every case here takes the kernel");
                    // A tile of one to nine rows (groups of four and what remains), each
                    // of its own spread; a row of equal sums in one case of four.
                    let mut acc = Vec::new();
                    for _ in 0..1 + rng.below(9) {
                        let spread = 1 << (8 + rng.below(15));
                        let mut row: Vec<i32> = (0..len)
                            .map(|_| rng.below(2 * spread) as i32 - spread as i32)
                            .collect();
                        if rng.below(4) == 0 {
                            let first = row[0];
                            row.fill(first);
                        }
                        acc.extend(row);
                    }
                    let by_rows = |encoder: &LevelEncoder| -> Vec<i32> {
                        let rows = acc.chunks(len);
                        rows.flat_map(|row| stepwise(&to_x, j, encoder, row))
                            .collect()
                    };
                    let mut got = vec![-1; acc.len()];
                    rc.rows(&acc, &mut scratch, &mut got);
                    assert_eq!(
                        got,
                        by_rows(encoder),
                        "{isa:?}, {len} tokens, j = {j}, {to_x:?}"
                    );
                    // Thresholds at the first row's own probabilities, one unit either side:
                    // any of them off by one changes its code.
                    let probe = probe_encoder(&to_x, j, &acc[..len]);
                    let lookup = probe.binade_lookup();
                    let rc = RowCodes::new(isa, len, Some(&to_x), j, &lookup)
                        .expect("at most two thresholds per binade");
                    rc.rows(&acc, &mut scratch, &mut got);
                    let what = format!("probe, {isa:?}, {len} tokens, j = {j}, {to_x:?}");
                    assert_eq!(got, by_rows(&probe), "{what}");
                }
            }
        }
    }

    /// Each ISA's lanes where the CPU has them (AVX-512 with CD, else AVX2; none for the
    /// scalar kernels); where a step has no 32-bit form the kernel is not offered: a grid
    /// outside [`LANE32_INPUT_BITS`], a requantization whose shift is below 32, an encoder
    /// with more than two thresholds in a binade, rows of [`MAX_TOKENS`].
    #[test]
    fn the_kernel_is_offered_only_where_it_applies() {
        let encoder = log_sqrt2(16);
        let lookup = encoder.binade_lookup();
        let uniform = LevelEncoder::from_monotone(|v| ((v + 5) / 10).clamp(0, 255) as i32, 0, 3000);
        let uniform = uniform.binade_lookup();
        let to_x = Fast {
            m: 1 << 30,
            lo: 0,
            hi: 0,
            k: 40,
            qmin: -1000,
            qmax: 1000,
        };
        let wide = Fast { k: 31, ..to_x };
        let lanes = |isa| RowCodes::new(isa, 197, Some(&to_x), 10, &lookup).map(|r| r.lanes);
        #[cfg(target_arch = "x86_64")]
        let cd = std::arch::is_x86_feature_detected!("avx512cd");
        #[cfg(not(target_arch = "x86_64"))]
        let cd = false;
        let available = Isa::available();
        let has = |isa| available.contains(&isa);
        let want = match (has(Isa::Avx512Vnni), cd) {
            (true, true) => Some(Lanes::Avx512),
            (true, false) => Some(Lanes::Avx2),
            (false, _) => has(Isa::Avx2).then_some(Lanes::Avx2),
        };
        assert_eq!(lanes(Isa::Avx512Vnni), want);
        assert_eq!(lanes(Isa::Avx2), has(Isa::Avx2).then_some(Lanes::Avx2));
        assert_eq!(lanes(Isa::Scalar), None);
        let isa = *available.last().expect("the scalar kernels at least");
        assert!(RowCodes::new(isa, 197, Some(&to_x), 7, &lookup).is_none());
        assert!(RowCodes::new(isa, 197, Some(&to_x), 16, &lookup).is_none());
        assert!(RowCodes::new(isa, 197, Some(&wide), 10, &lookup).is_none());
        assert!(RowCodes::new(isa, 197, None, 10, &lookup).is_none());
        assert!(RowCodes::new(isa, 197, Some(&to_x), 10, &uniform).is_none());
        assert!(RowCodes::new(isa, MAX_TOKENS, Some(&to_x), 10, &lookup).is_none());
    }
}
