//! The residual add's lanes in 16-bit pairs, for input codes that fit i16 (all of qvit's
//! activations: 8 bits or fewer). The general lanes ([`AddLane`]) form `a·m_a + b·m_b + c` in
//! 64 bits: four `vpmuldq` per 16 codes and their halves put back together, 22 instructions.
//! Here each multiplier is cut at bit 16, `m = m_high·2^16 + m_low` with both parts signed
//! 16-bit words (`−2^15 ≤ m_low < 2^15`: the compiler's multipliers run up to 2^31, so an
//! unsigned low part would leave `m_high` a bit too wide), and `a`, `b` packed as the two words
//! of one i32 lane, so that one `vpmaddwd` forms `L = a·m_low_a + b·m_low_b` and one more
//! `H = a·m_high_a + b·m_high_b`, both inside i32. With `c = c_high·2^16 + c_low`
//! (`0 ≤ c_low < 2^16`), `a·m_a + b·m_b + c = (H + c_high)·2^16 + L + c_low`, so for `k ≥ 16`
//!
//! `(a·m_a + b·m_b + c) >> k = (H + c_high + ((L + c_low) >> 16)) >> (k − 16)`
//!
//! (an arithmetic shift is a floor division, and floors of floors by powers of two compose):
//! the same integers in 32-bit lanes, about 14 instructions per 16 codes with AVX-512 and the
//! same per 8 with AVX2 (where the general lanes are the compiler's 64-bit arithmetic).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::add::AddLane;

/// One channel's constants in the pair form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pairs {
    /// `m_low` of `m_a` in the low word and of `m_b` in the high word: `vpmaddwd`'s operand.
    pub low: i32,
    /// `m_high` of `m_a` and of `m_b`, as words likewise.
    pub high: i32,
    pub c_low: i32,
    pub c_high: i32,
    /// `k − 16`.
    pub shift: u32,
}

/// The words of one i32 lane: `low` in bits 0–15, `high` in bits 16–31.
fn words(low: i64, high: i64) -> i32 {
    (low as u16 as u32 | (high as u16 as u32) << 16) as i32
}

impl Pairs {
    /// The pair form of `lane` for input codes of magnitude at most `codes`, when its
    /// intermediates stay inside i32 (see the module); `None` otherwise.
    pub fn new(lane: &AddLane, codes: u32) -> Option<Pairs> {
        if !(16..=47).contains(&lane.k) {
            return None;
        }
        // Signed words: the low part rounded into −2^15..2^15, the high part what remains.
        let split = |m: i64| {
            let low = ((m + (1 << 15)) & 0xFFFF) - (1 << 15);
            let high = (m - low) >> 16;
            (-(1 << 15)..1 << 15).contains(&high).then_some((low, high))
        };
        let ((low_a, high_a), (low_b, high_b)) = (split(lane.m_a as i64)?, split(lane.m_b as i64)?);
        let (c_low, c_high) = (lane.c & 0xFFFF, lane.c >> 16);
        // |L| and |H| ≤ 2·codes·2^15; with `c_low`, `c_high` and the carry of
        // `(L + c_low) >> 16`, every intermediate below 2^31 in magnitude.
        let codes = codes as i64;
        let products = 2 * codes * (1 << 15);
        let carry = (products + (1 << 16)) / (1 << 16) + 1;
        let fits = products + (1 << 16) < 1 << 31 && products + c_high.abs() + carry < 1 << 31;
        fits.then(|| Pairs {
            low: words(low_a, low_b),
            high: words(high_a, high_b),
            c_low: c_low as i32,
            c_high: c_high as i32,
            shift: lane.k - 16,
        })
    }

    /// The lanes' integers for one pair of codes (each of magnitude at most the `codes`
    /// [`Pairs::new`] took).
    pub fn apply(&self, a: i32, b: i32, (qmin, qmax): (i32, i32)) -> i32 {
        let word = |v: i32, high: bool| if high { v >> 16 } else { v as i16 as i32 };
        let dot = |m: i32| a * word(m, false) + b * word(m, true);
        let l = dot(self.low) + self.c_low;
        ((dot(self.high) + self.c_high + (l >> 16)) >> self.shift).clamp(qmin, qmax)
    }
}

/// The constants of up to 16 neighbouring channels (the rest 0) in the pair form, as the
/// lanes read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairBlock {
    low: [i32; 16],
    high: [i32; 16],
    c_low: [i32; 16],
    c_high: [i32; 16],
    shift: [u32; 16],
}

impl PairBlock {
    pub fn new(pairs: &[Pairs]) -> PairBlock {
        let mut block = PairBlock::default();
        for (i, p) in pairs.iter().take(16).enumerate() {
            block.low[i] = p.low;
            block.high[i] = p.high;
            block.c_low[i] = p.c_low;
            block.c_high[i] = p.c_high;
            block.shift[i] = p.shift;
        }
        block
    }

    /// Lane `i`'s channel.
    pub fn lane(&self, i: usize) -> Pairs {
        Pairs {
            low: self.low[i],
            high: self.high[i],
            c_low: self.c_low[i],
            c_high: self.c_high[i],
            shift: self.shift[i],
        }
    }

    /// Every lane the same channel's.
    pub fn of_one(p: &Pairs) -> PairBlock {
        PairBlock::new(&[*p; 16])
    }
}

/// `out[at..at + len] = ` the pair form of `a` and `b`'s same elements, element `at + i` by
/// lane `i` of `block`, with AVX-512.
///
/// # Safety
/// The CPU has AVX-512 F and BW; `1 ≤ len ≤ 16` and `at + len` is within all three slices.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn apply512(
    block: &PairBlock,
    (qmin, qmax): (i32, i32),
    (a, b, out): (&[i32], &[i32], &mut [i32]),
    at: usize,
    len: usize,
) {
    debug_assert!((1..=16).contains(&len) && at + len <= a.len().min(b.len()).min(out.len()));
    let mask = ((1u32 << len) - 1) as __mmask16;
    // SAFETY: the caller's promises; the masked accesses touch lanes `0..len` only, and each
    // array of the block holds 16 lanes.
    unsafe {
        let load = |v: &[i32; 16]| _mm512_loadu_si512(v.as_ptr().cast());
        let va = _mm512_maskz_loadu_epi32(mask, a.as_ptr().add(at));
        let vb = _mm512_maskz_loadu_epi32(mask, b.as_ptr().add(at));
        // `a`'s low word, `b`'s low word above it.
        let ab = _mm512_mask_blend_epi16(0xAAAA_AAAA, va, _mm512_slli_epi32::<16>(vb));
        let l = _mm512_add_epi32(_mm512_madd_epi16(ab, load(&block.low)), load(&block.c_low));
        let h = _mm512_add_epi32(
            _mm512_madd_epi16(ab, load(&block.high)),
            load(&block.c_high),
        );
        let sum = _mm512_add_epi32(h, _mm512_srai_epi32::<16>(l));
        let shift = _mm512_loadu_si512(block.shift.as_ptr().cast());
        let q = _mm512_srav_epi32(sum, shift);
        let q = _mm512_min_epi32(
            _mm512_max_epi32(q, _mm512_set1_epi32(qmin)),
            _mm512_set1_epi32(qmax),
        );
        _mm512_mask_storeu_epi32(out.as_mut_ptr().add(at), mask, q);
    }
}

/// [`apply512`] for 8 lanes with AVX2: lanes `half·8 ..` of `block`, `len` = 8.
///
/// # Safety
/// The CPU has AVX2; `half` is 0 or 1 and `at + 8` is within all three slices.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn apply256(
    block: &PairBlock,
    (qmin, qmax): (i32, i32),
    (a, b, out): (&[i32], &[i32], &mut [i32]),
    at: usize,
    half: usize,
) {
    debug_assert!(half < 2 && at + 8 <= a.len().min(b.len()).min(out.len()));
    // SAFETY: the caller's promises; each array of the block holds 16 lanes, of which the
    // loads read lanes `8·half .. 8·half + 8`.
    unsafe {
        let load = |v: &[i32; 16]| _mm256_loadu_si256(v[8 * half..].as_ptr().cast());
        let va = _mm256_loadu_si256(a.as_ptr().add(at).cast());
        let vb = _mm256_loadu_si256(b.as_ptr().add(at).cast());
        let ab = _mm256_blend_epi16::<0xAA>(va, _mm256_slli_epi32::<16>(vb));
        let l = _mm256_add_epi32(_mm256_madd_epi16(ab, load(&block.low)), load(&block.c_low));
        let h = _mm256_add_epi32(
            _mm256_madd_epi16(ab, load(&block.high)),
            load(&block.c_high),
        );
        let sum = _mm256_add_epi32(h, _mm256_srai_epi32::<16>(l));
        let shift = _mm256_loadu_si256(block.shift[8 * half..].as_ptr().cast());
        let q = _mm256_srav_epi32(sum, shift);
        let q = _mm256_min_epi32(
            _mm256_max_epi32(q, _mm256_set1_epi32(qmin)),
            _mm256_set1_epi32(qmax),
        );
        _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), q);
    }
}
