//! I-LayerNorm (`i-vit.md` §4, canonical semantics §6.1 item 7): exact integer mean and
//! variance, the standard deviation by exactly ten Newton steps from 2^16 (ported literally,
//! not replaced by a true integer square root, so results match I-ViT), and the normalised
//! value `z = (y·⌊(2^31 − 1)/std⌋) >> 1 ≈ 2^30·y/std`. The real normalised value is
//! `z·√C/2^30`; the affine γ, β are applied by the requantization that follows.

/// The smallest variance from which [`newton_sqrt`] is exact (`√var` = 378).
pub const MIN_EXACT_VARIANCE: u64 = 142_883;

/// The largest variance up to which [`newton_sqrt`] is exact (`√var` = 2^22). The compiler
/// keeps every LayerNorm's variance within it.
pub const MAX_EXACT_VARIANCE: u64 = 1 << 44;

/// Ten integer Newton steps for `√var` from 2^16, `k ← ⌊(k + ⌊var/k⌋)/2⌋`, ported literally
/// from I-ViT. Exact — `⌊√var⌋`, or one more when `var = k² − 1` makes the iteration
/// oscillate — for every `var` from [`MIN_EXACT_VARIANCE`] to [`MAX_EXACT_VARIANCE`]: checked
/// for every `var` below 2^24 and sampled above (`newton_is_isqrt_in_its_range`). Below the
/// range the ten steps have not come down from 2^16 and the result is too large (var = 0 gives
/// 64, var = 142,882 gives 378 for 377): I-ViT's behaviour, which never divides by zero. Above it the
/// steps have not yet climbed to the root.
///
/// The steps stop early where the rest are known, which changes no result: at a fixed point
/// every later step repeats it, and once a step returns to the value before the last, the
/// iteration alternates between the two and the tenth is the one of its parity. Each step is a
/// 64-bit division, and LayerNorm's row of DeiT-T waited on all ten (about a third of its
/// `perf` samples, with the rows' mean and reciprocal divisions).
pub fn newton_sqrt(var: u64) -> u64 {
    // In the exact range the steps end on `⌊√var⌋` except where `var = k² − 1`: that integer
    // found at once, one square root rather than up to ten dependent 64-bit divisions (the
    // chain LayerNorm's row in lanes waited on). `var ≤ 2^44` is exact in an f64, and so is the
    // floor of its rounded root: a root that is not an integer lies at least `1/(2√var)` ≥
    // 2^−23 below the next one, far above the rounding's 2^−31.
    if (MIN_EXACT_VARIANCE..=MAX_EXACT_VARIANCE).contains(&var) {
        let root = (var as f64).sqrt() as u64;
        if (root + 1) * (root + 1) != var + 1 {
            return root;
        }
    }
    const STEPS: u32 = 10;
    let (mut before, mut k) = (u64::MAX, 1u64 << 16);
    for step in 1..=STEPS {
        let next = (k + var / k) / 2;
        if next == k {
            return k;
        }
        if next == before {
            // Step `step` gave `before` again: the steps alternate `before, k, before, …`.
            return if (STEPS - step).is_multiple_of(2) {
                next
            } else {
                k
            };
        }
        (before, k) = (k, next);
    }
    k
}

/// Normalises one row `x` (integers at a common scale) into `z`, returning the `std` used.
/// Exact for rows whose `Σ(x − mean)²` lies in `MIN_EXACT_VARIANCE..=MAX_EXACT_VARIANCE`; the
/// compiler bounds every LayerNorm's variance by the top of that range (`compile`), and the
/// executor promotes its inputs so that rows of any real spread reach the bottom.
pub fn i_layernorm(x: &[i64], z: &mut [i64]) -> u64 {
    let c = x.len() as i64;
    let sum: i64 = x.iter().sum();
    let mean = round_half_even_div(sum, c);
    let var: u64 = x.iter().map(|&v| ((v - mean) * (v - mean)) as u64).sum();
    let std = newton_sqrt(var);
    let f = i32::MAX as i64 / std as i64;
    for (o, &v) in z.iter_mut().zip(x) {
        *o = ((v - mean) * f) >> 1;
    }
    std
}

/// `a/b` rounded half to even, exactly, for `b > 0`.
pub fn round_half_even_div(a: i64, b: i64) -> i64 {
    let q = a.div_euclid(b);
    let r = a.rem_euclid(b);
    match (2 * r).cmp(&b) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `i-vit.md` §4 worked example.
    #[test]
    fn worked_example() {
        let x = [1200, -350, 40, 980, -2200, 15, 600, -100];
        let mut z = [0; 8];
        let std = i_layernorm(&x, &mut z);
        assert_eq!(std, 2780);
        assert_eq!(
            z,
            [
                454602126, -144066774, 6566046, 369629766, -858607074, -3089904, 222859326,
                -47507274
            ]
        );
        // z·√8/2^30 is the float LayerNorm within 3e-4.
        let mean = x.iter().sum::<i64>() as f64 / 8.0;
        let sd = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 8.0).sqrt();
        for (&zi, &xi) in z.iter().zip(&x) {
            let got = zi as f64 * 8f64.sqrt() / 2f64.powi(30);
            assert!((got - (xi as f64 - mean) / sd).abs() < 3e-4);
        }
    }

    #[test]
    fn newton_by_hand() {
        assert_eq!(newton_sqrt(0), 64); // never 0
        assert_eq!(newton_sqrt(10_000), 108); // too large below the exact range
        assert_eq!(newton_sqrt(999_999), 1000); // var = k² − 1 oscillates to k
        assert_eq!(newton_sqrt(7_730_447), 2780);
        assert_eq!(newton_sqrt((1 << 32) - 1), 65536);
    }

    #[test]
    fn constant_and_tiny_variance_rows() {
        let mut z = [0; 4];
        assert_eq!(i_layernorm(&[5, 5, 5, 5], &mut z), 64);
        assert_eq!(z, [0; 4]);
        // One step of 1 over 4 values: var = 3·(1/4)²… exactly: mean 5, y = [0,0,0,1], var 1.
        let std = i_layernorm(&[5, 5, 5, 6], &mut z);
        assert_eq!(std, 64);
        assert_eq!(z[3], (i32::MAX as i64 / 64) >> 1);
        assert_eq!(round_half_even_div(5, 2), 2);
        assert_eq!(round_half_even_div(7, 2), 4);
        assert_eq!(round_half_even_div(-5, 2), -2);
    }

    /// Every variance below 2^24: exact from `MIN_EXACT_VARIANCE` on, not just below it.
    #[test]
    fn newton_is_exact_from_the_documented_bound() {
        let exact = |var: u64| {
            let k = newton_sqrt(var);
            let isqrt = var.isqrt();
            k == isqrt || (k == isqrt + 1 && var + 1 == k * k)
        };
        assert!(!exact(MIN_EXACT_VARIANCE - 1));
        assert_eq!(newton_sqrt(MIN_EXACT_VARIANCE - 1), 378); // ⌊√142,882⌋ = 377
        assert_eq!(newton_sqrt(90_576), 301); // √ = 300.96: the first counter-example
        let first_bad = (MIN_EXACT_VARIANCE..1 << 24).find(|&v| !exact(v));
        assert_eq!(first_bad, None);
    }

    /// The ten steps taken literally, as I-ViT writes them.
    fn ten_steps(var: u64) -> u64 {
        let mut k: u64 = 1 << 16;
        for _ in 0..10 {
            k = (k + var / k) / 2;
        }
        k
    }

    /// The early stops change nothing: every variance below 2^22, the squares and their
    /// neighbours (where the steps alternate) from 2^11 to 2^32, and values spread over the
    /// whole of u64 below 2^62 (where no step's sum overflows).
    #[test]
    fn stopping_early_equals_the_ten_steps() {
        for var in 0..1 << 22 {
            assert_eq!(newton_sqrt(var), ten_steps(var), "{var}");
        }
        for root in (1u64 << 11..1 << 32).step_by(9_973) {
            for var in [root * root - 1, root * root, root * root + 1] {
                assert_eq!(newton_sqrt(var), ten_steps(var), "{var}");
            }
        }
        let mut var = 1u64 << 22;
        while var < 1 << 62 {
            assert_eq!(newton_sqrt(var), ten_steps(var), "{var}");
            var += var / 7 + 12_345;
        }
    }

    proptest::proptest! {
        /// The same on random variances of every size.
        #[test]
        fn stopping_early_equals_the_ten_steps_anywhere(var in 0u64..1 << 62) {
            proptest::prop_assert_eq!(newton_sqrt(var), ten_steps(var));
        }

        /// The square root taken in the exact range, on random variances across it and on the
        /// squares and their neighbours.
        #[test]
        fn the_exact_range_equals_the_ten_steps(
            var in MIN_EXACT_VARIANCE..=MAX_EXACT_VARIANCE,
            root in 378u64..=1 << 22,
        ) {
            proptest::prop_assert_eq!(newton_sqrt(var), ten_steps(var));
            for var in [root * root - 1, root * root, root * root + 1] {
                let var = var.min(MAX_EXACT_VARIANCE);
                proptest::prop_assert_eq!(newton_sqrt(var), ten_steps(var), "{}", var);
            }
        }

        /// Sampled over the rest of the documented range, up to `MAX_EXACT_VARIANCE`.
        #[test]
        fn newton_is_isqrt_in_its_range(root in 4096u64..=1 << 22, extra in 0u64..=1 << 23) {
            let var = (root * root + extra.min(2 * root)).min(MAX_EXACT_VARIANCE);
            let k = newton_sqrt(var);
            let isqrt = var.isqrt();
            proptest::prop_assert!(k == isqrt || (k == isqrt + 1 && var + 1 == k * k), "{var}: {k}");
        }
    }
}
