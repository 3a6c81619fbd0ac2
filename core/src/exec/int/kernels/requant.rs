//! The requantization loops of the epilogues: one channel's i32 accumulators to codes. One
//! portable body, also compiled for AVX2 and AVX-512 and chosen at run time, so the i64
//! multiply-add-shift-clamp vectorises (`vpmuldq` / `vpmullq`); the forms in 32-bit lanes
//! ([`Narrow`], [`NarrowHardswish`]) are written with intrinsics in `narrow_lanes`. Same
//! integers on every path.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use super::bucket_lanes::{self, BucketLanes};
use super::{Isa, narrow_lanes};
use crate::exec::int::code_table::CodeTable;
use crate::exec::int::nonlinear::hardswish::hardswish_product;

/// One channel's constants: `((v·m + lo) >> k) + hi`, clamped — equal to the half-up
/// `(v·m + a + 2^(k−1)) >> k` with `a` split at `2^k`. Valid while `|v·m| < 2^62`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fast {
    pub m: i32,
    pub lo: i64,
    pub hi: i64,
    pub k: u32,
    pub qmin: i64,
    pub qmax: i64,
}

impl Fast {
    #[inline(always)]
    pub fn apply(&self, v: i64) -> i64 {
        (((v * self.m as i64 + self.lo) >> self.k) + self.hi).clamp(self.qmin, self.qmax)
    }

    /// [`Fast::apply`] of an i32: written as a 32 × 32 → 64-bit product, which vectorises to
    /// `vpmuldq` where a 64-bit one needs `vpmullq` (AVX-512 DQ) or an emulation (AVX2).
    #[inline(always)]
    pub fn apply_i32(&self, v: i32) -> i64 {
        (((v as i64 * self.m as i64 + self.lo) >> self.k) + self.hi).clamp(self.qmin, self.qmax)
    }
}

/// A [`Fast`] whose shift is at least 32, whose clamp lies within ±2^30 and whose zero point
/// inside it (so every result, `clamp + hi`, inside ±2^31, and `qmin − hi` too): then
/// `⌊x/2^k⌋ = ⌊⌊x/2^32⌋/2^(k−32)⌋`, the high half of the 64-bit sum shifted in 32 bits, and
/// `clamp(h + hi, qmin, qmax) = clamp(h, qmin − hi, qmax − hi) + hi` needs no 64-bit clamp.
/// The same integers as [`Fast::apply`], with the 64-bit shift and clamp AVX2 does not have
/// (`vpsraq`, `vpminsq`) replaced by 32-bit ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Narrow {
    pub(super) m: i32,
    pub(super) lo: i64,
    pub(super) shift: u32,
    pub(super) hi: i32,
    pub(super) min: i32,
    pub(super) max: i32,
}

impl Fast {
    pub fn narrow(&self) -> Option<Narrow> {
        // The Softmax's logits are clamped to exactly ±2^30.
        let bound = |v: i64| v.unsigned_abs() <= 1 << 30;
        let inside = self.hi.unsigned_abs() < 1 << 30;
        (self.k >= 32 && inside && bound(self.qmin) && bound(self.qmax)).then(|| Narrow {
            m: self.m,
            lo: self.lo,
            shift: self.k - 32,
            hi: self.hi as i32,
            min: (self.qmin - self.hi) as i32,
            max: (self.qmax - self.hi) as i32,
        })
    }
}

impl Narrow {
    /// [`Fast::apply`] of an i32 (a `vpmuldq` product).
    #[inline(always)]
    pub fn apply_i32(&self, v: i32) -> i32 {
        self.finish(v as i64 * self.m as i64 + self.lo)
    }

    /// [`Fast::apply`] of an i64 (within `Fast`'s bound `|v·m| < 2^62`).
    #[inline(always)]
    pub fn apply(&self, v: i64) -> i32 {
        self.finish(v * self.m as i64 + self.lo)
    }

    #[inline(always)]
    fn finish(&self, x: i64) -> i32 {
        (((x >> 32) as i32) >> self.shift).clamp(self.min, self.max) + self.hi
    }

    /// The product, offset and shift before the clamp and the zero point: an [`Unclamped`]
    /// with `lo` as it is (its `hi` is added after the clamp).
    pub(super) fn unclamped_part(&self) -> Unclamped {
        Unclamped {
            m: self.m,
            lo: self.lo,
            shift: self.shift,
        }
    }
}

/// A [`Fast`] without its clamp, its zero point folded into the rounding offset:
/// `⌊(v·m + lo')/2^k⌋` with `lo' = lo + hi·2^k`, the high half of the 64-bit sum shifted in 32
/// bits — for a caller whose values provably stay inside the clamp. `|v·m| < 2^62` for any
/// i32 `v` and `m`, and `|lo'| < 2^62`, so the sum stays inside i64 and its high half (and
/// so the result) inside i32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unclamped {
    pub(super) m: i32,
    pub(super) lo: i64,
    pub(super) shift: u32,
}

impl Fast {
    pub fn unclamped(&self) -> Option<Unclamped> {
        let lo = self.lo as i128 + ((self.hi as i128) << self.k);
        (self.k >= 32 && lo.unsigned_abs() < 1 << 62).then(|| Unclamped {
            m: self.m,
            lo: lo as i64,
            shift: self.k - 32,
        })
    }

    /// The [`Unclamped`] of `p − least` as a u32, for inputs `p` in `[least, most]`, a span
    /// below 2^32: `least·m` folded into the rounding offset. For `m ≥ 0`, whose sums rise with
    /// `p`; both ends' sums must stay below 2^62 in size, so that the 64-bit lanes (a product
    /// below 2^63 plus the offset) hold every sum exactly.
    fn above(&self, least: i64, most: i64) -> Option<Unclamped> {
        let lo = self.lo as i128 + ((self.hi as i128) << self.k);
        let sum = |p: i64| p as i128 * self.m as i128 + lo;
        let (folded, top) = (sum(least), sum(most));
        let fits = |x: i128| x.unsigned_abs() < 1 << 62;
        let quiet = self.k >= 32 && self.m >= 0 && most - least < 1 << 32;
        (quiet && fits(folded) && fits(top)).then(|| Unclamped {
            m: self.m,
            lo: folded as i64,
            shift: self.k - 32,
        })
    }
}

impl Unclamped {
    #[inline(always)]
    pub fn apply_i32(&self, v: i32) -> i32 {
        ((v as i64 * self.m as i64 + self.lo) >> 32) as i32 >> self.shift
    }

    /// [`Unclamped::apply_i32`] of a u32 (a `vpmuludq` product), for `m ≥ 0`.
    #[inline(always)]
    pub fn apply_u32(&self, v: u32) -> i32 {
        ((v as i64 * self.m as i64 + self.lo) >> 32) as i32 >> self.shift
    }
}

/// Hardswish between two requantizations (see `requant::Epilogue::Hardswish`), for `t` and
/// `2^(j+1)` inside i32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastHardswish {
    pub to_t: Fast,
    pub j: u32,
    pub p_range: (i64, i64),
    pub out: Fast,
}

impl FastHardswish {
    /// `t·clamp(t + 2^j, 0, 2^(j+1))`, clamped to `p_range`.
    fn product(&self, t: i64) -> i64 {
        hardswish_product(t, self.j).clamp(self.p_range.0, self.p_range.1)
    }

    /// The epilogue of one accumulator, in i64: what [`hardswish`] computes in lanes and what
    /// [`FastHardswish::narrow`]'s form is built from.
    pub fn apply_i32(&self, v: i32) -> i32 {
        self.out.apply(self.product(self.to_t.apply_i32(v))) as i32
    }

    /// The same codes in 32-bit lanes, when they fit (see [`NarrowHardswish`]).
    pub fn narrow(&self) -> Option<NarrowHardswish> {
        let Folded { t_min, floor, cap } = self.folded()?;
        let three = 1i64 << self.j;
        let (p_floor, p_cap) = (
            hardswish_product(floor, self.j),
            hardswish_product(cap, self.j),
        );
        let fits = |p: i64| i32::try_from(p).is_ok();
        let (product, out) = if fits(p_floor) && fits(p_cap) {
            (Product::Signed, self.out.unclamped()?)
        } else {
            (
                Product::Above(p_floor as i32),
                self.out.above(p_floor, p_cap)?,
            )
        };
        let (t, t_input) = self.to_t.unclamped_scaled()?;
        Some(NarrowHardswish {
            t_input,
            t,
            t_min: i32::try_from(t_min).ok()?,
            mirror: -three as i32,
            floor: floor as i32,
            cap: cap as i32,
            three: three as i32,
            product,
            out,
        })
    }

    /// Where the 32-bit forms clamp `t` (see [`Folded`]), when every clamp they leave out
    /// never binds.
    pub(super) fn folded(&self) -> Option<Folded> {
        if self.j > 28 {
            return None;
        }
        let three = 1i64 << self.j;
        // Below −2^j the product is 0, as at −2^j; from there to 0 it is symmetric about
        // −2^(j−1), and from −2^(j−1) up it rises. So `t ↦ max(t, −2^j − t)` (after the
        // floor at −2^j) keeps the product and lands in [base, top], where the code is a
        // monotone function of `t`.
        let t_min = self.to_t.qmin.max(-three);
        if t_min > self.to_t.qmax {
            return None;
        }
        let base = -(three >> 1);
        let top = self.to_t.qmax.max(-three - t_min);
        let code = |t: i64| self.out.apply(self.product(t));
        // The codes equal to the top one form an interval ending at `top`, those equal to
        // the bottom one an interval starting at `base`: `t` is clamped to the rest.
        let (bottom_code, top_code) = (code(base), code(top));
        let (floor, cap) = if bottom_code == top_code {
            (base, base)
        } else {
            let (mut lo, mut hi) = (base, top);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if code(mid) == top_code {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            let cap = lo;
            let (mut lo, mut hi) = (base, cap);
            while lo < hi {
                let mid = lo + (hi - lo + 1) / 2;
                if code(mid) == bottom_code {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            (lo, cap)
        };
        let (p_floor, p_cap) = (
            hardswish_product(floor, self.j),
            hardswish_product(cap, self.j),
        );
        // The clamps the 32-bit form leaves out must not bind on [floor, cap], where `t`
        // lands: `t`'s own upper one (above it `t` is clamped to `cap` anyway), the product's
        // (which rises with `t` there) and the output's (which rises with the product).
        let unclamped_code = |p: i64| {
            (p as i128 * self.out.m as i128
                + self.out.lo as i128
                + ((self.out.hi as i128) << self.out.k))
                >> self.out.k
        };
        let out_range = self.out.qmin as i128..=self.out.qmax as i128;
        let quiet = cap <= self.to_t.qmax
            && self.p_range.0 <= p_floor
            && p_cap <= self.p_range.1
            && self.out.m >= 0
            && out_range.contains(&unclamped_code(p_floor))
            && out_range.contains(&unclamped_code(p_cap));
        quiet.then_some(Folded { t_min, floor, cap })
    }
}

/// Where a [`FastHardswish`]'s 32-bit forms clamp `t`: not below `t_min` (`−2^j` or `t`'s own
/// lower clamp), then, folded onto the rising side, to `[floor, cap]`, outside which the code
/// is the bottom one or the top one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Folded {
    pub(super) t_min: i64,
    pub(super) floor: i64,
    pub(super) cap: i64,
}

/// Inputs clamped to `[min, max]` and scaled by `2^shift`, for a [`Narrow`] made from a
/// [`Fast`] whose shift is below 32 ([`Fast::narrow_scaled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputScale {
    pub(super) shift: u32,
    pub(super) min: i32,
    pub(super) max: i32,
}

impl InputScale {
    #[inline(always)]
    pub fn apply(&self, v: i32) -> i32 {
        v.clamp(self.min, self.max) << self.shift
    }
}

impl Fast {
    /// [`Fast::narrow`], and for a shift `k` of 24 to 31 (a requantization that keeps half or
    /// more of the scale: `t` in one of six of B1's 64-bit Hardswish channels), a [`Narrow`] of the
    /// input scaled by `2^s`, `s = 32 − k`: `⌊(v·m + lo)/2^k⌋ = ⌊(v·2^s·m + lo·2^s)/2^32⌋`.
    /// The input is first clamped to `±2^(31−s)`, so that the scaled one stays in i32; the
    /// result has reached its own clamp there already (checked, for `m ≥ 0`, which makes the
    /// result rise with the input).
    pub fn narrow_scaled(&self) -> Option<(Narrow, Option<InputScale>)> {
        let (scaled, input) = self.scaled()?;
        Some((scaled.narrow()?, input))
    }

    /// [`Fast::unclamped`] of the input scaled as [`Fast::narrow_scaled`] scales it: for a
    /// caller that clamps the result to the same range or a narrower one.
    pub fn unclamped_scaled(&self) -> Option<(Unclamped, Option<InputScale>)> {
        let (scaled, input) = self.scaled()?;
        Some((scaled.unclamped()?, input))
    }

    /// The requantization with a shift of at least 32, and the input's scale that makes it so
    /// (none for a shift of 32 or more already).
    fn scaled(&self) -> Option<(Fast, Option<InputScale>)> {
        if self.k >= 32 {
            return Some((*self, None));
        }
        let s = 32 - self.k;
        if s > 8 || self.m < 0 {
            return None;
        }
        let scale = InputScale {
            shift: s,
            min: -(1 << (31 - s)),
            max: (1 << (31 - s)) - 1,
        };
        if self.apply(scale.min as i64) != self.qmin || self.apply(scale.max as i64) != self.qmax {
            return None;
        }
        let scaled = Fast {
            lo: self.lo << s,
            k: 32,
            ..*self
        };
        Some((scaled, Some(scale)))
    }
}

/// [`FastHardswish`] with both requantizations [`Narrow`] but a product that may pass i32:
/// `t` and its clamp in 32-bit lanes (the input scaled first where `t`'s shift is below 32),
/// the product in 64 bits, unclamped. Made by [`FastHardswish::wide`], which checks that the
/// product's clamp never changes a code and that `t + 2^j` is never negative; the same codes
/// as [`FastHardswish::apply_i32`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WideHardswish {
    pub(super) t_input: Option<InputScale>,
    pub(super) t: Narrow,
    pub(super) three: i32,
    pub(super) out: Narrow,
}

impl FastHardswish {
    /// The form with `t` in 32 bits, when both requantizations have one ([`Fast::narrow`];
    /// for `t` also [`Fast::narrow_scaled`]: `t` within ±2^30 and `2^j < 2^30`, so `t + 2^j`
    /// and its clamp stay inside i32), `t ≥ −2^j`, and the product's clamp can go: every
    /// product `t` gives keeps `|p·m|` below 2^62 (where the 64-bit lanes are exact), and past
    /// either end of `p_range` the code saturates anyway.
    pub fn wide(&self) -> Option<WideHardswish> {
        // `2^(j+1)`, the upper clamp of `t + 2^j`, in i32; with `t ≤ 2^30`, `t + 2^j` too.
        if self.j > 29 {
            return None;
        }
        let three = 1i64 << self.j;
        let (t_lo, t_hi) = (self.to_t.qmin, self.to_t.qmax);
        if t_lo < -three || self.out.m < 0 {
            return None;
        }
        let p = |t: i64| hardswish_product(t, self.j) as i128;
        // The product falls to its least at `t = −2^(j−1)` and rises on either side.
        let bottom = -(three >> 1);
        let least = if (t_lo..=t_hi).contains(&bottom) {
            p(bottom)
        } else {
            p(t_lo).min(p(t_hi))
        };
        let most = p(t_lo).max(p(t_hi));
        let o = &self.out;
        let unclamped = |p: i128| (p * o.m as i128 + o.lo as i128 + ((o.hi as i128) << o.k)) >> o.k;
        let (p_min, p_max) = (self.p_range.0 as i128, self.p_range.1 as i128);
        let exact = |p: i128| (p * o.m as i128).unsigned_abs() < 1 << 62;
        let quiet = exact(least)
            && exact(most)
            && (least >= p_min || unclamped(p_min) <= o.qmin as i128)
            && (most <= p_max || unclamped(p_max) >= o.qmax as i128);
        if !quiet {
            return None;
        }
        let (t, t_input) = self.to_t.narrow_scaled()?;
        Some(WideHardswish {
            t_input,
            t,
            three: three as i32,
            out: self.out.narrow()?,
        })
    }
}

impl WideHardswish {
    #[inline(always)]
    pub fn apply_i32(&self, v: i32) -> i32 {
        let v = self.t_input.map_or(v, |s| s.apply(v));
        let t = self.t.apply_i32(v);
        // `t ≥ −2^j`: only the upper clamp of `t + 2^j` binds.
        let c = (t + self.three).min(2 * self.three);
        self.out.apply(t as i64 * c as i64)
    }
}

/// [`FastHardswish`] with every step in 32-bit lanes: `t` folded onto the rising side of the
/// product (`max(t, −2^j − t)`, the same product) and clamped to the values between which the
/// code still changes, so `t·min(t + 2^j, 2^(j+1))` spans less than 2^32 and is one `vpmulld`
/// (see [`Product`]); both requantizations [`Unclamped`], the first after scaling its input
/// where its shift is below 32 (in w4a8 and other B1 channels whose accumulators are coarser
/// than `t`, which had run in 64-bit lanes). Only the clamps that bind are kept:
/// `t`'s lower one (the fold needs `t ≥ −2^j`) and `[floor, cap]`. Made only by
/// [`FastHardswish::narrow`], which checks that the others never bind; the same codes as
/// [`FastHardswish::apply_i32`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarrowHardswish {
    /// The input's scale where `t`'s shift is below 32 ([`Fast::unclamped_scaled`]).
    pub(super) t_input: Option<InputScale>,
    pub(super) t: Unclamped,
    pub(super) t_min: i32,
    pub(super) mirror: i32,
    pub(super) floor: i32,
    pub(super) cap: i32,
    pub(super) three: i32,
    pub(super) product: Product,
    pub(super) out: Unclamped,
}

/// How a [`NarrowHardswish`]'s product `p = t·c`, for `t` in `[floor, cap]`, reaches its output
/// requantization in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// Every product inside i32: as it is, a `vpmuldq` operand.
    Signed,
    /// Products past i32 (j = 17 with `t` at 2^14: about half the values B1 had run in 64-bit
    /// lanes) but spanning less than 2^32: `p` less the least product (this field, wrapped
    /// into i32) is inside u32, a `vpmuludq` operand, and both are exact modulo 2^32 in 32-bit
    /// lanes; the output's offset holds the least product's part ([`Fast::above`]).
    Above(i32),
}

impl NarrowHardswish {
    #[inline(always)]
    pub fn apply_i32(&self, v: i32) -> i32 {
        let v = self.t_input.map_or(v, |s| s.apply(v));
        let t = self.t.apply_i32(v).max(self.t_min);
        // Past `cap` the difference may wrap, but the maximum is then `t` or more: `cap`.
        let t = t
            .max(self.mirror.wrapping_sub(t))
            .clamp(self.floor, self.cap);
        // `t ≥ floor ≥ −2^(j−1)`, so `t + 2^j` is positive: only its upper clamp binds.
        let p = t.wrapping_mul((t + self.three).min(2 * self.three));
        match self.product {
            Product::Signed => self.out.apply_i32(p),
            Product::Above(least) => self.out.apply_u32(p.wrapping_sub(least) as u32),
        }
    }
}

/// `dst[i] = f(src[i])`.
pub fn requant(isa: Isa, f: &Fast, src: &[i32], dst: &mut [i32]) {
    by_width!(
        isa,
        requant_avx512,
        requant_avx2,
        requant_portable,
        (f, src, dst)
    )
}

/// `dst[i]` = the Hardswish epilogue of `src[i]`.
pub fn hardswish(isa: Isa, h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    by_width!(
        isa,
        hardswish_avx512,
        hardswish_avx2,
        hardswish_portable,
        (h, src, dst)
    )
}

/// `dst[i]` = the Hardswish epilogue of `src[i]`, the product in 64-bit lanes.
pub fn hardswish_wide(isa: Isa, w: &WideHardswish, src: &[i32], dst: &mut [i32]) {
    by_width!(
        isa,
        hardswish_wide_avx512,
        hardswish_wide_avx2,
        hardswish_wide_portable,
        (w, src, dst)
    )
}

/// `dst[i]` = the Hardswish epilogue of `src[i]`, in 32-bit lanes.
pub fn hardswish_narrow(isa: Isa, h: &NarrowHardswish, src: &[i32], dst: &mut [i32]) {
    by_width!(
        isa,
        hardswish_narrow_avx512,
        hardswish_narrow_avx2,
        hardswish_narrow_portable,
        (h, src, dst)
    )
}

/// `dst[i] = table[f(src[i])]`: the requantization, then the code of its result — for a table
/// that holds every value `f` gives ([`lookup_within`], whose answer is then always yes).
pub fn lookup(isa: Isa, f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) {
    assert!(
        table.covers(f.qmin, f.qmax),
        "the table holds every value the requantization gives"
    );
    let all = lookup_within(isa, f, table, src, dst);
    debug_assert!(all, "a covering table held every value");
}

/// The requantization, then the code of its result from a table that may not hold every value
/// `f` gives: `dst[i] = table[f(src[i])]` where the table holds `f(src[i])`, and whether it
/// held every one. Where it did not, `dst[i]`
/// is some code of the table, for the caller to overwrite (GELU's table stops where its
/// sigmoid saturates; the rare values past it are computed).
pub fn lookup_within(isa: Isa, f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) -> bool {
    by_width!(
        isa,
        lookup_within_avx512,
        lookup_within_avx2,
        lookup_within_portable,
        (f, table, src, dst)
    )
}

#[inline(always)]
fn lookup_within_portable(f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) -> bool {
    let codes = table.codes();
    let last = codes.len() - 1;
    if !in_32_bits(f, table) {
        let mut outside = false;
        for (o, &v) in dst.iter_mut().zip(src) {
            // Below the table the difference wraps to a huge index: past `last` as well.
            let i = f.apply_i32(v).wrapping_sub(table.first()) as u64;
            outside |= i > last as u64;
            *o = codes[(i as usize).min(last)];
        }
        return !outside;
    }
    // The requantization in its own pass, then the look-up.
    requant_portable(f, src, dst);
    codes_of(codes, table.first() as i32, dst)
}

/// Whether every value `f` gives, the table's first and its indices fit 32 bits.
pub fn in_32_bits(f: &Fast, table: &CodeTable) -> bool {
    let in_i32 = |v: i64| i32::try_from(v).is_ok();
    in_i32(f.qmin)
        && in_i32(f.qmax)
        && in_i32(table.first())
        && u32::try_from(table.codes().len()).is_ok()
}

/// `x = table.codes[x − table.first]` for every `x` of `values` inside the table (any code of
/// it for the others), and whether all were inside: the look-up of [`lookup_within`] for
/// values requantized already. The table's first and its indices fit 32 bits (see
/// [`in_32_bits`]).
pub fn codes_within(isa: Isa, table: &CodeTable, values: &mut [i32]) -> bool {
    let first = i32::try_from(table.first()).expect("a table that starts inside i32");
    assert!(u32::try_from(table.codes().len()).is_ok());
    by_width!(
        isa,
        codes_within_avx512,
        codes_within_avx2,
        codes_within_portable,
        (table, first, values)
    )
}

fn codes_within_portable(table: &CodeTable, first: i32, values: &mut [i32]) -> bool {
    codes_of(table.codes(), first, values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn codes_within_avx2(table: &CodeTable, first: i32, values: &mut [i32]) -> bool {
    codes_of_avx2(table.codes(), first, values)
}

/// [`codes_within`] by the table's buckets where the CPU reads them in lanes
/// ([`BucketLanes`]), by a gather per 8 values otherwise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn codes_within_avx512(table: &CodeTable, first: i32, values: &mut [i32]) -> bool {
    match BucketLanes::run()
        .then(|| BucketLanes::new(table))
        .flatten()
    {
        // SAFETY: `run` found the features.
        Some(lanes) => unsafe { bucket_lanes::codes_within(&lanes, table, values) },
        None => codes_of_avx2(table.codes(), first, values),
    }
}

/// `x = codes[x − first]` for every `x` of `values` inside the table (any code of it for the
/// others), and whether all were inside. `codes` holds at most `2³²` entries.
#[inline(always)]
fn codes_of(codes: &[i32], first: i32, values: &mut [i32]) -> bool {
    let last = (codes.len() - 1) as u32;
    let mut outside = 0u32;
    for o in values.iter_mut() {
        // Below the table the difference wraps to a huge index: past `last` as well.
        let i = o.wrapping_sub(first) as u32;
        outside |= (i > last) as u32;
        *o = codes[i.min(last) as usize];
    }
    outside == 0
}

/// [`codes_of`] in AVX2 lanes, eight gathers at a time (the compiler leaves the loop scalar);
/// the same codes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn codes_of_avx2(codes: &[i32], first: i32, values: &mut [i32]) -> bool {
    use std::arch::x86_64::*;
    let last = (codes.len() - 1) as u32;
    let mut chunks = values.chunks_exact_mut(8);
    // SAFETY (the block): only called from functions compiled with AVX2; loads and stores
    // touch the eight values of `chunk`; every gathered index is at most `last`, inside
    // `codes`.
    let outside = unsafe {
        let first_v = _mm256_set1_epi32(first);
        let last_v = _mm256_set1_epi32(last as i32);
        let mut outside = _mm256_setzero_si256();
        for chunk in &mut chunks {
            let x = _mm256_loadu_si256(chunk.as_ptr().cast());
            let (code, moved) = codes_of_lanes256(codes, first_v, last_v, x);
            outside = _mm256_or_si256(outside, moved);
            _mm256_storeu_si256(chunk.as_mut_ptr().cast(), code);
        }
        _mm256_testz_si256(outside, outside) == 0
    };
    let rest = codes_of(codes, first, chunks.into_remainder());
    !outside && rest
}

/// Eight values' codes, `codes[x − first]` (`first_v`, `last_v`: `first` and `codes`' last
/// index in every lane), and the lanes whose value lay past the table (nonzero there; their
/// code is some code of the table).
///
/// # Safety
/// The CPU has AVX2; `last_v` is at most `codes`' last index.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn codes_of_lanes256(
    codes: &[i32],
    first_v: std::arch::x86_64::__m256i,
    last_v: std::arch::x86_64::__m256i,
    x: std::arch::x86_64::__m256i,
) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 is the caller's promise; every gathered index is clamped to `last_v`,
    // inside `codes`.
    unsafe {
        // Below the table the difference wraps to a huge index: past the last as well.
        let i = _mm256_sub_epi32(x, first_v);
        let clamped = _mm256_min_epu32(i, last_v);
        // Lanes the clamp moved were past the table.
        let moved = _mm256_xor_si256(clamped, i);
        (_mm256_i32gather_epi32::<4>(codes.as_ptr(), clamped), moved)
    }
}

/// [`lookup_within_portable`] with the look-up in AVX2 lanes, and the requantization too
/// where its shift allows ([`Fast::narrow`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn lookup_within_avx2(f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) -> bool {
    if !in_32_bits(f, table) {
        return lookup_within_portable(f, table, src, dst);
    }
    requant_avx2(f, src, dst);
    codes_of_avx2(table.codes(), table.first() as i32, dst)
}

/// [`lookup_within_avx2`] with the requantization in 16 lanes where its shift allows
/// ([`Fast::narrow`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn lookup_within_avx512(f: &Fast, table: &CodeTable, src: &[i32], dst: &mut [i32]) -> bool {
    if !in_32_bits(f, table) {
        return lookup_within_portable(f, table, src, dst);
    }
    requant_avx512(f, src, dst);
    codes_within_avx512(table, table.first() as i32, dst)
}

#[inline(always)]
fn requant_portable(f: &Fast, src: &[i32], dst: &mut [i32]) {
    match f.narrow() {
        Some(n) => {
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = n.apply_i32(v);
            }
        }
        None => {
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = f.apply_i32(v) as i32;
            }
        }
    }
}

#[inline(always)]
fn hardswish_wide_portable(w: &WideHardswish, src: &[i32], dst: &mut [i32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = w.apply_i32(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hardswish_wide_avx2(w: &WideHardswish, src: &[i32], dst: &mut [i32]) {
    narrow_lanes::hardswish_wide_avx2(w, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn hardswish_wide_avx512(w: &WideHardswish, src: &[i32], dst: &mut [i32]) {
    narrow_lanes::hardswish_wide_avx512(w, src, dst)
}

#[inline(always)]
fn hardswish_portable(h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    if let Some(w) = h.wide() {
        return hardswish_wide_portable(&w, src, dst);
    }
    let three = 1i64 << h.j;
    for (o, &v) in dst.iter_mut().zip(src) {
        // `t` and the clamp are i32 (checked where `h` is made): a `vpmuldq` product.
        let t = h.to_t.apply_i32(v);
        let p = (t as i32 as i64 * (t + three).clamp(0, 2 * three) as i32 as i64)
            .clamp(h.p_range.0, h.p_range.1);
        *o = h.out.apply(p) as i32;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn requant_avx2(f: &Fast, src: &[i32], dst: &mut [i32]) {
    match f.narrow() {
        Some(n) => narrow_lanes::requant_avx2(&n, src, dst),
        None => requant_portable(f, src, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn requant_avx512(f: &Fast, src: &[i32], dst: &mut [i32]) {
    match f.narrow() {
        Some(n) => narrow_lanes::requant_avx512(&n, src, dst),
        None => requant_portable(f, src, dst),
    }
}

#[inline(always)]
fn hardswish_narrow_portable(h: &NarrowHardswish, src: &[i32], dst: &mut [i32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = h.apply_i32(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hardswish_narrow_avx2(h: &NarrowHardswish, src: &[i32], dst: &mut [i32]) {
    narrow_lanes::hardswish_avx2(h, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn hardswish_narrow_avx512(h: &NarrowHardswish, src: &[i32], dst: &mut [i32]) {
    narrow_lanes::hardswish_avx512(h, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hardswish_avx2(h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    match h.wide() {
        Some(w) => hardswish_wide_avx2(&w, src, dst),
        _ => hardswish_portable(h, src, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
fn hardswish_avx512(h: &FastHardswish, src: &[i32], dst: &mut [i32]) {
    match h.wide() {
        Some(w) => hardswish_wide_avx512(&w, src, dst),
        _ => hardswish_portable(h, src, dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::code_table::buckets::valley;
    use crate::rng::Rng;

    #[test]
    fn by_hand() {
        // m = 3, k = 2, rounding half (lo = 2), zero-point 1: 5·3/4 = 3.75 → 4, + 1 = 5;
        // −5·3/4 = −3.75 → −4 (arithmetic shift), + 1 = −3, clamped to −2.
        let f = Fast {
            m: 3,
            lo: 2,
            hi: 1,
            k: 2,
            qmin: -2,
            qmax: 100,
        };
        let mut out = [0; 4];
        requant_portable(&f, &[5, -5, 0, 1000], &mut out);
        assert_eq!(out, [5, -2, 1, 100]);
    }

    /// `f` in i128: the half-up `(v·m + a) >> k` with `a = lo + hi·2^k`, saturated.
    fn exact(f: &Fast, v: i128) -> i128 {
        ((v * f.m as i128 + f.lo as i128 + ((f.hi as i128) << f.k)) >> f.k)
            .clamp(f.qmin as i128, f.qmax as i128)
    }

    /// Shifts above and below 32 (the narrow form and the 64-bit one), offsets of both
    /// signs: every ISA equals the i128 definition, for the requantization and the Hardswish.
    #[test]
    fn every_isa_equals_the_definition() {
        let mut rng = Rng::new(11);
        let src: Vec<i32> = (0..1003)
            .map(|i| match i % 3 {
                0 => rng.below(1 << 24) as i32 - (1 << 23),
                1 => rng.below(1 << 12) as i32 - (1 << 11),
                _ => rng.below(u32::MAX as usize) as i64 as i32,
            })
            .collect();
        let wide = Fast {
            m: 1_518_500_250,
            lo: (1 << 39) + 12345,
            hi: 7,
            k: 40,
            qmin: 0,
            qmax: 255,
        };
        let requants = [
            wide,
            Fast {
                hi: -(1 << 29),
                qmin: -(1 << 29) - 100,
                qmax: 1 << 29,
                ..wide
            },
            Fast {
                m: -1_234_567,
                lo: 1 << 19,
                k: 20,
                hi: -3,
                qmin: -128,
                qmax: 127,
            },
            Fast {
                hi: 1 << 40,
                qmax: i64::MAX / 2,
                ..wide
            },
            // The narrow form's bounds: a clamp at ±2^30 (the Softmax's logits) and a zero
            // point just inside 2^30 of either sign, the sums at i32's ends.
            Fast {
                m: i32::MAX,
                lo: 1 << 31,
                k: 32,
                hi: (1 << 30) - 1,
                qmin: -(1 << 30),
                qmax: 1 << 30,
            },
            Fast {
                m: i32::MAX,
                lo: 1 << 31,
                k: 32,
                hi: 1 - (1 << 30),
                qmin: -(1 << 30),
                qmax: 1 << 30,
            },
        ];
        assert!(requants[4..].iter().all(|f| f.narrow().is_some()));
        let past = |f: Fast| f.narrow().is_none();
        assert!(past(Fast {
            qmax: (1 << 30) + 1,
            ..requants[4]
        }));
        assert!(past(Fast {
            hi: 1 << 30,
            ..requants[4]
        }));
        assert!(past(Fast {
            qmin: -(1 << 30) - 1,
            ..requants[5]
        }));
        if Isa::available().len() == 1 {
            eprintln!("note: this CPU has no AVX2: only the portable requantization was tested");
        }
        for f in &requants {
            let want: Vec<i32> = src.iter().map(|&v| exact(f, v as i128) as i32).collect();
            for isa in Isa::available() {
                let mut got = vec![0; src.len()];
                requant(isa, f, &src, &mut got);
                assert_eq!(got, want, "{} {f:?}", isa.name());
            }
        }
        let to_t = Fast {
            k: 36,
            hi: 0,
            qmin: -(1 << 10),
            qmax: 5000,
            ..wide
        };
        for out in [
            Fast {
                m: 700_001,
                k: 28,
                lo: 1 << 27,
                hi: 3,
                ..wide
            },
            Fast {
                m: 700_001,
                k: 33,
                lo: 1 << 32,
                hi: 3,
                ..wide
            },
        ] {
            let h = FastHardswish {
                to_t,
                j: 10,
                p_range: (-(1 << 30), 1 << 30),
                out,
            };
            let want: Vec<i32> = src
                .iter()
                .map(|&v| {
                    let t = exact(&to_t, v as i128);
                    let p = (t * (t + 1024).clamp(0, 2048)).clamp(-(1 << 30), 1 << 30);
                    exact(&out, p) as i32
                })
                .collect();
            for isa in Isa::available() {
                let mut got = vec![0; src.len()];
                hardswish(isa, &h, &src, &mut got);
                assert_eq!(got, want, "{} {out:?}", isa.name());
            }
        }
    }

    /// Tables that hold all, some or none of the requantized values, on every ISA: the codes
    /// it holds are looked up, and the answer says whether it held them all. Random codes,
    /// and codes that step by one (read by buckets where the CPU can).
    #[test]
    fn lookup_within_equals_the_definition() {
        let mut rng = Rng::new(8);
        let narrow = Fast {
            m: 1 << 20,
            lo: 1 << 19,
            hi: 0,
            k: 20,
            qmin: -3000,
            qmax: 3000,
        };
        // A clamp past i32 (never reached here): the 64-bit path.
        let wide = Fast {
            qmax: 1 << 40,
            ..narrow
        };
        // A shift of 32 or more: the 32-bit lanes' requantization ([`Fast::narrow`]), about
        // ×0.5 so that the values still span the tables.
        let lanes = Fast {
            m: i32::MAX,
            lo: 1 << 31,
            k: 32,
            ..narrow
        };
        assert!(lanes.narrow().is_some() && narrow.narrow().is_none());
        let tables = [
            (-3000, 6001),
            (-500, 1001),
            (-3000, 10),
            (2900, 101),
            (5000, 7),
        ];
        for ((f, (first, len)), valleys) in [narrow, wide, lanes]
            .into_iter()
            .flat_map(|f| tables.map(|t| (f, t)))
            .flat_map(|c| [(c, false), (c, true)])
        {
            let codes = match valleys {
                true => valley(&mut rng, len as usize, 3),
                false => (0..len).map(|_| rng.below(255) as i32 - 128).collect(),
            };
            let table = CodeTable::from_codes(first, codes);
            assert!(table.buckets().is_some() || !valleys);
            for n in [0, 1, 7, 8, 9, 64, 1003] {
                let src: Vec<i32> = (0..n).map(|_| rng.below(8001) as i32 - 4000).collect();
                let held: Vec<Option<i32>> =
                    src.iter().map(|&v| table.get(f.apply_i32(v))).collect();
                for isa in Isa::available() {
                    let mut got = vec![i32::MIN; n];
                    let all = lookup_within(isa, &f, &table, &src, &mut got);
                    assert_eq!(
                        all,
                        held.iter().all(Option::is_some),
                        "{} {first}",
                        isa.name()
                    );
                    for ((g, h), v) in got.iter().zip(&held).zip(&src) {
                        match h {
                            Some(code) => assert_eq!(g, code, "{} x = {v}", isa.name()),
                            None => assert!(table.codes().contains(g), "{} x = {v}", isa.name()),
                        }
                    }
                }
            }
        }
    }

    /// Hardswish in 32-bit lanes against the i64 definition, with constants shaped like a
    /// real layer's (an output step of `R` = 16–255 t-units, channels up to four times
    /// coarser than the finest, exponents where the raw product leaves i32), inputs whose
    /// `t` covers −2^j − 100 to past the top densely, and any i32: the epilogue on every ISA,
    /// and its 32-bit form where it has one.
    #[test]
    fn narrow_hardswish_equals_the_definition() {
        let mut rng = Rng::new(5);
        let (mut narrowed, mut widened, mut scaled) = (0, 0, 0);
        for case in 0..70 {
            let j = [3, 10, 12, 16, 17, 18, 20][case % 7];
            let three = 1i64 << j;
            let r = 16 + rng.below(240) as i64;
            let coarsest = r * (1 + rng.below(4) as i64);
            // to_t: 0.06–8 t-units per accumulator unit (shifts below 32 scale the input
            // first, `Fast::unclamped_scaled`).
            let k_t = 28 + rng.below(8) as u32;
            let m_t = (1 << 30) + rng.below(1 << 30) as i32;
            let to_t = Fast {
                m: m_t,
                lo: 1 << (k_t - 1),
                hi: rng.below(64) as i64 - 32,
                k: k_t,
                qmin: -three,
                qmax: 256 * coarsest,
            };
            // out: one code per 2^(j+1)·R p-units, 20-bit multiplier.
            let bits = 64 - r.leading_zeros();
            let k_o = j + 21 + bits;
            let out = Fast {
                m: ((1i64 << (20 + bits)) / r) as i32,
                lo: rng.below(1 << 30) as i64,
                hi: rng.below(80) as i64,
                k: k_o,
                qmin: 0,
                qmax: 255,
            };
            // Odd cases: the product's clamp as a layer sets it, a code past either end of
            // the output's range (so it never binds). Even ones: far tighter, where it does.
            let unit = r << (j + 1);
            let p_range = if case % 2 == 1 {
                ((-1 - out.hi).min(0) * unit, (256 - out.hi) * unit)
            } else {
                (-(three << 5), (three << 9) * coarsest)
            };
            let h = FastHardswish {
                to_t,
                j,
                p_range,
                out,
            };
            let per_t = (1u64 << k_t) as f64 / m_t as f64;
            let mut inputs = Rng::new(1000 + case as u64);
            let src: Vec<i32> = (0..6000)
                .map(|i| match i % 3 {
                    0 => {
                        let t = inputs.below((3 * three + 200) as usize) as i64 - three - 100;
                        (t as f64 * per_t) as i64 + inputs.below(8) as i64 - 4
                    }
                    1 => (inputs.below(257 * coarsest as usize) as f64 * per_t) as i64,
                    _ => inputs.below(u32::MAX as usize) as i64 - (1 << 31),
                })
                .map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .collect();
            let want: Vec<i32> = src.iter().map(|&v| h.apply_i32(v)).collect();
            // The epilogue as layers run it whatever the form (64-bit products included), on
            // a run of whole lanes and on one with a tail of 15.
            for isa in Isa::available() {
                let mut got = vec![0; src.len()];
                hardswish(isa, &h, &src, &mut got);
                assert_eq!(got, want, "case {case}, j {j}, {}", isa.name());
                hardswish(isa, &h, &src[1..], &mut got[1..]);
                assert_eq!(got, want, "case {case}, j {j}, {}, tail", isa.name());
            }
            widened += usize::from(h.narrow().is_none() && h.wide().is_some());
            // Up to j = 12 every product fits; from 16 only the finer channels' do.
            let Some(n) = h.narrow() else {
                assert!(
                    !(10..=12).contains(&j),
                    "case {case}: j {j} has a 32-bit form"
                );
                continue;
            };
            narrowed += 1;
            scaled += usize::from(n.t_input.is_some());
            for isa in Isa::available() {
                let mut got = vec![0; src.len()];
                hardswish_narrow(isa, &n, &src, &mut got);
                assert_eq!(got, want, "case {case}, j {j}, {}", isa.name());
                // A run that is no multiple of the lanes: a tail of 15.
                hardswish_narrow(isa, &n, &src[1..], &mut got[1..]);
                assert_eq!(got, want, "case {case}, j {j}, {}, tail", isa.name());
            }
        }
        assert!(
            narrowed >= 30,
            "only {narrowed} of 70 cases had a 32-bit form"
        );
        assert!(scaled >= 5, "only {scaled} of 70 cases scaled their input");
        // The 64-bit lanes (`wide`) run where the product passes i32 but its clamp never binds.
        assert!(
            widened >= 10,
            "only {widened} of 70 cases ran the 64-bit lanes"
        );
    }

    /// Products past i32 that span less than 2^32, as about half the values B1 had run in
    /// 64-bit lanes have (`j` = 17, `t` up to 2^14–2^15): the 32-bit form with each product
    /// less the least one, in u32 ([`Product::Above`]), gives the definition's codes on every
    /// ISA — bottom codes that saturate (the fold's floor far above zero) or not, top codes
    /// that saturate or not; a span of 2^32 or more has no 32-bit form but the 64-bit one.
    #[test]
    fn narrow_hardswish_past_i32_equals_the_definition() {
        let mut rng = Rng::new(23);
        let (mut above, mut spans_past_u32) = (0, 0);
        for case in 0..100 {
            let j = 16 + (case % 2) as u32;
            let three = 1i64 << j;
            // `t = v/4`, its top 2^(j−3) to 2^(j−1): products from 2^(2j−3) to past 2^(2j).
            let top = (three >> 3) + rng.below((three * 3 / 8) as usize) as i64;
            let to_t = Fast {
                m: 1 << 30,
                lo: rng.below(1 << 31) as i64,
                hi: 0,
                k: 32,
                qmin: -three,
                qmax: top,
            };
            // 200–400 codes over the products up to the top (the upper ones saturate), the
            // first 0–150 of them below the output's zero (saturated at the bottom).
            let p_top = top * (top + three).min(2 * three);
            let unit = p_top as f64 / (200 + rng.below(200)) as f64;
            let k = 27 + unit.log2().ceil() as u32;
            let out = Fast {
                m: ((1i64 << k) as f64 / unit) as i32,
                lo: rng.below(1 << (k - 1)) as i64,
                hi: -(rng.below(150) as i64),
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
            let mut inputs = Rng::new(100 + case as u64);
            let src: Vec<i32> = (0..20_000)
                .map(|_| {
                    let t = inputs.below((top + three + 200) as usize) as i64 - three - 100;
                    (4 * t + inputs.below(4) as i64) as i32
                })
                .chain([i32::MIN, i32::MAX, -1, 0, 1])
                .collect();
            let want: Vec<i32> = src.iter().map(|&v| h.apply_i32(v)).collect();
            let Some(n) = h.narrow() else {
                spans_past_u32 += 1;
                assert!(h.wide().is_some(), "case {case}: {h:?} has no lanes");
                continue;
            };
            if n.product == Product::Signed {
                continue;
            }
            above += 1;
            for isa in Isa::available() {
                let mut got = vec![0; src.len()];
                hardswish_narrow(isa, &n, &src, &mut got);
                assert_eq!(got, want, "case {case}, {}", isa.name());
                hardswish_narrow(isa, &n, &src[1..], &mut got[1..]);
                assert_eq!(got, want, "case {case}, {}, tail", isa.name());
            }
        }
        assert!(
            above >= 20 && spans_past_u32 >= 10,
            "{above} cases past i32 in 32 bits, {spans_past_u32} past u32"
        );
    }

    /// The 32-bit and 64-bit forms leave out clamps that cannot bind; here they can. Small
    /// exponents and every `t` from below `−2^j` to past the top (`to_t` a quarter, a half or
    /// one, all `v` between), and the ends of i32: outputs 0.1 to 6 codes per step of `t`,
    /// products clamped inside the codes' range or outside it, `t`'s top below the fold
    /// (negative) or above, codes saturating at either end or not. Every form each case has
    /// equals the definition.
    #[test]
    fn hardswish_forms_keep_every_clamp_that_binds() {
        let mut rng = Rng::new(17);
        // Narrow, wide, wide with `t`'s input scaled.
        let mut forms = [0; 3];
        for case in 0..400 {
            let j = 3 + rng.below(4) as u32;
            let three = 1i64 << j;
            let t_top = if case % 5 == 0 {
                -(rng.below(three as usize) as i64) - 1
            } else {
                rng.below(12 * three as usize) as i64
            };
            // `t` is `v/2^(k−30)`: a quarter, a half (a shift below 32: inputs scaled first in
            // the 64-bit form), or `v` itself.
            let k_t = 30 + rng.below(3) as u32;
            let per_t = 1i64 << (k_t - 30);
            let to_t = Fast {
                m: 1 << 30,
                lo: rng.below(1 << (k_t - 1)) as i64,
                hi: rng.below(9) as i64 - 4,
                k: k_t,
                // Below `−2^j` the product is 0 again: a bottom that low must keep its clamp.
                qmin: -three - [0, 0, 0, rng.below(three as usize) as i64 + 1][case % 4],
                qmax: t_top,
            };
            // `unit` p-units per code: `2^(j+1)/codes_per_t`, so that above `t = 2^j` (where
            // the product rises by `2^(j+1)` per t-step) the code rises by `codes_per_t`.
            let codes_per_t = [0.1, 0.7, 1.0, 2.5, 6.0][rng.below(5)];
            let unit = (2 * three) as f64 / codes_per_t;
            // A multiplier in [2^30, 2^31): `unit ≥ 8/3` makes the shift 32 or more.
            let k = 30 + unit.log2().ceil() as u32;
            let out = Fast {
                m: ((1i64 << k) as f64 / unit) as i32,
                lo: rng.below(1 << (k - 1)) as i64,
                hi: rng.below(40) as i64 - 20,
                k,
                qmin: 0,
                qmax: [3, 15, 255][rng.below(3)],
            };
            let p_at = |code: i64| ((code - out.hi) as f64 * unit) as i64;
            let p_range = match case % 3 {
                0 => (-(1 << 40), 1 << 40),
                1 => (p_at(out.qmin - 1).min(0), p_at(out.qmax + 1)),
                _ => (
                    p_at(rng.below(out.qmax as usize + 1) as i64) - rng.below(50) as i64,
                    p_at(rng.below(out.qmax as usize + 1) as i64) + rng.below(50) as i64,
                ),
            };
            let h = FastHardswish {
                to_t,
                j,
                p_range: (p_range.0.min(p_range.1), p_range.0.max(p_range.1)),
                out,
            };
            let src: Vec<i32> = (-per_t * (three + 8)..per_t * (t_top.max(0) + 4 * three + 8))
                .chain([i32::MIN as i64, i32::MAX as i64, -(1 << 30) - 1, 1 << 30])
                .map(|v| v as i32)
                .collect();
            let want: Vec<i32> = src.iter().map(|&v| h.apply_i32(v)).collect();
            let check = |name: &str, got: &[i32]| {
                for ((g, w), v) in got.iter().zip(&want).zip(&src) {
                    assert_eq!(g, w, "case {case}, {name}, v {v}: {h:?}");
                }
            };
            for isa in Isa::available() {
                let mut got = vec![0; src.len()];
                hardswish(isa, &h, &src, &mut got);
                check(isa.name(), &got);
            }
            if let Some(n) = h.narrow() {
                forms[0] += 1;
                for isa in Isa::available() {
                    let mut got = vec![0; src.len()];
                    hardswish_narrow(isa, &n, &src, &mut got);
                    check(&format!("narrow, {}", isa.name()), &got);
                }
            }
            if let Some(w) = h.wide() {
                forms[1 + usize::from(w.t_input.is_some())] += 1;
                for isa in Isa::available() {
                    let mut got = vec![0; src.len()];
                    hardswish_wide(isa, &w, &src, &mut got);
                    check(&format!("wide, {}", isa.name()), &got);
                }
            }
        }
        // Narrow ones need a shift of 32 or more (a third of the cases); the wide ones with
        // their input scaled come from the other two.
        assert!(forms.iter().all(|&n| n >= 30), "forms made: {forms:?}");
    }

    /// A shift below 32 as a [`Narrow`] of the scaled input, for shifts 24 to 31, offsets of
    /// both signs and clamps that the ends of i32 reach or not: equal to the definition
    /// wherever it is made, inputs at and around the scaling's clamp included.
    #[test]
    fn wide_hardswish_keeps_its_sums_in_i32() {
        // `t` up to 2^30 (the narrow form's clamp), `2^(j+1)` and `t + 2^j` in i32 only for
        // `j ≤ 29`.
        let to_t = Fast {
            m: 1 << 30,
            lo: 0,
            hi: 0,
            k: 32,
            qmin: 0,
            qmax: 1 << 30,
        };
        let out = Fast {
            m: 1,
            lo: 0,
            hi: 0,
            k: 62,
            qmin: -128,
            qmax: 127,
        };
        let h = |j| FastHardswish {
            to_t,
            j,
            p_range: (i64::MIN / 2, i64::MAX / 2),
            out,
        };
        assert!(h(30).wide().is_none() && h(31).wide().is_none());
        let w = h(29).wide().expect("t + 2^29 ≤ 2^30 + 2^29 stays in i32");
        for v in [0, 1, i32::MAX / 2, i32::MAX] {
            assert_eq!(w.apply_i32(v), h(29).apply_i32(v), "{v}");
        }
    }

    #[test]
    fn narrow_scaled_equals_the_definition() {
        let mut rng = Rng::new(23);
        let mut made = 0;
        for case in 0..300 {
            let k = 24 + rng.below(8) as u32;
            // The last is past the reach of the largest clamped input: no form.
            let qmax = [255, 1 << 20, 1 << 29, (1 << 30) - 1][case % 4];
            let f = Fast {
                m: (1 << 30) + rng.below(1 << 30) as i32,
                lo: rng.below(1 << k) as i64,
                hi: rng.below(2001) as i64 - 1000,
                k,
                qmin: -qmax - [0, 1][rng.below(2)],
                qmax,
            };
            let Some((n, scale)) = f.narrow_scaled() else {
                continue;
            };
            made += 1;
            let scale = scale.expect("a shift below 32 scales the input");
            let edge = 1i64 << (31 - scale.shift);
            let src = (0..2000)
                .map(|_| rng.below(u32::MAX as usize) as i64 + i32::MIN as i64)
                .chain((-3..=3).flat_map(|d| [edge + d, -edge + d, d]))
                .chain([i32::MIN as i64, i32::MAX as i64]);
            for v in src.map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32) {
                let want = f.apply_i32(v) as i32;
                assert_eq!(n.apply_i32(scale.apply(v)), want, "{f:?} at {v}");
            }
        }
        assert!(made >= 100, "only {made} of 300 made");
    }
}
