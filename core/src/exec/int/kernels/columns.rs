//! The requantization of a token-major product's sums, `[tokens, channels]` i32: each channel
//! with its own [`Narrow`] constants, each token with an offset added to its sums first (the
//! correction of a product whose activations were the signed operand, see
//! `ops::token_major`). A vector holds 16 (AVX-512) or 8 (AVX2) neighbouring
//! channels, so the constants are vectors loaded once per block of channels, and the tokens
//! pass under them; the arithmetic is [`Narrow::apply_i32`]'s, lane by lane (the even and odd
//! lanes' 64-bit products as in `narrow_lanes`), so every path gives the same integers.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Isa;
use super::requant::Narrow;

/// Channels per AVX-512 vector; the constants are padded to a multiple of it.
const WIDE: usize = 16;
/// Channels per AVX2 vector.
const HALF: usize = 8;

/// Per-channel [`Narrow`]s laid out for lanes.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnNarrow {
    channels: Vec<Narrow>,
    /// Per channel, zero past the last up to a multiple of [`WIDE`]: the multiplier, the
    /// shift, the clamp (less the zero point) and the zero point.
    m: Vec<i32>,
    shift: Vec<i32>,
    min: Vec<i32>,
    max: Vec<i32>,
    hi: Vec<i32>,
    /// The 64-bit addends of each [`WIDE`] channels: the even channels' 8, then the odd ones'
    /// (the lanes of AVX-512's two `vpmuldq` products).
    lo_wide: Vec<i64>,
    /// The same for each [`HALF`] channels (AVX2's).
    lo_half: Vec<i64>,
}

impl ColumnNarrow {
    pub fn new(channels: Vec<Narrow>) -> Self {
        let padded = channels.len().next_multiple_of(WIDE);
        let field = |f: fn(&Narrow) -> i32| -> Vec<i32> {
            let mut v: Vec<i32> = channels.iter().map(f).collect();
            v.resize(padded, 0);
            v
        };
        let mut lo: Vec<i64> = channels.iter().map(|n| n.lo).collect();
        lo.resize(padded, 0);
        // Each block of `width` addends as its even-indexed ones, then its odd-indexed ones.
        let split = |width: usize| -> Vec<i64> {
            lo.chunks_exact(width)
                .flat_map(|block| {
                    let even = block.iter().step_by(2);
                    even.chain(block.iter().skip(1).step_by(2)).copied()
                })
                .collect()
        };
        Self {
            m: field(|n| n.m),
            shift: field(|n| n.shift as i32),
            min: field(|n| n.min),
            max: field(|n| n.max),
            hi: field(|n| n.hi),
            lo_wide: split(WIDE),
            lo_half: split(HALF),
            channels,
        }
    }

    /// Channels per token.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Channel `c`'s constants.
    pub fn channel(&self, c: usize) -> &Narrow {
        &self.channels[c]
    }

    /// `dst[t·C + c] = N_c(src[t·C + c] + offsets[t])` for every token `t < offsets.len()` and
    /// channel `c < C` (`C` = [`ColumnNarrow::channels`], `N_c` channel `c`'s [`Narrow`]); the
    /// sum wraps in i32, as lanes add. Nothing past the tokens' rows is written.
    ///
    /// Panics when `src` or `dst` holds fewer than `offsets.len()·C` values.
    pub fn apply(&self, isa: Isa, src: &[i32], offsets: &[i32], dst: &mut [i32]) {
        let len = offsets.len() * self.channels();
        assert!(
            src.len() >= len && dst.len() >= len,
            "{} tokens of {} channels from {} sums into {}",
            offsets.len(),
            self.channels(),
            src.len(),
            dst.len()
        );
        if len == 0 {
            return;
        }
        by_width!(
            isa,
            apply_avx512,
            apply_avx2,
            apply_portable,
            (self, &src[..len], offsets, &mut dst[..len])
        )
    }
}

fn apply_portable(c: &ColumnNarrow, src: &[i32], offsets: &[i32], dst: &mut [i32]) {
    let width = c.channels();
    let rows = src.chunks_exact(width).zip(dst.chunks_exact_mut(width));
    for ((src, dst), &offset) in rows.zip(offsets) {
        for ((d, &v), n) in dst.iter_mut().zip(src).zip(&c.channels) {
            *d = n.apply_i32(v.wrapping_add(offset));
        }
    }
}

/// Tokens per pass of the channel blocks: a block's constants are loaded once per pass, and
/// each token's row is read in order from one block to the next (a pass over all the tokens
/// per block had read the sums a whole row apart, with a cache miss on most loads: 6 % of
/// DeiT-T's integer time, by `perf`).
const TOKENS_PER_PASS: usize = 16;

/// Each pass of [`TOKENS_PER_PASS`] tokens, each block of 16 channels: the block's constants in
/// registers, then the tokens' 16 sums (a masked load and store for a last block of fewer).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn apply_avx512(c: &ColumnNarrow, src: &[i32], offsets: &[i32], dst: &mut [i32]) {
    let width = c.channels();
    for (pass, offsets) in offsets.chunks(TOKENS_PER_PASS).enumerate() {
        let first = pass * TOKENS_PER_PASS * width;
        let (src, dst) = (&src[first..], &mut dst[first..]);
        // SAFETY: the CPU has AVX-512 F (the caller's promise); the slices hold the pass's rows.
        unsafe { pass_avx512(c, src, offsets, dst) };
    }
}

/// One pass of [`apply_avx512`]: the tokens `offsets` holds, from the slices' starts.
///
/// # Safety
/// The CPU has AVX-512 F; `src` and `dst` hold `offsets.len()` rows of `c.channels()`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pass_avx512(c: &ColumnNarrow, src: &[i32], offsets: &[i32], dst: &mut [i32]) {
    let width = c.channels();
    for (b, c0) in (0..width).step_by(WIDE).enumerate() {
        let mask = ((1u32 << (width - c0).min(WIDE)) - 1) as __mmask16;
        // SAFETY: the constants are padded to whole blocks of 16, so each load of 16 (or of 8
        // addends, twice) at the block's start lies inside them; the sums and codes of token
        // `t` are `src` and `dst` at `t·width + c0 ..`, of which the mask touches the block's
        // channels only (`apply` checked both hold every token's row).
        unsafe {
            let load = |v: &[i32]| _mm512_loadu_si512(v[c0..].as_ptr().cast());
            let (m, shift) = (load(&c.m), load(&c.shift));
            let (min, max, hi) = (load(&c.min), load(&c.max), load(&c.hi));
            let m_odd = _mm512_srli_epi64::<32>(m);
            let lo = &c.lo_wide[b * WIDE..];
            let lo_even = _mm512_loadu_si512(lo.as_ptr().cast());
            let lo_odd = _mm512_loadu_si512(lo[WIDE / 2..].as_ptr().cast());
            for (t, &offset) in offsets.iter().enumerate() {
                let at = t * width + c0;
                let v = _mm512_maskz_loadu_epi32(mask, src[at..].as_ptr());
                let v = _mm512_add_epi32(v, _mm512_set1_epi32(offset));
                let even = _mm512_add_epi64(_mm512_mul_epi32(v, m), lo_even);
                let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(v), m_odd);
                let odd = _mm512_add_epi64(odd, lo_odd);
                let high = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even), odd);
                let h = _mm512_srav_epi32(high, shift);
                let code = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(h, min), max), hi);
                _mm512_mask_storeu_epi32(dst[at..].as_mut_ptr(), mask, code);
            }
        }
    }
}

/// [`apply_avx512`] 8 channels at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_avx2(c: &ColumnNarrow, src: &[i32], offsets: &[i32], dst: &mut [i32]) {
    let width = c.channels();
    for (pass, offsets) in offsets.chunks(TOKENS_PER_PASS).enumerate() {
        let first = pass * TOKENS_PER_PASS * width;
        let (src, dst) = (&src[first..], &mut dst[first..]);
        // SAFETY: the CPU has AVX2 (the caller's promise); the slices hold the pass's rows.
        unsafe { pass_avx2(c, src, offsets, dst) };
    }
}

/// One pass of [`apply_avx2`] (see [`pass_avx512`]).
///
/// # Safety
/// The CPU has AVX2; `src` and `dst` hold `offsets.len()` rows of `c.channels()`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pass_avx2(c: &ColumnNarrow, src: &[i32], offsets: &[i32], dst: &mut [i32]) {
    let width = c.channels();
    for (b, c0) in (0..width).step_by(HALF).enumerate() {
        let lanes = (width - c0).min(HALF) as i32;
        // SAFETY: as in `apply_avx512`, with blocks of 8 (the constants are padded to 16) and
        // `vpmaskmovd` touching the block's channels only.
        unsafe {
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(lanes),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let load = |v: &[i32]| _mm256_loadu_si256(v[c0..].as_ptr().cast());
            let (m, shift) = (load(&c.m), load(&c.shift));
            let (min, max, hi) = (load(&c.min), load(&c.max), load(&c.hi));
            let m_odd = _mm256_srli_epi64::<32>(m);
            let lo = &c.lo_half[b * HALF..];
            let lo_even = _mm256_loadu_si256(lo.as_ptr().cast());
            let lo_odd = _mm256_loadu_si256(lo[HALF / 2..].as_ptr().cast());
            for (t, &offset) in offsets.iter().enumerate() {
                let at = t * width + c0;
                let v = _mm256_maskload_epi32(src[at..].as_ptr(), mask);
                let v = _mm256_add_epi32(v, _mm256_set1_epi32(offset));
                let even = _mm256_add_epi64(_mm256_mul_epi32(v, m), lo_even);
                let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(v), m_odd);
                let odd = _mm256_add_epi64(odd, lo_odd);
                let high = _mm256_blend_epi32::<0xAA>(_mm256_srli_epi64::<32>(even), odd);
                let h = _mm256_srav_epi32(high, shift);
                let code = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(h, min), max), hi);
                _mm256_maskstore_epi32(dst[at..].as_mut_ptr(), mask, code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::requant::Fast;
    use super::*;
    use crate::rng::Rng;

    /// A channel's constants from a random [`Fast`] with a shift of 32–40 and a clamp that
    /// binds on some sums: an 8-bit output with its zero point.
    fn random_channel(rng: &mut Rng) -> Narrow {
        let k = 32 + rng.below(9) as u32;
        let zero = rng.below(256) as i64 - 128;
        let fast = Fast {
            m: rng.below(1 << 30) as i32 + 1,
            lo: (rng.below(1 << 40) as i64 - (1 << 39)) << (k - 32),
            hi: zero,
            k,
            qmin: -128,
            qmax: 127,
        };
        fast.narrow()
            .expect("a shift of 32 or more and small bounds")
    }

    /// DeiT-T's widths and odd ones (blocks of 16, of 8, a last part block), sums over the
    /// whole i32 range with offsets: on every ISA each code is the channel's [`Narrow`] of the
    /// sum plus its token's offset, and nothing past the rows is written.
    #[test]
    fn columns_equal_each_channels_requantization() {
        let mut rng = Rng::new(21);
        for (tokens, width) in [
            (1, 1),
            (3, 7),
            (5, 8),
            (2, 17),
            (9, 33),
            (112, 192),
            (85, 576),
        ] {
            let columns = ColumnNarrow::new((0..width).map(|_| random_channel(&mut rng)).collect());
            let src: Vec<i32> = (0..tokens * width)
                .map(|i| match i % 3 {
                    0 => rng.below(1 << 24) as i32 - (1 << 23),
                    1 => rng.next_u64() as u32 as i32,
                    _ => rng.below(1 << 12) as i32 - (1 << 11),
                })
                .collect();
            let offsets: Vec<i32> = (0..tokens)
                .map(|_| rng.below(1 << 22) as i32 - (1 << 21))
                .collect();
            for isa in Isa::available() {
                let mut got = vec![i32::MIN; tokens * width + 19];
                columns.apply(isa, &src, &offsets, &mut got);
                for t in 0..tokens {
                    for c in 0..width {
                        let v = src[t * width + c].wrapping_add(offsets[t]);
                        let want = columns.channel(c).apply_i32(v);
                        assert_eq!(
                            got[t * width + c],
                            want,
                            "{} token {t} channel {c} of {tokens} × {width}",
                            isa.name()
                        );
                    }
                }
                assert!(got[tokens * width..].iter().all(|&g| g == i32::MIN));
            }
        }
    }
}
