//! [`Narrow`], [`NarrowHardswish`] and [`WideHardswish`] 16 (AVX-512) or 8 (AVX2) lanes at a
//! time, written with intrinsics. The compiler's vectorisation of the portable loops widened
//! every lane to 64 bits (sign extensions, 8-lane halves, inserts: ~50 instructions per 16
//! values, 12 % of EfficientViT-B1's integer time by `perf`); here the even lanes' and the odd
//! lanes' 64-bit products (`vpmuldq` of the register and of it shifted down 32 bits) keep their
//! high halves, blended back into one register of 32-bit lanes — the same integers as the
//! portable form, whose `>> 32` they are.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::requant::{InputScale, Narrow, NarrowHardswish, Product, Unclamped, WideHardswish};

/// `dst[i] = f(src[i])` 16 lanes at a time, the last part vector by a masked load and
/// store: a short row (49 values per channel on a 7×7 map) would otherwise leave a sixteenth
/// or more of its values to the i64 definition, one at a time. Inlined into its callers,
/// which are compiled for AVX-512 F.
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn each16(src: &[i32], dst: &mut [i32], f: impl Fn(__m512i) -> __m512i) {
    // SAFETY: the caller's promise.
    unsafe { each16_into(src, dst, f) }
}

/// `dst[i] = f(src[i])` 8 lanes at a time; a last part vector as the last 8 values again
/// (`src` and `dst` are distinct, so the lanes written twice get the same codes) rather than
/// a masked store, which AMD's Zen 2 and 3 microcode (see `spans`). The values past the last
/// multiple of 8 had gone one by one through `one`, the i64 definition (on a 7×7 map, 1 of
/// each channel's 49: B1's 5×5 aggregations' requantization 5 % faster without it). Fewer
/// than 8 values go to `one`. Inlined into its callers, which are compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn each8(
    src: &[i32],
    dst: &mut [i32],
    f: impl Fn(__m256i) -> __m256i,
    one: impl Fn(i32) -> i32,
) {
    let n = src.len().min(dst.len());
    if n < 8 {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = one(v);
        }
        return;
    }
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY (both): `at + 8 ≤ n`, inside both slices; the CPU has AVX2 (the caller's promise).
    let vector = |at: usize| unsafe {
        let v = _mm256_loadu_si256(from.add(at).cast());
        _mm256_storeu_si256(to.add(at).cast(), f(v));
    };
    let mut at = 0;
    while at + 8 <= n {
        vector(at);
        at += 8;
    }
    if at < n {
        vector(n - 8);
    }
}

/// Where [`each16_into`] puts its lanes: i32 codes, or [`LiftedBytes`].
#[cfg(target_arch = "x86_64")]
pub(super) trait Out16 {
    fn len(&self) -> usize;
    /// Stores the 16 lanes of `v` at `at`, or (`mask`) the ones it sets.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; the lanes stored lie inside `self`.
    unsafe fn store(&mut self, at: usize, mask: Option<__mmask16>, v: __m512i);
}

#[cfg(target_arch = "x86_64")]
impl Out16 for &mut [i32] {
    fn len(&self) -> usize {
        <[i32]>::len(self)
    }

    #[inline(always)]
    unsafe fn store(&mut self, at: usize, mask: Option<__mmask16>, v: __m512i) {
        // SAFETY: the caller's promise.
        unsafe {
            let to = self.as_mut_ptr().add(at);
            match mask {
                None => _mm512_storeu_si512(to.cast(), v),
                Some(mask) => _mm512_mask_storeu_epi32(to, mask, v),
            }
        }
    }
}

/// Codes stored as bytes, each plus `lift` (see `crate::exec::int::byte_codes`).
#[cfg(target_arch = "x86_64")]
pub(super) struct LiftedBytes<'a> {
    pub bytes: &'a mut [u8],
    pub lift: __m512i,
}

#[cfg(target_arch = "x86_64")]
impl Out16 for LiftedBytes<'_> {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    #[inline(always)]
    unsafe fn store(&mut self, at: usize, mask: Option<__mmask16>, v: __m512i) {
        // SAFETY: the caller's promise.
        unsafe {
            let to = self.bytes.as_mut_ptr().add(at);
            let v = _mm512_add_epi32(v, self.lift);
            match mask {
                None => _mm_storeu_si128(to.cast(), _mm512_cvtepi32_epi8(v)),
                Some(mask) => _mm512_mask_cvtepi32_storeu_epi8(to.cast(), mask, v),
            }
        }
    }
}

/// [`each16_into`] [`LiftedBytes`], four registers of lanes at a time packed into one of
/// bytes: two `vpackssdw`, one `vpackuswb` and a `vpermd` that puts the 128-bit lanes' words
/// back in order, four µops on Intel's permute port where four `vpmovdb` take eight (B1's
/// square Hardswish into bytes 1.10× faster alone on Emerald Rapids: `cargo bench -p
/// qvit-core --bench int8 -- hardswish_epilogue::2`). The lift is added to words, once per
/// 32 values. Packing saturates, which changes nothing: the lifted codes lie in a u8 (the
/// caller's promise, as for [`LiftedBytes`]). The last part of 64 lanes goes 16 at a time.
///
/// # Safety
/// The CPU has AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn each64_bytes(
    src: &[i32],
    dst: &mut [u8],
    lift: i32,
    f: impl Fn(__m512i) -> __m512i,
) {
    let n = src.len().min(dst.len());
    let whole = n / 64 * 64;
    // SAFETY (the block): the CPU has AVX-512 F and BW (the caller's promise); each step reads
    // 64 i32 of `src` and writes 64 bytes of `dst` from `at + 64 ≤ whole ≤ n`.
    unsafe {
        let words = _mm512_set1_epi16(lift as i16);
        // Packing interleaves the four registers' 128-bit lanes: dword `4k + r` of the packed
        // bytes holds register `r`'s values `4k..4k + 4`, which belong at dword `4r + k`.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
        for at in (0..whole).step_by(64) {
            let lanes = |r: usize| f(_mm512_loadu_si512(from.add(at + 16 * r).cast()));
            let (a, b) = (lanes(0), lanes(1));
            let ab = _mm512_add_epi16(_mm512_packs_epi32(a, b), words);
            let (c, d) = (lanes(2), lanes(3));
            let cd = _mm512_add_epi16(_mm512_packs_epi32(c, d), words);
            let bytes = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(ab, cd));
            _mm512_storeu_si512(to.add(at).cast(), bytes);
        }
        let rest = LiftedBytes {
            bytes: &mut dst[whole..n],
            lift: _mm512_set1_epi32(lift),
        };
        each16_into(&src[whole..n], rest, f);
    }
}

/// [`each16`] into any [`Out16`].
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn each16_into(src: &[i32], mut dst: impl Out16, f: impl Fn(__m512i) -> __m512i) {
    let n = src.len().min(dst.len());
    let whole = n / 16 * 16;
    for (i, s) in src[..whole].chunks_exact(16).enumerate() {
        // SAFETY: `s` holds 16 i32 and `dst` 16 lanes from `16i`; the CPU has AVX-512 F (the
        // caller's promise).
        unsafe { dst.store(16 * i, None, f(_mm512_loadu_si512(s.as_ptr().cast()))) };
    }
    if whole < n {
        let mask: __mmask16 = ((1u32 << (n - whole)) - 1) as u16;
        // SAFETY: the mask reads and writes lanes `whole..n` only, inside both; the CPU has
        // AVX-512 F (the caller's promise).
        unsafe {
            let v = _mm512_maskz_loadu_epi32(mask, src[whole..].as_ptr());
            dst.store(whole, Some(mask), f(v));
        }
    }
}

/// `dst[i] = n.apply_i32(src[i])`, 16 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn requant_avx512(n: &Narrow, src: &[i32], dst: &mut [i32]) {
    let lanes = Narrow512::new(n);
    // SAFETY: this function is compiled for AVX-512 F, which its callers checked.
    unsafe { each16(src, dst, |v| lanes.apply(v)) };
}

/// `dst[i] = h.apply_i32(src[i])`, 16 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn hardswish_avx512(h: &NarrowHardswish, src: &[i32], dst: &mut [i32]) {
    let s = h.t_input.unwrap_or(UNSCALED);
    match (h.product, h.t_input.is_some()) {
        (Product::Signed, false) => hardswish_products_avx512::<false, false>(h, 0, s, src, dst),
        (Product::Signed, true) => hardswish_products_avx512::<false, true>(h, 0, s, src, dst),
        (Product::Above(l), false) => hardswish_products_avx512::<true, false>(h, l, s, src, dst),
        (Product::Above(l), true) => hardswish_products_avx512::<true, true>(h, l, s, src, dst),
    }
}

/// [`hardswish_avx512`] with the products as they are (`ABOVE` false) or less `least`, in
/// u32 (see [`Product::Above`]), the input scaled first or not.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn hardswish_products_avx512<const ABOVE: bool, const SCALED: bool>(
    h: &NarrowHardswish,
    least: i32,
    scale: InputScale,
    src: &[i32],
    dst: &mut [i32],
) {
    let (t, out) = (High512::new(&h.t), High512::new(&h.out));
    let scale = Scale512::new(&scale);
    let set = _mm512_set1_epi32;
    let (t_min, mirror, floor, cap) = (set(h.t_min), set(h.mirror), set(h.floor), set(h.cap));
    let (three, six, least) = (set(h.three), set(2 * h.three), set(least));
    // SAFETY: this function is compiled for AVX-512 F, which its callers checked.
    unsafe {
        each16(src, dst, |v| {
            let x = _mm512_max_epi32(t.apply(scale.apply::<SCALED>(v)), t_min);
            let x = _mm512_max_epi32(x, _mm512_sub_epi32(mirror, x));
            let x = _mm512_min_epi32(_mm512_max_epi32(x, floor), cap);
            let c = _mm512_min_epi32(_mm512_add_epi32(x, three), six);
            let p = _mm512_mullo_epi32(x, c);
            match ABOVE {
                true => out.apply_unsigned(_mm512_sub_epi32(p, least)),
                false => out.apply(p),
            }
        });
    }
}

/// `dst[i] = w.apply_i32(src[i])`, 16 lanes at a time (the product in two registers of 8
/// i64: even and odd lanes; `w.out.m ≥ 0`, as [`High512::wide`] needs, is checked where `w`
/// is made). A loop for inputs scaled first and one for the others.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn hardswish_wide_avx512(w: &WideHardswish, src: &[i32], dst: &mut [i32]) {
    match w.t_input {
        Some(scale) => wide_avx512::<true>(w, scale, src, dst),
        None => wide_avx512::<false>(w, UNSCALED, src, dst),
    }
}

/// An [`InputScale`] that changes nothing, for the loops that do not scale.
#[cfg(target_arch = "x86_64")]
pub(super) const UNSCALED: InputScale = InputScale {
    shift: 0,
    min: i32::MIN,
    max: i32::MAX,
};

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
// Not inlined into its AVX-512 DQ caller: with DQ, LLVM fuses the two 32-bit products back
// into `vpmullq` (three µops), which made the loop no faster than the compiler's own.
#[inline(never)]
fn wide_avx512<const SCALED: bool>(
    w: &WideHardswish,
    scale: InputScale,
    src: &[i32],
    dst: &mut [i32],
) {
    let (t, out) = (Narrow512::new(&w.t), Narrow512::new(&w.out));
    let (three, six) = (_mm512_set1_epi32(w.three), _mm512_set1_epi32(2 * w.three));
    let scale = Scale512::new(&scale);
    // SAFETY: this function is compiled for AVX-512 F, which its callers checked.
    unsafe {
        each16(src, dst, |v| {
            let v = scale.apply::<SCALED>(v);
            let x = t.apply(v);
            let c = _mm512_min_epi32(_mm512_add_epi32(x, three), six);
            let even = _mm512_mul_epi32(x, c);
            let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), _mm512_srli_epi64::<32>(c));
            out.wide(even, odd)
        });
    }
}

/// [`hardswish_wide_avx512`] 8 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn hardswish_wide_avx2(w: &WideHardswish, src: &[i32], dst: &mut [i32]) {
    match w.t_input {
        Some(scale) => wide_avx2::<true>(w, scale, src, dst),
        None => wide_avx2::<false>(w, UNSCALED, src, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn wide_avx2<const SCALED: bool>(
    w: &WideHardswish,
    scale: InputScale,
    src: &[i32],
    dst: &mut [i32],
) {
    let (t, out) = (Narrow256::new(&w.t), Narrow256::new(&w.out));
    let (three, six) = (_mm256_set1_epi32(w.three), _mm256_set1_epi32(2 * w.three));
    let scale = Scale256::new(&scale);
    let lanes = |v| {
        let x = t.apply(scale.apply::<SCALED>(v));
        let c = _mm256_min_epi32(_mm256_add_epi32(x, three), six);
        let even = _mm256_mul_epi32(x, c);
        let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(x), _mm256_srli_epi64::<32>(c));
        out.wide(even, odd)
    };
    // SAFETY: this function is compiled for AVX2, which its callers checked.
    unsafe { each8(src, dst, lanes, |v| w.apply_i32(v)) };
}

/// `dst[i] = n.apply_i32(src[i])`, 8 lanes at a time ([`each8`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn requant_avx2(n: &Narrow, src: &[i32], dst: &mut [i32]) {
    let lanes = Narrow256::new(n);
    // SAFETY: this function is compiled for AVX2, which its callers checked.
    unsafe { each8(src, dst, |v| lanes.apply(v), |v| n.apply_i32(v)) };
}

/// `dst[i] = h.apply_i32(src[i])`, 8 lanes at a time ([`each8`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn hardswish_avx2(h: &NarrowHardswish, src: &[i32], dst: &mut [i32]) {
    let s = h.t_input.unwrap_or(UNSCALED);
    match (h.product, h.t_input.is_some()) {
        (Product::Signed, false) => hardswish_products_avx2::<false, false>(h, 0, s, src, dst),
        (Product::Signed, true) => hardswish_products_avx2::<false, true>(h, 0, s, src, dst),
        (Product::Above(l), false) => hardswish_products_avx2::<true, false>(h, l, s, src, dst),
        (Product::Above(l), true) => hardswish_products_avx2::<true, true>(h, l, s, src, dst),
    }
}

/// [`hardswish_avx2`] with the products as they are or less `least` (see
/// [`hardswish_products_avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hardswish_products_avx2<const ABOVE: bool, const SCALED: bool>(
    h: &NarrowHardswish,
    least: i32,
    scale: InputScale,
    src: &[i32],
    dst: &mut [i32],
) {
    let (t, out) = (High256::new(&h.t), High256::new(&h.out));
    let scale = Scale256::new(&scale);
    let set = _mm256_set1_epi32;
    let (t_min, mirror, floor, cap) = (set(h.t_min), set(h.mirror), set(h.floor), set(h.cap));
    let (three, six, least) = (set(h.three), set(2 * h.three), set(least));
    let lanes = |v| {
        let x = _mm256_max_epi32(t.apply(scale.apply::<SCALED>(v)), t_min);
        let x = _mm256_max_epi32(x, _mm256_sub_epi32(mirror, x));
        let x = _mm256_min_epi32(_mm256_max_epi32(x, floor), cap);
        let c = _mm256_min_epi32(_mm256_add_epi32(x, three), six);
        let p = _mm256_mullo_epi32(x, c);
        match ABOVE {
            true => out.apply_unsigned(_mm256_sub_epi32(p, least)),
            false => out.apply(p),
        }
    };
    // SAFETY: this function is compiled for AVX2, which its callers checked.
    unsafe { each8(src, dst, lanes, |v| h.apply_i32(v)) };
}

/// An [`InputScale`] in 512-bit registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Scale512 {
    min: __m512i,
    max: __m512i,
    /// The shift in every lane: `vpsllvd` is one µop where a shift by an `xmm` count is two
    /// on Intel (one of them on the permute port).
    shift: __m512i,
}

#[cfg(target_arch = "x86_64")]
impl Scale512 {
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(s: &InputScale) -> Self {
        Self {
            min: _mm512_set1_epi32(s.min),
            max: _mm512_set1_epi32(s.max),
            shift: _mm512_set1_epi32(s.shift as i32),
        }
    }

    /// [`InputScale::apply`] of 16 lanes where `SCALED`, the lanes as they are otherwise.
    #[target_feature(enable = "avx512f")]
    pub(super) fn apply<const SCALED: bool>(&self, v: __m512i) -> __m512i {
        match SCALED {
            true => _mm512_sllv_epi32(
                _mm512_min_epi32(_mm512_max_epi32(v, self.min), self.max),
                self.shift,
            ),
            false => v,
        }
    }
}

/// [`Scale512`] in 256-bit registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Scale256 {
    min: __m256i,
    max: __m256i,
    shift: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl Scale256 {
    #[target_feature(enable = "avx2")]
    pub(super) fn new(s: &InputScale) -> Self {
        Self {
            min: _mm256_set1_epi32(s.min),
            max: _mm256_set1_epi32(s.max),
            shift: _mm256_set1_epi32(s.shift as i32),
        }
    }

    /// [`Scale512::apply`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn apply<const SCALED: bool>(&self, v: __m256i) -> __m256i {
        match SCALED {
            true => _mm256_sllv_epi32(
                _mm256_min_epi32(_mm256_max_epi32(v, self.min), self.max),
                self.shift,
            ),
            false => v,
        }
    }
}

/// An [`Unclamped`]'s constants (or a [`Narrow`]'s before its clamp) in 512-bit registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct High512 {
    m: __m512i,
    lo: __m512i,
    /// The shift in every lane, for `vpsravd` (see [`Scale512`]).
    shift: __m512i,
}

#[cfg(target_arch = "x86_64")]
impl High512 {
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(u: &Unclamped) -> Self {
        Self {
            m: _mm512_set1_epi32(u.m),
            lo: _mm512_set1_epi64(u.lo),
            shift: _mm512_set1_epi32(u.shift as i32),
        }
    }

    /// [`Unclamped::apply_i32`] of 16 lanes: the 64-bit sums `v·m + lo` of the even lanes and
    /// of the odd ones, their high halves blended into one register and shifted.
    #[target_feature(enable = "avx512f")]
    pub(super) fn apply(&self, v: __m512i) -> __m512i {
        let even = _mm512_add_epi64(_mm512_mul_epi32(v, self.m), self.lo);
        let odd = _mm512_srli_epi64::<32>(v);
        let odd = _mm512_add_epi64(_mm512_mul_epi32(odd, self.m), self.lo);
        self.of_sums(even, odd)
    }

    /// [`Unclamped::apply_u32`] of 16 lanes: [`High512::apply`] with `vpmuludq`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn apply_unsigned(&self, v: __m512i) -> __m512i {
        self.shift(self.high_halves_unsigned(v))
    }

    /// [`High512::apply_unsigned`] before its shift: the high halves of the 64-bit sums.
    #[target_feature(enable = "avx512f")]
    pub(super) fn high_halves_unsigned(&self, v: __m512i) -> __m512i {
        let even = _mm512_add_epi64(_mm512_mul_epu32(v, self.m), self.lo);
        let odd = _mm512_srli_epi64::<32>(v);
        let odd = _mm512_add_epi64(_mm512_mul_epu32(odd, self.m), self.lo);
        _mm512_permutex2var_epi32(even, high_halves(), odd)
    }

    /// The shift that ends [`High512::apply`], of high halves.
    #[target_feature(enable = "avx512f")]
    pub(super) fn shift(&self, high: __m512i) -> __m512i {
        _mm512_srav_epi32(high, self.shift)
    }

    /// The shifted high halves of 16 i64 products `p·m + lo` (the even lanes in `even`, the
    /// odd ones in `odd`), for a multiplier `m ≥ 0`: `p·m = (p_high·m)·2^32 + p_low·m` with
    /// `p_low` unsigned, both `vpmuldq`/`vpmuludq`, exact modulo 2^64 and so exact where
    /// `|p·m| < 2^62`.
    #[target_feature(enable = "avx512f")]
    fn wide(&self, even: __m512i, odd: __m512i) -> __m512i {
        let times_m = |p| {
            let high = _mm512_mul_epi32(_mm512_srli_epi64::<32>(p), self.m);
            let low = _mm512_mul_epu32(p, self.m);
            _mm512_add_epi64(
                _mm512_add_epi64(_mm512_slli_epi64::<32>(high), low),
                self.lo,
            )
        };
        self.of_sums(times_m(even), times_m(odd))
    }

    /// The high halves of the 64-bit sums of the even lanes and the odd ones, gathered into
    /// one register by one `vpermt2d` (rather than a shift and a blend: 22 instructions per
    /// 16 Hardswish values instead of 24) and shifted.
    #[target_feature(enable = "avx512f")]
    fn of_sums(&self, even: __m512i, odd: __m512i) -> __m512i {
        let high = _mm512_permutex2var_epi32(even, high_halves(), odd);
        _mm512_srav_epi32(high, self.shift)
    }
}

/// The indices of `vpermt2d` that take the high half of each 64-bit lane of two registers,
/// the first's into the even lanes and the second's into the odd ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn high_halves() -> __m512i {
    _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31)
}

/// A [`Narrow`]'s constants in 512-bit registers: [`High512`], then the clamp and the zero
/// point.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Narrow512 {
    high: High512,
    hi: __m512i,
    min: __m512i,
    max: __m512i,
}

#[cfg(target_arch = "x86_64")]
impl Narrow512 {
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(n: &Narrow) -> Self {
        Self {
            high: High512::new(&n.unclamped_part()),
            hi: _mm512_set1_epi32(n.hi),
            min: _mm512_set1_epi32(n.min),
            max: _mm512_set1_epi32(n.max),
        }
    }

    /// [`Narrow::apply_i32`] of 16 lanes.
    #[target_feature(enable = "avx512f")]
    pub(super) fn apply(&self, v: __m512i) -> __m512i {
        self.finish(self.high.apply(v))
    }

    /// [`Narrow::apply`] of 16 i64 (see [`High512::wide`]).
    #[target_feature(enable = "avx512f")]
    fn wide(&self, even: __m512i, odd: __m512i) -> __m512i {
        self.finish(self.high.wide(even, odd))
    }

    #[target_feature(enable = "avx512f")]
    fn finish(&self, h: __m512i) -> __m512i {
        _mm512_add_epi32(
            _mm512_min_epi32(_mm512_max_epi32(h, self.min), self.max),
            self.hi,
        )
    }
}

/// [`High512`] in 256-bit registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct High256 {
    m: __m256i,
    lo: __m256i,
    shift: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl High256 {
    #[target_feature(enable = "avx2")]
    pub(super) fn new(u: &Unclamped) -> Self {
        Self {
            m: _mm256_set1_epi32(u.m),
            lo: _mm256_set1_epi64x(u.lo),
            shift: _mm256_set1_epi32(u.shift as i32),
        }
    }

    /// [`High512::apply`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn apply(&self, v: __m256i) -> __m256i {
        let even = _mm256_add_epi64(_mm256_mul_epi32(v, self.m), self.lo);
        let odd = _mm256_srli_epi64::<32>(v);
        let odd = _mm256_add_epi64(_mm256_mul_epi32(odd, self.m), self.lo);
        self.of_sums(even, odd)
    }

    /// [`High512::apply_unsigned`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn apply_unsigned(&self, v: __m256i) -> __m256i {
        self.shift(self.high_halves_unsigned(v))
    }

    /// [`High512::high_halves_unsigned`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn high_halves_unsigned(&self, v: __m256i) -> __m256i {
        let even = _mm256_add_epi64(_mm256_mul_epu32(v, self.m), self.lo);
        let odd = _mm256_srli_epi64::<32>(v);
        let odd = _mm256_add_epi64(_mm256_mul_epu32(odd, self.m), self.lo);
        _mm256_blend_epi32::<0xAA>(_mm256_srli_epi64::<32>(even), odd)
    }

    /// [`High512::shift`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn shift(&self, high: __m256i) -> __m256i {
        _mm256_srav_epi32(high, self.shift)
    }

    /// [`High512::wide`] of 8 i64.
    #[target_feature(enable = "avx2")]
    fn wide(&self, even: __m256i, odd: __m256i) -> __m256i {
        let times_m = |p| {
            let high = _mm256_mul_epi32(_mm256_srli_epi64::<32>(p), self.m);
            let low = _mm256_mul_epu32(p, self.m);
            _mm256_add_epi64(
                _mm256_add_epi64(_mm256_slli_epi64::<32>(high), low),
                self.lo,
            )
        };
        self.of_sums(times_m(even), times_m(odd))
    }

    /// [`High512::of_sums`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    fn of_sums(&self, even: __m256i, odd: __m256i) -> __m256i {
        let high = _mm256_blend_epi32::<0xAA>(_mm256_srli_epi64::<32>(even), odd);
        _mm256_srav_epi32(high, self.shift)
    }
}

/// [`Narrow512`] in 256-bit registers.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Narrow256 {
    high: High256,
    hi: __m256i,
    min: __m256i,
    max: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl Narrow256 {
    #[target_feature(enable = "avx2")]
    pub(super) fn new(n: &Narrow) -> Self {
        Self {
            high: High256::new(&n.unclamped_part()),
            hi: _mm256_set1_epi32(n.hi),
            min: _mm256_set1_epi32(n.min),
            max: _mm256_set1_epi32(n.max),
        }
    }

    /// [`Narrow::apply_i32`] of 8 lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn apply(&self, v: __m256i) -> __m256i {
        self.finish(self.high.apply(v))
    }

    /// [`Narrow256::wide`] of 8 i64 (see [`High512::wide`]).
    #[target_feature(enable = "avx2")]
    fn wide(&self, even: __m256i, odd: __m256i) -> __m256i {
        self.finish(self.high.wide(even, odd))
    }

    #[target_feature(enable = "avx2")]
    fn finish(&self, h: __m256i) -> __m256i {
        _mm256_add_epi32(
            _mm256_min_epi32(_mm256_max_epi32(h, self.min), self.max),
            self.hi,
        )
    }
}
