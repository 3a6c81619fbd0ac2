//! A uniform quantizer's fake-quant arithmetic over slices of values, eight lanes at a time on
//! AVX2: `x̂ = (clamp(round(x/s) + z, qmin, qmax) − z)·s`, and with a migration factor `m` and a
//! shift `h`, `x̂ = m·Q((x − h)/m) + h`.
//!
//! Every lane computes exactly what the scalar expression does: IEEE division, the same
//! rounding, a clamp that keeps NaN and the sign of zero (`vmaxps`/`vminps` return their second
//! operand on NaN or equal zeros, so the value goes second), then the same subtraction and
//! product. Half-up rounding is `⌊x + ½⌋` with NaN rounding to 0, as
//! [`round_half_up`](super::quantizer::round_half_up) does; half-even is the
//! instruction's nearest-even mode. With the reciprocals a prepared point keeps, the lanes
//! multiply instead (sixteen with AVX-512) and leave the values near a rounding jump to the
//! definition ([`Reciprocals`], `by_reciprocals`); [`fake_channels`] takes a block of short
//! channels in one call. Tests hold every path bit-equal to the scalar reference.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
mod by_reciprocals;

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
    /// What lets the lanes multiply rather than divide, where the caller has it.
    pub reciprocals: Option<Reciprocals<'a>>,
}

impl<'a> Params<'a> {
    /// Channel `c`'s parameters, each `One`.
    fn channel(&self, c: usize) -> Params<'a> {
        let one = |q: Param| Param::One(q.at(c));
        Params {
            scale: one(self.scale),
            zero: one(self.zero),
            migration: self.migration.map(|(m, h)| (one(m), one(h))),
            reciprocals: self.reciprocals.map(|r| r.channel(c)),
        }
    }
}

/// Each scale's and migration factor's reciprocal, and how far from its zero-point a value may
/// lie before the grid's clamp decides its code: what lets [`fake_slice`] multiply where the
/// definition divides, with AVX2 or AVX-512.
///
/// The quotient `x/s` rounded, `v`, decides the code through its rounding to an integer, and
/// `x·(1/s)` (or `d·((1/m)·(1/s))` for `d = x − h` migrated) lies within `6.2·2⁻²⁴·|v|` of
/// it: the definition's one or two rounded operations and the product's two or four each add
/// at most `2⁻²⁴` relative. So a product farther than `8·2⁻²⁴·bound` from every point at
/// which the rounding jumps (half-integers) rounds as `v` does while it lies within
/// `1.29·bound` steps, and past `bound` steps both codes clamp to the same end of the grid. A
/// lane near a jump (or NaN, or ±∞) takes the definition instead. Every other lane is the
/// definition's bits: the rest of the arithmetic (zero-point, clamp, scale, migration) is
/// exact or the same operations on the same code (`by_reciprocals`). With these lanes,
/// fake-quant on EfficientViT-B1 at batch 8 runs at 0.86–0.87× the fp32 executor's speed
/// (0.78× dividing; `qvit bench efficientvit-b1 --executors fp32,fake --batch 8`, BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct Reciprocals<'a> {
    /// `1/s`, rounded.
    pub scale: Param<'a>,
    /// `1/m`, rounded, where the slice is migrated.
    pub migration: Option<Param<'a>>,
    /// `max(qmax − z, z − qmin) + 2` over the slice's zero-points.
    pub bound: f32,
}

impl<'a> Reciprocals<'a> {
    /// Channel `c`'s reciprocals, each `One`.
    fn channel(&self, c: usize) -> Reciprocals<'a> {
        Reciprocals {
            scale: Param::One(self.scale.at(c)),
            migration: self.migration.map(|m| Param::One(m.at(c))),
            bound: self.bound,
        }
    }
}

/// The reciprocals of `values` when every one lies in `[2⁻¹⁰⁰, 2¹⁰⁰]`: a normal number whose
/// products with normal values stay within [`Reciprocals`]' error. `None` otherwise.
pub fn reciprocals(values: &[f32]) -> Option<Vec<f32>> {
    let (least, most) = (2f32.powi(-100), 2f32.powi(100));
    values
        .iter()
        .map(|&v| (least..=most).contains(&v).then(|| 1.0 / v))
        .collect()
}

/// [`Reciprocals::bound`] for a grid and its zero-points, when it is small enough that the
/// lanes' sums with ½ stay exact (below 2²⁰); `None` otherwise.
pub fn code_bound(grid: &Grid, zeros: &[f32]) -> Option<f32> {
    let most = zeros
        .iter()
        .map(|&z| (grid.qmax - z).max(z - grid.qmin))
        .fold(0.0f32, f32::max);
    (most.is_finite() && most < (1 << 20) as f32).then_some(most + 2.0)
}

/// Replaces every `x` of a `[channels, inner]` block by its fake-quantized value, channel
/// `c`'s run `xs[c·inner..(c + 1)·inner]` with `p`'s parameters at `c`: [`fake_slice`] over
/// each run with its `One` parameters, bit for bit. With the reciprocals, one call
/// runs every channel, each run's last values in a partial vector: a call per channel costs
/// more than a short run's values (trio-vit's migrated 8-bit maps of B1 at 14×14 and 7×7 in
/// 14.6 and 17.2 µs against 24.5 and 28.8 by calls per channel with AVX-512, 23.2 and 23.6
/// against 30.6 and 35.7 with AVX2: `cargo bench -p qvit-core --bench fp32 -- fake_quant`,
/// Emerald Rapids, BENCHMARKS.md).
pub fn fake_channels(xs: &mut [f32], inner: usize, p: &Params, grid: &Grid) {
    assert!(inner > 0, "channels of at least one value");
    let channels = xs.len() / inner;
    assert_eq!(
        channels * inner,
        xs.len(),
        "whole channels of {inner} values"
    );
    assert!(
        p.scale.covers(channels)
            && p.zero.covers(channels)
            && p.migration
                .is_none_or(|(m, h)| m.covers(channels) && h.covers(channels))
            && p.reciprocals.is_none_or(|r| {
                r.scale.covers(channels) && r.migration.is_none_or(|m| m.covers(channels))
            }),
        "a parameter slice is shorter than the {channels} channels it applies to"
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(r) = &p.reciprocals
        && by_reciprocals::channels(xs, inner, p, r, grid)
    {
        return;
    }
    for (c, run) in xs.chunks_exact_mut(inner).enumerate() {
        fake_slice(run, &p.channel(c), grid);
    }
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
    {
        if let Some(r) = &p.reciprocals
            && by_reciprocals::slice(xs, p, r, grid)
        {
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was checked just above; the parameters cover `xs` (asserted).
            unsafe { fake_slice_avx2(xs, p, grid) };
            return;
        }
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
        reciprocals: None,
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

    /// The lanes narrower than this CPU's widest that it also runs (AVX2 on an AVX-512 CPU),
    /// which the calls through [`fake_slice`] and [`fake_channels`] do not reach.
    #[cfg(target_arch = "x86_64")]
    fn narrower_lanes() -> Vec<crate::exec::cpu::FloatLanes> {
        use crate::exec::cpu::{FloatLanes, float_lanes};
        [FloatLanes::Avx2Fma]
            .into_iter()
            .filter(|&lanes| lanes < float_lanes())
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
            reciprocals: None,
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
            let (inv_scale, inv_m) = (reciprocals(&scale).unwrap(), reciprocals(&m).unwrap());
            // Each case with and without the reciprocals that let the lanes multiply.
            let cases = [
                (Param::One(0.37), Param::One(3.0), None, (1.0 / 0.37, None)),
                (Param::One(0.5), Param::One(0.0), None, (2.0, None)),
                (Param::Each(&scale), Param::Each(&zero), None, (0.0, None)),
                (
                    Param::Each(&scale),
                    Param::Each(&zero),
                    Some((Param::Each(&m[..]), Param::Each(&h[..]))),
                    (0.0, Some(Param::Each(&inv_m[..]))),
                ),
                (
                    Param::One(0.5),
                    Param::One(0.0),
                    Some((Param::One(2.0), Param::One(-0.25))),
                    (2.0, Some(Param::One(0.5))),
                ),
            ];
            let fast = [false, true];
            for ((scale, zero, migration, (inverse, inv_m)), fast) in
                cases.into_iter().flat_map(|c| fast.map(|f| (c, f)))
            {
                let inv_scale = match scale {
                    Param::One(_) => Param::One(inverse),
                    Param::Each(_) => Param::Each(&inv_scale),
                };
                let zeros = match zero {
                    Param::One(z) => vec![z],
                    Param::Each(z) => z.to_vec(),
                };
                let p = Params {
                    scale,
                    zero,
                    migration,
                    reciprocals: fast.then(|| Reciprocals {
                        scale: inv_scale,
                        migration: inv_m,
                        bound: code_bound(&grid, &zeros).unwrap(),
                    }),
                };
                // Values whose quotient lies a few bits from a half-integer, where a product
                // by the reciprocal may round the other way.
                let near: Vec<f32> = (0..len)
                    .map(|i| {
                        let tie = (rng.below(40) as f32 - 20.0 + 0.5) * scale.at(i);
                        let x = migration.map_or(tie, |(m, h)| tie * m.at(i) + h.at(i));
                        f32::from_bits((x.to_bits() as i64 + rng.below(9) as i64 - 4) as u32)
                    })
                    .collect();
                for xs in [&xs, &near] {
                    let mut got = xs.clone();
                    fake_slice(&mut got, &p, &grid);
                    let mut widths = vec![got];
                    #[cfg(target_arch = "x86_64")]
                    if let Some(r) = &p.reciprocals {
                        for lanes in narrower_lanes() {
                            let mut got = xs.clone();
                            assert!(by_reciprocals::slice_in_lanes(
                                lanes, &mut got, &p, r, &grid
                            ));
                            widths.push(got);
                        }
                    }
                    for (i, (&x, &g)) in
                        widths.iter().flat_map(|got| xs.iter().zip(got)).enumerate()
                    {
                        let i = i % xs.len();
                        let (s, z) = (scale.at(i), zero.at(i));
                        let want = match migration {
                            None => grid.fake(x, s, z),
                            Some((m, h)) => grid.fake_migrated(x, s, z, m.at(i), h.at(i)),
                        };
                        assert!(
                            same(g, want),
                            "{rounding:?} {fast} x = {x:e}: {g:e} vs {want:e}"
                        );
                    }
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
        if crate::exec::cpu::float_lanes() == crate::exec::cpu::FloatLanes::Baseline {
            eprintln!("note: no AVX2 here: the lanes that multiply by reciprocals untested");
        }
    }

    /// A block of channels in one call: every value is the scalar definition's with its
    /// channel's parameters, for runs shorter than a vector, of whole vectors and with a
    /// masked last one, migrated or not, at both roundings, on hard values and on values a
    /// few bits from a tie.
    #[test]
    fn channels_equal_the_scalar_reference() {
        let mut rng = Rng::new(8);
        for (channels, inner, rounding, migrated) in [
            (5, 1, Rounding::HalfUp, false),
            (7, 15, Rounding::HalfEven, true),
            (4, 16, Rounding::HalfUp, true),
            (6, 17, Rounding::HalfEven, false),
            (9, 49, Rounding::HalfUp, true),
            (3, 199, Rounding::HalfEven, true),
        ] {
            let grid = Grid {
                qmin: -128.0,
                qmax: 127.0,
                rounding,
            };
            let per = |lo: f32, hi: f32, rng: &mut Rng| -> Vec<f32> {
                (0..channels).map(|_| rng.uniform(lo, hi)).collect()
            };
            let (scale, m, h) = (
                per(0.01, 2.0, &mut rng),
                per(0.25, 4.0, &mut rng),
                per(-1.0, 1.0, &mut rng),
            );
            let zero: Vec<f32> = per(-9.0, 9.0, &mut rng).iter().map(|z| z.round()).collect();
            let (inv_scale, inv_m) = (reciprocals(&scale).unwrap(), reciprocals(&m).unwrap());
            let migration = migrated.then(|| (Param::Each(&m[..]), Param::Each(&h[..])));
            let p = Params {
                scale: Param::Each(&scale),
                zero: Param::Each(&zero),
                migration,
                reciprocals: Some(Reciprocals {
                    scale: Param::Each(&inv_scale),
                    migration: migrated.then_some(Param::Each(&inv_m[..])),
                    bound: code_bound(&grid, &zero).unwrap(),
                }),
            };
            let near: Vec<f32> = (0..channels * inner)
                .map(|i| {
                    let c = i / inner;
                    let tie = (rng.below(40) as f32 - 20.0 + 0.5) * scale[c];
                    let x = if migrated { tie * m[c] + h[c] } else { tie };
                    f32::from_bits((x.to_bits() as i64 + rng.below(9) as i64 - 4) as u32)
                })
                .collect();
            for xs in [hard_values(&mut rng, channels * inner), near] {
                let mut got = xs.clone();
                fake_channels(&mut got, inner, &p, &grid);
                let mut widths = vec![got];
                #[cfg(target_arch = "x86_64")]
                for lanes in narrower_lanes() {
                    let mut got = xs.clone();
                    let r = p.reciprocals.as_ref().unwrap();
                    assert!(by_reciprocals::channels_in_lanes(
                        lanes,
                        &mut got,
                        inner,
                        &p,
                        (r, &grid)
                    ));
                    widths.push(got);
                }
                for (i, (&x, &g)) in widths.iter().flat_map(|got| xs.iter().zip(got)).enumerate() {
                    let i = i % xs.len();
                    let c = i / inner;
                    let want = match migrated {
                        false => grid.fake(x, scale[c], zero[c]),
                        true => grid.fake_migrated(x, scale[c], zero[c], m[c], h[c]),
                    };
                    assert!(same(g, want), "{rounding:?} x = {x:e}: {g:e} vs {want:e}");
                }
            }
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
            reciprocals: None,
        };
        let grid = Grid {
            qmin: 0.0,
            qmax: 1.0,
            rounding: Rounding::HalfUp,
        };
        fake_slice(&mut [0.0; 4], &p, &grid);
    }
}
