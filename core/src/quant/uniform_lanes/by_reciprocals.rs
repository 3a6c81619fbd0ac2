//! [`fake_slice`](super::fake_slice)'s and [`fake_channels`](super::fake_channels)' lanes
//! that multiply by [`Reciprocals`]: sixteen values at a time with AVX-512, eight with AVX2.

use std::arch::x86_64::*;

use super::{Grid, Param, Params, Reciprocals};
use crate::exec::cpu::{FloatLanes, float_lanes};

/// Fake-quantizes `xs` by the reciprocals `r` of `p`'s parameters in this CPU's widest lanes;
/// `false` (nothing done) without AVX2, for migrated values whose factors have no
/// reciprocals, or for parameters of mixed kinds (some `One`, some `Each`), which no prepared
/// point makes.
///
/// Panics unless every parameter slice covers `xs` (a programming error).
pub(super) fn slice(xs: &mut [f32], p: &Params, r: &Reciprocals, grid: &Grid) -> bool {
    slice_in_lanes(float_lanes(), xs, p, r, grid)
}

/// [`slice`] in `lanes`, which the CPU has (asserted), so that tests run every width.
pub(super) fn slice_in_lanes(
    lanes: FloatLanes,
    xs: &mut [f32],
    p: &Params,
    r: &Reciprocals,
    grid: &Grid,
) -> bool {
    assert!(
        lanes <= float_lanes(),
        "{lanes:?} lanes on a CPU without them"
    );
    let Some(params) = ordered(p, r) else {
        return false;
    };
    let n = xs.len();
    assert!(
        params.iter().all(|q| q.covers(n)),
        "a parameter slice is shorter than the {n} values it applies to"
    );
    let each = params
        .iter()
        .filter(|q| matches!(q, Param::Each(_)))
        .count();
    let each = match each {
        0 => false,
        // The unmigrated values' three placeholders are `One`.
        n if n == params.len() || (n == 3 && p.migration.is_none()) => true,
        _ => return false,
    };
    let work = Work::Slice {
        sources: params.map(Source::of),
        each,
    };
    // SAFETY: the CPU has `lanes` (asserted: `float_lanes` reports only what it has); the
    // parameters are of the kinds named and cover `xs` (asserted).
    unsafe { work_in_lanes(lanes, xs, &work, p.migration.is_some(), (r, grid)) }
}

/// [`super::fake_channels`] in these lanes: each channel's run with its parameters broadcast,
/// a short run's last values in a partial vector. `false` (nothing done) as for [`slice`].
///
/// Panics unless `inner > 0` and every parameter slice holds a value for each of
/// `xs.len() / inner` channels (a programming error).
pub(super) fn channels(
    xs: &mut [f32],
    inner: usize,
    p: &Params,
    r: &Reciprocals,
    grid: &Grid,
) -> bool {
    channels_in_lanes(float_lanes(), xs, inner, p, (r, grid))
}

/// [`channels`] in `lanes`, which the CPU has (asserted), so that tests run every width.
pub(super) fn channels_in_lanes(
    lanes: FloatLanes,
    xs: &mut [f32],
    inner: usize,
    p: &Params,
    (r, grid): (&Reciprocals, &Grid),
) -> bool {
    assert!(
        lanes <= float_lanes(),
        "{lanes:?} lanes on a CPU without them"
    );
    let Some(params) = ordered(p, r) else {
        return false;
    };
    assert!(inner > 0, "channels of at least one value");
    let channels = xs.len() / inner;
    assert!(
        params.iter().all(|q| q.covers(channels)),
        "a parameter slice is shorter than the {channels} channels it applies to"
    );
    let work = Work::Channels { inner, params };
    // SAFETY: the CPU has `lanes` (asserted); the parameters cover the channels (asserted).
    unsafe { work_in_lanes(lanes, xs, &work, p.migration.is_some(), (r, grid)) }
}

/// What one call asks of the lanes.
enum Work<'a> {
    /// A slice whose parameters are all per element (`each`) or all one value.
    Slice { sources: [Source; 6], each: bool },
    /// A block of channels of `inner` values, a parameter per channel.
    Channels {
        inner: usize,
        params: [Param<'a>; 6],
    },
}

/// Runs `work` over `xs` in `lanes`; `false` for lanes without the multiplications (the
/// portable code's).
///
/// # Safety
/// The CPU has `lanes`; `work`'s parameters are of the kinds it names and cover `xs` (its
/// values, or its channels).
unsafe fn work_in_lanes(
    lanes: FloatLanes,
    xs: &mut [f32],
    work: &Work,
    migrated: bool,
    (r, grid): (&Reciprocals, &Grid),
) -> bool {
    // SAFETY (both): the caller's promises.
    match lanes {
        FloatLanes::Avx512 => unsafe { work_avx512(xs, work, migrated, (r, grid)) },
        FloatLanes::Avx2Fma => unsafe { work_avx2(xs, work, migrated, (r, grid)) },
        FloatLanes::Baseline => return false,
    }
    true
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

/// Where a run's lanes find one parameter: a value for every lane (`One`) or, when the run's
/// parameters are `Each`, a slice read a vector at a time from `each`.
#[derive(Clone, Copy)]
struct Source {
    one: f32,
    each: *const f32,
}

impl Source {
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
}

/// One vector width's operations. Every method needs the width's CPU features (the callers
/// are compiled for them).
trait Width {
    type V: Copy;
    const LANES: usize;
    unsafe fn splat(v: f32) -> Self::V;
    /// The `count ≤ LANES` values at `from`, zeros in the other lanes.
    unsafe fn load(from: *const f32, count: usize) -> Self::V;
    /// Writes the first `count ≤ LANES` lanes of `v` at `to`, and nothing else.
    unsafe fn store(to: *mut f32, count: usize, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `vminps`/`vmaxps`: the second operand on equal zeros.
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// A bit per lane where `|a| < b`, false for NaN.
    unsafe fn abs_less(a: Self::V, b: Self::V) -> u32;
}

/// [`Width`]'s methods that are one intrinsic over two vectors.
macro_rules! binary_ops {
    ($v:ty: $($name:ident $intrinsic:ident),*) => {$(
        #[inline(always)]
        unsafe fn $name(a: $v, b: $v) -> $v {
            // SAFETY: the caller has the width's features.
            unsafe { $intrinsic(a, b) }
        }
    )*};
}

struct Avx512;

impl Width for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        // SAFETY (every method): the caller has AVX-512F; masked loads and stores touch only
        // the lanes on, which the caller's `count` keeps inside its slice.
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(from: *const f32, count: usize) -> __m512 {
        unsafe { _mm512_maskz_loadu_ps(((1u32 << count) - 1) as u16, from) }
    }
    #[inline(always)]
    unsafe fn store(to: *mut f32, count: usize, v: __m512) {
        unsafe { _mm512_mask_storeu_ps(to, ((1u32 << count) - 1) as u16, v) }
    }
    binary_ops!(__m512:
        add _mm512_add_ps,
        sub _mm512_sub_ps,
        mul _mm512_mul_ps,
        min _mm512_min_ps,
        max _mm512_max_ps
    );
    #[inline(always)]
    unsafe fn abs_less(a: __m512, b: __m512) -> u32 {
        unsafe {
            let magnitude = _mm512_set1_epi32(0x7fff_ffff);
            let abs = _mm512_and_si512(_mm512_castps_si512(a), magnitude);
            u32::from(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(
                _mm512_castsi512_ps(abs),
                b,
            ))
        }
    }
}

struct Avx2;

impl Width for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        // SAFETY (every method): the caller has AVX2; the caller's `count` keeps the reads
        // and writes inside its slice.
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(from: *const f32, count: usize) -> __m256 {
        if count == Self::LANES {
            return unsafe { _mm256_loadu_ps(from) };
        }
        // A padded copy rather than `vmaskmovps`, whose store AMD microcodes.
        let mut padded = [0.0f32; 8];
        unsafe { std::ptr::copy_nonoverlapping(from, padded.as_mut_ptr(), count) };
        unsafe { _mm256_loadu_ps(padded.as_ptr()) }
    }
    #[inline(always)]
    unsafe fn store(to: *mut f32, count: usize, v: __m256) {
        if count == Self::LANES {
            return unsafe { _mm256_storeu_ps(to, v) };
        }
        let mut padded = [0.0f32; 8];
        unsafe {
            _mm256_storeu_ps(padded.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(padded.as_ptr(), to, count);
        }
    }
    binary_ops!(__m256:
        add _mm256_add_ps,
        sub _mm256_sub_ps,
        mul _mm256_mul_ps,
        min _mm256_min_ps,
        max _mm256_max_ps
    );
    #[inline(always)]
    unsafe fn abs_less(a: __m256, b: __m256) -> u32 {
        unsafe {
            let abs = _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(abs, b)) as u32
        }
    }
}

/// What every vector of a run shares: the grid, the margin of [`Reciprocals`] and the
/// rounding's constant.
struct Constants<W: Width> {
    lo: W::V,
    hi: W::V,
    inside: W::V,
    magic: W::V,
}

impl<W: Width> Constants<W> {
    /// # Safety
    /// The CPU has `W`'s features.
    #[inline(always)]
    unsafe fn new(grid: &Grid, r: &Reciprocals) -> Self {
        // SAFETY: the caller's promise.
        unsafe {
            Self {
                lo: W::splat(grid.qmin),
                hi: W::splat(grid.qmax),
                // A rounded product within `bound` steps and farther than this from its
                // nearest integer (`8·2⁻²⁴·bound` from a jump) rounds as the quotient does.
                inside: W::splat(0.5 - r.bound * 2f32.powi(-21)),
                magic: W::splat(1.5 * (1u32 << 23) as f32),
            }
        }
    }
}

/// A vector of values fake-quantized by reciprocals, and the lanes where that is the
/// definition's result (the others must run the definition).
///
/// The code is `v` rounded to the nearest integer, ties to even, by adding and taking away
/// `1.5·2²³` (exact for `|v| ≤ 2²²`): away from the ties, which the lanes leave to the
/// definition, both roundings give it. Past `bound` every code clamps, so a `v` too large for
/// the addition to round exactly still gives the definition's value.
///
/// # Safety
/// The CPU has `W`'s features.
#[inline(always)]
unsafe fn vector<W: Width, const MIGRATED: bool>(
    k: &Constants<W>,
    x: W::V,
    [s, z, inverse, m, h, rm]: [W::V; 6],
) -> (W::V, u32) {
    // SAFETY: the caller's promise.
    unsafe {
        let v = match MIGRATED {
            // `d·((1/m)·(1/s))` rounds four times, as `(d·(1/m))·(1/s)` would: the bound of
            // [`Reciprocals`] holds, and a channel's factor is hoisted out of its run.
            true => W::mul(W::sub(x, h), W::mul(rm, inverse)),
            false => W::mul(x, inverse),
        };
        let code = W::sub(W::add(v, k.magic), k.magic);
        // How far `v` lies from its nearest integer: ½ at a tie, NaN for NaN and ±∞.
        let alike = W::abs_less(W::sub(v, code), k.inside);
        // `clamp(code + z, qmin, qmax) − z`, every term an integer below 2²³ (or, for a code
        // past `bound`, the end it clamps to) and `code` never −0: exact, so it is `code`
        // clamped to `[qmin − z, qmax − z]`, with one operation fewer per end. The value goes
        // second, as in the definition's lanes.
        let (lo, hi) = (W::sub(k.lo, z), W::sub(k.hi, z));
        let y = W::mul(W::min(hi, W::max(lo, code)), s);
        let y = match MIGRATED {
            true => W::add(W::mul(m, y), h),
            false => y,
        };
        (y, alike)
    }
}

/// A run's values with parameters all `EACH` or all `One`, `MIGRATED` or not: the whole
/// vectors, then the last values in a partial one.
///
/// # Safety
/// The CPU has `W`'s features; `sources` are the run's parameters in [`ordered`]'s order, of
/// the kinds named, and an `Each` slice covers `xs`.
#[inline(always)]
unsafe fn run<W: Width, const EACH: bool, const MIGRATED: bool>(
    xs: &mut [f32],
    sources: &[Source; 6],
    k: &Constants<W>,
    grid: &Grid,
) {
    // SAFETY (both): the caller's promise of `W`'s features.
    let mut ones = [unsafe { W::splat(0.0) }; 6];
    for (one, source) in ones.iter_mut().zip(sources) {
        *one = unsafe { W::splat(source.one) };
    }
    let whole = xs.len() / W::LANES * W::LANES;
    for i in (0..whole).step_by(W::LANES) {
        // SAFETY: a whole vector from `i` lies inside `xs`.
        unsafe { step::<W, EACH, MIGRATED>(xs, i, W::LANES, sources, &ones, k, grid) };
    }
    if whole < xs.len() {
        // SAFETY: the last values lie inside `xs`.
        unsafe { step::<W, EACH, MIGRATED>(xs, whole, xs.len() - whole, sources, &ones, k, grid) };
    }
}

/// [`run`]'s `count` values from `i`.
///
/// # Safety
/// As [`run`]'s, and `xs[i..i + count]` exists.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<W: Width, const EACH: bool, const MIGRATED: bool>(
    xs: &mut [f32],
    i: usize,
    count: usize,
    sources: &[Source; 6],
    ones: &[W::V; 6],
    k: &Constants<W>,
    grid: &Grid,
) {
    let ptr = xs.as_mut_ptr();
    // The migration's three are null slices when the values are not migrated.
    let used = if MIGRATED { 6 } else { 3 };
    // SAFETY (all): `xs[i..i + count]` exists and the parameter slices cover it.
    let (y, alike) = unsafe {
        let mut params = *ones;
        if EACH {
            for p in 0..used {
                params[p] = W::load(sources[p].each.add(i), count);
            }
        }
        vector::<W, MIGRATED>(k, W::load(ptr.add(i), count), params)
    };
    let on = (1u32 << count) - 1;
    if alike & on == on {
        // SAFETY: as above.
        unsafe { W::store(ptr.add(i), count, y) };
        return;
    }
    for (j, x) in xs[i..i + count].iter_mut().enumerate() {
        // SAFETY: as above; element `i + j` is one of the run's, and the migration's slices
        // are read only for migrated values.
        let at = |p: usize| unsafe { sources[p].at::<EACH>(i + j) };
        *x = match MIGRATED {
            false => grid.fake(*x, at(0), at(1)),
            true => grid.fake_migrated(*x, at(0), at(1), at(3), at(4)),
        };
    }
}

/// [`work_in_lanes`] in `W`'s lanes.
///
/// # Safety
/// The CPU has `W`'s features; `work`'s parameters are of the kinds it names and cover `xs`.
#[inline(always)]
unsafe fn work_in<W: Width>(
    xs: &mut [f32],
    work: &Work,
    migrated: bool,
    r: &Reciprocals,
    grid: &Grid,
) {
    // SAFETY (all): the caller's promises.
    let k = unsafe { Constants::<W>::new(grid, r) };
    match *work {
        // One loop per kind of run, so that the loop neither branches on the parameters'
        // kinds nor broadcasts a channel's parameters again for every vector.
        Work::Slice { ref sources, each } => unsafe {
            match (each, migrated) {
                (false, false) => run::<W, false, false>(xs, sources, &k, grid),
                (false, true) => run::<W, false, true>(xs, sources, &k, grid),
                (true, false) => run::<W, true, false>(xs, sources, &k, grid),
                (true, true) => run::<W, true, true>(xs, sources, &k, grid),
            }
        },
        Work::Channels { inner, ref params } => {
            for (c, values) in xs.chunks_exact_mut(inner).enumerate() {
                let mut sources = [Source::of(Param::One(0.0)); 6];
                for (source, q) in sources.iter_mut().zip(params) {
                    source.one = q.at(c);
                }
                // SAFETY: every parameter is `One`.
                unsafe {
                    match migrated {
                        false => run::<W, false, false>(values, &sources, &k, grid),
                        true => run::<W, false, true>(values, &sources, &k, grid),
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn work_avx512(
    xs: &mut [f32],
    work: &Work,
    migrated: bool,
    (r, grid): (&Reciprocals, &Grid),
) {
    // SAFETY: the caller's promises, AVX-512F among them.
    unsafe { work_in::<Avx512>(xs, work, migrated, r, grid) }
}

#[target_feature(enable = "avx2")]
unsafe fn work_avx2(xs: &mut [f32], work: &Work, migrated: bool, (r, grid): (&Reciprocals, &Grid)) {
    // SAFETY: the caller's promises, AVX2 among them.
    unsafe { work_in::<Avx2>(xs, work, migrated, r, grid) }
}
