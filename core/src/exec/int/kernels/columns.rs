//! The requantization of a token-major product's sums, `[tokens, channels]` i32: each channel
//! with its own [`Narrow`] constants, each token with an offset added to its sums first (the
//! correction of a product whose activations were the signed operand, see
//! `ops::token_major`). A vector holds 16 (AVX-512) or 8 (AVX2) neighbouring
//! channels, so the constants are vectors loaded once per block of channels, and the tokens
//! pass under them; the arithmetic is [`Narrow::apply_i32`]'s, lane by lane (the even and odd
//! lanes' 64-bit products as in `narrow_lanes`), so every path gives the same integers.
//!
//! The products' tiles apply the same lanes (`Block512`, `Block256`) to their sums while they
//! are in registers ([`Requantize`], [`gemm_rows_requantized`](super::gemm_rows_requantized)),
//! and look the results up in a layer's code table where it has one ([`LookUp`]); the pass
//! over stored sums ([`ColumnNarrow::apply`]) is the portable path's.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::cell::Cell;

use super::Isa;
#[cfg(target_arch = "x86_64")]
use super::narrow_lanes::high_halves;
use super::requant::Narrow;
use crate::exec::int::code_table::CodeTable;

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

/// A token-major product's requantization in the product itself (see
/// [`gemm_rows_requantized`](super::gemm_rows_requantized)): the channels' constants, the
/// offset of each row of the product's output (counted from its first), and the table the
/// requantized values are looked up in, if any.
#[derive(Debug, Clone, Copy)]
pub struct Requantize<'a> {
    pub columns: &'a ColumnNarrow,
    pub offsets: &'a [i32],
    pub table: Option<LookUp<'a>>,
}

/// The codes of a layer's requantized values, `table.codes[x − table.first]` (GELU's, see
/// [`CodeTable`]), and for each row of the output whether any of its values lay past the
/// table: such a value's code is then some code of the table, for the caller to overwrite.
/// The table starts inside i32 and holds at most 2^32 codes
/// ([`in_32_bits`](super::requant::in_32_bits)).
#[derive(Debug, Clone, Copy)]
pub struct LookUp<'a> {
    pub table: &'a CodeTable,
    /// Set for each row with a value past the table; left as it was for the others.
    pub outside: &'a [Cell<bool>],
    pub read: Read,
}

/// How the products' tiles read a code table: the same codes either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A load per lane.
    Loads,
    /// By its buckets ([`Buckets`](crate::exec::int::code_table::buckets::Buckets)) where it
    /// has them and the CPU reads them in lanes (AVX-512 VBMI and VPOPCNTDQ); by loads
    /// otherwise.
    Buckets,
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
    for c0 in (0..width).step_by(WIDE) {
        let mask = ((1u32 << (width - c0).min(WIDE)) - 1) as __mmask16;
        // SAFETY: `c0` is a block's first channel; the sums and codes of token `t` are `src`
        // and `dst` at `t·width + c0 ..`, of which the mask touches the block's channels only
        // (`apply` checked both hold every token's row).
        unsafe {
            let block = c.block512(c0);
            for (t, &offset) in offsets.iter().enumerate() {
                let at = t * width + c0;
                let v = _mm512_maskz_loadu_epi32(mask, src[at..].as_ptr());
                let code = block.apply(_mm512_add_epi32(v, _mm512_set1_epi32(offset)));
                _mm512_mask_storeu_epi32(dst[at..].as_mut_ptr(), mask, code);
            }
        }
    }
}

/// The constants of 16 neighbouring channels in AVX-512 lanes (see [`ColumnNarrow::block512`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Block512 {
    m: __m512i,
    m_odd: __m512i,
    shift: __m512i,
    min: __m512i,
    max: __m512i,
    hi: __m512i,
    lo_even: __m512i,
    lo_odd: __m512i,
}

#[cfg(target_arch = "x86_64")]
impl ColumnNarrow {
    /// The constants of channels `c0..c0 + 16` (zero past the last channel).
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `c0` is a multiple of 16 below [`ColumnNarrow::channels`].
    #[inline(always)]
    pub(super) unsafe fn block512(&self, c0: usize) -> Block512 {
        assert!(c0.is_multiple_of(WIDE) && c0 < self.channels());
        // SAFETY: the constants are padded to whole blocks of 16, so each load of 16 (or of 8
        // addends, twice) at the block's start lies inside them; AVX-512 F is the caller's.
        // The loads written out: a closure here would have no target features (this function
        // has none of its own) and could call each intrinsic rather than inline it.
        unsafe {
            let m = _mm512_loadu_si512(self.m[c0..].as_ptr().cast());
            let lo = &self.lo_wide[c0..];
            Block512 {
                m,
                m_odd: _mm512_srli_epi64::<32>(m),
                shift: _mm512_loadu_si512(self.shift[c0..].as_ptr().cast()),
                min: _mm512_loadu_si512(self.min[c0..].as_ptr().cast()),
                max: _mm512_loadu_si512(self.max[c0..].as_ptr().cast()),
                hi: _mm512_loadu_si512(self.hi[c0..].as_ptr().cast()),
                lo_even: _mm512_loadu_si512(lo.as_ptr().cast()),
                lo_odd: _mm512_loadu_si512(lo[WIDE / 2..].as_ptr().cast()),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Block512 {
    /// Each lane's [`Narrow::apply_i32`] of its sum. A token's offset is the caller's to add
    /// first: the products' tiles start their sums from it, which leaves the requantization
    /// one addition fewer.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[inline(always)]
    pub(super) unsafe fn apply(&self, v: __m512i) -> __m512i {
        // SAFETY: AVX-512 F is the caller's promise.
        unsafe {
            let even = _mm512_add_epi64(_mm512_mul_epi32(v, self.m), self.lo_even);
            let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(v), self.m_odd);
            let odd = _mm512_add_epi64(odd, self.lo_odd);
            // The high halves of both products' sums by one `vpermt2d`, not a shift and a
            // blend (as `narrow_lanes` gathers them).
            let high = _mm512_permutex2var_epi32(even, high_halves(), odd);
            let h = _mm512_srav_epi32(high, self.shift);
            _mm512_add_epi32(
                _mm512_min_epi32(_mm512_max_epi32(h, self.min), self.max),
                self.hi,
            )
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
    for span in super::spans::spans(width) {
        // SAFETY: as in `apply_avx512`, with blocks of 8 and each span's access touching the
        // block's channels only.
        unsafe {
            let block = c.block256(span.at);
            for (t, &offset) in offsets.iter().enumerate() {
                let at = t * width + span.at;
                let v = span.load(src[at..].as_ptr());
                let code = block.apply(_mm256_add_epi32(v, _mm256_set1_epi32(offset)));
                span.store(dst[at..].as_mut_ptr(), code);
            }
        }
    }
}

/// [`Block512`] for 8 channels in AVX2 lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Block256 {
    m: __m256i,
    m_odd: __m256i,
    shift: __m256i,
    min: __m256i,
    max: __m256i,
    hi: __m256i,
    lo_even: __m256i,
    lo_odd: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl ColumnNarrow {
    /// The constants of channels `c0..c0 + 8` (zero past the last channel).
    ///
    /// # Safety
    /// The CPU has AVX2; `c0` is a multiple of 8 below [`ColumnNarrow::channels`].
    #[inline(always)]
    pub(super) unsafe fn block256(&self, c0: usize) -> Block256 {
        assert!(c0.is_multiple_of(HALF) && c0 < self.channels());
        // SAFETY: the constants are padded to whole blocks of 16, so each load of 8 (or of 4
        // addends, twice) at the block's start lies inside them; AVX2 is the caller's. The
        // loads are written out for the reason `block512` gives.
        unsafe {
            let m = _mm256_loadu_si256(self.m[c0..].as_ptr().cast());
            let lo = &self.lo_half[c0..];
            Block256 {
                m,
                m_odd: _mm256_srli_epi64::<32>(m),
                shift: _mm256_loadu_si256(self.shift[c0..].as_ptr().cast()),
                min: _mm256_loadu_si256(self.min[c0..].as_ptr().cast()),
                max: _mm256_loadu_si256(self.max[c0..].as_ptr().cast()),
                hi: _mm256_loadu_si256(self.hi[c0..].as_ptr().cast()),
                lo_even: _mm256_loadu_si256(lo.as_ptr().cast()),
                lo_odd: _mm256_loadu_si256(lo[HALF / 2..].as_ptr().cast()),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Block256 {
    /// Each lane's [`Narrow::apply_i32`] of its sum (a token's offset added by the caller, as
    /// for [`Block512::apply`]).
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    pub(super) unsafe fn apply(&self, v: __m256i) -> __m256i {
        // SAFETY: AVX2 is the caller's promise.
        unsafe {
            let even = _mm256_add_epi64(_mm256_mul_epi32(v, self.m), self.lo_even);
            let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(v), self.m_odd);
            let odd = _mm256_add_epi64(odd, self.lo_odd);
            let high = _mm256_blend_epi32::<0xAA>(_mm256_srli_epi64::<32>(even), odd);
            let h = _mm256_srav_epi32(high, self.shift);
            _mm256_add_epi32(
                _mm256_min_epi32(_mm256_max_epi32(h, self.min), self.max),
                self.hi,
            )
        }
    }
}

/// A [`Requantize`] with its [`LookUp`], the table's bounds as lanes compare them: what the
/// products' tiles run (`vnni`, `avx2`).
#[cfg(target_arch = "x86_64")]
pub(super) struct LookedUp<'a> {
    pub(super) columns: &'a ColumnNarrow,
    pub(super) offsets: &'a [i32],
    codes: &'a [i32],
    first: i32,
    /// The last index of `codes`.
    last: u32,
    outside: &'a [Cell<bool>],
}

#[cfg(target_arch = "x86_64")]
impl<'a> LookedUp<'a> {
    /// Panics unless the table starts inside i32 and holds 1 to 2^32 codes, and `rows`
    /// rows have a flag each.
    pub(super) fn new(r: &Requantize<'a>, look_up: &LookUp<'a>, rows: usize) -> Self {
        let t = look_up.table;
        assert!(look_up.outside.len() >= rows, "a flag for every row");
        LookedUp {
            columns: r.columns,
            offsets: r.offsets,
            codes: t.codes(),
            first: i32::try_from(t.first()).expect("a table that starts inside i32"),
            last: u32::try_from(t.codes().len().checked_sub(1).expect("a table with codes"))
                .expect("a table of at most 2^32 codes"),
            outside: look_up.outside,
        }
    }

    /// `codes[index[l]]` for every lane `l`, a load each: what both widths' look-ups read.
    ///
    /// # Safety
    /// Every index is at most `last` (the look-ups clamp them).
    #[inline(always)]
    unsafe fn codes_at<const N: usize>(&self, index: &[u32; N]) -> [i32; N] {
        // SAFETY: each index is at most `last`, the last of `codes` (the caller's promise).
        std::array::from_fn(|l| unsafe { *self.codes.get_unchecked(index[l] as usize) })
    }

    /// The entries of the values `x` of row `r` (16 channels, of which `lanes` are
    /// channels), clamped into the table; row `r` marked if one of them lay past it.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `r` is one of the rows [`LookedUp::new`] was given.
    #[inline(always)]
    pub(super) unsafe fn entries512(&self, x: __m512i, lanes: __mmask16, r: usize) -> __m512i {
        // SAFETY: AVX-512 F is the caller's promise.
        unsafe {
            // Below the table the difference wraps to a huge index: past `last` as well.
            let i = _mm512_sub_epi32(x, _mm512_set1_epi32(self.first));
            let clamped = _mm512_min_epu32(i, _mm512_set1_epi32(self.last as i32));
            // Channels whose value the clamp moved were past the table.
            if _mm512_mask_cmpneq_epi32_mask(lanes, clamped, i) != 0 {
                self.outside[r].set(true);
            }
            clamped
        }
    }

    /// The codes of the values `x` of row `r` (16 channels, of which `lanes` are channels),
    /// row `r` marked if one of them lay past the table.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `r` is one of the rows [`LookedUp::new`] was given.
    #[inline(always)]
    pub(super) unsafe fn look_up512(&self, x: __m512i, lanes: __mmask16, r: usize) -> __m512i {
        // SAFETY: AVX-512 F and `r` are the caller's promises; every index read is clamped to
        // `last`, inside `codes`.
        unsafe {
            let clamped = self.entries512(x, lanes, r);
            // A load per lane rather than `vpgatherdd`: DeiT-T's fc1 blocks took 0.84–0.97×
            // the gather's time on Zen 4 (BENCHMARKS.md, "The look-up's cost alone"), the
            // CPU's load ports serving the loads side by side.
            let mut index = [0u32; 16];
            _mm512_storeu_si512(index.as_mut_ptr().cast(), clamped);
            _mm512_loadu_si512(self.codes_at(&index).as_ptr().cast())
        }
    }

    /// [`LookedUp::look_up512`] for 8 channels, `lanes` all ones in the lanes that are
    /// channels.
    ///
    /// # Safety
    /// The CPU has AVX2; `r` is one of the rows [`LookedUp::new`] was given.
    #[inline(always)]
    pub(super) unsafe fn look_up256(&self, x: __m256i, lanes: __m256i, r: usize) -> __m256i {
        // SAFETY: AVX2 is the caller's promise; every index read is clamped to `last`, inside
        // `codes`.
        unsafe {
            // As in `look_up512`, with a load per lane too (the gather took 1–5 % longer on
            // Zen 4, by the same measurement).
            let i = _mm256_sub_epi32(x, _mm256_set1_epi32(self.first));
            let clamped = _mm256_min_epu32(i, _mm256_set1_epi32(self.last as i32));
            // Only the lanes that are channels count.
            if _mm256_testz_si256(_mm256_xor_si256(clamped, i), lanes) == 0 {
                self.outside[r].set(true);
            }
            let mut index = [0u32; 8];
            _mm256_storeu_si256(index.as_mut_ptr().cast(), clamped);
            _mm256_loadu_si256(self.codes_at(&index).as_ptr().cast())
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
