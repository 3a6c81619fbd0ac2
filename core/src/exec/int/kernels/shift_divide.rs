//! Linear attention's division by log2 divisors (Trio-ViT's shift) for one channel's row of
//! tokens in i64 lanes: `((((q − z)·m) << c) + addend + 2^(k−1)) >> k`, clamped — the i64 fast
//! path of `ops::linear_attention::Normalize`, which is exact while every code `c` is at most
//! 60 and `|(q − z)·m| < 2^(60 − c)` (the sum then stays below 2^63). A row with a value past
//! that reach returns `false` and is left to the definition's i128 arithmetic.
#![allow(unsafe_code)]

use super::Isa;

/// One output channel's constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftRow {
    /// The dividends' zero-point.
    pub zero: i32,
    /// The requantization's multiplier, addend (below 2^61 in magnitude) and shift (1..=62).
    pub m: i32,
    pub addend: i64,
    pub k: u32,
    /// The output's code range.
    pub range: (i64, i64),
}

impl ShiftRow {
    /// `out[t]` for dividend `dividends[t]` and divisor code `codes[t]`; `false` — `out` then
    /// unspecified — when a code or a product is past the i64 path's reach.
    pub fn run(&self, isa: Isa, dividends: &[i32], codes: &[i32], out: &mut [i32]) -> bool {
        assert!(
            dividends.len() == out.len() && codes.len() == out.len(),
            "one dividend and one code per output"
        );
        assert!(
            (1..=62).contains(&self.k) && self.addend.unsigned_abs() < 1 << 61,
            "a shift of 1 to 62 and an addend below 2^61"
        );
        by_width!(
            isa,
            run_avx512,
            run_avx2,
            run_portable,
            (self, dividends, codes, out)
        )
    }
}

/// Every lane computed, reach checked for all of them at once (the loop has no branch).
#[inline(always)]
fn run_portable(s: &ShiftRow, dividends: &[i32], codes: &[i32], out: &mut [i32]) -> bool {
    let half = 1i64 << (s.k - 1);
    let (lo, hi) = s.range;
    let mut inside = true;
    for ((o, &q), &code) in out.iter_mut().zip(dividends).zip(codes) {
        let num = (q - s.zero) as i64 * s.m as i64;
        // Codes past the reach are shifted by something in range and flagged.
        let shift = (code as u32).min(60);
        inside &= (0..=60).contains(&code) && num.unsigned_abs() < (1u64 << 60) >> shift;
        let p = (num << shift).wrapping_add(s.addend);
        // `max` then `min`: `clamp`'s check of its bounds would keep the loop scalar.
        *o = (p.wrapping_add(half) >> s.k).max(lo).min(hi) as i32;
    }
    inside
}

/// [`run_portable`] in four i64 lanes. AVX2 has no 64-bit arithmetic shift, minimum or
/// maximum, so the compiler had left that loop scalar (two thirds of B1's normalize samples,
/// `perf` on AMD Zen 3): the shift is a logical one between two flips of the negative lanes'
/// bits, the clamps are comparisons and blends. Past the last whole 4 tokens, the last 4
/// again (each output depends on its own token alone); fewer than 4 go by the loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(s: &ShiftRow, dividends: &[i32], codes: &[i32], out: &mut [i32]) -> bool {
    use std::arch::x86_64::*;
    let n = out.len();
    if n < 4 {
        return run_portable(s, dividends, codes, out);
    }
    let zero = _mm_set1_epi32(s.zero);
    let m = _mm256_set1_epi64x(i64::from(s.m));
    let addend = _mm256_set1_epi64x(s.addend.wrapping_add(1 << (s.k - 1)));
    let k = _mm_cvtsi32_si128(s.k as i32);
    let (lo, hi) = (_mm256_set1_epi64x(s.range.0), _mm256_set1_epi64x(s.range.1));
    let (sixty, reach) = (_mm_set1_epi32(60), _mm256_set1_epi64x(60));
    let low_halves = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    let mut outside = _mm256_setzero_si256();
    let last = (!n.is_multiple_of(4)).then_some(n - 4);
    for t in (0..n / 4 * 4).step_by(4).chain(last) {
        // SAFETY: tokens `t..t + 4` lie inside all three slices (`t + 4 ≤ n`, and the
        // caller's lengths are equal).
        let (q, code) = unsafe {
            (
                _mm_loadu_si128(dividends[t..t + 4].as_ptr().cast()),
                _mm_loadu_si128(codes[t..t + 4].as_ptr().cast()),
            )
        };
        // `(q − z)·m` from the centred code's low 32 bits, signed, as the loop's i32
        // subtraction leaves them.
        let num = _mm256_mul_epi32(_mm256_cvtepi32_epi64(_mm_sub_epi32(q, zero)), m);
        // Codes as u32, at most 60; a code that was past it (or negative) flags the row.
        let shift32 = _mm_min_epu32(code, sixty);
        let code_past = _mm256_cvtepi32_epi64(_mm_xor_si128(
            _mm_cmpeq_epi32(shift32, code),
            _mm_set1_epi32(-1),
        ));
        let shift = _mm256_cvtepu32_epi64(shift32);
        // `|num| < 2^60 >> shift` ⇔ `|num| >> (60 − shift)` is 0.
        let sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), num);
        let magnitude = _mm256_sub_epi64(_mm256_xor_si256(num, sign), sign);
        let num_past = _mm256_xor_si256(
            _mm256_cmpeq_epi64(
                _mm256_srlv_epi64(magnitude, _mm256_sub_epi64(reach, shift)),
                _mm256_setzero_si256(),
            ),
            _mm256_set1_epi64x(-1),
        );
        outside = _mm256_or_si256(outside, _mm256_or_si256(code_past, num_past));
        // `(num << shift) + addend + 2^(k−1)`, shifted right by `k` arithmetically.
        let p = _mm256_add_epi64(_mm256_sllv_epi64(num, shift), addend);
        let negative = _mm256_cmpgt_epi64(_mm256_setzero_si256(), p);
        let y = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(p, negative), k), negative);
        let y = _mm256_blendv_epi8(y, lo, _mm256_cmpgt_epi64(lo, y));
        let y = _mm256_blendv_epi8(y, hi, _mm256_cmpgt_epi64(y, hi));
        let y = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(y, low_halves));
        // SAFETY: as for the loads.
        unsafe { _mm_storeu_si128(out[t..t + 4].as_mut_ptr().cast(), y) };
    }
    _mm256_testz_si256(outside, outside) == 1
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn run_avx512(s: &ShiftRow, dividends: &[i32], codes: &[i32], out: &mut [i32]) -> bool {
    run_portable(s, dividends, codes, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition in i128.
    fn definition(s: &ShiftRow, q: i32, code: i32) -> i32 {
        let p = (((q - s.zero) as i128 * s.m as i128) << code) + s.addend as i128;
        ((p + (1i128 << (s.k - 1))) >> s.k).clamp(s.range.0 as i128, s.range.1 as i128) as i32
    }

    /// B1's row length and odd ones, codes across the reach: every ISA equals the definition on
    /// each row it runs, runs every row inside the reach and turns away every row outside it.
    #[test]
    fn rows_equal_the_definition_inside_the_reach() {
        let mut rng = Rng::new(12);
        for n in [1, 7, 196, 3136] {
            for (case, codes) in [
                ("inside", &[0, 1, 7, 15, 19][..]),
                ("past", &[3, 61][..]),
                ("negative", &[0, 5][..]),
            ] {
                let s = ShiftRow {
                    zero: rng.below(11) as i32 - 5,
                    m: (1 << 30) + rng.below(1 << 29) as i32,
                    addend: rng.below(1 << 40) as i64 - (1 << 39),
                    k: 40 + rng.below(10) as u32,
                    range: (-128, 127),
                };
                let q: Vec<i32> = (0..n).map(|_| rng.below(1 << 10) as i32 - 512).collect();
                let mut c: Vec<i32> = (0..n).map(|_| codes[rng.below(codes.len())]).collect();
                match case {
                    "past" => c[n - 1] = 61,
                    "negative" => c[n / 2] = -1,
                    _ => {}
                }
                let want: Vec<i32> = q
                    .iter()
                    .zip(&c)
                    .map(|(&q, &c)| definition(&s, q, c))
                    .collect();
                // |(q − z)·m| < 2^9.1 · 2^30.6 < 2^40: inside the reach for codes up to 19,
                // past it only by the code 61.
                for isa in Isa::available() {
                    let mut got = vec![0; n];
                    let ran = s.run(isa, &q, &c, &mut got);
                    assert_eq!(ran, case == "inside", "{} n = {n}", isa.name());
                    if ran {
                        assert_eq!(got, want, "{} n = {n}", isa.name());
                    }
                }
            }
        }
    }

    /// A product past the reach for its code is turned away, on every ISA.
    #[test]
    fn a_product_past_the_reach_is_turned_away() {
        let s = ShiftRow {
            zero: 0,
            m: i32::MAX,
            addend: 0,
            k: 30,
            range: (-128, 127),
        };
        // 2^20 · (2^31 − 1) is below 2^(60 − 9) and not below 2^(60 − 10). Rows of 3 and
        // 9 (lanes and a last vector), the product at each place.
        for n in [3, 9] {
            for at in 0..n {
                let mut q = vec![1; n];
                q[at] = 1 << 20;
                let (mut codes, ten) = (vec![9; n], vec![10; n]);
                for isa in Isa::available() {
                    let mut got = vec![0; n];
                    assert!(s.run(isa, &q, &codes, &mut got));
                    codes[at] = 10;
                    assert!(!s.run(isa, &q, &codes, &mut got), "{} at {at}", isa.name());
                    codes[at] = 9;
                    assert!(s.run(isa, &vec![1; n], &ten, &mut got));
                }
            }
        }
    }
}
