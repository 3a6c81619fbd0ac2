//! A log quantizer's fake-quant over slices, sixteen lanes at a time with AVX-512, eight with AVX2:
//! each code from `log2 x` by a short series, with no table look-up. Bit-equal to the scalar
//! [`Log::fake_with`](super::quantizer::Log::fake_with), which handles every lane the series cannot
//! vouch for.
//!
//! **The code.** The scalar code is `max(round(−r·log2f(v)), 0)` for `v = x/Δ` and root `r` (1 or
//! 2). Write `log2 x = k + log2 m` with `m ∈ [√½, √2)` from `x`'s bits and `log2 Δ = E + F` with
//! `E` an integer and `|F| ≤ ½` (f64, once per slice); then `−r·log2 v = r·(E − k) + t` with `t =
//! −r·(log2 m − F)`, and the code is `r·(E − k) + ⌊t⌋ + [t − ⌊t⌋ > ½]` unless `t` lies near a
//! half-integer. `log2 m = (2/ln 2)·atanh(s)`, `s = (m − 1)/(m + 1)`, `|s| ≤ 0.1716`, to `s⁷` (the
//! rest is below `4.2·10⁻⁸`), `1/(m + 1)` by `rcpps` (or `vrcp14ps`) and a Newton step (relative
//! error below `2⁻²²`): `t` is within `5·10⁻⁷` of `−r·(log2 x − log2 Δ)`. The scalar side differs
//! from that by `log2f`'s error (under an ulp of its result, `2⁻¹⁷` for results below 128 in
//! magnitude) and the rounding of `x/Δ` (`2⁻²⁴` relative) times `r`: at most `2⁻¹⁵·⁸` in all. A
//! lane whose `t` lies within [`MARGIN`] `= 2⁻¹³` of a half-integer (one value in 4096) goes to the
//! scalar path, so the rest round alike.
//!
//! **Where the lanes vouch.** For positive normal `x`: codes not near a half-integer up to the
//! coder's [`levels_by_bits`](super::log_codes::Coder::levels_by_bits) (at most 247, so `v >
//! 2^−126.5` and its rounding is within `2⁻²³·⁵`), whose levels are built from their bits; and
//! codes `c` past `max_level + r + 1`, near or not: then `v ≤ 2^(−(c − ½)/r)`, its rounding at most
//! doubles it (or makes it 0), and the scalar code is at least `c − r − 1`, past the largest level
//! too. `x ≤ 0` and codes past the largest level take the value of `x = 0`. The rest — NaN,
//! infinities, subnormal `x`, near half-integers, codes between the bit-built levels and the sure
//! ones — go through the scalar path one lane at a time.
//!
//! The tests hold every width to the scalar path on values of every exponent and around every
//! threshold out past the margin; `every_positive_value` (ignored: minutes) on every positive f32
//! under roots 1 and 2, `Δ` a power of two and not.
#![allow(unsafe_code)]

use super::log_codes::Coder;
#[cfg(target_arch = "x86_64")]
use super::log_codes::LAST_LANE_CODE;
use crate::exec::cpu::{FloatLanes, float_lanes};

/// A log quantizer's levels: `x̂ = Δ·level(min(q, max_level))`, or 0 where `zero_code` is set
/// and `q` passes `max_level` or `x ≤ 0` (without it such values take the smallest level).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogGrid {
    pub scale: f32,
    pub max_level: f32,
    pub zero_code: bool,
}

/// How far from a half-integer `t` must lie for the lanes to keep their code (module docs).
#[cfg(target_arch = "x86_64")]
const MARGIN: f32 = 1.0 / 8192.0;

/// Replaces every `x` of `xs` by its fake-quantized value, `scalar(x)` (which must be
/// [`Log::fake_with`](super::quantizer::Log::fake_with) of this coder and grid), in this
/// CPU's lanes where it has them.
pub fn fake_slice(coder: &Coder, xs: &mut [f32], grid: &LogGrid, scalar: impl Fn(f32) -> f32) {
    fake_in_lanes(float_lanes(), coder, xs, grid, scalar);
}

/// [`fake_slice`] in `lanes`, which the CPU has (asserted), so that tests run every width.
pub(super) fn fake_in_lanes(
    lanes: FloatLanes,
    coder: &Coder,
    xs: &mut [f32],
    grid: &LogGrid,
    scalar: impl Fn(f32) -> f32,
) {
    assert!(
        lanes <= float_lanes(),
        "{lanes:?} lanes on a CPU without them"
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(c) = Constants::new(coder, grid, &scalar) {
        match lanes {
            // SAFETY: the CPU has the lanes' features (asserted above).
            FloatLanes::Avx512 => return unsafe { in_avx512(&c, xs, &scalar) },
            // SAFETY: as above.
            FloatLanes::Avx2Fma => return unsafe { in_avx2(&c, xs, &scalar) },
            FloatLanes::Baseline => {}
        }
    }
    xs.iter_mut().for_each(|x| *x = scalar(*x));
}

/// What every lane needs of the coder and grid, found once per slice.
#[cfg(target_arch = "x86_64")]
struct Constants {
    scale: f32,
    /// `r − 1`: the root's shift, and the mask of an odd code's bit under root 2.
    root_shift: i32,
    /// `E` and `F` of `log2 Δ = E + F`.
    exponent: i32,
    fraction: f32,
    max_level: i32,
    /// The largest code the lanes build a level for.
    last_code: i32,
    /// Codes above this are past `max_level` whatever the rounding (module docs).
    surely_past: i32,
    /// `scalar(0)`: the value of `x ≤ 0` and of codes past `max_level`.
    past_value: f32,
}

#[cfg(target_arch = "x86_64")]
impl Constants {
    /// `None` where the lanes do not apply: roots other than 1 and 2, a scale that is not
    /// positive and normal, or more than 8 bits.
    fn new(coder: &Coder, grid: &LogGrid, scalar: &impl Fn(f32) -> f32) -> Option<Self> {
        let last_code = coder.levels_by_bits()?.min(LAST_LANE_CODE);
        let scale = grid.scale;
        let positive_normal = scale.is_normal() && scale.is_sign_positive();
        if !positive_normal || !(0.0..256.0).contains(&grid.max_level) {
            return None;
        }
        let log2 = f64::from(scale).log2();
        let exponent = log2.round();
        let max_level = grid.max_level as i32;
        Some(Self {
            scale,
            root_shift: i32::from(coder.root()) - 1,
            exponent: exponent as i32,
            fraction: (log2 - exponent) as f32,
            max_level,
            last_code,
            surely_past: max_level + i32::from(coder.root()) + 1,
            past_value: scalar(0.0),
        })
    }
}

/// Every whole block of `N` values through `lanes`, which returns the mask of the lanes it
/// vouches for; the others and the tail through `scalar`. Inlined into callers compiled for
/// the lanes' features.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn in_blocks<const N: usize>(
    xs: &mut [f32],
    scalar: &impl Fn(f32) -> f32,
    lanes: impl Fn(&mut [f32]) -> u32,
) {
    let mut blocks = xs.chunks_exact_mut(N);
    for block in &mut blocks {
        let input: [f32; N] = std::array::from_fn(|lane| block[lane]);
        let kept = lanes(block);
        if kept != (1 << N) - 1 {
            for lane in (0..N).filter(|lane| kept & (1 << lane) == 0) {
                block[lane] = scalar(input[lane]);
            }
        }
    }
    blocks
        .into_remainder()
        .iter_mut()
        .for_each(|x| *x = scalar(*x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn in_avx2(c: &Constants, xs: &mut [f32], scalar: &impl Fn(f32) -> f32) {
    // SAFETY: this function has AVX2 and FMA; blocks hold eight values.
    in_blocks::<8>(xs, scalar, |block| unsafe { lanes_avx2(c, block) });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn in_avx512(c: &Constants, xs: &mut [f32], scalar: &impl Fn(f32) -> f32) {
    // SAFETY: this function has AVX-512 F; blocks hold sixteen values.
    in_blocks::<16>(xs, scalar, |block| unsafe { lanes_avx512(c, block) });
}

/// `2/ln 2 · 1/(2n + 1)`: the atanh series of `log2 m`.
#[cfg(target_arch = "x86_64")]
const TERMS: [f32; 4] = {
    let c = 2.0 / std::f64::consts::LN_2;
    [
        c as f32,
        (c / 3.0) as f32,
        (c / 5.0) as f32,
        (c / 7.0) as f32,
    ]
};

/// `√½`'s bits: `x`'s bits less them, shifted, are `k` with `m ∈ [√½, √2)`.
#[cfg(target_arch = "x86_64")]
const SQRT_HALF: i32 = 0x3f35_04f3;

/// Writes eight lanes' values and returns the mask of those it vouches for (module docs).
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds eight values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lanes_avx2(c: &Constants, x: &mut [f32]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY (every intrinsic): the caller has AVX2 and FMA; `x` holds eight values.
    unsafe {
        let set = _mm256_set1_epi32;
        let v = _mm256_loadu_ps(x.as_ptr());
        let bits = _mm256_castps_si256(v);
        // Positive, normal and finite, as signed integers.
        let normal = _mm256_and_si256(
            _mm256_cmpgt_epi32(bits, set(0x007f_ffff)),
            _mm256_cmpgt_epi32(set(0x7f80_0000), bits),
        );
        let k = _mm256_srai_epi32::<23>(_mm256_sub_epi32(bits, set(SQRT_HALF)));
        let m = _mm256_castsi256_ps(_mm256_sub_epi32(bits, _mm256_slli_epi32::<23>(k)));
        let one = _mm256_set1_ps(1.0);
        let d = _mm256_add_ps(m, one);
        let guess = _mm256_rcp_ps(d);
        let inverse = _mm256_mul_ps(guess, _mm256_fnmadd_ps(d, guess, _mm256_set1_ps(2.0)));
        let s = _mm256_mul_ps(_mm256_sub_ps(m, one), inverse);
        let s2 = _mm256_mul_ps(s, s);
        let term = |n: usize| _mm256_set1_ps(TERMS[n]);
        let series = _mm256_fmadd_ps(_mm256_fmadd_ps(term(3), s2, term(2)), s2, term(1));
        let log2_m = _mm256_mul_ps(s, _mm256_fmadd_ps(series, s2, term(0)));
        let root_shift = _mm_cvtsi32_si128(c.root_shift);
        let neg_root = _mm256_set1_ps(-((1 << c.root_shift) as f32));
        let t = _mm256_mul_ps(_mm256_sub_ps(log2_m, _mm256_set1_ps(c.fraction)), neg_root);
        let whole = _mm256_floor_ps(t);
        let part = _mm256_sub_ps(t, whole);
        let from_half = _mm256_andnot_ps(
            _mm256_set1_ps(-0.0),
            _mm256_sub_ps(part, _mm256_set1_ps(0.5)),
        );
        let clear = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(
            from_half,
            _mm256_set1_ps(MARGIN),
        ));
        let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(part, _mm256_set1_ps(0.5)));
        // r·(E − k) + ⌊t⌋ + [part > ½] (a true comparison is −1), at least 0.
        let code = _mm256_sub_epi32(
            _mm256_add_epi32(
                _mm256_sll_epi32(_mm256_sub_epi32(set(c.exponent), k), root_shift),
                _mm256_cvtps_epi32(whole),
            ),
            up,
        );
        let code = _mm256_max_epi32(code, _mm256_setzero_si256());
        let built = _mm256_andnot_si256(_mm256_cmpgt_epi32(code, set(c.last_code)), clear);
        let surely_past = _mm256_cmpgt_epi32(code, set(c.surely_past));
        let not_positive = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(v, _mm256_setzero_ps()));
        let kept = _mm256_or_si256(
            not_positive,
            _mm256_and_si256(normal, _mm256_or_si256(built, surely_past)),
        );
        let past = _mm256_or_si256(not_positive, _mm256_cmpgt_epi32(code, set(c.max_level)));
        // The level's bits (`level_bits`).
        let odd = _mm256_and_si256(code, set(c.root_shift));
        let exponent = _mm256_sub_epi32(
            set(127),
            _mm256_srl_epi32(_mm256_add_epi32(code, odd), root_shift),
        );
        let mantissa = _mm256_and_si256(
            _mm256_sub_epi32(_mm256_setzero_si256(), odd),
            set(super::log_codes::SQRT_2_MANTISSA as i32),
        );
        let level =
            _mm256_castsi256_ps(_mm256_or_si256(_mm256_slli_epi32::<23>(exponent), mantissa));
        let y = _mm256_blendv_ps(
            _mm256_mul_ps(_mm256_set1_ps(c.scale), level),
            _mm256_set1_ps(c.past_value),
            _mm256_castsi256_ps(past),
        );
        _mm256_storeu_ps(x.as_mut_ptr(), y);
        _mm256_movemask_ps(_mm256_castsi256_ps(kept)) as u32
    }
}

/// [`lanes_avx2`] in sixteen lanes, its comparisons as masks and `1/(m + 1)` from `vrcp14ps`.
///
/// # Safety
/// The CPU has AVX-512 F; `x` holds sixteen values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lanes_avx512(c: &Constants, x: &mut [f32]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY (every intrinsic): the caller has AVX-512 F; `x` holds sixteen values.
    unsafe {
        let set = _mm512_set1_epi32;
        let v = _mm512_loadu_ps(x.as_ptr());
        let bits = _mm512_castps_si512(v);
        let normal = _mm512_cmpgt_epi32_mask(bits, set(0x007f_ffff))
            & _mm512_cmpgt_epi32_mask(set(0x7f80_0000), bits);
        let k = _mm512_srai_epi32::<23>(_mm512_sub_epi32(bits, set(SQRT_HALF)));
        let m = _mm512_castsi512_ps(_mm512_sub_epi32(bits, _mm512_slli_epi32::<23>(k)));
        let one = _mm512_set1_ps(1.0);
        let d = _mm512_add_ps(m, one);
        let guess = _mm512_rcp14_ps(d);
        let inverse = _mm512_mul_ps(guess, _mm512_fnmadd_ps(d, guess, _mm512_set1_ps(2.0)));
        let s = _mm512_mul_ps(_mm512_sub_ps(m, one), inverse);
        let s2 = _mm512_mul_ps(s, s);
        let term = |n: usize| _mm512_set1_ps(TERMS[n]);
        let series = _mm512_fmadd_ps(_mm512_fmadd_ps(term(3), s2, term(2)), s2, term(1));
        let log2_m = _mm512_mul_ps(s, _mm512_fmadd_ps(series, s2, term(0)));
        let root_shift = _mm_cvtsi32_si128(c.root_shift);
        let neg_root = _mm512_set1_ps(-((1 << c.root_shift) as f32));
        let t = _mm512_mul_ps(_mm512_sub_ps(log2_m, _mm512_set1_ps(c.fraction)), neg_root);
        let whole = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
        let part = _mm512_sub_ps(t, whole);
        let from_half = _mm512_abs_ps(_mm512_sub_ps(part, _mm512_set1_ps(0.5)));
        let clear = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(from_half, _mm512_set1_ps(MARGIN));
        let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(part, _mm512_set1_ps(0.5));
        // r·(E − k) + ⌊t⌋ + [part > ½], at least 0.
        let code = _mm512_add_epi32(
            _mm512_sll_epi32(_mm512_sub_epi32(set(c.exponent), k), root_shift),
            _mm512_cvtps_epi32(whole),
        );
        let code = _mm512_mask_add_epi32(code, up, code, set(1));
        let code = _mm512_max_epi32(code, _mm512_setzero_si512());
        let built = clear & _mm512_cmple_epi32_mask(code, set(c.last_code));
        let surely_past = _mm512_cmpgt_epi32_mask(code, set(c.surely_past));
        let not_positive = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, _mm512_setzero_ps());
        let kept = not_positive | (normal & (built | surely_past));
        let past = not_positive | _mm512_cmpgt_epi32_mask(code, set(c.max_level));
        // The level's bits (`level_bits`).
        let odd = _mm512_and_si512(code, set(c.root_shift));
        let exponent = _mm512_sub_epi32(
            set(127),
            _mm512_srl_epi32(_mm512_add_epi32(code, odd), root_shift),
        );
        let mantissa = _mm512_maskz_mov_epi32(
            _mm512_test_epi32_mask(odd, odd),
            set(super::log_codes::SQRT_2_MANTISSA as i32),
        );
        let level =
            _mm512_castsi512_ps(_mm512_or_si512(_mm512_slli_epi32::<23>(exponent), mantissa));
        let y = _mm512_mask_blend_ps(
            past,
            _mm512_mul_ps(_mm512_set1_ps(c.scale), level),
            _mm512_set1_ps(c.past_value),
        );
        _mm512_storeu_ps(x.as_mut_ptr(), y);
        u32::from(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::log_codes::thresholds;
    use crate::quant::quantizer::{Log, Rounding};
    use crate::rng::Rng;

    #[test]
    fn by_hand() {
        // log2 at Δ = 1, 3 bits with a zero code: levels 1, ½, …, 2^−6; 0.3 → code 2 (0.25),
        // 0.001 → past 2^−6 → 0; −1 → 0; 5 → code 0 (1).
        let log = Log {
            bits: 3,
            root: 1,
            scale: 1.0,
            zero_code: true,
        };
        let coder = Coder::new(1, Rounding::HalfUp);
        let mut xs = [0.3, 0.001, -1.0, 5.0, 0.3, 0.001, -1.0, 5.0, 0.5];
        log.fake_slice(&coder, &mut xs);
        assert_eq!(xs, [0.25, 0.0, 0.0, 1.0, 0.25, 0.0, 0.0, 1.0, 0.5]);
    }

    /// Every width this CPU has gives `xs` exactly [`Log::fake_with`].
    fn same_as_scalar(log: &Log, coder: &Coder, xs: &[f32]) {
        let grid = LogGrid {
            scale: log.scale,
            max_level: log.max_level(),
            zero_code: log.zero_code,
        };
        let wants: Vec<f32> = xs.iter().map(|&x| log.fake_with(coder, x)).collect();
        for lanes in [
            FloatLanes::Baseline,
            FloatLanes::Avx2Fma,
            FloatLanes::Avx512,
        ] {
            if lanes > float_lanes() {
                continue;
            }
            let mut got = xs.to_vec();
            fake_in_lanes(lanes, coder, &mut got, &grid, |x| log.fake_with(coder, x));
            for ((&x, &g), &want) in xs.iter().zip(&got).zip(&wants) {
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "{lanes:?}, {log:?}, {coder:?}: x = {x:e} ({:#x}): {g:e} vs {want:e}",
                    x.to_bits()
                );
            }
        }
    }

    #[test]
    fn every_lane_equals_the_scalar_reference() {
        let mut rng = Rng::new(3);
        let special = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-42,
            f32::MIN_POSITIVE,
            1e38,
        ];
        for root in [1u8, 2, 3] {
            for rounding in [Rounding::HalfUp, Rounding::HalfEven] {
                for (bits, zero_code, scale) in [
                    (4, true, 1.0),
                    (8, true, 0.5),
                    (3, false, 4.0),
                    (8, false, 0.7),
                    (1, true, 1.0),
                    (8, true, 0.0123),
                    (6, false, 3.1e-30),
                    (7, true, 2.7e30),
                ] {
                    let log = Log {
                        bits,
                        root,
                        scale,
                        zero_code,
                    };
                    let coder = Coder::new(root, rounding);
                    let n = 8 * 300 + 5;
                    let xs: Vec<f32> = (0..n)
                        .map(|i| match i % 5 {
                            // Mostly whole blocks of ordinary probabilities, so the lanes
                            // run; every fifth block also holds a special value.
                            _ if i % 40 == 7 => special[rng.below(special.len())],
                            0 => f32::from_bits(rng.next_u64() as u32),
                            1 => -rng.unit(),
                            _ => rng.unit().powi(1 + rng.below(12) as i32),
                        })
                        .collect();
                    // Every threshold and its neighbours, where the code changes, out past
                    // the margin around it (2000 ulps of `v` move `log2 v` by 3.4·10⁻⁴).
                    let mut xs = xs;
                    for t in thresholds(root.min(2), rounding) {
                        for d in (-2000..=2000).step_by(37).chain(-2..=2) {
                            let v = f32::from_bits(t.to_bits().saturating_add_signed(d));
                            xs.push(v * scale);
                        }
                    }
                    same_as_scalar(&log, &coder, &xs);
                }
            }
        }
    }

    /// Every positive f32 under two settings each of roots 1 and 2: `cargo test --release --
    /// --ignored every_positive_value`.
    #[test]
    #[ignore = "every positive f32, four times: minutes in release"]
    fn every_positive_value() {
        for (root, scale) in [(1, 1.0), (1, 0.37), (2, 1.0), (2, 0.0123)] {
            let log = Log {
                bits: 8,
                root,
                scale,
                zero_code: true,
            };
            let coder = Coder::new(root, Rounding::HalfUp);
            let mut xs = vec![0.0f32; 1 << 20];
            for start in (0u32..0x7f80_0000).step_by(1 << 20) {
                xs.iter_mut()
                    .zip(start..)
                    .for_each(|(x, bits)| *x = f32::from_bits(bits));
                same_as_scalar(&log, &coder, &xs);
            }
        }
    }
}
