//! Integer Hardswish, `x·relu6(x + 3)/6`, on a value requantized to the scale `s_t = 3/2^j`:
//! then 3 is exactly `2^j` and 6 exactly `2^(j+1)`, so the clamp needs no rounded constant.
//! The product `t·clamp(t + 2^j, 0, 2^(j+1))` is the Hardswish at scale `s_t²/6`; the compiler
//! folds the `/6` into the requantization that follows. `j` is chosen so that `s_t` is at most
//! 1/16 of the output step, which keeps the rounding of `t` below 1/32 LSB of the output.

/// `t·clamp(t + 2^j, 0, 2^(j+1))`: Hardswish of `t·s_t` in units of `s_t²/6`.
#[inline]
pub fn hardswish_product(t: i64, j: u32) -> i64 {
    let three = 1i64 << j;
    t * (t + three).clamp(0, 2 * three)
}

/// The exponent `j` for an output step `step`: the smallest with `3/2^j ≤ step/16`.
pub fn hardswish_exponent(step: f64) -> u32 {
    (48.0 / step).log2().ceil().clamp(0.0, 40.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // j = 2: s_t = 0.75. t = 4 is x = 3: hswish(3) = 3 = 32·0.75²/6.
        assert_eq!(hardswish_product(4, 2), 32);
        // t = −2 is x = −1.5: hswish = −1.5·1.5/6 = −0.375 = −4·0.5625/6.
        assert_eq!(hardswish_product(-2, 2), -4);
        // Below −3 the output is 0; above 3 it is x.
        assert_eq!(hardswish_product(-5, 2), 0);
        assert_eq!(hardswish_product(10, 2), 10 * 8);
        assert_eq!(hardswish_exponent(0.05), 10); // 3/1024 ≤ 0.05/16 = 0.003125
    }

    proptest::proptest! {
        /// Over the whole int8 output range the integer Hardswish is the float one to within
        /// the rounding of its input.
        #[test]
        fn matches_float(x in -8.0f64..8.0, step in 0.005f64..0.2) {
            let j = hardswish_exponent(step);
            let st = 3.0 / 2f64.powi(j as i32);
            let t = (x / st + 0.5).floor() as i64;
            let got = hardswish_product(t, j) as f64 * st * st / 6.0;
            let want = x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
            // |d hswish/dx| ≤ 1.5, t is off by ≤ st/2.
            proptest::prop_assert!((got - want).abs() <= 0.75 * st + 1e-12, "{got} vs {want}");
        }
    }
}
