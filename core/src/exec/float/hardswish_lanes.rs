//! The Hardswish of a register's lanes, the same operations in the same order as
//! [`hardswish`](super::kernels::hardswish) on each: `v·clamp(v + 3, 0, 6)/6`, the clamp as
//! `f32::clamp` gives it (x86's `max` and `min` return their second operand on a NaN or on
//! equal zeros, so NaN and −0 pass through), the product and the division rounded apart. For
//! kernels that finish their outputs in registers (the product tiles, the depthwise convs), so
//! that an activation a conv absorbs costs no pass of its own over the map.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

/// Sixteen lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn avx512(v: __m512) -> __m512 {
    let (three, six) = (_mm512_set1_ps(3.0), _mm512_set1_ps(6.0));
    let c = _mm512_min_ps(
        six,
        _mm512_max_ps(_mm512_setzero_ps(), _mm512_add_ps(v, three)),
    );
    _mm512_div_ps(_mm512_mul_ps(v, c), six)
}

/// Eight lanes.
#[inline]
#[target_feature(enable = "avx")]
pub(super) fn avx2(v: __m256) -> __m256 {
    let (three, six) = (_mm256_set1_ps(3.0), _mm256_set1_ps(6.0));
    let c = _mm256_min_ps(
        six,
        _mm256_max_ps(_mm256_setzero_ps(), _mm256_add_ps(v, three)),
    );
    _mm256_div_ps(_mm256_mul_ps(v, c), six)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::float::kernels::hardswish;

    /// Every lane as the scalar definition, bit for bit, on the values where the clamp and
    /// the rounding could part: both sides of −3 and 3, zeros of both signs, NaN, infinities,
    /// subnormals, and a range of random values.
    #[test]
    fn lanes_equal_the_scalar_definition() {
        let mut values = vec![
            -0.0,
            0.0,
            -3.0,
            3.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 4.0,
            -f32::MIN_POSITIVE / 4.0,
            f32::MAX,
            f32::MIN,
        ];
        for edge in [-3.0f32, 3.0] {
            values.push(f32::from_bits(edge.to_bits() - 1));
            values.push(f32::from_bits(edge.to_bits() + 1));
        }
        let mut rng = crate::rng::Rng::new(5);
        values.extend((0..4000).map(|_| 4.0 * rng.normal()));
        values.resize(values.len().next_multiple_of(16), 1.5);
        let want: Vec<u32> = values.iter().map(|&v| hardswish(v).to_bits()).collect();
        let mut got = vec![0f32; values.len()];
        if std::arch::is_x86_feature_detected!("avx512f") {
            for (i, o) in values.chunks(16).zip(got.chunks_mut(16)) {
                // SAFETY: the CPU has AVX-512F; each chunk holds sixteen values.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), avx512(_mm512_loadu_ps(i.as_ptr()))) };
            }
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        } else {
            eprintln!("no AVX-512F on this CPU: its Hardswish lanes are not tested");
        }
        if std::arch::is_x86_feature_detected!("avx") {
            for (i, o) in values.chunks(8).zip(got.chunks_mut(8)) {
                // SAFETY: the CPU has AVX; each chunk holds eight values.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), avx2(_mm256_loadu_ps(i.as_ptr()))) };
            }
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        }
    }
}
