//! The mean `|x − q(x)|^p` of a distribution's points: the score every `Lp` range search
//! (OMSE, RepQ-ViT, PTQ4ViT at p = 2; Trio-ViT's LAPQ-style p = 2.4) computes once per
//! candidate range, for every weight of every output channel — 100 candidates over
//! EfficientViT-B1's 9 M weights per plan.
//!
//! Two things made it slow, and neither changes the score beyond the last bits of an f64:
//!
//! - The per-point arithmetic ran on the x86-64 baseline, one point at a time: it is compiled
//!   for AVX2 here (the caller's `q` inlined), and the squared errors are summed in
//!   [`LANES`] interleaved f64 partial sums rather than one, whose additions each waited for
//!   the one before. Point `i` goes to sum `i mod LANES` whatever the chunking, and the sums are
//!   added in a fixed order, so the score does not depend on threads or chunk sizes.
//! - `p ≠ 2` called the library's `pow` per point; [`power`] computes `e^p = 2^(p·log2 e)`
//!   with polynomials that vectorise, to within 2·10⁻¹⁴ of `pow` (test
//!   `power_matches_pow_over_the_range_of_errors`).

/// Points scored at a time: their errors are computed in vector registers first.
const CHUNK: usize = 64;

/// A quarter of a chunk: [`power`] runs on the four quarters in step.
const QUARTER: usize = CHUNK / 4;

/// Interleaved partial sums (the lanes of one AVX2 register of f64).
const LANES: usize = 4;

// Point i's sum is i mod LANES in every chunk, and the sums are added as two pairs.
const _: () = assert!(CHUNK.is_multiple_of(LANES) && LANES == 4);

/// Mean `|x − q(x)|^p` over `points` (value, weight); 0 when the weights sum to 0.
pub fn lp_error(points: &[(f32, f64)], p: f32, q: impl Fn(f32) -> f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were checked just above.
        #[allow(unsafe_code)]
        return unsafe { lp_error_avx2(points, p, q) };
    }
    lp_error_portable(points, p, q)
}

/// [`lp_error_portable`] compiled for AVX2 and FMA (`q` is inlined into it). FMA changes no
/// result: [`power`]'s `mul_add`s round once either way, in hardware here and in the library
/// elsewhere.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lp_error_avx2(points: &[(f32, f64)], p: f32, q: impl Fn(f32) -> f32) -> f64 {
    lp_error_portable(points, p, q)
}

#[inline(always)]
fn lp_error_portable(points: &[(f32, f64)], p: f32, q: impl Fn(f32) -> f32) -> f64 {
    let (mut err, mut mass) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut es = [0.0f64; CHUNK];
    let p = f64::from(p);
    for points in points.chunks(CHUNK) {
        for (e, &(x, _)) in es.iter_mut().zip(points) {
            *e = f64::from((x - q(x)).abs());
        }
        // p = 2 (OMSE) is the common case: a product, exact in f64 for an f32 error.
        if p == 2.0 {
            for e in es.iter_mut() {
                *e *= *e;
            }
        } else {
            // Four quarters of the chunk in step: each lane's polynomials are a chain of
            // dependent operations, and four independent chains keep the units busy. (Past
            // the chunk's points the values are stale, and unused.)
            let [a, b, c, d] = es.as_chunks_mut::<QUARTER>().0 else {
                unreachable!("CHUNK is four quarters")
            };
            for i in 0..QUARTER {
                a[i] = power(a[i], p);
                b[i] = power(b[i], p);
                c[i] = power(c[i], p);
                d[i] = power(d[i], p);
            }
        }
        let es = &es[..points.len()];
        for (ws, es) in points.chunks_exact(LANES).zip(es.chunks_exact(LANES)) {
            for k in 0..LANES {
                err[k] += ws[k].1 * es[k];
                mass[k] += ws[k].1;
            }
        }
        let tail = points.len() / LANES * LANES;
        for (k, (&(_, w), &e)) in points[tail..].iter().zip(&es[tail..]).enumerate() {
            err[k] += w * e;
            mass[k] += w;
        }
    }
    let total = |s: [f64; LANES]| (s[0] + s[1]) + (s[2] + s[3]);
    let (err, mass) = (total(err), total(mass));
    if mass > 0.0 { err / mass } else { 0.0 }
}

/// `1/(2n + 1)` for n = 0…10: `atanh`'s series, `atanh t = t·Σ t^(2n)/(2n + 1)`.
const ATANH: [f64; 11] = {
    let mut c = [0.0; 11];
    let mut n = 0;
    while n < 11 {
        c[n] = 1.0 / (2 * n + 1) as f64;
        n += 1;
    }
    c
};

/// `1/d!` for d = 0…13: `exp`'s series.
const EXP: [f64; 14] = {
    let mut c = [1.0; 14];
    let mut d = 1;
    while d < 14 {
        c[d] = c[d - 1] / d as f64;
        d += 1;
    }
    c
};

/// `e^p` for an error `e ≥ 0` that came from an f32 (or NaN) and an exponent `0 < p ≤ 10`
/// (what recipes allow): `2^(p·log2 e)`, with `log2` from `atanh`'s series on the mantissa and
/// `2^f` from `exp`'s, in operations that vectorise (no library call, no float-to-integer
/// conversion, which AVX2 lacks for f64). Within 2·10⁻¹⁴ of `pow` relative (the test measures
/// it); 0 for `e = 0` and for results below f64's normal range (errors under 10⁻³⁰ at
/// p = 10, which move no score); `inf` above its range and for `e = inf`; NaN for NaN.
#[inline(always)]
fn power(e: f64, p: f64) -> f64 {
    const MANTISSA: u64 = (1 << 52) - 1;
    const ONE: u64 = 1023 << 52;
    // 2^52: a biased exponent in the low bits of its mantissa reads back as 2^52 + exponent.
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    // 2^52 + 2^51: adding it rounds to an integer, which then sits in the low bits.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let bits = e.to_bits();
    // e = m·2^k with m in [√½, √2).
    let mut m = f64::from_bits((bits & MANTISSA) | ONE);
    let mut k = f64::from_bits(TWO_52.to_bits() | (bits >> 52)) - (TWO_52 + 1023.0);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        k += 1.0;
    }
    // ln m = 2·atanh(t), t = (m − 1)/(m + 1), |t| ≤ 0.1716: eleven terms reach 10⁻¹⁷.
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = in_two_chains(&ATANH, t2);
    let log2_m = 2.0 * t * series * std::f64::consts::LOG2_E;
    // y = p·k + p·log2 m, split as n + f with n an integer: p·k is exact (p came from an
    // f32, |k| < 2^11), so f keeps every bit of the fraction.
    let (whole, part) = (p * k, p * log2_m);
    let rounded = (whole + part) + ROUND;
    let n = rounded - ROUND;
    let f = (whole - n) + part;
    // 2^f = e^(f·ln 2), |f·ln 2| ≤ 0.35: the series to degree 13 reaches 10⁻¹⁷.
    let g = f * std::f64::consts::LN_2;
    let exp = in_two_chains(&EXP, g);
    // 2^n from n's bits in the low half of `rounded`; at n = 1024, past f64's exponents, as
    // 2^1023 · 2 (with f < 0 the result is finite up to 2^1024).
    let past = if n > 1023.0 { 1.0 } else { 0.0 };
    let scale = f64::from_bits((rounded - past).to_bits().wrapping_add(1023) << 52);
    if e > 0.0 && e < f64::INFINITY && (-1022.0..=1024.0).contains(&n) {
        exp * scale * (1.0 + past)
    } else if e > 0.0 {
        if n > 0.0 { f64::INFINITY } else { 0.0 }
    } else {
        // 0 for 0, NaN for NaN.
        e * 0.0
    }
}

/// `Σ c[i]·x^i` as its even and odd halves, two Horner chains of fused multiply-adds in
/// `x²` that run side by side: half the latency of one chain, which bounds the loop.
#[inline(always)]
fn in_two_chains<const N: usize>(c: &[f64; N], x: f64) -> f64 {
    let x2 = x * x;
    let (mut even, mut odd) = (0.0f64, 0.0f64);
    for i in (0..N.div_ceil(2)).rev() {
        even = even.mul_add(x2, c[2 * i]);
        if 2 * i + 1 < N {
            odd = odd.mul_add(x2, c[2 * i + 1]);
        }
    }
    odd.mul_add(x, even)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // Two points (1, weight 1) and (3, weight 3), q = 0: (1·1 + 3·9)/4 = 7.
        let pts = [(1.0, 1.0), (3.0, 3.0)];
        assert_eq!(lp_error(&pts, 2.0, |_| 0.0), 7.0);
        // p = 1: (1 + 9)/4.
        assert!((lp_error(&pts, 1.0, |_| 0.0) - 2.5).abs() < 1e-15);
        assert_eq!(lp_error(&[], 2.0, |x| x), 0.0);
        assert_eq!(lp_error(&[(5.0, 0.0)], 2.0, |_| 0.0), 0.0);
        assert_eq!(power(0.0, 2.4), 0.0);
        assert_eq!(power(f64::INFINITY, 2.4), f64::INFINITY);
        assert!(power(f64::NAN, 2.4).is_nan());
        assert!((power(2.0, 3.0) - 8.0).abs() < 1e-14);
        assert!((power(10.0, 0.5) - 10f64.sqrt()).abs() < 1e-14);
        // Results just under 2^1024, whose exponent rounds to 1024 (the case proptest found:
        // 1.57·10³⁵^8.75 = 1.40·10³⁰⁸), are finite; past f64's largest they are infinite.
        let (e, p) = (f64::from(1.573_377_5e35_f32), f64::from(8.754_91_f32));
        let want = e.powf(p);
        assert!(want.is_finite() && want > 2f64.powf(1023.5), "{want}");
        assert!(
            ((power(e, p) - want) / want).abs() <= 2e-14,
            "{} vs {want}",
            power(e, p)
        );
        assert!((power(2.0, 1023.75) / 2f64.powf(1023.75) - 1.0).abs() <= 2e-14);
        assert_eq!(power(2.0, 1024.25), f64::INFINITY);
        assert_eq!(power(4.0, 600.0), f64::INFINITY);
    }

    /// The score equals the definition, summed in plain order, to the last bits of an f64, at
    /// every length around the chunk and lane sizes.
    #[test]
    fn equals_the_definition_at_every_length() {
        let mut rng = crate::rng::Rng::new(7);
        for n in [0, 1, 3, 4, 5, 63, 64, 65, 130, 1000] {
            let pts: Vec<(f32, f64)> = (0..n)
                .map(|_| (rng.uniform(-4.0, 4.0), f64::from(rng.uniform(0.0, 3.0))))
                .collect();
            let q = |x: f32| (x * 3.0).round() / 3.0;
            for p in [2.0f32, 2.4, 1.0, 0.5] {
                let (mut err, mut mass) = (0.0f64, 0.0f64);
                for &(x, w) in &pts {
                    err += w * f64::from((x - q(x)).abs()).powf(f64::from(p));
                    mass += w;
                }
                let want = if mass > 0.0 { err / mass } else { 0.0 };
                let got = lp_error(&pts, p, q);
                assert!(
                    (got - want).abs() <= 1e-13 * want,
                    "n {n} p {p}: {got} vs {want}"
                );
                assert_eq!(lp_error_portable(&pts, p, q), got, "n {n} p {p}");
            }
        }
    }

    proptest::proptest! {
        /// Over errors from f32's smallest to its largest and every exponent a recipe
        /// allows, `power` is `pow` to within 2·10⁻¹⁴ relative.
        #[test]
        fn power_matches_pow_over_the_range_of_errors(
            mantissa in 1.0f64..2.0,
            exponent in -149i32..128,
            // Recipes allow any 0 < p ≤ 10: tiny ones drawn on their own, or they never are.
            p in proptest::prop_oneof![1e-9f64..0.01, 0.01f64..=10.0],
        ) {
            let p = f64::from(p as f32);
            let e = f64::from((mantissa * 2f64.powi(exponent)) as f32);
            let want = e.powf(p);
            let got = power(e, p);
            if want < f64::MIN_POSITIVE {
                proptest::prop_assert!(got < 2.0 * f64::MIN_POSITIVE, "{}^{}: {}", e, p, got);
            } else if want.is_infinite() {
                proptest::prop_assert_eq!(got, f64::INFINITY);
            } else {
                proptest::prop_assert!(
                    ((got - want) / want).abs() <= 2e-14,
                    "{}^{}: {} vs {}", e, p, got, want
                );
            }
        }
    }
}
