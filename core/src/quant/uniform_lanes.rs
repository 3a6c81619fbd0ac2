//! A uniform quantizer's fake-quant arithmetic over slices of values, eight lanes at a time on
//! AVX2: `x̂ = (clamp(round(x/s) + z, qmin, qmax) − z)·s`, and with a migration factor `m` and a
//! shift `h`, `x̂ = m·Q((x − h)/m) + h`.
//!
//! Every lane computes exactly what the scalar expression does: IEEE division, the same
//! rounding, a clamp that keeps NaN and the sign of zero (`vmaxps`/`vminps` return their second
//! operand on NaN or equal zeros, so the value goes second), then the same subtraction and
//! product. Half-up rounding is `⌊x + ½⌋` with NaN rounding to 0, as
//! [`round_half_up`](super::quantizer::round_half_up) does; half-even is the
//! instruction's nearest-even mode. Tests hold every path bit-equal to the scalar reference.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::quantizer::Rounding;

/// The integer grid of a uniform quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub qmin: f32,
    pub qmax: f32,
    pub rounding: Rounding,
}

impl Grid {
    /// The scalar reference for one value with scale `s` and zero-point `z`.
    #[inline(always)]
    pub fn fake(&self, x: f32, s: f32, z: f32) -> f32 {
        ((self.rounding.round(x / s) + z).clamp(self.qmin, self.qmax) - z) * s
    }

    /// The integer code of one value, `clamp(round(x/s) + z, qmin, qmax)` (NaN to 0): what
    /// [`Uniform::code_rounded`](super::quantizer::Uniform::code_rounded) gives, as an i32.
    #[inline(always)]
    pub fn code(&self, x: f32, s: f32, z: f32) -> i32 {
        (self.rounding.round(x / s) + z).clamp(self.qmin, self.qmax) as i32
    }

    /// The scalar reference with migration `m` and shift `h`.
    #[inline(always)]
    pub fn fake_migrated(&self, x: f32, s: f32, z: f32, m: f32, h: f32) -> f32 {
        m * self.fake((x - h) / m, s, z) + h
    }
}

/// Where a slice's per-element parameters come from: one value for the whole slice (a run of
/// one channel) or one per element (a channels-last row).
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    One(f32),
    Each(&'a [f32]),
}

impl Param<'_> {
    #[inline(always)]
    fn at(self, i: usize) -> f32 {
        match self {
            Param::One(v) => v,
            Param::Each(s) => s[i],
        }
    }

    fn covers(self, len: usize) -> bool {
        match self {
            Param::One(_) => true,
            Param::Each(s) => s.len() >= len,
        }
    }
}

/// A slice's scale and zero-point, and its migration factor and shift if it has them.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    pub scale: Param<'a>,
    pub zero: Param<'a>,
    /// `(m, h)`.
    pub migration: Option<(Param<'a>, Param<'a>)>,
}

/// Replaces every `x` in `xs` by its fake-quantized value.
pub fn fake_slice(xs: &mut [f32], p: &Params, grid: &Grid) {
    let n = xs.len();
    assert!(
        p.scale.covers(n)
            && p.zero.covers(n)
            && p.migration.is_none_or(|(m, h)| m.covers(n) && h.covers(n)),
        "a parameter slice is shorter than the {n} values it applies to"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was checked just above; the parameters cover `xs` (asserted).
        unsafe { fake_slice_avx2(xs, p, grid) };
        return;
    }
    fake_scalar(xs, 0, p, grid);
}

/// `out[i] = grid.code(xs[i], s, z)` for one scale and zero-point (an image's input
/// quantization), eight lanes at a time on AVX2.
pub fn code_slice(xs: &[f32], s: f32, z: f32, grid: &Grid, out: &mut [i32]) {
    assert_eq!(xs.len(), out.len(), "one code per value");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was checked just above.
        unsafe { code_slice_avx2(xs, s, z, grid, out) };
        return;
    }
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = grid.code(x, s, z);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn code_slice_avx2(xs: &[f32], s: f32, z: f32, grid: &Grid, out: &mut [i32]) {
    let (lo, hi) = (_mm256_set1_ps(grid.qmin), _mm256_set1_ps(grid.qmax));
    let (sv, zv) = (_mm256_set1_ps(s), _mm256_set1_ps(z));
    let whole = xs.len() / 8 * 8;
    for (x, o) in xs[..whole]
        .chunks_exact(8)
        .zip(out[..whole].chunks_exact_mut(8))
    {
        // SAFETY: `x` and `o` hold eight values each.
        unsafe {
            let q = _mm256_add_ps(
                round(
                    _mm256_div_ps(_mm256_loadu_ps(x.as_ptr()), sv),
                    grid.rounding,
                ),
                zv,
            );
            let q = _mm256_min_ps(hi, _mm256_max_ps(lo, q));
            // NaN (left by half-even rounding) converts to 0, as the scalar `as i32` does;
            // the conversion would make it i32::MIN.
            let q = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(q, q), q);
            _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm256_cvttps_epi32(q));
        }
    }
    for (o, &x) in out[whole..].iter_mut().zip(&xs[whole..]) {
        *o = grid.code(x, s, z);
    }
}

/// The scalar reference from element `from` on.
#[inline(always)]
fn fake_scalar(xs: &mut [f32], from: usize, p: &Params, grid: &Grid) {
    match p.migration {
        None => {
            for (i, x) in xs.iter_mut().enumerate().skip(from) {
                *x = grid.fake(*x, p.scale.at(i), p.zero.at(i));
            }
        }
        Some((m, h)) => {
            for (i, x) in xs.iter_mut().enumerate().skip(from) {
                *x = grid.fake_migrated(*x, p.scale.at(i), p.zero.at(i), m.at(i), h.at(i));
            }
        }
    }
}

/// Eight parameters at `i`: a broadcast or a load.
///
/// # Safety
/// AVX2 must be available and an `Each` slice must hold `i + 8` values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lanes(p: Param, i: usize) -> __m256 {
    // SAFETY: the caller guarantees AVX2 and the slice's length.
    unsafe {
        match p {
            Param::One(v) => _mm256_set1_ps(v),
            Param::Each(s) => _mm256_loadu_ps(s.as_ptr().add(i)),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn round(v: __m256, rounding: Rounding) -> __m256 {
    match rounding {
        Rounding::HalfUp => {
            let t = _mm256_add_ps(v, _mm256_set1_ps(0.5));
            let floor = _mm256_round_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
            // NaN lanes become +0, as the scalar rounding's integer conversion makes them.
            _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(t, t), floor)
        }
        Rounding::HalfEven => {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fake_lanes(x: __m256, s: __m256, z: __m256, lo: __m256, hi: __m256, r: Rounding) -> __m256 {
    let q = _mm256_add_ps(round(_mm256_div_ps(x, s), r), z);
    let q = _mm256_min_ps(hi, _mm256_max_ps(lo, q));
    _mm256_mul_ps(_mm256_sub_ps(q, z), s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fake_slice_avx2(xs: &mut [f32], p: &Params, grid: &Grid) {
    let (lo, hi) = (_mm256_set1_ps(grid.qmin), _mm256_set1_ps(grid.qmax));
    let r = grid.rounding;
    let whole = xs.len() / 8 * 8;
    let ptr = xs.as_mut_ptr();
    // SAFETY (every block below): i + 8 ≤ whole ≤ xs.len(), and the parameter slices are at
    // least as long as `xs` (asserted by the caller).
    match p.migration {
        None => {
            for i in (0..whole).step_by(8) {
                unsafe {
                    let (s, z) = (lanes(p.scale, i), lanes(p.zero, i));
                    let x = _mm256_loadu_ps(ptr.add(i));
                    _mm256_storeu_ps(ptr.add(i), fake_lanes(x, s, z, lo, hi, r));
                }
            }
        }
        Some((m, h)) => {
            for i in (0..whole).step_by(8) {
                unsafe {
                    let (s, z) = (lanes(p.scale, i), lanes(p.zero, i));
                    let (m, h) = (lanes(m, i), lanes(h, i));
                    let t = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(ptr.add(i)), h), m);
                    let y = _mm256_add_ps(_mm256_mul_ps(m, fake_lanes(t, s, z, lo, hi, r)), h);
                    _mm256_storeu_ps(ptr.add(i), y);
                }
            }
        }
    }
    if whole < xs.len() {
        tail_avx2(xs, whole, p, grid);
    }
}

/// The last `xs.len() − from` (< 8) elements, through the lanes of a padded copy (the scalar
/// loop cost more than the rest of a short run). Padding lanes compute with scale 1 and are
/// dropped.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tail_avx2(xs: &mut [f32], from: usize, p: &Params, grid: &Grid) {
    let n = xs.len() - from;
    let pad = |q: Param, fill: f32| -> [f32; 8] {
        std::array::from_fn(|i| if i < n { q.at(from + i) } else { fill })
    };
    let (scale, zero) = (pad(p.scale, 1.0), pad(p.zero, 0.0));
    let migration = p.migration.map(|(m, h)| (pad(m, 1.0), pad(h, 0.0)));
    let mut x = [0.0f32; 8];
    x[..n].copy_from_slice(&xs[from..]);
    let lanes = Params {
        scale: Param::Each(&scale),
        zero: Param::Each(&zero),
        migration: migration
            .as_ref()
            .map(|(m, h)| (Param::Each(&m[..]), Param::Each(&h[..]))),
    };
    fake_slice_avx2(&mut x, &lanes, grid);
    xs[from..].copy_from_slice(&x[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Values that stress every step: ties at both roundings, zeros of both signs, values
    /// past the grid and past 2^23, infinities and NaN, and random values of every magnitude.
    fn hard_values(rng: &mut Rng, n: usize) -> Vec<f32> {
        let special = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.499_999_97,
            -0.499_999_97,
            8_388_607.5,
            -8_388_608.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            -1e-40,
        ];
        (0..n)
            .map(|i| match i % 4 {
                0 => special[rng.below(special.len())],
                1 => rng.uniform(-300.0, 300.0).round() * 0.5, // ties once divided by 0.5
                2 => f32::from_bits(rng.next_u64() as u32),
                _ => rng.uniform(-4.0, 4.0),
            })
            .collect()
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn by_hand() {
        // Scale 0.5, zero-point 3, 0..=7: 1.25 → 2.5 → 3 (half-up) or 2 (even) → +3, −3 → 1.5
        // or 1.0; 10 saturates at 7 − 3 = 4 steps = 2.0; −3 at −3 steps = −1.5.
        let p = Params {
            scale: Param::One(0.5),
            zero: Param::One(3.0),
            migration: None,
        };
        for (rounding, want) in [
            (Rounding::HalfUp, [1.5, 2.0, -1.5]),
            (Rounding::HalfEven, [1.0, 2.0, -1.5]),
        ] {
            let grid = Grid {
                qmin: 0.0,
                qmax: 7.0,
                rounding,
            };
            let mut xs = [1.25, 10.0, -3.0];
            fake_slice(&mut xs, &p, &grid);
            assert_eq!(xs, want, "{rounding:?}");
        }
    }

    #[test]
    fn every_lane_equals_the_scalar_reference() {
        let mut rng = Rng::new(5);
        for (len, rounding, (qmin, qmax)) in [
            (1003, Rounding::HalfUp, (0.0, 255.0)),
            (1003, Rounding::HalfEven, (-128.0, 127.0)),
            (7, Rounding::HalfUp, (-8.0, 7.0)),
            (16, Rounding::HalfEven, (0.0, 15.0)),
            (197 * 3, Rounding::HalfUp, (-2.0, 1.0)),
        ] {
            let grid = Grid {
                qmin,
                qmax,
                rounding,
            };
            let xs = hard_values(&mut rng, len);
            let per = |lo: f32, hi: f32, rng: &mut Rng| -> Vec<f32> {
                (0..len).map(|_| rng.uniform(lo, hi)).collect()
            };
            let (scale, zero) = (per(0.01, 2.0, &mut rng), per(0.0, 9.0, &mut rng));
            let zero: Vec<f32> = zero.iter().map(|z| z.round()).collect();
            let (m, h) = (per(0.25, 4.0, &mut rng), per(-1.0, 1.0, &mut rng));
            let cases = [
                (Param::One(0.37), Param::One(3.0), None),
                (Param::Each(&scale), Param::Each(&zero), None),
                (
                    Param::Each(&scale),
                    Param::Each(&zero),
                    Some((Param::Each(&m[..]), Param::Each(&h[..]))),
                ),
                (
                    Param::One(0.5),
                    Param::One(0.0),
                    Some((Param::One(2.0), Param::One(-0.25))),
                ),
            ];
            for (scale, zero, migration) in cases {
                let p = Params {
                    scale,
                    zero,
                    migration,
                };
                let mut got = xs.clone();
                fake_slice(&mut got, &p, &grid);
                for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
                    let (s, z) = (scale.at(i), zero.at(i));
                    let want = match migration {
                        None => grid.fake(x, s, z),
                        Some((m, h)) => grid.fake_migrated(x, s, z, m.at(i), h.at(i)),
                    };
                    assert!(same(g, want), "{rounding:?} x = {x:e}: {g:e} vs {want:e}");
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        if !avx2 {
            eprintln!("note: this CPU has no AVX2: only the scalar fake-quant was tested");
        }
    }

    /// Codes at both roundings, on a signed and an unsigned grid, odd lengths: every lane
    /// equals [`Grid::code`], which equals the quantizer's own code.
    #[test]
    fn codes_equal_the_scalar_reference() {
        use super::super::quantizer::Uniform;
        let mut rng = Rng::new(9);
        for (len, rounding, (bits, symmetric)) in [
            (1003, Rounding::HalfUp, (8, false)),
            (77, Rounding::HalfEven, (8, true)),
            (5, Rounding::HalfUp, (4, true)),
        ] {
            let q = Uniform::per_tensor(bits, symmetric, -2.5, 3.0);
            let (s, z) = q.parameters(0);
            let (qmin, qmax) = Uniform::levels(bits, symmetric);
            let grid = Grid {
                qmin,
                qmax,
                rounding,
            };
            let xs = hard_values(&mut rng, len);
            let mut got = vec![7; len];
            code_slice(&xs, s, z, &grid, &mut got);
            for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
                let want = q.code_rounded(x, 0, rounding) as i32;
                assert_eq!(grid.code(x, s, z), want, "{x}");
                assert_eq!(g, want, "{rounding:?} lane {i}: {x}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "shorter")]
    fn short_parameters_are_refused() {
        let p = Params {
            scale: Param::Each(&[1.0; 3]),
            zero: Param::One(0.0),
            migration: None,
        };
        let grid = Grid {
            qmin: 0.0,
            qmax: 1.0,
            rounding: Rounding::HalfUp,
        };
        fake_slice(&mut [0.0; 4], &p, &grid);
    }
}
