//! Softmax's exponentials over a row, bit for bit `f32::exp`, eight values at a time with
//! AVX-512, four with AVX2.
//!
//! Softmax called libm's `expf` per element: with the row's maximum and sum, 12.5 % of DeiT-T's
//! fp32 samples at batch 1 by `perf`, 7.3 % after (with the maximum in lanes and the sums of
//! eight rows side by side, `kernels::softmax`). Here `eˣ` is evaluated in f64 lanes, and each lane
//! keeps its result only where it provably rounds to the f32 that `f32::exp` returns; the
//! others (results near a rounding boundary, about one lane in 180, and inputs above
//! [`HIGHEST`] or NaN) call `f32::exp` itself. Inputs below [`LOWEST`] are taken as it: their
//! `eˣ`, as its, is 0 in f32. (They had gone to `f32::exp` too: a sixth of the scores of a
//! row of spread 30, which made the row 3× as slow.)
//!
//! **The lanes.** With AVX2, `x = n·ln 2 + r` with `n = round(x·log₂e)` and `|r| ≤ ln 2 / 2`,
//! `r` from a two-part `ln 2` whose high part times any `|n| ≤ 2¹¹` is exact; `eʳ` by its
//! Taylor series to degree 10, whose next term is below `(ln 2 / 2)¹¹ / 11!`, about `2⁻⁴²`;
//! `2ⁿ` built from its exponent bits. With AVX-512, `x = (16n + j)·ln 2 / 16 + r` with `|r| ≤
//! ln 2 / 32`: `2^(j/16)` is one `vpermt2pd` from a table of 16 (two registers), and `eʳ` needs
//! the series to degree 5 only, whose next term is below `(ln 2 / 32)⁶ / 6!·e^(1/32)`, about
//! `2⁻⁴²·⁵` (the `r⁶`…`r¹⁰` of the first form, five multiply-adds, traded for a permute). With
//! the f64 roundings (the table's among them), either form's `y` is within `2⁻⁴¹·eˣ` of `eˣ`.
//!
//! **The check.** A libm `expf` that rounds once an f64 within `2⁻³³·eˣ` of `eˣ` (glibc's
//! documents `1.69·2⁻³⁴` for its polynomial; a correctly rounded one has no error) returns
//! the f32 of a value within `tol = y·2⁻³²` of `y`. A lane keeps `f32(y − tol)` only when it
//! equals `f32(y + tol)`: rounding is monotone, so every f64 between them — libm's among
//! them — rounds to that f32. Tests hold the result equal to `f32::exp` across the f32 range.

#[cfg(target_arch = "x86_64")]
use crate::exec::cpu::FloatLanes;

/// The smallest input the lanes compute from, and the one they take for any below it: there
/// `eˣ` is 0 in f32 (past `−103.98`), and `2ⁿ` a normal f64.
const LOWEST: f32 = -110.0;
/// The largest: above it `eˣ` overflows f32 (past `88.73`).
const HIGHEST: f32 = 89.0;

/// `out[i] = (x[i] − shift).exp()`, bit for bit, for every `i`.
pub fn exp_shifted(x: &[f32], shift: f32, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "one output per input");
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    match crate::exec::cpu::float_lanes() {
        // SAFETY: `float_lanes` reports only features the CPU has (AVX-512 F and VL here).
        FloatLanes::Avx512 => return unsafe { lanes::exp_shifted_avx512(x, shift, out) },
        // SAFETY: as above (AVX2 and FMA).
        FloatLanes::Avx2Fma => return unsafe { lanes::exp_shifted_avx2(x, shift, out) },
        FloatLanes::Baseline => {}
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - shift).exp();
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    use super::{HIGHEST, LOWEST};

    /// `ln 2` in two parts: the high part has 32 trailing zero bits, so `n·LN2_HI` is exact.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = std::f64::consts::LN_2 - LN2_HI;
    /// Taylor terms `r⁰ … r¹⁰`.
    const TERMS: usize = 11;
    /// The AVX-512 form's Taylor terms, `r⁰ … r⁵`.
    const WIDE_TERMS: usize = 6;
    /// The AVX-512 form's powers `2^(j/16)`: as many f64 as one `vpermt2pd` picks from.
    const POWERS: usize = 16;

    /// Vectors per block: a block's turned-away lanes are noted without a branch and fixed
    /// after it. A branch per vector, taken at random for a few per cent of them, made the
    /// loop 1.7× slower than with no fix-up at all in a timing probe: each miss threw away the
    /// long chains in flight.
    const BLOCK: usize = 64;

    /// What the lanes read: the expansion's coefficients `1/k!`, and the AVX-512 form's
    /// powers `2^(j/16)`, libm's `exp2` of `j/16` (`the_powers_are_exp2`). Constants, so that
    /// a row's call (Softmax's 197 values) makes none of them: made per call, the sixteen
    /// `exp2`s had cost as much as the row's exponentials.
    pub(super) struct Tables {
        pub(super) terms: [f64; TERMS],
        pub(super) powers: [f64; POWERS],
    }

    pub(super) const TABLES: Tables = Tables {
        terms: {
            let (mut terms, mut factorial) = ([1.0; TERMS], 1.0);
            let mut k = 1;
            while k < TERMS {
                factorial *= k as f64;
                terms[k] = 1.0 / factorial;
                k += 1;
            }
            terms
        },
        powers: [
            1.0,
            1.0442737824274138,
            1.0905077326652577,
            1.1387886347566916,
            1.189207115002721,
            1.241857812073484,
            1.2968395546510096,
            1.3542555469368927,
            std::f64::consts::SQRT_2,
            1.4768261459394993,
            1.5422108254079407,
            1.6104903319492543,
            1.681792830507429,
            1.7562521603732995,
            1.8340080864093424,
            1.9152065613971474,
        ],
    };

    /// The widest [`Width::LANES`].
    const MOST_LANES: usize = 8;

    /// One vector width of the lanes.
    trait Width {
        const LANES: usize;
        /// Writes `f32(y − tol)` for `x[..LANES] − shift` to `out[..LANES]` and returns the
        /// mask of the lanes that keep it.
        ///
        /// # Safety
        /// The CPU has the width's features; `x` and `out` hold `LANES` values.
        unsafe fn lanes(tables: &Tables, x: &[f32], shift: f32, out: &mut [f32]) -> u32;
    }

    /// `(v − shift).exp()` for every value, [`Width::LANES`] at a time (the last ones in a
    /// padded vector), every lane the check turns away through `f32::exp`. Inlined into a
    /// caller compiled for the width's features.
    #[inline(always)]
    fn blocks<W: Width>(x: &[f32], shift: f32, out: &mut [f32]) {
        let tables = &TABLES;
        // Per noted vector: its index in the block and the mask of the lanes it kept.
        let mut noted = [(0usize, 0u32); BLOCK];
        let all = (1u32 << W::LANES) - 1;
        for (x, out) in x
            .chunks(W::LANES * BLOCK)
            .zip(out.chunks_mut(W::LANES * BLOCK))
        {
            let mut count = 0;
            let vectors = x.chunks_exact(W::LANES).zip(out.chunks_exact_mut(W::LANES));
            for (k, (v, o)) in vectors.enumerate() {
                // SAFETY: the caller has the features; `v` and `o` hold a vector each.
                let kept = unsafe { W::lanes(tables, v, shift, o) };
                // `count` < BLOCK: at most one note per vector of the block.
                noted[count] = (k, kept);
                count += usize::from(kept != all);
            }
            for &(k, kept) in &noted[..count] {
                for lane in (0..W::LANES).filter(|lane| kept & (1 << lane) == 0) {
                    let i = W::LANES * k + lane;
                    out[i] = (x[i] - shift).exp();
                }
            }
            // The last values in a vector padded with `shift` (lanes that compute e⁰ and are
            // dropped): a DeiT row of 197 scores had left 5 to `f32::exp`, which then took a
            // sixth of the exponentials' time.
            let tail = x.len() / W::LANES * W::LANES;
            if tail < x.len() {
                let count = x.len() - tail;
                let mut padded = [shift; MOST_LANES];
                padded[..count].copy_from_slice(&x[tail..]);
                let mut result = [0.0; MOST_LANES];
                // SAFETY: the caller has the features; both arrays hold a vector.
                let kept = unsafe {
                    W::lanes(tables, &padded[..W::LANES], shift, &mut result[..W::LANES])
                };
                for (lane, o) in out[tail..].iter_mut().enumerate() {
                    *o = match kept & (1 << lane) {
                        0 => (x[tail + lane] - shift).exp(),
                        _ => result[lane],
                    };
                }
            }
        }
    }

    struct Avx2;
    struct Avx512;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp_shifted_avx2(x: &[f32], shift: f32, out: &mut [f32]) {
        blocks::<Avx2>(x, shift, out);
    }

    #[target_feature(enable = "avx512f,avx512vl")]
    pub(super) fn exp_shifted_avx512(x: &[f32], shift: f32, out: &mut [f32]) {
        blocks::<Avx512>(x, shift, out);
    }

    /// `1 ∓ 2⁻³²`: `y` times these is `y ∓ tol` (module docs), rounded once more, which moves
    /// the ends by `2⁻⁵³·y`, far inside the margin.
    const BELOW: f64 = 1.0 - 1.0 / (1u64 << 32) as f64;
    const ABOVE: f64 = 1.0 + 1.0 / (1u64 << 32) as f64;
    /// `1.5·2⁵²`: `n` plus it holds `n` in its low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;

    impl Width for Avx2 {
        const LANES: usize = 4;

        #[inline(always)]
        unsafe fn lanes(tables: &Tables, x: &[f32], shift: f32, out: &mut [f32]) -> u32 {
            let terms = &tables.terms;
            // SAFETY (every intrinsic below): the caller is compiled with AVX2 and FMA; `x`
            // and `out` hold four f32s.
            unsafe {
                // The f32 subtraction `v − shift` does.
                let d = _mm_sub_ps(_mm_loadu_ps(x.as_ptr()), _mm_set1_ps(shift));
                // `LOWEST` for anything below it (`vmaxps` returns its second operand, NaN
                // included, when either is NaN); NaN compares false, so it is outside.
                let d = _mm_max_ps(_mm_set1_ps(LOWEST), d);
                let inside = _mm_cmp_ps::<_CMP_LE_OQ>(d, _mm_set1_ps(HIGHEST));
                // Outside lanes compute whatever their bits give; the check turns them away.
                let x = _mm256_cvtps_pd(d);
                let n = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_pd(x, _mm256_set1_pd(std::f64::consts::LOG2_E)),
                );
                let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(LN2_HI), x);
                let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(LN2_LO), r);
                // Estrin's scheme: a chain of four products rather than Horner's ten.
                let c = |k: usize| _mm256_set1_pd(terms[k]);
                let pair = |k: usize| _mm256_fmadd_pd(c(k + 1), r, c(k));
                let r2 = _mm256_mul_pd(r, r);
                let r4 = _mm256_mul_pd(r2, r2);
                let r8 = _mm256_mul_pd(r4, r4);
                let low = _mm256_fmadd_pd(pair(2), r2, pair(0));
                let middle = _mm256_fmadd_pd(pair(6), r2, pair(4));
                let high = _mm256_fmadd_pd(c(10), r2, pair(8));
                let p = _mm256_fmadd_pd(high, r8, _mm256_fmadd_pd(middle, r4, low));
                // `2ⁿ` from its bits: the exponent bias added to `n` and shifted into place.
                let bits = _mm256_castpd_si256(_mm256_add_pd(n, _mm256_set1_pd(MAGIC)));
                let bits = _mm256_add_epi64(bits, _mm256_set1_epi64x(1023));
                let y = _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64::<52>(bits)));
                let lo = _mm256_cvtpd_ps(_mm256_mul_pd(y, _mm256_set1_pd(BELOW)));
                let hi = _mm256_cvtpd_ps(_mm256_mul_pd(y, _mm256_set1_pd(ABOVE)));
                _mm_storeu_ps(out.as_mut_ptr(), lo);
                _mm_movemask_ps(_mm_and_ps(_mm_cmpeq_ps(lo, hi), inside)) as u32
            }
        }
    }

    impl Width for Avx512 {
        const LANES: usize = 8;

        /// Eight f64 lanes; `k = 16n + j = round(x·16/ln 2)` in the low bits of `x·16/ln 2 +
        /// 1.5·2⁵²`, whose low four pick `2^(j/16)` and whose bits from the fifth on, moved to
        /// the exponent's place, make it `2^(n + j/16)`.
        #[inline(always)]
        unsafe fn lanes(tables: &Tables, x: &[f32], shift: f32, out: &mut [f32]) -> u32 {
            // SAFETY (every intrinsic below): the caller is compiled with AVX-512 F and VL;
            // `x` and `out` hold eight f32s; `powers` holds 16 f64.
            unsafe {
                let d = _mm256_sub_ps(_mm256_loadu_ps(x.as_ptr()), _mm256_set1_ps(shift));
                let d = _mm256_max_ps(_mm256_set1_ps(LOWEST), d);
                let inside = _mm256_cmp_ps_mask::<_CMP_LE_OQ>(d, _mm256_set1_ps(HIGHEST));
                let x = _mm512_cvtps_pd(d);
                let magic = _mm512_set1_pd(MAGIC);
                let steps = POWERS as f64;
                // `|k| ≤ 16·160`, so `k·LN2_HI/16` is exact and `t` stays in MAGIC's binade.
                let t = _mm512_fmadd_pd(x, _mm512_set1_pd(steps * std::f64::consts::LOG2_E), magic);
                let k = _mm512_sub_pd(t, magic);
                let r = _mm512_fnmadd_pd(k, _mm512_set1_pd(LN2_HI / steps), x);
                let r = _mm512_fnmadd_pd(k, _mm512_set1_pd(LN2_LO / steps), r);
                let bits = _mm512_castpd_si512(t);
                let powers = &tables.powers;
                let power = _mm512_permutex2var_pd(
                    _mm512_loadu_pd(powers.as_ptr()),
                    bits,
                    _mm512_loadu_pd(powers[8..].as_ptr()),
                );
                // `k`'s low 16 bits (those of `t`'s mantissa, two's complement) at the top,
                // less `j`: `n·2⁵²`, which added to the power's bits scales it by `2ⁿ` (its
                // exponent stays normal: `|n| ≤ 160`).
                let exponent =
                    _mm512_and_si512(_mm512_slli_epi64::<48>(bits), _mm512_set1_epi64(-1 << 52));
                let scale =
                    _mm512_castsi512_pd(_mm512_add_epi64(_mm512_castpd_si512(power), exponent));
                let c = |i: usize| _mm512_set1_pd(tables.terms[i]);
                const { assert!(WIDE_TERMS == 6) };
                let r2 = _mm512_mul_pd(r, r);
                let low = _mm512_fmadd_pd(c(1), r, c(0));
                let middle = _mm512_fmadd_pd(c(3), r, c(2));
                let high = _mm512_fmadd_pd(c(5), r, c(4));
                let p = _mm512_fmadd_pd(_mm512_fmadd_pd(high, r2, middle), r2, low);
                let y = _mm512_mul_pd(scale, p);
                let lo = _mm512_cvtpd_ps(_mm512_mul_pd(y, _mm512_set1_pd(BELOW)));
                let hi = _mm512_cvtpd_ps(_mm512_mul_pd(y, _mm512_set1_pd(ABOVE)));
                _mm256_storeu_ps(out.as_mut_ptr(), lo);
                u32::from(_mm256_cmp_ps_mask::<_CMP_EQ_OQ>(lo, hi) & inside)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every form this CPU can run: the dispatched one, and AVX2 where AVX-512 took its place.
    /// An implementation of [`exp_shifted`].
    type Form = fn(&[f32], f32, &mut [f32]);

    fn forms() -> Vec<(&'static str, Form)> {
        let mut forms: Vec<(&str, Form)> = vec![("dispatched", exp_shifted)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[allow(unsafe_code)]
            // SAFETY: AVX2 and FMA were checked just above.
            forms.push(("avx2", |x, s, o| unsafe {
                lanes::exp_shifted_avx2(x, s, o)
            }));
        }
        forms
    }

    fn check(values: &[f32], shift: f32) {
        for (form, exp) in forms() {
            let mut got = vec![0.0; values.len()];
            exp(values, shift, &mut got);
            for (&v, g) in values.iter().zip(&got) {
                let want = (v - shift).exp();
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{form}: exp({v:e} − {shift:e}) = {want:e}"
                );
            }
        }
    }

    /// The AVX-512 form's powers are libm's `exp2(j/16)`, and its terms `1/k!`.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_powers_are_exp2() {
        let tables = &lanes::TABLES;
        for (j, &power) in tables.powers.iter().enumerate() {
            assert_eq!(power, libm::exp2(j as f64 / 16.0), "2^({j}/16)");
        }
        let mut factorial = 1.0;
        for (k, &term) in tables.terms.iter().enumerate() {
            factorial *= k.max(1) as f64;
            assert_eq!(term, 1.0 / factorial, "1/{k}!");
        }
    }

    #[test]
    fn special_values_and_every_length() {
        let special = [
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN,
            LOWEST,
            LOWEST.next_down(),
            HIGHEST,
            HIGHEST.next_up(),
            -103.97,
            -103.98,
            -87.3,
            88.72,
            88.73,
            1.0,
            -1.0,
        ];
        for len in 0..=special.len() {
            check(&special[..len], 0.0);
        }
        check(&special, 2.5);
        check(&special, f32::INFINITY);
    }

    /// Softmax's rows: scores less their maximum, at several spreads.
    #[test]
    fn equals_exp_on_softmax_rows() {
        let mut rng = Rng::new(9);
        for spread in [0.01f32, 1.0, 4.0, 30.0] {
            let v: Vec<f32> = (0..100_003).map(|_| spread * rng.normal()).collect();
            let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            check(&v, max);
        }
    }

    /// One f32 in every 4,096 over the whole range, each sign; with every f32 up to the
    /// lanes' largest (`cargo test --release -p qvit-core -- --ignored every_f32`), the same.
    #[test]
    fn equals_exp_across_the_f32_range() {
        let v: Vec<f32> = (0..=u32::MAX >> 12)
            .map(|b| f32::from_bits(b << 12))
            .collect();
        check(&v, 0.0);
    }

    #[test]
    #[ignore = "every f32 up to the lanes' largest: 25 s on two cores"]
    fn equals_exp_on_every_f32() {
        use rayon::prelude::*;
        (0..=u32::MAX >> 16).into_par_iter().for_each(|high| {
            let v: Vec<f32> = (0..1u32 << 16)
                .map(|low| f32::from_bits(high << 16 | low))
                .filter(|&v| v <= HIGHEST)
                .collect();
            check(&v, 0.0);
        });
    }
}
