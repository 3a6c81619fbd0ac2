//! The log quantizer's codes and levels without a libm call per element.
//!
//! A log code is defined by libm: `q = max(round(−root·log2 v), 0)` for `v = x/Δ > 0`, and its
//! level is `Δ·exp2(−q/root)`. Calling `log2f` and `exp2f` for every element made fake-quant
//! of log-quantized attention 2–3× slower than the float model. Both depend on `v` and `q`
//! only, never on the quantizer's scale, so each `(root, rounding)` gets two tables, built
//! once per process *from libm itself*:
//!
//! - thresholds `t[k]`, the smallest `v` whose libm code is at most `k` (a binary search over
//!   the f32 bit patterns; the code does not increase with `v`), so the code of `v` is the
//!   number of thresholds above it. Per binade `[2^e, 2^(e+1))` the table keeps how many lie
//!   above it and the (at most two) inside it, so a code is `v`'s exponent, one table row
//!   and four comparisons, without a branch;
//! - levels `exp2(−q/root)` for every code.
//!
//! The result is the libm definition's, bit for bit (tested on random values of every
//! exponent and around every threshold); values the tables do not cover (subnormal, infinite
//! or NaN `v`, codes past 255, roots other than 1 and 2) take the libm path.
//!
//! The thresholds assume libm's code never rises with `v` (`log2f` is monotone); the tests
//! check it where it matters, around every threshold.

use std::sync::OnceLock;

use super::quantizer::Rounding;

/// Codes 0–255: every log quantizer of at most 8 bits.
pub(super) const CODES: usize = 256;

/// The definition every table reproduces (`v > 0`).
#[inline]
pub fn code_libm(v: f32, root: u8, rounding: Rounding) -> f32 {
    rounding.round(-f32::from(root) * v.log2()).max(0.0)
}

/// `exp2(−q/root)`, the level of code `q` at `Δ = 1`, by libm.
#[inline]
pub fn level_libm(q: f32, root: u8) -> f32 {
    (-q / f32::from(root)).exp2()
}

/// Thresholds lying in one binade `[2^e, 2^(e+1))` at most (log√2 has two per binade).
const PER_BINADE: usize = 2;

/// The largest code whose level SIMD lanes build from its bits ([`level_bits`]): past it,
/// `v = x/Δ` may be subnormal, where its rounding is coarser than the lanes allow for.
pub(super) const LAST_LANE_CODE: i32 = 247;

/// The f32 bits of `2^(−q/root)` for roots 1 and 2 while it is normal: `2^(−⌈q/2⌉)·√2` for
/// odd `q` under root 2, whose mantissa is `√2`'s whatever the exponent. [`Tables`] hold
/// where these equal libm's levels ([`Coder::levels_by_bits`]).
pub(super) fn level_bits(q: i32, root: u8) -> u32 {
    let odd = q & (i32::from(root) - 1);
    let exponent = 127 - ((q + odd) >> (root - 1));
    ((exponent as u32) << 23) | if odd != 0 { SQRT_2_MANTISSA } else { 0 }
}

/// The mantissa bits of `f32` `√2`.
pub(super) const SQRT_2_MANTISSA: u32 = 0x0035_04f3;

/// The tables of one `(root, rounding)`, by biased exponent `e` of a normal `v` (entries 0
/// and 255, subnormal and non-finite `v`, are never read): `code(v) = above[e] + #{i :
/// inside[i][e] > v}`. The scalar path's ([`Coder::code`]); SIMD lanes compute codes from
/// `log2` instead ([`super::log_lanes`]) and read only the levels' bound.
struct Tables {
    /// Thresholds at or above the binade's top: codes every value of the binade exceeds.
    above: [i32; 256],
    /// The thresholds inside each binade, padded with 0 (never above a positive `v`).
    inside: [[f32; 256]; PER_BINADE],
    /// False where more thresholds fall in the binade than `inside` holds (never for roots 1
    /// and 2, tested; such values would take libm's path).
    covered: [bool; 256],
    levels: [f32; CODES],
    /// The largest `q ≤ LAST_LANE_CODE` such that every level up to it is [`level_bits`].
    levels_by_bits: i32,
}

impl Tables {
    fn build(root: u8, rounding: Rounding) -> Self {
        let thresholds = thresholds(root, rounding);
        let mut t = Tables {
            above: [0; 256],
            inside: [[0.0; 256]; PER_BINADE],
            covered: [false; 256],
            levels: std::array::from_fn(|q| level_libm(q as f32, root)),
            levels_by_bits: -1,
        };
        t.levels_by_bits = (0..=LAST_LANE_CODE)
            .take_while(|&q| t.levels[q as usize].to_bits() == level_bits(q, root))
            .last()
            .unwrap_or(-1);
        // The code of v is #{k : t[k] > v} (t does not increase with k).
        for biased in 1u32..255 {
            let e = biased as usize;
            let (bottom, top) = (
                f32::from_bits(biased << 23),
                f32::from_bits((biased + 1) << 23),
            );
            t.above[e] = thresholds.iter().filter(|&&t| t >= top).count() as i32;
            let inside: Vec<f32> = thresholds
                .iter()
                .copied()
                .filter(|&t| t > bottom && t < top)
                .collect();
            t.covered[e] = inside.len() <= PER_BINADE;
            for (i, &v) in inside.iter().take(PER_BINADE).enumerate() {
                t.inside[i][e] = v;
            }
        }
        t
    }

    #[cfg(test)]
    fn all_covered(&self) -> bool {
        self.covered[1..255].iter().all(|&c| c)
    }
}

/// `t[k]`, the smallest positive `v` whose libm code is at most `k` (up to +∞, whose code is 0):
/// a binary search over the f32 bit patterns.
pub(super) fn thresholds(root: u8, rounding: Rounding) -> [f32; CODES] {
    std::array::from_fn(|k| {
        let (mut lo, mut hi) = (1u32, f32::INFINITY.to_bits());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if code_libm(f32::from_bits(mid), root, rounding) <= k as f32 {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        f32::from_bits(lo)
    })
}

/// The tables of `root` (1 or 2) under `rounding`.
fn tables(root: u8, rounding: Rounding) -> Option<&'static Tables> {
    static TABLES: [OnceLock<Tables>; 4] = [const { OnceLock::new() }; 4];
    let slot = match (root, rounding) {
        (1, Rounding::HalfUp) => 0,
        (1, Rounding::HalfEven) => 1,
        (2, Rounding::HalfUp) => 2,
        (2, Rounding::HalfEven) => 3,
        _ => return None,
    };
    Some(TABLES[slot].get_or_init(|| Tables::build(root, rounding)))
}

/// The codes and levels of one `(root, rounding)`: the tables looked up once, for loops over
/// many elements.
#[derive(Clone, Copy)]
pub struct Coder {
    root: u8,
    rounding: Rounding,
    tables: Option<&'static Tables>,
}

impl std::fmt::Debug for Coder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Coder(root {}, {:?})", self.root, self.rounding)
    }
}

impl Coder {
    pub(super) fn root(&self) -> u8 {
        self.root
    }

    /// The largest code up to which libm's levels are [`level_bits`] (roots 1 and 2), so
    /// that SIMD lanes may build them; `None` for other roots.
    pub(super) fn levels_by_bits(&self) -> Option<i32> {
        self.tables.map(|t| t.levels_by_bits)
    }

    pub fn new(root: u8, rounding: Rounding) -> Self {
        Self {
            root,
            rounding,
            tables: tables(root, rounding),
        }
    }

    /// `code_libm(v, root, rounding)` for `v > 0`, from the thresholds where they apply.
    #[inline]
    pub fn code(&self, v: f32) -> f32 {
        let (root, rounding) = (self.root, self.rounding);
        let Some(tables) = self.tables else {
            return code_libm(v, root, rounding);
        };
        if !(f32::MIN_POSITIVE..f32::INFINITY).contains(&v) {
            return code_libm(v, root, rounding);
        }
        let e = (v.to_bits() >> 23) as usize;
        if !tables.covered[e] {
            return code_libm(v, root, rounding);
        }
        let code = tables.above[e]
            + tables
                .inside
                .iter()
                .map(|t| i32::from(t[e] > v))
                .sum::<i32>();
        // Every threshold above v: the code may lie past the table.
        if code < CODES as i32 {
            code as f32
        } else {
            code_libm(v, root, rounding)
        }
    }

    /// `level_libm(q, root)`, from the table where it applies (both roundings' tables hold the
    /// same levels).
    #[inline]
    pub fn level(&self, q: f32) -> f32 {
        match self.tables {
            Some(t) if (0.0..CODES as f32).contains(&q) && q.fract() == 0.0 => t.levels[q as usize],
            _ => level_libm(q, self.root),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const SETTINGS: [(u8, Rounding); 4] = [
        (1, Rounding::HalfUp),
        (1, Rounding::HalfEven),
        (2, Rounding::HalfUp),
        (2, Rounding::HalfEven),
    ];

    fn same(v: f32, root: u8, rounding: Rounding) {
        let (got, want) = (
            Coder::new(root, rounding).code(v),
            code_libm(v, root, rounding),
        );
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "v = {v:e} ({:#x}), root {root}, {rounding:?}",
            v.to_bits()
        );
    }

    #[test]
    fn thresholds_by_hand() {
        // log2, half-up: code k for v in [2^(−k−½), 2^(−k+½)), so t[1] = 2^(−1.5) ≈ 0.35355.
        let t = thresholds(1, Rounding::HalfUp);
        assert!((t[0] - 0.5f32.sqrt()).abs() < 1e-7);
        assert!((t[1] - 2f32.powf(-1.5)).abs() < 1e-7);
        let (log2, log_sqrt2) = (
            Coder::new(1, Rounding::HalfUp),
            Coder::new(2, Rounding::HalfUp),
        );
        assert_eq!(log2.code(0.36), 1.0);
        assert_eq!(log2.code(0.35), 2.0);
        assert_eq!(log2.code(1.0), 0.0);
        assert_eq!(log2.code(8.0), 0.0); // negative log codes clamp to 0
        assert_eq!(log_sqrt2.code(0.5f32.sqrt()), 1.0);
        assert_eq!(log2.level(3.0), 0.125);
        assert_eq!(log_sqrt2.level(1.0), 0.5f32.sqrt());
        for &(root, rounding) in &SETTINGS {
            assert!(tables(root, rounding).unwrap().all_covered(), "root {root}");
        }
    }

    #[test]
    fn codes_equal_libm_on_every_exponent() {
        let mut rng = Rng::new(11);
        for &(root, rounding) in &SETTINGS {
            for _ in 0..200_000 {
                // Any positive bit pattern: normal, subnormal, infinite or NaN.
                let v = f32::from_bits(1 + rng.below(0x7fff_ffff) as u32);
                same(v, root, rounding);
            }
            for _ in 0..200_000 {
                // The range attention probabilities and divisors live in.
                let v = (rng.below(1 << 24) as f32 + 1.0) / (1 << 24) as f32;
                same(v, root, rounding);
            }
        }
    }

    #[test]
    fn codes_equal_libm_around_every_threshold() {
        for &(root, rounding) in &SETTINGS {
            for t in thresholds(root, rounding) {
                let b = t.to_bits() as i64;
                for d in -300..=300 {
                    let bits = (b + d).clamp(1, 0x7f80_0000) as u32;
                    same(f32::from_bits(bits), root, rounding);
                }
            }
        }
    }

    #[test]
    fn levels_from_their_bits() {
        // libm's `exp2f` here gives the bit-built levels until they turn subnormal (2^−126.5
        // under root 2, 2^−127 under root 1), or to the lanes' last code.
        for rounding in [Rounding::HalfUp, Rounding::HalfEven] {
            assert_eq!(Coder::new(1, rounding).levels_by_bits(), Some(126));
            assert_eq!(
                Coder::new(2, rounding).levels_by_bits(),
                Some(LAST_LANE_CODE)
            );
            assert_eq!(Coder::new(3, rounding).levels_by_bits(), None);
        }
        assert_eq!(f32::from_bits(level_bits(3, 2)), 0.5f32.powf(1.5));
        assert_eq!(f32::from_bits(level_bits(5, 1)), 1.0 / 32.0);
    }

    #[test]
    fn levels_equal_libm() {
        for root in [1, 2, 3] {
            for q in 0..300 {
                let q = q as f32;
                let level = Coder::new(root, Rounding::HalfUp).level(q);
                assert_eq!(level.to_bits(), level_libm(q, root).to_bits());
            }
        }
        let half = Coder::new(1, Rounding::HalfUp).level(0.5);
        assert_eq!(half.to_bits(), level_libm(0.5, 1).to_bits());
    }
}
