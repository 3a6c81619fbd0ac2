//! A log quantizer's fake-quant over slices, eight lanes at a time on AVX2: each lane's code
//! from the [`log_codes`](super::log_codes) tables by three gathers (the threshold count
//! above the binade, the two thresholds inside it), its level by a fourth. Bit-equal to the
//! scalar [`Log::fake_with`](super::quantizer::Log::fake_with), which handles every block
//! holding a lane the tables do not cover (NaN, a subnormal or infinite `x/Δ`, a code past
//! 255).
#![allow(unsafe_code)]

use super::log_codes::{CODES, Coder, PER_BINADE, Tables};

// The lanes gather exactly two thresholds per binade.
const _: () = assert!(PER_BINADE == 2);

/// A log quantizer's levels: `x̂ = Δ·level(min(q, max_level))`, or 0 where `zero_code` is set
/// and `q` passes `max_level` or `x ≤ 0` (without it such values take the smallest level).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogGrid {
    pub scale: f32,
    pub max_level: f32,
    pub zero_code: bool,
}

/// Replaces every `x` of `xs` by its fake-quantized value, `scalar(x)` (which must be
/// [`Log::fake_with`](super::quantizer::Log::fake_with) of this coder and grid). Blocks of
/// eight run in AVX2 lanes when every lane of the block is `≤ 0` or has a normal `x/Δ` whose
/// code lies in the tables; other blocks, and the tail, call `scalar`.
pub fn fake_slice(coder: &Coder, xs: &mut [f32], grid: &LogGrid, scalar: impl Fn(f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = coder.tables()
        && t.all_covered()
        && grid.max_level < CODES as f32
        && std::arch::is_x86_feature_detected!("avx2")
    {
        // SAFETY: AVX2 was checked just above.
        let done = unsafe { fake_blocks_avx2(t, xs, grid, &scalar) };
        xs[done..].iter_mut().for_each(|x| *x = scalar(*x));
        return;
    }
    xs.iter_mut().for_each(|x| *x = scalar(*x));
}

/// The whole blocks of eight of `xs`; returns how many elements it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fake_blocks_avx2(
    t: &Tables,
    xs: &mut [f32],
    grid: &LogGrid,
    scalar: &impl Fn(f32) -> f32,
) -> usize {
    use std::arch::x86_64::*;
    let whole = xs.len() / 8 * 8;
    let scale = _mm256_set1_ps(grid.scale);
    let zero = _mm256_setzero_ps();
    let (smallest, infinity) = (
        _mm256_set1_ps(f32::MIN_POSITIVE),
        _mm256_set1_ps(f32::INFINITY),
    );
    let max_level = _mm256_set1_epi32(grid.max_level as i32);
    let codes = _mm256_set1_epi32(CODES as i32);
    let byte = _mm256_set1_epi32(0xff);
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 ≤ whole ≤ xs.len().
        let x = unsafe { _mm256_loadu_ps(xs.as_ptr().add(i)) };
        let v = _mm256_div_ps(x, scale);
        let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(x, zero);
        let not_positive = _mm256_cmp_ps::<_CMP_LE_OQ>(x, zero);
        let normal = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(v, smallest),
            _mm256_cmp_ps::<_CMP_LT_OQ>(v, infinity),
        );
        // The biased exponent, kept inside the tables for lanes that will not use it.
        let e = _mm256_and_si256(_mm256_srli_epi32::<23>(_mm256_castps_si256(v)), byte);
        // SAFETY: every index is below 256, the tables' length.
        let (above, t0, t1) = unsafe {
            (
                _mm256_i32gather_epi32::<4>(t.above.as_ptr(), e),
                _mm256_i32gather_ps::<4>(t.inside[0].as_ptr(), e),
                _mm256_i32gather_ps::<4>(t.inside[1].as_ptr(), e),
            )
        };
        // A true comparison is −1 as an integer: subtracting it counts the threshold.
        let code = _mm256_sub_epi32(
            _mm256_sub_epi32(
                above,
                _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(t0, v)),
            ),
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(t1, v)),
        );
        let in_tables = _mm256_castsi256_ps(_mm256_cmpgt_epi32(codes, code));
        let handled = _mm256_or_ps(
            not_positive,
            _mm256_and_ps(positive, _mm256_and_ps(normal, in_tables)),
        );
        if _mm256_movemask_ps(handled) != 0xff {
            for x in &mut xs[i..i + 8] {
                *x = scalar(*x);
            }
            continue;
        }
        let past = _mm256_or_si256(
            _mm256_castps_si256(not_positive),
            _mm256_cmpgt_epi32(code, max_level),
        );
        let code = _mm256_blendv_epi8(code, max_level, past);
        // SAFETY: codes are at most max_level < 256 here.
        let level = unsafe { _mm256_i32gather_ps::<4>(t.levels.as_ptr(), code) };
        let mut y = _mm256_mul_ps(scale, level);
        if grid.zero_code {
            y = _mm256_andnot_ps(_mm256_castsi256_ps(past), y);
        }
        // SAFETY: as the load.
        unsafe { _mm256_storeu_ps(xs.as_mut_ptr().add(i), y) };
    }
    whole
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
                    // Every threshold and its neighbours, where a comparison's direction
                    // decides the code (Δ is a power of two in these cases, so x/Δ is exact).
                    let mut xs = xs;
                    if scale == 1.0 || scale == 0.5 {
                        for t in thresholds(root.min(2), rounding) {
                            for d in [-1i32, 0, 1] {
                                let v = f32::from_bits(t.to_bits().saturating_add_signed(d));
                                xs.push(v * scale);
                            }
                        }
                    }
                    let mut got = xs.clone();
                    log.fake_slice(&coder, &mut got);
                    for (&x, &g) in xs.iter().zip(&got) {
                        let want = log.fake_with(&coder, x);
                        assert!(
                            g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                            "root {root}, {rounding:?}, {bits} bits: x = {x:e}: {g:e} vs {want:e}"
                        );
                    }
                }
            }
        }
    }
}
