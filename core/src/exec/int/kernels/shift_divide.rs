//! Linear attention's division by log2 divisors (Trio-ViT's shift) for one channel's row of
//! tokens in i64 arithmetic: `((((q − z)·m) << c) + addend + 2^(k−1)) >> k`, clamped — the i64
//! fast path of `ops::linear_attention::Normalize`, which is exact while every code `c` is at
//! most 60 and `|(q − z)·m| < 2^(60 − c)` (the sum then stays below 2^63). A row with a value
//! past that reach returns `false` and is left to the definition's i128 arithmetic. With AVX2,
//! a row whose extremes keep every lane inside a narrower reach runs in lanes with no check of
//! their own (`lean_bias`).
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

/// A row's bias `2^b` for [`run_avx2`]'s lanes, if its lanes need no check of their own:
/// every code in `0..=31` and `|q − z| << c` inside i32 for the row's largest `|q − z|` and
/// code (so the shift runs in 32-bit lanes, exactly), and `|(q − z)·m| << c` below 2^60 (the
/// i64 reach); then `b ≥ k`, the least exponent with `2^b` above the row's bound on `|p|`
/// (`p = ((q − z)·m << c) + addend + 2^(k−1)`), at most 62, so that `p + 2^b` is positive and
/// below 2^63; and the clamp's bounds raised by `2^(b−k)` still in i32. Found once per row from
/// its extremes (in 32-bit lanes, by the compiler), rather than lane by lane. On B1 (`qvit
/// bench`'s random weights: `|q − z|` up to 157, codes up to 15, `m` up to 1.9·10⁹) every row
/// has one, `b` about 54.
#[inline(always)]
fn lean_bias(s: &ShiftRow, dividends: &[i32], codes: &[i32]) -> Option<u32> {
    let (lo, hi) = dividends
        .iter()
        .fold((i32::MAX, i32::MIN), |(lo, hi), &q| (lo.min(q), hi.max(q)));
    let (least, most) = codes
        .iter()
        .fold((i32::MAX, i32::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    if dividends.is_empty() || least < 0 || most > 31 {
        return None;
    }
    // The extremes' differences, which the lanes' wrapping i32 subtractions must not wrap
    // (then no difference between them wraps either).
    let centred = |q: i32| i32::try_from(i64::from(q) - i64::from(s.zero)).ok();
    let largest = centred(lo)?.unsigned_abs().max(centred(hi)?.unsigned_abs());
    let product = (u128::from(largest) * u128::from(s.m.unsigned_abs())) << most;
    // Inside the i64 reach, as the checked loop finds it, so that every ISA answers alike.
    if u64::from(largest) << most >= 1 << 31 || product >= 1 << 60 {
        return None;
    }
    let bound = product + u128::from(s.addend.unsigned_abs()) + (1 << (s.k - 1));
    let b = (128 - bound.leading_zeros()).max(s.k);
    let raised = 1i64 << (b.min(62) - s.k);
    let in_i32 = |v: i64| i32::try_from(v).is_ok();
    (b <= 62 && in_i32(s.range.0 + raised) && in_i32(s.range.1 + raised)).then_some(b)
}

/// [`run_portable`] in eight lanes, for rows that [`lean_bias`] gives a bias `2^b` (others take
/// the portable loop). AVX2 has no 64-bit arithmetic shift, minimum or maximum, so the
/// compiler had left that loop scalar (two thirds of B1's normalize samples, `perf` on AMD
/// Zen 3). Here `(q − z) << c` is an i32 lane, its product with `m` two i64 lanes (even and
/// odd), and `p + 2^b` positive, so a logical shift gives `⌊p/2^k⌋ + 2^(b−k)`: clamped above
/// in 64 bits (it may pass 2^32), narrowed, clamped below in 32, and less the `2^(b−k)`. A
/// first form in four lanes checked each lane's reach and shifted between two flips of the
/// negative lanes' bits: 33 instructions per 4 tokens, against 20 per 8 here (B1's seven
/// normalisations 278–285 → 166–177 µs at the tenth percentile, `cargo bench -p qvit-core
/// --bench alternating -- linear avx2`, AMD Zen 3). Past the last whole 8 tokens, the last 8
/// again (each output depends on its own token alone).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(s: &ShiftRow, dividends: &[i32], codes: &[i32], out: &mut [i32]) -> bool {
    use std::arch::x86_64::*;
    let n = out.len();
    let b = match lean_bias(s, dividends, codes) {
        Some(b) if n >= 8 => b,
        _ => return run_portable(s, dividends, codes, out),
    };
    let raised = 1i64 << (b - s.k);
    let zero = _mm256_set1_epi32(s.zero);
    let m = _mm256_set1_epi64x(i64::from(s.m));
    // `|addend| + 2^(k−1) < 2^b ≤ 2^62`: the sum fits.
    let addend = _mm256_set1_epi64x(s.addend + (1 << (s.k - 1)) + (1 << b));
    let k = _mm_cvtsi32_si128(s.k as i32);
    let top = _mm256_set1_epi64x(s.range.1 + raised);
    let bottom = _mm256_set1_epi32((s.range.0 + raised) as i32);
    let raised = _mm256_set1_epi32(raised as i32);
    let (dp, cp, op) = (dividends.as_ptr(), codes.as_ptr(), out.as_mut_ptr());
    let last = (!n.is_multiple_of(8)).then_some(n - 8);
    for t in (0..n / 8 * 8).step_by(8).chain(last) {
        // SAFETY: tokens `t..t + 8` lie inside all three slices (`t + 8 ≤ n`, and the
        // caller's lengths are equal).
        let (q, code) = unsafe {
            (
                _mm256_loadu_si256(dp.add(t).cast()),
                _mm256_loadu_si256(cp.add(t).cast()),
            )
        };
        let shifted = _mm256_sllv_epi32(_mm256_sub_epi32(q, zero), code);
        let even = _mm256_add_epi64(_mm256_mul_epi32(shifted, m), addend);
        let odd = _mm256_srli_epi64::<32>(shifted);
        let odd = _mm256_add_epi64(_mm256_mul_epi32(odd, m), addend);
        // Each lane's `⌊p/2^k⌋ + 2^(b−k)`, at most the raised top code.
        let clamp = |p: __m256i| {
            let y = _mm256_srl_epi64(p, k);
            _mm256_blendv_epi8(y, top, _mm256_cmpgt_epi64(y, top))
        };
        let y = _mm256_blend_epi32::<0xAA>(clamp(even), _mm256_slli_epi64::<32>(clamp(odd)));
        let y = _mm256_sub_epi32(_mm256_max_epi32(y, bottom), raised);
        // SAFETY: as for the loads.
        unsafe { _mm256_storeu_si256(op.add(t).cast(), y) };
    }
    true
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

    /// Rows at the edges of the lanes' reach without checks ([`lean_bias`]), of both signs
    /// and token counts with and without a part vector: a bias of 2^62 (products times `2^c`
    /// near 2^59, addends near 2^61), and rows just past the lanes' reach that the checked
    /// loop runs — a bound of 2^62, a shift past i32, a code of 32, a raised clamp past i32.
    /// Every ISA equals the definition.
    #[test]
    fn rows_at_the_edges_of_the_lean_reach() {
        let mut rng = Rng::new(5);
        // (multiplier, largest code, addend, k, output range, |q − z| at most, lean bias)
        let wide = (-(1 << 30), 1 << 30);
        let cases = [
            (
                i32::MAX,
                20,
                (1 << 61) - (1 << 39) - 1,
                40,
                wide,
                255,
                Some(62),
            ),
            (i32::MAX, 20, (1 << 61) - 1, 62, (-1, 1), 255, None),
            ((1 << 30) + 5, 15, 1 << 50, 40, (0, 255), 160, Some(53)),
            ((1 << 20) + 5, 23, 1 << 50, 40, wide, 256, None),
            (5, 32, 1 << 20, 40, wide, 1, None),
            (
                (1 << 30) + 5,
                15,
                1 << 50,
                40,
                (0, i32::MAX.into()),
                160,
                None,
            ),
        ];
        for (m, code, addend, k, range, span, bias) in cases {
            for (sign, n) in [(1, 9), (-1, 196), (1, 48)] {
                let s = ShiftRow {
                    zero: 3,
                    m,
                    addend: sign * addend,
                    k,
                    range,
                };
                let mut q: Vec<i32> = (0..n)
                    .map(|_| 3 + rng.below(2 * span + 1) as i32 - span as i32)
                    .collect();
                q[n / 2] = 3 + span as i32 * sign as i32;
                q[0] = 3 - span as i32 * sign as i32;
                let codes: Vec<i32> = (0..n).map(|t| [code, 0, 7][t % 3]).collect();
                assert_eq!(lean_bias(&s, &q, &codes), bias, "m = {m}, code {code}");
                for isa in Isa::available() {
                    let mut got = vec![0; n];
                    assert!(s.run(isa, &q, &codes, &mut got));
                    for (t, (&g, (&q, &c))) in got.iter().zip(q.iter().zip(&codes)).enumerate() {
                        let want = definition(&s, q, c);
                        assert_eq!(g, want, "{} m = {m}, code {code}, token {t}", isa.name());
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
