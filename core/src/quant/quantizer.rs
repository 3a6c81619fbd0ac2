//! The quantizers: each maps a real value to one of at most 2^bits levels and back.
//!
//! Rounding is half-up by default, `⌊x + ½⌋`, because that is what the integer executor's
//! `(x + 2^(k−1)) >> k` computes; fake and integer arithmetic then agree on ties. A recipe may
//! round activations half to even instead ([`Rounding`]), as ONNX's `QuantizeLinear` does, to
//! compare with an exported model in its runtime.

use serde::{Deserialize, Serialize};

use super::{log_codes, log_lanes};

/// Rounds half up, as the hardware does: `⌊x + ½⌋`. Written with an integer conversion rather
/// than `floor`, which without SSE4.1 is a library call and dominated the fake-quant executor's
/// time. Equal to `(x + 0.5).floor()` for every finite `x`.
#[inline]
pub fn round_half_up(x: f32) -> f32 {
    let t = x + 0.5;
    if t.abs() >= 8_388_608.0 {
        return t; // 2^23 and beyond, every f32 is an integer
    }
    let i = t as i32 as f32;
    i - f32::from(u8::from(i > t))
}

/// [`round_half_up`] for every input, NaN (to 0) included, written with `floor`: inside a loop
/// compiled for AVX2 it is one `vroundps` per 8 lanes, where [`round_half_up`]'s saturating
/// integer conversion is a scalar instruction and two branches per value (elsewhere `floor`
/// is a library call, and [`round_half_up`] is the faster).
#[inline(always)]
pub fn round_half_up_by_floor(x: f32) -> f32 {
    let t = x + 0.5;
    // Beyond 2^23 every f32 is an integer and `floor` returns it, as round_half_up does.
    if t.is_nan() { 0.0 } else { t.floor() }
}

/// How a value halfway between two levels is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Rounding {
    /// `⌊x + ½⌋`, what the integer executor's `(x + 2^(k−1)) >> k` computes.
    #[default]
    HalfUp,
    /// Ties to the even integer, what ONNX's `QuantizeLinear` and `Round` compute.
    HalfEven,
}

impl Rounding {
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        match self {
            Rounding::HalfUp => round_half_up(x),
            Rounding::HalfEven => x.round_ties_even(),
        }
    }

    /// `half-up` or `half-even`, as the command line and exported metadata write it.
    pub fn name(self) -> &'static str {
        match self {
            Rounding::HalfUp => "half-up",
            Rounding::HalfEven => "half-even",
        }
    }
}

/// One quantizer with all its calibrated parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Quantizer {
    Uniform(Uniform),
    Log(Log),
    Twin(Twin),
    PowerOfTwoFactor(PowerOfTwoFactor),
}

impl Quantizer {
    /// The value `x` of channel `channel` takes after quantization and dequantization.
    #[inline]
    pub fn fake(&self, x: f32, channel: usize) -> f32 {
        self.fake_rounded(x, channel, Rounding::HalfUp)
    }

    /// [`Quantizer::fake`] with ties rounded as `rounding` says.
    #[inline]
    pub fn fake_rounded(&self, x: f32, channel: usize, rounding: Rounding) -> f32 {
        match self {
            Quantizer::Uniform(u) => u.fake_rounded(x, channel, rounding),
            Quantizer::Log(l) => l.fake_rounded(x, rounding),
            Quantizer::Twin(t) => t.fake_rounded(x, rounding),
            Quantizer::PowerOfTwoFactor(p) => p.fake_rounded(x, channel, rounding),
        }
    }

    pub fn bits(&self) -> u8 {
        match self {
            Quantizer::Uniform(u) => u.bits,
            Quantizer::Log(l) => l.bits,
            Quantizer::Twin(t) => t.bits,
            Quantizer::PowerOfTwoFactor(p) => p.bits,
        }
    }

    /// A short description for tables: `uniform asym per-tensor`, `log2`, …
    pub fn describe(&self) -> String {
        match self {
            Quantizer::Uniform(u) => u.describe(),
            Quantizer::Log(l) if l.root == 2 => "log√2".into(),
            Quantizer::Log(_) => "log2".into(),
            Quantizer::Twin(_) => "twin-uniform".into(),
            Quantizer::PowerOfTwoFactor(_) => "uniform + power-of-two factors".into(),
        }
    }
}

/// `x̂ = (clamp(⌊x/Δ⌉ + z, qmin, qmax) − z)·Δ` with one `(Δ, z)` per tensor, per channel, or per
/// group of `group` consecutive channels. Symmetric quantizers use the restricted signed range
/// `±(2^(b−1) − 1)` and `z = 0`; asymmetric ones `[0, 2^b − 1]` with an integer zero-point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uniform {
    pub bits: u8,
    pub symmetric: bool,
    pub scale: Vec<f32>,
    pub zero_point: Vec<f32>,
    /// Channels sharing one `(Δ, z)`; ignored when there is one scale.
    pub group: usize,
}

impl Uniform {
    /// Integer range `(qmin, qmax)`.
    pub fn levels(bits: u8, symmetric: bool) -> (f32, f32) {
        if symmetric {
            let m = ((1u32 << (bits - 1)) - 1) as f32;
            (-m, m)
        } else {
            (0.0, ((1u32 << bits) - 1) as f32)
        }
    }

    /// The quantizer whose range is `[lo, hi]` (widened to include 0 so that zero is exact).
    pub fn from_range(bits: u8, symmetric: bool, lo: f32, hi: f32) -> (f32, f32) {
        let (qmin, qmax) = Self::levels(bits, symmetric);
        if symmetric {
            let m = lo.abs().max(hi.abs());
            ((m / qmax).max(f32::MIN_POSITIVE), 0.0)
        } else {
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            let scale = ((hi - lo) / (qmax - qmin)).max(f32::MIN_POSITIVE);
            (scale, round_half_up(-lo / scale).clamp(qmin, qmax))
        }
    }

    pub fn per_tensor(bits: u8, symmetric: bool, lo: f32, hi: f32) -> Self {
        let (s, z) = Self::from_range(bits, symmetric, lo, hi);
        Self {
            bits,
            symmetric,
            scale: vec![s],
            zero_point: vec![z],
            group: 1,
        }
    }

    /// `uniform sym per-channel`, `uniform asym per-tensor`, …
    pub fn describe(&self) -> String {
        format!(
            "uniform {} {}",
            if self.symmetric { "sym" } else { "asym" },
            match self.scale.len() {
                1 => "per-tensor".to_string(),
                _ if self.group == 1 => "per-channel".to_string(),
                _ => format!("per-group({})", self.group),
            }
        )
    }

    #[inline]
    fn index(&self, channel: usize) -> usize {
        if self.scale.len() == 1 {
            0
        } else {
            (channel / self.group.max(1)).min(self.scale.len() - 1)
        }
    }

    /// The integer code of `x`.
    #[inline]
    pub fn code(&self, x: f32, channel: usize) -> f32 {
        self.code_rounded(x, channel, Rounding::HalfUp)
    }

    #[inline]
    pub fn code_rounded(&self, x: f32, channel: usize, rounding: Rounding) -> f32 {
        let i = self.index(channel);
        let (qmin, qmax) = Self::levels(self.bits, self.symmetric);
        (rounding.round(x / self.scale[i]) + self.zero_point[i]).clamp(qmin, qmax)
    }

    #[inline]
    pub fn fake(&self, x: f32, channel: usize) -> f32 {
        self.fake_rounded(x, channel, Rounding::HalfUp)
    }

    #[inline]
    pub fn fake_rounded(&self, x: f32, channel: usize, rounding: Rounding) -> f32 {
        let i = self.index(channel);
        (self.code_rounded(x, channel, rounding) - self.zero_point[i]) * self.scale[i]
    }

    /// The scale and zero-point of `channel`.
    pub fn parameters(&self, channel: usize) -> (f32, f32) {
        let i = self.index(channel);
        (self.scale[i], self.zero_point[i])
    }
}

/// Logarithmic levels `x̂ = Δ·2^(−q/root)`, `q = clamp(⌊−root·log2(x/Δ)⌉, 0, qmax)`: `root = 1` is
/// log2 (FQ-ViT's attention, Trio-ViT's divisor), `root = 2` is RepQ-ViT's log√2. Rounding is to
/// the nearest level in the log domain. With `zero_code`, the last code means 0 and values
/// below the smallest level underflow to it (attention probabilities); without, they clamp to
/// the smallest level (a divisor must never be 0). `Δ` is a power of two for log2, so
/// multiplying or dividing by a level is a shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Log {
    pub bits: u8,
    pub root: u8,
    pub scale: f32,
    pub zero_code: bool,
}

impl Log {
    /// Largest code that is a level (not the zero code).
    pub fn max_level(&self) -> f32 {
        let codes = (1u32 << self.bits) - 1;
        (if self.zero_code { codes - 1 } else { codes }) as f32
    }

    /// The code of `x`, or `None` for the zero level.
    #[inline]
    pub fn code(&self, x: f32) -> Option<f32> {
        self.code_rounded(x, Rounding::HalfUp)
    }

    #[inline]
    pub fn code_rounded(&self, x: f32, rounding: Rounding) -> Option<f32> {
        self.code_with(&log_codes::Coder::new(self.root, rounding), x)
    }

    /// [`Log::code_rounded`] with the coder of this root and the rounding looked up once.
    #[inline]
    pub fn code_with(&self, coder: &log_codes::Coder, x: f32) -> Option<f32> {
        if x <= 0.0 {
            return if self.zero_code {
                None
            } else {
                Some(self.max_level())
            };
        }
        let q = coder.code(x / self.scale);
        if q > self.max_level() {
            if self.zero_code {
                None
            } else {
                Some(self.max_level())
            }
        } else {
            Some(q)
        }
    }

    #[inline]
    pub fn fake(&self, x: f32) -> f32 {
        self.fake_rounded(x, Rounding::HalfUp)
    }

    #[inline]
    pub fn fake_rounded(&self, x: f32, rounding: Rounding) -> f32 {
        self.fake_with(&log_codes::Coder::new(self.root, rounding), x)
    }

    /// Fake-quantizes a slice in place: [`Log::fake_with`] of every element, in SIMD lanes
    /// where the coder's tables allow.
    pub fn fake_slice(&self, coder: &log_codes::Coder, xs: &mut [f32]) {
        let grid = log_lanes::LogGrid {
            scale: self.scale,
            max_level: self.max_level(),
            zero_code: self.zero_code,
        };
        log_lanes::fake_slice(coder, xs, &grid, |x| self.fake_with(coder, x));
    }

    /// [`Log::fake_rounded`] with the coder looked up once.
    #[inline]
    pub fn fake_with(&self, coder: &log_codes::Coder, x: f32) -> f32 {
        match self.code_with(coder, x) {
            None => 0.0,
            Some(q) => self.scale * coder.level(q),
        }
    }
}

/// PTQ4ViT's twin-uniform quantizer: two uniform ranges with `b − 1` bits each whose steps
/// differ by a power of two, `large = small·2^m`, plus one bit saying which range a code is in.
///
/// - `signed_split = false` (post-Softmax, values in `[0, 1]`): values below `2^(b−1)·small`
///   use the fine step, larger values the coarse one.
/// - `signed_split = true` (post-GELU): negative values use the fine step, positive ones the
///   coarse step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    pub bits: u8,
    pub small: f32,
    pub large: f32,
    pub signed_split: bool,
}

impl Twin {
    #[inline]
    pub fn fake(&self, x: f32) -> f32 {
        self.fake_rounded(x, Rounding::HalfUp)
    }

    #[inline]
    pub fn fake_rounded(&self, x: f32, rounding: Rounding) -> f32 {
        let top = self.top();
        if self.signed_split {
            if x < 0.0 {
                rounding.round(x / self.small).clamp(-top - 1.0, 0.0) * self.small
            } else {
                rounding.round(x / self.large).clamp(0.0, top) * self.large
            }
        } else {
            let fine = rounding.round(x / self.small);
            if fine <= top {
                fine.max(0.0) * self.small
            } else {
                rounding.round(x / self.large).clamp(0.0, top) * self.large
            }
        }
    }

    /// The largest code of either range, `2^(b−1) − 1`.
    pub fn top(&self) -> f32 {
        ((1u32 << (self.bits - 1)) - 1) as f32
    }
}

/// FQ-ViT's power-of-two factor: one layer-wise scale `Δ` and zero-point `z`, and per channel a
/// factor `2^α_c` (`α_c ∈ 0..=K`): `x̂ = (clamp(⌊x/(2^α_c·Δ)⌉ + z, 0, 2^b − 1) − z)·2^α_c·Δ`. In
/// integer arithmetic the factor is a left shift, so LayerNorm can take one scale per tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerOfTwoFactor {
    pub bits: u8,
    pub scale: f32,
    pub zero_point: f32,
    pub alpha: Vec<u8>,
}

impl PowerOfTwoFactor {
    #[inline]
    pub fn fake_with(&self, x: f32, alpha: u8) -> f32 {
        self.fake_alpha(x, alpha, Rounding::HalfUp)
    }

    #[inline]
    fn fake_alpha(&self, x: f32, alpha: u8, rounding: Rounding) -> f32 {
        let s = self.channel_scale(alpha);
        let qmax = ((1u32 << self.bits) - 1) as f32;
        ((rounding.round(x / s) + self.zero_point).clamp(0.0, qmax) - self.zero_point) * s
    }

    /// The step of a channel whose factor is `2^alpha`.
    pub fn channel_scale(&self, alpha: u8) -> f32 {
        self.scale * (1u32 << alpha) as f32
    }

    #[inline]
    pub fn fake(&self, x: f32, channel: usize) -> f32 {
        self.fake_rounded(x, channel, Rounding::HalfUp)
    }

    #[inline]
    pub fn fake_rounded(&self, x: f32, channel: usize, rounding: Rounding) -> f32 {
        self.fake_alpha(x, self.alpha.get(channel).copied().unwrap_or(0), rounding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_up_like_floor() {
        for x in [
            -2.5f32,
            -1.5,
            -0.5,
            -0.49,
            0.0,
            0.5,
            1.49,
            1.5,
            2.5,
            1e7 + 0.5,
            -1e9,
            3e20,
        ] {
            assert_eq!(round_half_up(x), (x + 0.5).floor(), "{x}");
        }
        for x in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.5,
            -0.0,
            8_388_607.5,
        ] {
            assert_eq!(
                round_half_up_by_floor(x).to_bits(),
                round_half_up(x).to_bits(),
                "{x}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn rounding_matches_floor_everywhere(x in proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO) {
            proptest::prop_assert_eq!(round_half_up(x), (x + 0.5).floor());
            proptest::prop_assert_eq!(round_half_up_by_floor(x).to_bits(), round_half_up(x).to_bits());
        }

        #[test]
        fn uniform_error_is_at_most_half_a_step_inside_the_range(
            bits in 2u8..=16,
            lo in -100.0f32..0.0,
            width in 0.01f32..200.0,
            t in 0.0f32..=1.0,
        ) {
            let u = Uniform::per_tensor(bits, false, lo, lo + width);
            let x = lo + t * width;
            let err = (u.fake(x, 0) - x).abs();
            // Half a step, plus float rounding of the products.
            proptest::prop_assert!(err <= u.scale[0] * 0.5 + 1e-4 * (1.0 + x.abs()), "x {x} err {err} step {}", u.scale[0]);
        }
    }

    #[test]
    fn ties_round_as_the_setting_says() {
        let (up, even) = (Rounding::HalfUp, Rounding::HalfEven);
        for (x, want_up, want_even) in [
            (2.5f32, 3.0, 2.0),
            (3.5, 4.0, 4.0),
            (-2.5, -2.0, -2.0),
            (-3.5, -3.0, -4.0),
            (0.49, 0.0, 0.0),
        ] {
            assert_eq!(up.round(x), want_up, "{x}");
            assert_eq!(even.round(x), want_even, "{x}");
        }
        // A value halfway between two levels: step 1, zero-point 0 (symmetric 4 bits).
        let u = Uniform {
            bits: 4,
            symmetric: true,
            scale: vec![1.0],
            zero_point: vec![0.0],
            group: 1,
        };
        assert_eq!(u.fake_rounded(0.5, 0, up), 1.0);
        assert_eq!(u.fake_rounded(0.5, 0, even), 0.0);
        assert_eq!(u.fake(0.5, 0), 1.0, "the default rounds half up");
        let l = Log {
            bits: 3,
            root: 1,
            scale: 1.0,
            zero_code: true,
        };
        // 2^−2.5 sits on the log-domain tie between codes 2 and 3.
        let tie = 2f32.powf(-2.5);
        assert!(l.fake_rounded(tie * 1.0001, even) == 0.25);
        assert!(l.fake_rounded(tie * 0.9999, up) == 0.125);
    }

    #[test]
    fn uniform_asymmetric_by_hand() {
        // range [-1, 2] at 2 bits: Δ = 3/3 = 1, z = 1; levels -1, 0, 1, 2.
        let u = Uniform::per_tensor(2, false, -1.0, 2.0);
        assert_eq!((u.scale[0], u.zero_point[0]), (1.0, 1.0));
        let got: Vec<f32> = [-5.0, -0.6, -0.5, 0.49, 1.5, 9.0]
            .iter()
            .map(|&x| u.fake(x, 0))
            .collect();
        // -0.5 rounds half up to 0; 1.5 to 2.
        assert_eq!(got, vec![-1.0, -1.0, 0.0, 0.0, 2.0, 2.0]);
    }

    #[test]
    fn uniform_symmetric_per_channel_and_group() {
        // 4 bits: codes ±7. Channel 0 range 7 → Δ 1; channel 1 range 0.7 → Δ 0.1.
        let u = Uniform {
            bits: 4,
            symmetric: true,
            scale: vec![1.0, 0.1],
            zero_point: vec![0.0, 0.0],
            group: 1,
        };
        assert_eq!(u.fake(3.4, 0), 3.0);
        assert_eq!(u.fake(-9.0, 0), -7.0);
        assert!((u.fake(0.34, 1) - 0.3).abs() < 1e-6);
        let g = Uniform { group: 2, ..u };
        assert_eq!(g.fake(3.4, 1), 3.0); // channels 0 and 1 share the first scale
        assert!((g.fake(0.34, 2) - 0.3).abs() < 1e-6);
    }

    #[test]
    fn log2_levels_and_underflow() {
        let l = Log {
            bits: 2,
            root: 1,
            scale: 1.0,
            zero_code: true,
        };
        // levels 1, 1/2, 1/4 and zero.
        assert_eq!(l.fake(1.0), 1.0);
        assert_eq!(l.fake(0.6), 0.5);
        assert_eq!(l.fake(0.3), 0.25);
        assert_eq!(l.fake(0.1), 0.0);
        assert_eq!(l.fake(0.0), 0.0);
        assert_eq!(l.fake(3.0), 1.0); // saturates
        // Log-domain rounding: the threshold between 1/2 and 1/4 is 2^(-1.5) ≈ 0.3536.
        assert_eq!(l.fake(0.36), 0.5);
        assert_eq!(l.fake(0.35), 0.25);
        let divisor = Log {
            zero_code: false,
            ..l
        };
        assert_eq!(divisor.fake(0.001), 0.125); // clamps to the smallest of 4 levels
    }

    #[test]
    fn log_sqrt2_levels() {
        let l = Log {
            bits: 3,
            root: 2,
            scale: 1.0,
            zero_code: true,
        };
        let s = std::f32::consts::SQRT_2;
        assert!((l.fake(0.7) - 1.0 / s).abs() < 1e-6);
        assert!((l.fake(0.5) - 0.5).abs() < 1e-6);
        // The smallest level is 2^(-6/2) = 1/8; below 2^(-6.5/2) values underflow to 0.
        assert!((l.fake(0.12) - 0.125).abs() < 1e-6);
        assert_eq!(l.fake(0.1), 0.0);
    }

    #[test]
    fn twin_uniform_by_hand() {
        // 3 bits: two ranges of codes 0..=3. Softmax: fine step 1/32, coarse 1/4.
        let t = Twin {
            bits: 3,
            small: 1.0 / 32.0,
            large: 0.25,
            signed_split: false,
        };
        assert_eq!(t.fake(0.05), 2.0 / 32.0);
        assert_eq!(t.fake(0.5), 0.5);
        assert_eq!(t.fake(0.9), 0.75); // coarse range saturates at 3 steps
        let g = Twin {
            signed_split: true,
            ..t
        };
        assert_eq!(g.fake(-0.06), -2.0 / 32.0);
        assert_eq!(g.fake(-1.0), -4.0 / 32.0);
        assert_eq!(g.fake(0.6), 0.5);
    }

    #[test]
    fn power_of_two_factor_by_hand() {
        let p = PowerOfTwoFactor {
            bits: 4,
            scale: 0.5,
            zero_point: 8.0,
            alpha: vec![0, 2],
        };
        // channel 0: step 0.5 over [-4, 3.5]; channel 1: step 2 over [-16, 14].
        assert_eq!(p.fake(1.3, 0), 1.5);
        assert_eq!(p.fake(9.0, 0), 3.5);
        assert_eq!(p.fake(9.0, 1), 10.0);
        assert_eq!(p.fake(-40.0, 1), -16.0);
    }
}
