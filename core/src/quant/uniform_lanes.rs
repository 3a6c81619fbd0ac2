//! A uniform quantizer's fake-quant arithmetic over slices of values, eight lanes at a time on
//! AVX2: `x̂ = (clamp(round(x/s) + z, qmin, qmax) − z)·s`, and with a migration factor `m` and a
//! shift `h`, `x̂ = m·Q((x − h)/m) + h`.
//!
//! Every lane computes exactly what the scalar expression does: IEEE division, the same
//! rounding, a clamp that keeps NaN and the sign of zero (`vmaxps`/`vminps` return their second
//! operand on NaN or equal zeros, so the value goes second), then the same subtraction and
//! product. Half-up rounding is `⌊x + ½⌋` with NaN rounding to 0, as
//! [`round_half_up`](super::quantizer::round_half_up) does; half-even is the
//! instruction's nearest-even mode. With AVX-512 and the reciprocals a prepared point keeps,
//! sixteen lanes multiply instead and leave the values near a rounding jump to the definition
//! ([`Reciprocals`]); [`fake_channels`] takes a block of short channels in one call. Tests
//! hold every path bit-equal to the scalar reference.
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

impl<'a> Param<'a> {
    /// The parameters from element `from` on.
    fn from(self, from: usize) -> Param<'a> {
        match self {
            Param::One(v) => Param::One(v),
            Param::Each(s) => Param::Each(&s[from..]),
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

    /// The parameters from element `from` on.
    fn from(&self, from: usize) -> Params<'a> {
        Params {
            scale: self.scale.from(from),
            zero: self.zero.from(from),
            migration: self.migration.map(|(m, h)| (m.from(from), h.from(from))),
            reciprocals: self.reciprocals.map(|r| Reciprocals {
                scale: r.scale.from(from),
                migration: r.migration.map(|m| m.from(from)),
                ..r
            }),
        }
    }
}

/// Each scale's and migration factor's reciprocal, and how far from its zero-point a value may
/// lie before the grid's clamp decides its code: what lets [`fake_slice`] multiply where the
/// definition divides, with AVX-512.
///
/// The quotient `x/s` rounded, `v`, decides the code through its rounding to an integer, and
/// `x·(1/s)` (or `d·((1/m)·(1/s))` for `d = x − h` migrated) lies within `6.2·2⁻²⁴·|v|` of
/// it: the definition's one or two rounded operations and the product's two or four each add
/// at most `2⁻²⁴` relative. So a product farther than `8·2⁻²⁴·bound` from every point at
/// which the rounding jumps (half-integers) rounds as `v` does while it lies within
/// `1.29·bound` steps, and past `bound` steps both codes clamp to the same end of the grid. A
/// lane near a jump (or NaN, or ±∞) takes the definition instead. Every other lane is the
/// definition's bits: the rest of the arithmetic (zero-point, clamp, scale, migration) is
/// exact or the same operations on the same code ([`fast`]). With these lanes, fake-quant on
/// EfficientViT-B1 at batch 8 runs at 0.86× the fp32 executor's speed (0.78× before).
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
/// each run with its `One` parameters, bit for bit. With AVX-512 and the reciprocals, one call
/// runs every channel, each run's last values in a masked vector: a call per channel costs
/// more than a short run's values (trio-vit's migrated 8-bit maps of B1 at 14×14 and 7×7 in
/// 14.9 and 17.0 µs against 19.3 and 20.5 by calls per channel, `cargo bench -p qvit-core
/// --bench fp32 -- fake_quant`, Emerald Rapids).
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
        && crate::exec::cpu::float_lanes() == crate::exec::cpu::FloatLanes::Avx512
        // SAFETY: AVX-512F was checked (`float_lanes` reports only what the CPU has); the
        // parameters cover the channels (asserted).
        && unsafe { fast::channels(xs, inner, p, r, grid) }
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
    if std::arch::is_x86_feature_detected!("avx2") {
        let mut done = 0;
        if let Some(r) = &p.reciprocals
            && crate::exec::cpu::float_lanes() == crate::exec::cpu::FloatLanes::Avx512
        {
            // SAFETY: AVX-512F was checked (`float_lanes` reports only what the CPU has); the
            // parameters cover `xs` (asserted).
            done = unsafe { fast::avx512(xs, p, r, grid) };
        }
        // SAFETY: AVX2 was checked just above; the parameters cover `xs` (asserted).
        unsafe { fake_slice_avx2(&mut xs[done..], &p.from(done), grid) };
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

/// [`fake_slice`]'s and [`fake_channels`]' lanes that multiply by [`Reciprocals`].
#[cfg(target_arch = "x86_64")]
mod fast {
    use std::arch::x86_64::*;

    use super::{Grid, Param, Params, Reciprocals};

    /// Where a run's lanes find one parameter: a value for every lane (`One`) or, when the
    /// run's parameters are `Each`, a slice read sixteen at a time from `each`.
    #[derive(Clone, Copy)]
    struct Source {
        one: f32,
        each: *const f32,
    }

    impl Source {
        /// The parameter of element `i`.
        ///
        /// # Safety
        /// When `EACH`, the slice holds element `i`.
        #[inline(always)]
        unsafe fn at<const EACH: bool>(&self, i: usize) -> f32 {
            match EACH {
                // SAFETY: the caller's promise.
                true => unsafe { *self.each.add(i) },
                false => self.one,
            }
        }

        fn of(p: Param) -> Self {
            match p {
                Param::One(one) => Self {
                    one,
                    each: std::ptr::null(),
                },
                Param::Each(s) => Self {
                    one: 0.0,
                    each: s.as_ptr(),
                },
            }
        }
    }

    /// `p`'s and `r`'s parameters in the order the lanes take them: scale, zero-point, the
    /// scale's reciprocal, then (migrated) the factor, the shift and the factor's reciprocal.
    /// `None` when the values are migrated but the factors have no reciprocals.
    fn ordered<'a>(p: &Params<'a>, r: &Reciprocals<'a>) -> Option<[Param<'a>; 6]> {
        let none = Param::One(0.0);
        let ((m, h), rm) = match (p.migration, r.migration) {
            (Some(mh), Some(rm)) => (mh, rm),
            (None, _) => ((none, none), none),
            (Some(_), None) => return None,
        };
        Some([p.scale, p.zero, r.scale, m, h, rm])
    }

    /// What every vector of a run shares: the grid, the margin of [`Reciprocals`] and the
    /// rounding's constant.
    struct Constants {
        lo: __m512,
        hi: __m512,
        inside: __m512,
        magic: __m512,
    }

    impl Constants {
        #[inline(always)]
        fn new(grid: &Grid, r: &Reciprocals) -> Self {
            // SAFETY: `set1` only moves values into a register; the callers have AVX-512F.
            unsafe {
                Self {
                    lo: _mm512_set1_ps(grid.qmin),
                    hi: _mm512_set1_ps(grid.qmax),
                    // A rounded product within `bound` steps and farther than this from its
                    // nearest integer (`8·2⁻²⁴·bound` from a jump) rounds as the quotient does.
                    inside: _mm512_set1_ps(0.5 - r.bound * 2f32.powi(-21)),
                    magic: _mm512_set1_ps(1.5 * (1u32 << 23) as f32),
                }
            }
        }
    }

    /// Sixteen values fake-quantized by reciprocals, and the lanes where that is the
    /// definition's result (the others must run the definition).
    ///
    /// The code is `v` rounded to the nearest integer, ties to even, by adding and taking
    /// away `1.5·2²³` (exact for `|v| ≤ 2²²`): away from the ties, which the lanes leave to
    /// the definition, both roundings give it. Past `bound` every code clamps, so a `v` too
    /// large for the addition to round exactly still gives the definition's value.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[inline(always)]
    unsafe fn vector<const MIGRATED: bool>(
        k: &Constants,
        x: __m512,
        [s, z, inverse, m, h, rm]: [__m512; 6],
    ) -> (__m512, __mmask16) {
        // SAFETY: the caller's promise.
        unsafe {
            let magnitude = _mm512_set1_epi32(0x7fff_ffff);
            let v = match MIGRATED {
                // `d·((1/m)·(1/s))` rounds four times, as `(d·(1/m))·(1/s)` would: the bound
                // of [`Reciprocals`] holds, and a channel's factor is hoisted out of its run.
                true => _mm512_mul_ps(_mm512_sub_ps(x, h), _mm512_mul_ps(rm, inverse)),
                false => _mm512_mul_ps(x, inverse),
            };
            let code = _mm512_sub_ps(_mm512_add_ps(v, k.magic), k.magic);
            // How far `v` lies from its nearest integer: ½ at a tie, NaN for NaN and ±∞.
            let off = _mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(v, code)), magnitude);
            let alike = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_castsi512_ps(off), k.inside);
            // `clamp(code + z, qmin, qmax) − z`, every term an integer below 2²³ (or, for a
            // code past `bound`, the end it clamps to) and `code` never −0: exact, so it is
            // `code` clamped to `[qmin − z, qmax − z]`, with one operation fewer per end.
            let (lo, hi) = (_mm512_sub_ps(k.lo, z), _mm512_sub_ps(k.hi, z));
            let y = _mm512_mul_ps(_mm512_min_ps(hi, _mm512_max_ps(lo, code)), s);
            let y = match MIGRATED {
                true => _mm512_add_ps(_mm512_mul_ps(m, y), h),
                false => y,
            };
            (y, alike)
        }
    }

    /// Fake-quantizes `xs` and returns how many values that is: all of them, or 0 for
    /// parameters of mixed kinds (some `One`, some `Each`), which no prepared point makes and
    /// which are left to the AVX2 lanes. The lanes whose product lies near a point where the
    /// rounding jumps run the scalar definition instead ([`Reciprocals`]).
    ///
    /// # Safety
    /// The CPU has AVX-512F; every parameter slice covers `xs`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(xs: &mut [f32], p: &Params, r: &Reciprocals, grid: &Grid) -> usize {
        let Some(params) = ordered(p, r) else {
            return 0;
        };
        let each = params
            .iter()
            .filter(|q| matches!(q, Param::Each(_)))
            .count();
        let each = match each {
            0 => false,
            // The unmigrated values' three placeholders are `One`.
            n if n == params.len() || (n == 3 && p.migration.is_none()) => true,
            _ => return 0,
        };
        // One loop per kind of run, so that the loop neither branches on the parameters'
        // kinds nor broadcasts a channel's parameters again for every vector.
        let (sources, k) = (params.map(Source::of), Constants::new(grid, r));
        // SAFETY (all): the caller's promises, and the kinds are the ones named.
        unsafe {
            match (each, p.migration.is_some()) {
                (false, false) => run::<false, false>(xs, &sources, &k, grid),
                (false, true) => run::<false, true>(xs, &sources, &k, grid),
                (true, false) => run::<true, false>(xs, &sources, &k, grid),
                (true, true) => run::<true, true>(xs, &sources, &k, grid),
            }
        }
        xs.len()
    }

    /// [`super::fake_channels`] in these lanes: each channel's run with its parameters
    /// broadcast, a short run's last values in a masked vector. `false` (nothing done) for
    /// migrated values without the factors' reciprocals.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `inner > 0` and every parameter slice holds a value for each of
    /// `xs.len() / inner` channels.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn channels(
        xs: &mut [f32],
        inner: usize,
        p: &Params,
        r: &Reciprocals,
        grid: &Grid,
    ) -> bool {
        let Some(params) = ordered(p, r) else {
            return false;
        };
        let k = Constants::new(grid, r);
        for (c, values) in xs.chunks_exact_mut(inner).enumerate() {
            let mut sources = [Source::of(Param::One(0.0)); 6];
            for (source, q) in sources.iter_mut().zip(params) {
                source.one = q.at(c);
            }
            // SAFETY (both): the caller's promises; every parameter is `One`.
            unsafe {
                match p.migration.is_some() {
                    false => run::<false, false>(values, &sources, &k, grid),
                    true => run::<false, true>(values, &sources, &k, grid),
                }
            }
        }
        true
    }

    /// Sixteen parameters from `source` at `i` (the slice's when `EACH`, else the
    /// broadcast `one`), the lanes off in `mask` zero.
    ///
    /// # Safety
    /// AVX-512F must be available and, when `EACH`, the slice must hold the values at `i` of
    /// the lanes on in `mask`.
    #[inline(always)]
    unsafe fn lanes<const EACH: bool>(source: Source, one: __m512, i: usize, mask: u16) -> __m512 {
        match EACH {
            // SAFETY: the caller's promises; a masked load reads nothing of the lanes off.
            true => unsafe { _mm512_maskz_loadu_ps(mask, source.each.add(i)) },
            false => one,
        }
    }

    /// [`avx512`] for parameters all `EACH` or all `One` and `MIGRATED` values: the whole
    /// vectors, then the last values in a masked one.
    ///
    /// # Safety
    /// As [`avx512`]'s; `sources` are a run's parameters in [`ordered`]'s order, of the kinds
    /// named.
    #[inline(always)]
    unsafe fn run<const EACH: bool, const MIGRATED: bool>(
        xs: &mut [f32],
        sources: &[Source; 6],
        k: &Constants,
        grid: &Grid,
    ) {
        // SAFETY (both): the caller's promise of AVX-512F.
        let mut ones = [unsafe { _mm512_setzero_ps() }; 6];
        for (one, source) in ones.iter_mut().zip(sources) {
            *one = unsafe { _mm512_set1_ps(source.one) };
        }
        let whole = xs.len() / 16 * 16;
        for i in (0..whole).step_by(16) {
            // SAFETY: `i + 16 ≤ xs.len()`.
            unsafe { step::<EACH, MIGRATED>(xs, i, u16::MAX, sources, &ones, k, grid) };
        }
        if whole < xs.len() {
            let mask = ((1u32 << (xs.len() - whole)) - 1) as u16;
            // SAFETY: the lanes on in `mask` are the last values.
            unsafe { step::<EACH, MIGRATED>(xs, whole, mask, sources, &ones, k, grid) };
        }
    }

    /// [`run`]'s vector at `i`, the lanes on in `mask`.
    ///
    /// # Safety
    /// As [`run`]'s, and the lanes on in `mask` lie inside `xs` from `i`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn step<const EACH: bool, const MIGRATED: bool>(
        xs: &mut [f32],
        i: usize,
        mask: u16,
        sources: &[Source; 6],
        ones: &[__m512; 6],
        k: &Constants,
        grid: &Grid,
    ) {
        let ptr = xs.as_mut_ptr();
        // The migration's three are null slices when the values are not migrated.
        let used = if MIGRATED { 6 } else { 3 };
        // SAFETY (all): the parameter slices cover `xs`; masked loads and stores touch only
        // the lanes on, which lie inside `xs`.
        let (y, alike) = unsafe {
            let mut lanes_of = *ones;
            for p in 0..used {
                lanes_of[p] = lanes::<EACH>(sources[p], ones[p], i, mask);
            }
            let x = _mm512_maskz_loadu_ps(mask, ptr.add(i));
            vector::<MIGRATED>(k, x, lanes_of)
        };
        if alike | !mask == u16::MAX {
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(ptr.add(i), mask, y) };
            return;
        }
        let count = mask.count_ones() as usize;
        for (j, x) in xs[i..i + count].iter_mut().enumerate() {
            // SAFETY: as above; element `i + j` is one of the lanes on, and the migration's
            // slices are read only for migrated values.
            let at = |p: usize| unsafe { sources[p].at::<EACH>(i + j) };
            *x = match MIGRATED {
                false => grid.fake(*x, at(0), at(1)),
                true => grid.fake_migrated(*x, at(0), at(1), at(3), at(4)),
            };
        }
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
                    for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
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
        if crate::exec::cpu::float_lanes() != crate::exec::cpu::FloatLanes::Avx512 {
            eprintln!("note: no AVX-512F here: the lanes that multiply by reciprocals untested");
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
                for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
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
