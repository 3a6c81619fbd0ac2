//! The Hardswish epilogue as a square, for the channels whose codes stop changing before
//! `x = 3` (nearly all of EfficientViT-B1's under `qvit bench`, random weights calibrated on
//! random images, whose outputs saturate below it; about a tenth under `int_scale`'s
//! calibration, which keep [`NarrowHardswish`](super::requant::NarrowHardswish)). There the
//! product is `t·(t + 2^j)`, which in `u = t + 2^(j−1)` is `u² − 2^(2j−2)`: the fold onto the
//! rising side is `|u|` and the clamp to `[floor, cap]` two more lanes' instructions, where the
//! general 32-bit form spends six on the fold, the clamps and the `min(t + 2^j, 2^(j+1))` that
//! cannot bind here. The shift by `2^(j−1)` goes into the first requantization's offset and
//! the least product into the second's, so the lanes run 20 instructions per 16 values against
//! 24–25.
//!
//! The product less its least, `q = u² − floor²`, is taken modulo 2^32 (`vpmulld`), and each
//! time the true `q` passes a multiple of 2^32 — at a `u` found once per channel — the
//! requantization's high half gains exactly `m`: `⌊(q·m + lo)/2^32⌋ = ⌊((q mod 2^32)·m +
//! lo)/2^32⌋ + ⌊q/2^32⌋·m`. So channels whose products span up to [`CARRIES`] multiples of
//! 2^32 past their least (`j` = 17 or 18 with the valley's bottom among the codes: most of
//! those B1 had run in 64-bit lanes under `qvit bench`) take a compare and a masked add per
//! multiple. A first requantization with a shift below 32 scales its input first, as
//! [`Fast::unclamped_scaled`](super::requant::Fast::unclamped_scaled) allows. The same codes
//! as [`FastHardswish::apply_i32`].
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Isa;
use super::bytes::narrow;
#[cfg(target_arch = "x86_64")]
use super::narrow_lanes::{
    High256, High512, Scale256, Scale512, UNSCALED, each8, each16_into, each64_bytes,
};
use super::requant::{FastHardswish, Folded, InputScale, Unclamped};
use crate::exec::int::nonlinear::hardswish::hardswish_product;

/// The most multiples of 2^32 a channel's products may span past their least.
pub const CARRIES: usize = 3;

/// [`FastHardswish`] as `u²` less the least square, in 32-bit lanes. Made only by
/// [`FastHardswish::square`], which checks that it gives the same codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquareHardswish {
    /// The input's scale where `t`'s shift is below 32 ([`Fast::unclamped_scaled`]).
    ///
    /// [`Fast::unclamped_scaled`]: super::requant::Fast::unclamped_scaled
    u_input: Option<InputScale>,
    /// The first requantization less `base = −2^(j−1)`: `u = t − base`.
    u: Unclamped,
    /// `u` at the lowest `t` the product takes (`−2^j` or `t`'s own lower clamp): below it
    /// the fold would leave the interval where the product is `u² − base²`.
    u_min: i32,
    /// The folded `u`'s clamp: the bottom code below `floor`, the top one above `cap`.
    floor: i32,
    cap: i32,
    /// `floor²` modulo 2^32: `u² − floor²` is the product less its least.
    floor_square: i32,
    /// The second requantization of `u² − floor²`, `⌊(q·m + lo)/2^(32 + shift)⌋`.
    out: Unclamped,
    /// The first `carries` entries: the `u` from which `u² − floor²` reaches each multiple of
    /// 2^32, rising.
    carry_from: [i32; CARRIES],
    carries: usize,
}

impl FastHardswish {
    /// The square form, where the clamps it leaves out never bind ([`FastHardswish::folded`],
    /// as for [`FastHardswish::narrow`]), the codes stop changing at or below `t = 2^j`
    /// (`x = 3`, where `min(t + 2^j, 2^(j+1))` would start to bind), the products span less
    /// than [`CARRIES`] + 1 multiples of 2^32, and every sum and high half stays inside i64
    /// and i32.
    pub fn square(&self) -> Option<SquareHardswish> {
        let Folded { t_min, floor, cap } = self.folded()?;
        let three = 1i64 << self.j;
        let base = -(three >> 1);
        if cap > three || self.out.k < 32 || self.out.m < 0 {
            return None;
        }
        let (t, u_input) = self.to_t.unclamped_scaled()?;
        // `t − base = ⌊(v·m + lo − base·2^k)/2^k⌋` with `k = 32 + shift`.
        let u_lo = i128::from(t.lo) - (i128::from(base) << (32 + t.shift));
        let (floor_u, cap_u) = (floor - base, cap - base);
        // `q·m + lo` for the product `q + least`, `least` the product at `floor`.
        let span = i128::from(hardswish_product(cap, self.j) - hardswish_product(floor, self.j));
        let lo = i128::from(self.out.lo)
            + (i128::from(self.out.hi) << self.out.k)
            + i128::from(hardswish_product(floor, self.j)) * i128::from(self.out.m);
        let m = i128::from(self.out.m);
        // Inside i64: `t`'s offset (below 2^62, as `Unclamped` keeps it) and every sum of a
        // `q` below 2^32; inside i32: the high half at both ends of the span.
        let in_i64 = |x: i128| i64::try_from(x).is_ok();
        let high_in_i32 = |x: i128| i32::try_from(x >> 32).is_ok();
        let fits = u_lo.unsigned_abs() < 1 << 62
            && in_i64(lo)
            && in_i64(lo + ((1 << 32) - 1) * m)
            && high_in_i32(lo)
            && high_in_i32(lo + span * m);
        let carries = usize::try_from(span >> 32).ok()?;
        if !fits || carries > CARRIES {
            return None;
        }
        // The least `u` whose `u² − floor²` reaches `i·2^32`: rising with `u` on
        // `[floor_u, cap_u]`, and reached by `cap_u` for every `i ≤ carries`.
        let mut carry_from = [0; CARRIES];
        for (i, from) in carry_from.iter_mut().enumerate().take(carries) {
            let reaches = |u: i64| {
                i128::from(u) * i128::from(u) - i128::from(floor_u) * i128::from(floor_u)
                    >= (i as i128 + 1) << 32
            };
            let (mut lo, mut hi) = (floor_u, cap_u);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if reaches(mid) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            *from = i32::try_from(lo).ok()?;
        }
        Some(SquareHardswish {
            u_input,
            u: Unclamped {
                lo: u_lo as i64,
                ..t
            },
            u_min: i32::try_from(t_min - base).ok()?,
            floor: i32::try_from(floor_u).ok()?,
            cap: i32::try_from(cap_u).ok()?,
            floor_square: floor_u.wrapping_mul(floor_u) as i32,
            out: Unclamped {
                m: self.out.m,
                lo: lo as i64,
                shift: self.out.k - 32,
            },
            carry_from,
            carries,
        })
    }
}

impl SquareHardswish {
    #[inline(always)]
    pub fn apply_i32(&self, v: i32) -> i32 {
        let v = self.u_input.map_or(v, |s| s.apply(v));
        // `u_min ≥ −2^(j−1)`, so the absolute value cannot overflow.
        let u = self.u.apply_i32(v).max(self.u_min).abs();
        let u = u.clamp(self.floor, self.cap);
        let q = u.wrapping_mul(u).wrapping_sub(self.floor_square) as u32;
        let m = i64::from(self.out.m);
        let passed = self.carry_from[..self.carries]
            .iter()
            .filter(|&&from| u >= from)
            .count() as i64;
        let high = ((i64::from(q) * m + self.out.lo) >> 32) + passed * m;
        (high as i32) >> self.out.shift
    }
}

/// `dst[i]` = the Hardswish epilogue of `src[i]`, as a square.
pub fn hardswish_square(isa: Isa, h: &SquareHardswish, src: &[i32], dst: &mut [i32]) {
    by_width!(
        isa,
        square_avx512,
        square_avx2,
        square_portable,
        (h, src, dst)
    )
}

#[inline(always)]
fn square_portable(h: &SquareHardswish, src: &[i32], dst: &mut [i32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = h.apply_i32(v);
    }
}

/// [`hardswish_square`] into bytes, each code plus `lift` (see
/// [`byte_codes`](crate::exec::int::byte_codes): the caller knows every code plus `lift` is
/// a u8). With AVX-512 the lanes are stored as bytes; elsewhere through a row of codes.
pub fn hardswish_square_bytes(
    isa: Isa,
    h: &SquareHardswish,
    src: &[i32],
    lift: i32,
    dst: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if super::width(isa) == super::Width::Avx512 {
        // SAFETY: `width` found AVX-512 F and BW.
        return unsafe { square_bytes_avx512(h, src, lift, dst) };
    }
    let mut row = [0; 256];
    for (src, dst) in src.chunks(row.len()).zip(dst.chunks_mut(row.len())) {
        hardswish_square(isa, h, src, &mut row[..src.len()]);
        narrow(isa, &row[..src.len()], lift, dst);
    }
}

/// 16 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn square_avx512(h: &SquareHardswish, src: &[i32], dst: &mut [i32]) {
    match h.u_input {
        Some(s) => carries_avx512::<true>(h, s, src, dst),
        None => carries_avx512::<false>(h, UNSCALED, src, dst),
    }
}

/// [`square_avx512`] into bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn square_bytes_avx512(h: &SquareHardswish, src: &[i32], lift: i32, dst: &mut [u8]) {
    let dst = Bytes { bytes: dst, lift };
    match h.u_input {
        Some(s) => carries_avx512::<true>(h, s, src, dst),
        None => carries_avx512::<false>(h, UNSCALED, src, dst),
    }
}

/// Where [`square_lanes_avx512`] puts its lanes: i32 codes, or bytes each plus `lift`.
#[cfg(target_arch = "x86_64")]
trait Lanes16 {
    /// `f` of each 16 lanes of `src`, stored.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW.
    unsafe fn each(self, src: &[i32], f: impl Fn(__m512i) -> __m512i);
}

#[cfg(target_arch = "x86_64")]
impl Lanes16 for &mut [i32] {
    #[inline(always)]
    unsafe fn each(self, src: &[i32], f: impl Fn(__m512i) -> __m512i) {
        // SAFETY: the caller's promise.
        unsafe { each16_into(src, self, f) }
    }
}

/// Codes stored as bytes, each plus `lift` ([`each64_bytes`]).
#[cfg(target_arch = "x86_64")]
struct Bytes<'a> {
    bytes: &'a mut [u8],
    lift: i32,
}

#[cfg(target_arch = "x86_64")]
impl Lanes16 for Bytes<'_> {
    #[inline(always)]
    unsafe fn each(self, src: &[i32], f: impl Fn(__m512i) -> __m512i) {
        // SAFETY: the caller's promise.
        unsafe { each64_bytes(src, self.bytes, self.lift, f) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn carries_avx512<const S: bool>(
    h: &SquareHardswish,
    s: InputScale,
    src: &[i32],
    dst: impl Lanes16,
) {
    match h.carries {
        0 => square_lanes_avx512::<0, S>(h, s, src, dst),
        1 => square_lanes_avx512::<1, S>(h, s, src, dst),
        2 => square_lanes_avx512::<2, S>(h, s, src, dst),
        _ => square_lanes_avx512::<3, S>(h, s, src, dst),
    }
}

/// [`square_avx512`] with `C` carries, the input scaled first where `SCALED`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn square_lanes_avx512<const C: usize, const SCALED: bool>(
    h: &SquareHardswish,
    scale: InputScale,
    src: &[i32],
    dst: impl Lanes16,
) {
    let (u, out) = (High512::new(&h.u), High512::new(&h.out));
    let scale = Scale512::new(&scale);
    let set = _mm512_set1_epi32;
    let (u_min, floor, cap) = (set(h.u_min), set(h.floor), set(h.cap));
    let (floor_square, m) = (set(h.floor_square), set(h.out.m));
    let carry_from: [__m512i; C] = std::array::from_fn(|i| set(h.carry_from[i]));
    // SAFETY: this function is compiled for AVX-512 F and BW, which its callers checked.
    unsafe {
        dst.each(src, |v| {
            let x = u.apply(scale.apply::<SCALED>(v));
            let x = _mm512_abs_epi32(_mm512_max_epi32(x, u_min));
            let x = _mm512_min_epi32(_mm512_max_epi32(x, floor), cap);
            let q = _mm512_sub_epi32(_mm512_mullo_epi32(x, x), floor_square);
            let mut high = out.high_halves_unsigned(q);
            for from in &carry_from {
                let passed = _mm512_cmpge_epi32_mask(x, *from);
                high = _mm512_mask_add_epi32(high, passed, high, m);
            }
            out.shift(high)
        });
    }
}

/// 8 lanes at a time ([`each8`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn square_avx2(h: &SquareHardswish, src: &[i32], dst: &mut [i32]) {
    match h.u_input {
        Some(s) => carries_avx2::<true>(h, s, src, dst),
        None => carries_avx2::<false>(h, UNSCALED, src, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn carries_avx2<const S: bool>(h: &SquareHardswish, s: InputScale, src: &[i32], dst: &mut [i32]) {
    match h.carries {
        0 => square_lanes_avx2::<0, S>(h, s, src, dst),
        1 => square_lanes_avx2::<1, S>(h, s, src, dst),
        2 => square_lanes_avx2::<2, S>(h, s, src, dst),
        _ => square_lanes_avx2::<3, S>(h, s, src, dst),
    }
}

/// [`square_lanes_avx512`] 8 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn square_lanes_avx2<const C: usize, const SCALED: bool>(
    h: &SquareHardswish,
    scale: InputScale,
    src: &[i32],
    dst: &mut [i32],
) {
    let (u, out) = (High256::new(&h.u), High256::new(&h.out));
    let scale = Scale256::new(&scale);
    let set = _mm256_set1_epi32;
    let (u_min, floor, cap) = (set(h.u_min), set(h.floor), set(h.cap));
    let (floor_square, m) = (set(h.floor_square), set(h.out.m));
    // `x > from − 1` is `x ≥ from`: AVX2 compares by greater-than only.
    let below: [__m256i; C] = std::array::from_fn(|i| set(h.carry_from[i] - 1));
    let lanes = |v| {
        let x = u.apply(scale.apply::<SCALED>(v));
        let x = _mm256_abs_epi32(_mm256_max_epi32(x, u_min));
        let x = _mm256_min_epi32(_mm256_max_epi32(x, floor), cap);
        let q = _mm256_sub_epi32(_mm256_mullo_epi32(x, x), floor_square);
        let mut high = out.high_halves_unsigned(q);
        for b in &below {
            high = _mm256_add_epi32(high, _mm256_and_si256(_mm256_cmpgt_epi32(x, *b), m));
        }
        out.shift(high)
    };
    // SAFETY: this function is compiled for AVX2, which its callers checked.
    unsafe { each8(src, dst, lanes, |v| h.apply_i32(v)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::kernels::requant::Fast;
    use crate::rng::Rng;

    /// `j = 2`: `three = 4`, `base = −2`; `t = ⌊v/4⌋`, the code `⌊p/4⌋ + 1` clamped to 0..=4
    /// for the product `p = t·clamp(t + 4, 0, 8)`: −4 at `t = −2`, −3 at −1 and −3 (mirror
    /// images), 0 at −4 and below, 5 at 1, 12 at 2, where the top code is reached (`cap`).
    #[test]
    fn by_hand() {
        let h = FastHardswish {
            to_t: Fast {
                m: 1 << 30,
                lo: 0,
                hi: 0,
                k: 32,
                qmin: -100,
                qmax: 100,
            },
            j: 2,
            p_range: (-1000, 1000),
            out: Fast {
                m: 1 << 30,
                lo: 0,
                hi: 1,
                k: 32,
                qmin: 0,
                qmax: 4,
            },
        };
        let s = h.square().expect("a square form");
        let n = h.narrow().expect("a 32-bit form");
        assert_eq!((n.floor, n.cap), (-1, 2));
        // (v, code): t = −2, −1, −3, −6, 0, 1, 2, 100.
        for (v, code) in [
            (-8, 0),
            (-4, 0),
            (-12, 0),
            (-24, 1),
            (0, 1),
            (4, 2),
            (8, 4),
            (400, 4),
        ] {
            assert_eq!(h.apply_i32(v), code, "definition at v = {v}");
            assert_eq!(s.apply_i32(v), code, "square at v = {v}");
        }
    }

    /// Channels shaped like B1's (an output step of 16–255 t-units, exponents 10–18, outputs
    /// that saturate below `x = 3` or do not, bottom codes at the valley or above it), inputs
    /// whose `t` covers `−2^j − 100` to past the top densely, and any i32: on every ISA,
    /// whole vectors and a tail, the square form gives the definition's codes wherever it
    /// has one, and it has one for every channel that saturates below `x = 3`.
    #[test]
    fn square_equals_the_definition() {
        let mut rng = Rng::new(31);
        let (mut squared, mut carried, mut scaled) = (0, 0, 0);
        for case in 0..120 {
            let j = [10, 12, 14, 16, 17, 18][case % 6];
            let three = 1i64 << j;
            // The top of `t`: below `three` in two cases of three (the square's), above it
            // in the third.
            let top = match case % 3 {
                2 => three + 1 + rng.below(three as usize) as i64,
                _ => (three >> 4) + rng.below((three - (three >> 4)) as usize) as i64,
            };
            // Shifts below 32 too: the input scaled first (`Fast::unclamped_scaled`).
            let k_t = 28 + rng.below(8) as u32;
            let m_t = (1 << 29) + rng.below(1 << 30) as i32;
            let to_t = Fast {
                m: m_t,
                lo: rng.below(1 << 31) as i64,
                hi: rng.below(64) as i64 - 32,
                k: k_t,
                qmin: -three,
                qmax: top,
            };
            // 200–400 codes from the valley's floor to the top; up to 150 of them below the
            // output's zero (saturated at the bottom).
            let p_top = top * (top + three).min(2 * three);
            let p_least = -(three * three / 4);
            let unit = (p_top - p_least) as f64 / (200 + rng.below(200)) as f64;
            let k = 27 + unit.log2().ceil() as u32;
            let out = Fast {
                m: ((1i64 << k) as f64 / unit) as i32,
                lo: rng.below(1 << (k - 1)) as i64,
                hi: -(rng.below(150) as i64) - ((p_least as f64 / unit) as i64),
                k,
                qmin: 0,
                qmax: 255,
            };
            let h = FastHardswish {
                to_t,
                j,
                p_range: (-(1 << 50), 1 << 50),
                out,
            };
            let per_t = (1u64 << k_t) as f64 / m_t as f64;
            let mut inputs = Rng::new(2000 + case as u64);
            let mut src: Vec<i32> = (0..4000)
                .map(|i| match i % 3 {
                    0 => {
                        let t = inputs.below((3 * three + 200) as usize) as i64 - three - 100;
                        (t as f64 * per_t) as i64 + inputs.below(8) as i64 - 4
                    }
                    1 => ((inputs.below(top as usize + 100) as f64) * per_t) as i64,
                    _ => inputs.below(u32::MAX as usize) as i64 - (1 << 31),
                })
                .map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .collect();
            let saturates_below_three = h.narrow().is_some_and(|n| i64::from(n.cap) <= three);
            let Some(s) = h.square() else {
                assert!(!saturates_below_three, "case {case}: no square form");
                continue;
            };
            squared += 1;
            carried += usize::from(s.carries > 0);
            scaled += usize::from(s.u_input.is_some());
            // Inputs whose `u` lands on each edge: the clamp's ends and the first `u` of
            // each carry, one below and one above, on both sides of the fold.
            let edges = [s.floor, s.cap]
                .into_iter()
                .chain(s.carry_from[..s.carries].iter().copied());
            for edge in edges {
                for u in [edge - 1, edge, edge + 1] {
                    src.extend(input_at(&s, u));
                    src.extend(input_at(&s, -u));
                }
            }
            let want: Vec<i32> = src.iter().map(|&v| h.apply_i32(v)).collect();
            for isa in Isa::available() {
                let mut got = vec![0; src.len()];
                hardswish_square(isa, &s, &src, &mut got);
                assert_eq!(got, want, "case {case}, j {j}, {}", isa.name());
                hardswish_square(isa, &s, &src[1..], &mut got[1..]);
                assert_eq!(got, want, "case {case}, j {j}, {}, tail of 15", isa.name());
                let short = src.len() % 16 + 1;
                hardswish_square(isa, &s, &src[..short], &mut got[..short]);
                assert_eq!(got, want, "case {case}, j {j}, {}, short", isa.name());
                // As bytes, lifted as far down as the codes allow: whole blocks of 64 and
                // every length of a last part.
                let lift = -want.iter().min().expect("codes");
                let lifted: Vec<u8> = want.iter().map(|&c| (c + lift) as u8).collect();
                let mut bytes = vec![0; src.len()];
                hardswish_square_bytes(isa, &s, &src, lift, &mut bytes);
                assert_eq!(bytes, lifted, "case {case}, j {j}, {}, bytes", isa.name());
                for from in [1, 64 - short, 100 + short] {
                    let to = (from + 64 + 5 * short).min(src.len());
                    bytes.fill(0);
                    hardswish_square_bytes(isa, &s, &src[from..to], lift, &mut bytes[from..to]);
                    assert_eq!(
                        bytes[from..to],
                        lifted[from..to],
                        "case {case}, j {j}, {}, bytes {from}..{to}",
                        isa.name()
                    );
                }
            }
        }
        assert!(
            squared >= 50,
            "only {squared} of 120 cases had a square form"
        );
        assert!(
            carried >= 10,
            "only {carried} of 120 cases carried past 2^32"
        );
        assert!(
            scaled >= 10,
            "only {scaled} of 120 cases scaled their input"
        );
    }

    /// The least input whose first requantization gives `u` (before the fold), if any: `u`
    /// rises with the input (`m > 0`).
    fn input_at(s: &SquareHardswish, u: i32) -> Option<i32> {
        let (mut lo, mut hi) = (i32::MIN, i32::MAX);
        while lo < hi {
            let mid = ((i64::from(lo) + i64::from(hi)) >> 1) as i32;
            if t_less_base(s, mid) >= u {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (t_less_base(s, lo) == u).then_some(lo)
    }

    fn t_less_base(s: &SquareHardswish, v: i32) -> i32 {
        s.u.apply_i32(s.u_input.map_or(v, |scale| scale.apply(v)))
    }
}
