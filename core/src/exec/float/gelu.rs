//! GELU over a slice, bit for bit [`gelu`], eight values at a time with AVX-512, four with
//! AVX2.
//!
//! [`gelu`] evaluates libm's f64 `erf` per element (a fifth of DeiT-T's fp32 time, and of
//! the fake-quant executor's). Here `erf` comes from a table of Taylor expansions evaluated in
//! SIMD lanes, and each result is kept only where it provably rounds to the same f32 as
//! [`gelu`]'s; the few others (results within the table's error of a rounding boundary, and
//! NaN) go through [`gelu`] itself. So the slice gets exactly `gelu(x)` for every `x`.
//!
//! **The tables.** Around a centre `c`, `erf(c + t) = erf(c) + (2/√π)·e^(−c²)·Σₙ₌₁
//! (−1)^(n−1)·H_(n−1)(c)·tⁿ/n!` with `H` the Hermite polynomials (`dⁿ/dzⁿ e^(−z²) =
//! (−1)ⁿ·Hₙ(z)·e^(−z²)`). AVX2 reads centres `i/32` for `i = 0..=192` (`|z|` up to 6, past
//! which `erf` is ±1 in f64) to degree 7: for `|t| ≤ 1/64` the next term is below `2/√π ·
//! max|H₇·e^(−z²)| · 64⁻⁸/8!`, about `10⁻¹⁶`. AVX-512 reads 16 centres `i·3/8`, as many as one
//! `vpermt2pd` picks from (each term's coefficient one permute, where the 193 rows took eight
//! loads and a 24-shuffle transpose per eight lanes), to degree 11, each expansion
//! economized: its Taylor series to degree 25 (past which the terms on `|t| ≤ 3/16` are below
//! `2⁻⁹⁰` by Cramér's bound on the Hermite polynomials) written in Chebyshev polynomials of
//! `t·16/3` and cut after the twelfth: within `2⁻⁵¹` of libm's `erf` at 201 points of each
//! interval, where the Taylor series to degree 13 it replaces (two permutes and two
//! multiply-adds more per eight values) is `2⁻⁴⁸` from `erf` at the intervals' ends by 40-digit
//! arithmetic (economized to degree 10 it is `2⁻⁴⁶·⁸` from libm's, too near the check's
//! `2⁻⁴⁵`). `|z|` past `5.8125` is taken there, which moves `erf` by `erfc(5.8125) <
//! 2.1·10⁻¹⁶`. With the f64 roundings of the coefficients and the evaluation, the lanes' `erf`
//! is within `2⁻⁵⁰` (AVX2) and `2⁻⁴⁹` (AVX-512) of libm's (`the_tables_are_erf`).
//!
//! **The check.** `g = 0.5·x·(1 + e)` in f64 as [`gelu`] computes it, so with `|e − erf| ≤ E`
//! the two `g` differ by at most `|x|·(E/2 + 2⁻⁵¹)` (`|1 + e| ≤ 2`, one rounding each side).
//! With `tol = |x|·2⁻⁴⁶`, above that bound for any `E` below `2⁻⁴⁵`, a lane keeps `f32(g −
//! tol)` only when it equals `f32(g + tol)`: rounding is monotone, so every f64 between them —
//! [`gelu`]'s `g` among them — rounds to that f32.

use std::sync::OnceLock;

use super::kernels::gelu;
#[cfg(target_arch = "x86_64")]
use crate::exec::cpu::FloatLanes;

/// Centres per unit of `z`.
const STEPS: f64 = 32.0;
/// The last centre, `|z| = 6`.
const LAST: usize = 192;
/// Taylor terms `t⁰ … t⁷`.
const TERMS: usize = 8;

/// The expansion's coefficients, term-major: `coefficients[n][i]` multiplies `tⁿ` at centre
/// `i/32`.
fn coefficients() -> &'static [[f64; LAST + 1]; TERMS] {
    static TABLE: OnceLock<Box<[[f64; LAST + 1]; TERMS]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Box::new([[0.0; LAST + 1]; TERMS]);
        for i in 0..=LAST {
            let terms = expansion::<TERMS>(i as f64 / STEPS);
            for (n, term) in terms.into_iter().enumerate() {
                table[n][i] = term;
            }
        }
        table
    })
}

/// The same coefficients centre-major: `centres()[i]` holds the eight of centre `i/32`, one
/// 64-byte row, so that the lanes load their rows and transpose them rather than gather each
/// term (eight gathers per eight values were most of the AVX-512 form's time).
fn centres() -> &'static [[f64; TERMS]; LAST + 1] {
    static TABLE: OnceLock<Box<[[f64; TERMS]; LAST + 1]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let terms = coefficients();
        let mut table = Box::new([[0.0; TERMS]; LAST + 1]);
        for (i, row) in table.iter_mut().enumerate() {
            for (n, c) in row.iter_mut().enumerate() {
                *c = terms[n][i];
            }
        }
        table
    })
}

/// Centres of the AVX-512 form's table, `i·WIDE_STEP` for `i = 0..16`: as many f64 as two
/// registers hold, so that each lane's coefficient of a term is one `vpermt2pd` from them.
const WIDE_CENTRES: usize = 16;
/// The AVX-512 form's spacing of centres, exact in binary.
const WIDE_STEP: f64 = 0.375;
/// Its terms `t⁰ … t¹¹`.
const WIDE_TERMS: usize = 12;
/// The Taylor terms its economized expansions start from, `t⁰ … t²⁵`.
const SERIES_TERMS: usize = 26;
/// The AVX-512 form's largest `|z|`: the last centre plus half a step. Past it `erf` is
/// within `erfc(5.8125) < 2.1·10⁻¹⁶` of its value there (module docs).
const WIDE_LAST: f64 = 15.0 * WIDE_STEP + WIDE_STEP / 2.0;

/// The economized expansions about the centres `i·3/8` to degree 11, term-major:
/// `wide()[n][i]` multiplies `tⁿ` at centre `i`.
fn wide() -> &'static [[f64; WIDE_CENTRES]; WIDE_TERMS] {
    static TABLE: OnceLock<[[f64; WIDE_CENTRES]; WIDE_TERMS]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let centres: [[f64; WIDE_TERMS]; WIDE_CENTRES] =
            std::array::from_fn(|i| economized(i as f64 * WIDE_STEP, WIDE_STEP / 2.0));
        std::array::from_fn(|n| std::array::from_fn(|i| centres[i][n]))
    })
}

/// `erf(c + t) ≈ Σₙ termsₙ·tⁿ` for `|t| ≤ h`: the Taylor expansion about `c` to degree 25,
/// in `s = t/h`, turned into a sum of Chebyshev polynomials `T_k(s)` (`sⁿ = 2^(1−n)·Σⱼ
/// C(n, j)·T_(n−2j)(s)`, the `T₀` term halved), cut after `T_(N−1)`, and turned back into
/// powers of `t`. The cut terms are each at most their coefficient on `[−h, h]` (`|T_k| ≤ 1`),
/// where the series' own would be largest at the ends.
fn economized<const N: usize>(c: f64, h: f64) -> [f64; N] {
    let taylor = expansion::<SERIES_TERMS>(c);
    let mut chebyshev = [0.0; SERIES_TERMS];
    let mut h_n = 1.0;
    for (n, &term) in taylor.iter().enumerate() {
        // `termₙ·hⁿ` is the coefficient of `sⁿ`; `C(n, j)` is exact in f64 here.
        let mut binomial = 1.0;
        for j in 0..=n / 2 {
            let k = n - 2 * j;
            let halved = if k == 0 { 0.5 } else { 1.0 };
            chebyshev[k] += term * h_n * binomial * halved * 2f64.powi(1 - n as i32);
            binomial = binomial * (n - j) as f64 / (j + 1) as f64;
        }
        h_n *= h;
    }
    // `T_k`'s coefficients of `sⁿ` (integers), by `T_(k+1) = 2s·T_k − T_(k−1)`.
    let mut t_prev = [0.0; N];
    let mut t_k = [0.0; N];
    t_k[0] = 1.0;
    let mut powers_of_s = [0.0; N];
    for (k, &a) in chebyshev.iter().enumerate().take(N) {
        for (p, &coefficient) in powers_of_s.iter_mut().zip(&t_k) {
            *p += a * coefficient;
        }
        let mut next = [0.0; N];
        for n in 0..N {
            let shifted = if n > 0 { t_k[n - 1] } else { 0.0 };
            next[n] = if k == 0 {
                shifted
            } else {
                2.0 * shifted - t_prev[n]
            };
        }
        (t_prev, t_k) = (t_k, next);
    }
    let mut h_n = 1.0;
    powers_of_s.map(|b| {
        let term = b / h_n;
        h_n *= h;
        term
    })
}

/// `erf(c + t) = Σₙ termsₙ·tⁿ`, the Taylor expansion about `c` to degree `N − 1`.
fn expansion<const N: usize>(c: f64) -> [f64; N] {
    let mut terms = [0.0; N];
    terms[0] = libm::erf(c);
    let scale = 2.0 / std::f64::consts::PI.sqrt() * libm::exp(-c * c);
    // H₀ … H_(N−2) at c, by H_(n+1) = 2c·Hₙ − 2n·H_(n−1).
    let (mut h_prev, mut h) = (0.0, 1.0);
    let mut factorial = 1.0;
    for (n, term) in terms.iter_mut().enumerate().skip(1) {
        factorial *= n as f64;
        let sign = if n % 2 == 1 { 1.0 } else { -1.0 };
        *term = scale * sign * h / factorial;
        let next = 2.0 * c * h - 2.0 * (n - 1) as f64 * h_prev;
        (h_prev, h) = (h, next);
    }
    terms
}

/// `x[i] = gelu(x[i])` for every element.
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    match crate::exec::cpu::float_lanes() {
        // SAFETY: `float_lanes` reports only features the CPU has (AVX-512 F and VL here).
        FloatLanes::Avx512 => return unsafe { lanes::gelu_avx512(wide(), x) },
        // SAFETY: as above (AVX2 and FMA).
        FloatLanes::Avx2Fma => return unsafe { lanes::gelu_avx2(centres(), x) },
        FloatLanes::Baseline => {}
    }
    x.iter_mut().for_each(|v| *v = gelu(*v));
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    use super::{LAST, STEPS, TERMS, WIDE_CENTRES, WIDE_LAST, WIDE_STEP, WIDE_TERMS, gelu};

    /// The coefficients centre-major ([`super::centres`]).
    type Centres = [[f64; TERMS]; LAST + 1];
    /// The AVX-512 form's coefficients term-major ([`super::wide`]).
    type Wide = [[f64; WIDE_CENTRES]; WIDE_TERMS];

    /// One vector width of the lanes.
    trait Width {
        const LANES: usize;
        /// The coefficients it reads.
        type Table;
        /// Writes `f32(g − tol)` for `x[..LANES]` over them and returns the mask of the lanes
        /// that keep it (module docs).
        ///
        /// # Safety
        /// The CPU has the width's features; `x` holds `LANES` values.
        unsafe fn lanes(table: &Self::Table, x: &mut [f32]) -> u32;
    }

    /// [`Width::LANES`] at a time, the rest (and every lane the check turns away, rare enough
    /// for a branch) through [`gelu`]. Inlined into a caller compiled for the width's features.
    #[inline(always)]
    fn in_place<W: Width>(table: &W::Table, x: &mut [f32]) {
        let all = (1u32 << W::LANES) - 1;
        let mut chunks = x.chunks_exact_mut(W::LANES);
        for chunk in &mut chunks {
            let mut input = [0.0f32; 16];
            input[..W::LANES].copy_from_slice(chunk);
            // SAFETY: the caller has the features; `chunk` holds a vector.
            let kept = unsafe { W::lanes(table, chunk) };
            if kept != all {
                for lane in (0..W::LANES).filter(|lane| kept & (1 << lane) == 0) {
                    chunk[lane] = gelu(input[lane]);
                }
            }
        }
        for value in chunks.into_remainder() {
            *value = gelu(*value);
        }
    }

    struct Avx2;
    struct Avx512;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu_avx2(table: &Centres, x: &mut [f32]) {
        in_place::<Avx2>(table, x);
    }

    /// Eight lanes of f64: one of eight costs fewer instructions than two of four.
    #[target_feature(enable = "avx512f,avx512vl")]
    pub(super) fn gelu_avx512(table: &Wide, x: &mut [f32]) {
        in_place::<Avx512>(table, x);
    }

    /// `x·(1/√2)` rather than [`gelu`]'s `x/√2`: a division costs as much as the rest, and the
    /// product is within an ulp of the quotient, which moves `erf` by less than `2⁻⁵³` —
    /// inside the check's margin.
    const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
    /// The check's margin over `|x|` (module docs).
    const MARGIN: f64 = 1.0 / (1u64 << 46) as f64;

    impl Width for Avx2 {
        const LANES: usize = 4;
        type Table = Centres;

        /// Each lane's coefficients loaded as its centre's row (two registers: terms 0–3 and
        /// 4–7) and the four rows transposed into one register per term.
        #[inline(always)]
        unsafe fn lanes(table: &Centres, x: &mut [f32]) -> u32 {
            // SAFETY (every intrinsic below): the caller is compiled with AVX2 and FMA; `x`
            // holds four f32s; the rows read are `table[i]` with `0 ≤ i ≤ LAST` (the index is
            // clamped first).
            unsafe {
                let v = _mm256_cvtps_pd(_mm_loadu_ps(x.as_ptr()));
                let z = _mm256_mul_pd(v, _mm256_set1_pd(FRAC_1_SQRT_2));
                let sign = _mm256_set1_pd(-0.0);
                let a = _mm256_andnot_pd(sign, z);
                // NaN compares false and becomes the last centre; its lane fails the check.
                let a = _mm256_min_pd(a, _mm256_set1_pd(LAST as f64 / STEPS));
                let centre = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_pd(a, _mm256_set1_pd(STEPS)),
                );
                let index = _mm256_cvtpd_epi32(centre);
                let t = _mm256_sub_pd(a, _mm256_mul_pd(centre, _mm256_set1_pd(1.0 / STEPS)));
                let mut lane_index = [0i32; 4];
                _mm_storeu_si128(lane_index.as_mut_ptr().cast(), index);
                let row = |lane: usize| table[lane_index[lane] as usize].as_ptr();
                let low = transpose4(std::array::from_fn(|lane| _mm256_loadu_pd(row(lane))));
                let high = transpose4(std::array::from_fn(|lane| {
                    _mm256_loadu_pd(row(lane).add(4))
                }));
                let terms: [__m256d; TERMS] =
                    std::array::from_fn(|n| if n < 4 { low[n] } else { high[n - 4] });
                let mut e = terms[TERMS - 1];
                for n in (0..TERMS - 1).rev() {
                    e = _mm256_fmadd_pd(e, t, terms[n]);
                }
                let e = _mm256_or_pd(e, _mm256_and_pd(z, sign));
                let half_x = _mm256_mul_pd(_mm256_set1_pd(0.5), v);
                let g = _mm256_mul_pd(half_x, _mm256_add_pd(_mm256_set1_pd(1.0), e));
                let tol = _mm256_mul_pd(_mm256_andnot_pd(sign, v), _mm256_set1_pd(MARGIN));
                let lo = _mm256_cvtpd_ps(_mm256_sub_pd(g, tol));
                let hi = _mm256_cvtpd_ps(_mm256_add_pd(g, tol));
                _mm_storeu_ps(x.as_mut_ptr(), lo);
                _mm_movemask_ps(_mm_cmpeq_ps(lo, hi)) as u32
            }
        }
    }

    impl Width for Avx512 {
        const LANES: usize = 8;
        type Table = Wide;

        /// Eight f64 lanes; each term's coefficients are one `vpermt2pd` of the term's 16
        /// (two registers) by the lane's centre, which the rounding of `a·8/3` leaves in the
        /// low bits of `a·8/3 + 1.5·2⁵²`.
        #[inline(always)]
        unsafe fn lanes(table: &Wide, x: &mut [f32]) -> u32 {
            // SAFETY (every intrinsic below): the caller is compiled with AVX-512 F and VL;
            // `x` holds eight f32s.
            unsafe {
                let v = _mm512_cvtps_pd(_mm256_loadu_ps(x.as_ptr()));
                let z = _mm512_mul_pd(v, _mm512_set1_pd(FRAC_1_SQRT_2));
                // NaN compares false and becomes the last centre; its lane fails the check.
                let a = _mm512_min_pd(_mm512_abs_pd(z), _mm512_set1_pd(WIDE_LAST));
                let magic = _mm512_set1_pd(1.5 * (1u64 << 52) as f64);
                // The last centre is 15 (`WIDE_LAST·8/3` is 15.5 less the rounding of 8/3).
                let last = _mm512_add_pd(magic, _mm512_set1_pd((WIDE_CENTRES - 1) as f64));
                let rounded = _mm512_fmadd_pd(a, _mm512_set1_pd(1.0 / WIDE_STEP), magic);
                let rounded = _mm512_min_pd(rounded, last);
                let index = _mm512_castpd_si512(rounded);
                // `a` less the centre (an exact product), rounded once.
                let i = _mm512_sub_pd(rounded, magic);
                let t = _mm512_fnmadd_pd(i, _mm512_set1_pd(WIDE_STEP), a);
                let term = |n: usize| {
                    let (low, high) = table[n].split_at(8);
                    _mm512_permutex2var_pd(
                        _mm512_loadu_pd(low.as_ptr()),
                        index,
                        _mm512_loadu_pd(high.as_ptr()),
                    )
                };
                // Estrin's scheme: pairs of terms in `t`, pairs of those in `t²`, then `t⁴`
                // and `t⁸`: four multiply-adds deep, where Horner's rule's eleven had bound
                // the loop by their latency.
                const { assert!(WIDE_TERMS == 12) };
                let t2 = _mm512_mul_pd(t, t);
                let t4 = _mm512_mul_pd(t2, t2);
                let t8 = _mm512_mul_pd(t4, t4);
                let pairs: [__m512d; WIDE_TERMS / 2] =
                    std::array::from_fn(|p| _mm512_fmadd_pd(term(2 * p + 1), t, term(2 * p)));
                let quads: [__m512d; 3] =
                    std::array::from_fn(|q| _mm512_fmadd_pd(pairs[2 * q + 1], t2, pairs[2 * q]));
                let low = _mm512_fmadd_pd(quads[1], t4, quads[0]);
                let e = _mm512_fmadd_pd(quads[2], t8, low);
                let sign = _mm512_set1_epi64(i64::MIN);
                let z_sign = _mm512_and_si512(_mm512_castpd_si512(z), sign);
                let e = _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(e), z_sign));
                // `g` as `gelu` has it (`0.5x + 0.5x·e` in one rounding would make `gelu(−0)`
                // +0), and `g ∓ |x|·2⁻⁴⁶` each rounded once.
                let half_x = _mm512_mul_pd(_mm512_set1_pd(0.5), v);
                let g = _mm512_mul_pd(half_x, _mm512_add_pd(_mm512_set1_pd(1.0), e));
                let (abs, margin) = (_mm512_abs_pd(v), _mm512_set1_pd(MARGIN));
                let lo = _mm512_cvtpd_ps(_mm512_fnmadd_pd(abs, margin, g));
                let hi = _mm512_cvtpd_ps(_mm512_fmadd_pd(abs, margin, g));
                _mm256_storeu_ps(x.as_mut_ptr(), lo);
                u32::from(_mm256_cmp_ps_mask::<_CMP_EQ_OQ>(lo, hi))
            }
        }
    }

    /// The 4 × 4 transpose of `r`: element `n` of `r[lane]` is element `lane` of result `n`.
    /// Pairs of rows interleaved, then 128-bit halves.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose4(r: [__m256d; 4]) -> [__m256d; 4] {
        let (t0, t1) = (
            _mm256_unpacklo_pd(r[0], r[1]),
            _mm256_unpackhi_pd(r[0], r[1]),
        );
        let (t2, t3) = (
            _mm256_unpacklo_pd(r[2], r[3]),
            _mm256_unpackhi_pd(r[2], r[3]),
        );
        [
            _mm256_permute2f128_pd::<0x20>(t0, t2),
            _mm256_permute2f128_pd::<0x20>(t1, t3),
            _mm256_permute2f128_pd::<0x31>(t0, t2),
            _mm256_permute2f128_pd::<0x31>(t1, t3),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// An implementation of [`gelu_in_place`].
    type Form = fn(&mut [f32]);

    /// Every form this CPU can run: the dispatched one, and AVX2 where AVX-512 took its place.
    fn forms() -> Vec<(&'static str, Form)> {
        let mut forms: Vec<(&str, Form)> = vec![("dispatched", gelu_in_place)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[allow(unsafe_code)]
            // SAFETY: AVX2 and FMA were checked just above.
            forms.push(("avx2", |x| unsafe { lanes::gelu_avx2(centres(), x) }));
        }
        forms
    }

    fn check(values: &[f32]) {
        for (form, gelu_lanes) in forms() {
            let mut got = values.to_vec();
            gelu_lanes(&mut got);
            for (&v, g) in values.iter().zip(&got) {
                assert_eq!(
                    g.to_bits(),
                    gelu(v).to_bits(),
                    "{form}: gelu({v:e}) = {}",
                    gelu(v)
                );
            }
        }
    }

    #[test]
    fn the_tables_are_erf() {
        // Every centre's expansion at both ends of its interval, against libm.
        let table = coefficients();
        for i in 0..=LAST {
            for t in [-1.0 / 64.0, 1.0 / 64.0, 0.0] {
                let z = i as f64 / STEPS + t;
                let e = table.iter().rev().fold(0.0, |acc, term| acc * t + term[i]);
                assert!((e - libm::erf(z)).abs() < 2f64.powi(-50), "erf({z})");
            }
        }
        // The AVX-512 table's at 201 points of each interval (its error peaks at the ends),
        // and past the last centre's, where the lanes take `WIDE_LAST`.
        let wide = wide();
        let last = (WIDE_CENTRES - 1) as f64 * WIDE_STEP;
        let mut worst: f64 = 0.0;
        for i in 0..WIDE_CENTRES {
            for step in -100..=100 {
                let c = i as f64 * WIDE_STEP;
                let t = step as f64 / 100.0 * WIDE_STEP / 2.0;
                let e = wide.iter().rev().fold(0.0, |acc, term| acc * t + term[i]);
                let z = c + t;
                if z >= 0.0 {
                    worst = worst.max((e - libm::erf(z)).abs());
                }
                if i == WIDE_CENTRES - 1 && t == WIDE_LAST - last {
                    for far in [5.9, 6.0, 8.0, 100.0] {
                        worst = worst.max((e - libm::erf(far)).abs());
                    }
                }
            }
        }
        assert!(
            worst < 2f64.powi(-49),
            "the AVX-512 table is {worst:e} from erf"
        );
    }

    #[test]
    fn special_values_and_every_length() {
        let special = [
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN,
            8.5,
            -8.5,
            -5.3,
            -12.0,
            -40.0,
        ];
        for len in 0..=special.len() {
            check(&special[..len]);
        }
    }

    /// Random activations at several spreads, and inputs on the table's seams (`z = i/32 ±
    /// 1/64`, where the centre changes).
    #[test]
    fn equals_gelu_bit_for_bit() {
        let mut rng = Rng::new(5);
        for spread in [0.01f32, 0.5, 1.0, 3.0, 10.0] {
            let v: Vec<f32> = (0..100_003).map(|_| spread * rng.normal()).collect();
            check(&v);
        }
        let seams: Vec<f32> = (0..=2 * LAST + 2)
            .flat_map(|j| {
                let x = (j as f64 / 64.0 * std::f64::consts::SQRT_2) as f32;
                [
                    x,
                    -x,
                    x.next_up(),
                    x.next_down(),
                    -x.next_up(),
                    -x.next_down(),
                ]
            })
            .collect();
        check(&seams);
    }

    /// One f32 in every 4,096 over the whole range, each sign.
    #[test]
    fn equals_gelu_across_the_f32_range() {
        let v: Vec<f32> = (0..=u32::MAX >> 12)
            .map(|b| f32::from_bits(b << 12))
            .collect();
        check(&v);
    }
}
