//! Dyadic numbers: a real scale ratio as `m/2^k`, applied with one multiply, one add and one
//! shift.

use serde::{Deserialize, Serialize};

/// `m / 2^k` with `2^30 ≤ |m| < 2^31` (or `m = 0`), so the ratio keeps 31 significant bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dyadic {
    pub m: i32,
    pub k: u8,
}

/// The largest shift used: `acc·m` of an i32 accumulator and a 31-bit `m` fits in 62 bits.
const MAX_SHIFT: i32 = 62;

impl Dyadic {
    /// The dyadic number nearest to `r` with a 31-bit mantissa: `r = f·2^e` with
    /// `½ ≤ |f| < 1`, `m = ⌊f·2^31⌉` (half away from zero), `k = 31 − e`; a mantissa that rounds
    /// up to `2^31` is halved (the value is unchanged). Ratios so small that `k` would pass 62
    /// lose low mantissa bits; ratios of 2^31 or more cannot be represented and give `None`, as
    /// do non-finite ones.
    pub fn from_real(r: f64) -> Option<Self> {
        if !r.is_finite() {
            return None;
        }
        if r == 0.0 {
            return Some(Self { m: 0, k: 0 });
        }
        // frexp by hand: r = f·2^e with 0.5 ≤ |f| < 1.
        let e = r.abs().log2().floor() as i32 + 1;
        let mut f = r / 2f64.powi(e);
        let mut e = e;
        if f.abs() >= 1.0 {
            f /= 2.0;
            e += 1;
        } else if f.abs() < 0.5 {
            f *= 2.0;
            e -= 1;
        }
        let mut m = (f * 2f64.powi(31)).round() as i64;
        let mut k = 31 - e;
        if m.abs() == 1 << 31 {
            m /= 2;
            k -= 1;
        }
        if k < 0 {
            return None;
        }
        if k > MAX_SHIFT {
            let drop = k - MAX_SHIFT;
            if drop >= 32 {
                return Some(Self { m: 0, k: 0 });
            }
            m = (m + (1 << (drop - 1))) >> drop;
            k = MAX_SHIFT;
        }
        Some(Self {
            m: m as i32,
            k: k as u8,
        })
    }

    /// The exact value `m/2^k`.
    pub fn value(&self) -> f64 {
        self.m as f64 / 2f64.powi(self.k as i32)
    }

    /// `⌊acc·m/2^k + ½⌋`, computed as `(acc·m + 2^(k−1)) >> k` in i64.
    #[inline]
    pub fn apply(&self, acc: i32) -> i64 {
        let p = acc as i64 * self.m as i64;
        if self.k == 0 {
            return p;
        }
        (p + (1i64 << (self.k - 1))) >> self.k
    }

    /// [`Dyadic::apply`] saturated to a `bits`-bit signed integer.
    #[inline]
    pub fn requantize(&self, acc: i32, bits: u8) -> i32 {
        let hi = (1i64 << (bits - 1)) - 1;
        self.apply(acc).clamp(-hi - 1, hi) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        let half = Dyadic::from_real(0.5).unwrap();
        assert_eq!(half, Dyadic { m: 1 << 30, k: 31 });
        // 10·½ = 5; 11·½ = 5.5 rounds up to 6; −11·½ = −5.5 rounds up to −5.
        assert_eq!(
            (half.apply(10), half.apply(11), half.apply(-11)),
            (5, 6, -5)
        );
        let third = Dyadic::from_real(1.0 / 3.0).unwrap();
        assert_eq!(third.k, 32); // 1/3 = 0.667·2^-1
        assert_eq!(third.m, 1_431_655_765); // ⌊(2/3)·2^31⌉
        assert_eq!(third.apply(300), 100);
        assert_eq!(third.requantize(1_000_000, 8), 127);
        assert_eq!(third.requantize(-1_000_000, 8), -128);
        let neg = Dyadic::from_real(-0.75).unwrap();
        assert_eq!(neg.apply(4), -3);
        assert_eq!(Dyadic::from_real(0.0).unwrap().apply(123), 0);
        assert_eq!(Dyadic::from_real(f64::NAN), None);
        assert_eq!(Dyadic::from_real(3e9), None);
    }

    #[test]
    fn a_mantissa_rounding_to_two_to_the_31_is_renormalised() {
        let r = 1.0 - 2f64.powi(-40); // f·2^31 rounds to 2^31
        let d = Dyadic::from_real(r).unwrap();
        assert_eq!(d, Dyadic { m: 1 << 30, k: 30 });
    }

    proptest::proptest! {
        #[test]
        fn keeps_31_significant_bits(r in 1e-9f64..1e9) {
            let d = Dyadic::from_real(r).unwrap();
            proptest::prop_assert!((d.value() - r).abs() <= r * 2f64.powi(-30), "{r} → {d:?}");
            proptest::prop_assert!(d.m >= 1 << 30);
        }

        #[test]
        fn apply_is_exact_half_up_rounding(r in 1e-6f64..100.0, acc in -(1i32 << 21)..(1 << 21)) {
            let d = Dyadic::from_real(r).unwrap();
            // acc·m < 2^52 and the division by 2^k is exact in f64.
            let want = (acc as f64 * d.m as f64 / 2f64.powi(d.k as i32) + 0.5).floor() as i64;
            proptest::prop_assert_eq!(d.apply(acc), want);
        }
    }
}
