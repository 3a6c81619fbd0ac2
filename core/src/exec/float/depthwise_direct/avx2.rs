//! The direct depthwise conv in AVX2: eight outputs of a row per register, read straight from
//! the map. On a CPU without AVX-512 every conv took the phase-plane kernel, whose copy of each
//! channel into zero-padded planes was a third of its time, and whose sums went through a row
//! buffer and a pass for the bias: the depthwise convs were 23 % of EfficientViT-B1's fp32
//! time on one thread of an AMD Zen 3 (`qvit bench efficientvit-b1 --executors fp32 --steps
//! --threads 1`).
//!
//! A block whose taps all lie inside its rows reads each tap with a plain load; a block at a
//! row's ends reads with masked loads (`vmaskmovps`), the columns outside the map as zeros
//! (only the masked *store* is slow on AMD's Zen 2 and 3). Rows of padding are skipped: their
//! products are zeros, and adding a zero to a sum that started at +0 changes nothing. A row
//! whose width is not a multiple of eight ends with a block that overlaps the one before: its
//! outputs are computed twice by the same operations, so written twice with the same bits,
//! and no store is partial but in rows narrower than a block.
//!
//! At stride 2, a tap's eight outputs read every other column: two loads of sixteen columns
//! from the kernel row's first column `c` give the even (`vshufps` 0x88) and odd (0xDD)
//! columns for taps 0 and 1, two more from `c + 2` those for taps 2 and 3, and so on. Within
//! each 128-bit half the shuffles keep the order, across them not: the sums come out in the
//! order (0 1 4 5 2 3 6 7) for every tap alike, and one `vpermpd` per block puts them back.
//!
//! The arithmetic is the definition's: every output sums its taps in (row, column) order from
//! +0, products and sums rounded separately, then adds the bias.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::Activation;
use crate::exec::float::hardswish_lanes;

/// Outputs per register.
const LANES: usize = 8;

/// Where the blocks of a row of `n` outputs start: every eight, the last one moved back to end
/// at the row's end where `n` is not a multiple of eight (a row narrower than a block has one
/// block at 0).
fn block_starts(n: usize) -> impl Iterator<Item = usize> {
    let whole = (0..n.saturating_sub(LANES - 1)).step_by(LANES);
    let last = (!n.is_multiple_of(LANES) && n > LANES).then(|| n - LANES);
    whole.chain(last).chain((n < LANES).then_some(0))
}

/// All ones in the lanes `l` whose column `first + l` lies in `0..w` (`index` holds `l`).
#[inline]
#[target_feature(enable = "avx2")]
fn inside(first: isize, w: usize, index: __m256i) -> __m256i {
    let column = _mm256_add_epi32(_mm256_set1_epi32(first as i32), index);
    let right = _mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32), column);
    _mm256_andnot_si256(_mm256_srai_epi32::<31>(column), right)
}

/// Eight floats from `p`; with `MASKED`, the lanes `mask` clears read nothing and hold zero.
///
/// # Safety
/// The CPU has AVX2; the lanes read (all, or those `mask` keeps) lie inside one allocation.
#[inline(always)]
unsafe fn load<const MASKED: bool>(p: *const f32, mask: __m256i) -> __m256 {
    // SAFETY: the caller's promises.
    unsafe {
        if MASKED {
            _mm256_maskload_ps(p, mask)
        } else {
            _mm256_loadu_ps(p)
        }
    }
}

/// The first `len` lanes of `v` at `to`: a whole block by one store, a row narrower than a
/// block by stores of four, two and one lanes (a copy through the stack called `memcpy`).
///
/// # Safety
/// The CPU has AVX2; `to` points at `len.min(8)` writable floats.
#[inline(always)]
unsafe fn store(to: *mut f32, v: __m256, len: usize) {
    // SAFETY: the caller's promises; each store writes lanes below `len` alone.
    unsafe {
        if len >= LANES {
            return _mm256_storeu_ps(to, v);
        }
        let (mut part, mut to, mut len) = (_mm256_castps256_ps128(v), to, len);
        if len >= 4 {
            _mm_storeu_ps(to, part);
            (part, to, len) = (_mm256_extractf128_ps::<1>(v), to.add(4), len - 4);
        }
        if len >= 2 {
            _mm_store_sd(to.cast(), _mm_castps_pd(part));
            (part, to, len) = (_mm_movehl_ps(part, part), to.add(2), len - 2);
        }
        if len == 1 {
            _mm_store_ss(to, part);
        }
    }
}

/// Each tap's weight in every lane.
#[inline]
#[target_feature(enable = "avx2")]
fn broadcast<const K: usize>(wt: &[f32]) -> [[__m256; K]; K] {
    let mut weights = [[_mm256_setzero_ps(); K]; K];
    for (row, taps) in weights.iter_mut().zip(wt.chunks_exact(K)) {
        for (v, &tap) in row.iter_mut().zip(taps) {
            *v = _mm256_set1_ps(tap);
        }
    }
    weights
}

/// One channel: `x` its `h × w` plane, `wt` its `K × K` weights (padding `K/2`), `out` its
/// output plane at stride `S` (1 or 2): `h × w`, or `⌈h/2⌉ × ⌈w/2⌉`, each output finished by
/// the bias and the activation.
///
/// # Safety
/// The CPU has AVX2; `x` holds `h·w` values, `wt` `K²`, `out` the output plane.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn channel<const K: usize, const S: usize>(
    (h, w): (usize, usize),
    x: &[f32],
    wt: &[f32],
    (bias, act): (f32, Activation),
    out: &mut [f32],
) {
    let plane = Plane {
        x,
        h,
        w,
        ow: w.div_ceil(S),
        weights: broadcast::<K>(wt),
        bias: _mm256_set1_ps(bias),
        act,
        index: _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    };
    let oh = h.div_ceil(S);
    if oh < ROWS {
        for oy in 0..oh {
            // SAFETY: `oy` is an output row; the caller's promises.
            unsafe { plane.rows::<S, 1>(oy, out) };
        }
        return;
    }
    // As the blocks of a row, the last group of rows moved back to end at the last row.
    for oy in (0..=oh - ROWS)
        .step_by(ROWS)
        .chain((!oh.is_multiple_of(ROWS)).then(|| oh - ROWS))
    {
        // SAFETY: rows `oy..oy + ROWS` are output rows; the caller's promises.
        unsafe { plane.rows::<S, ROWS>(oy, out) };
    }
}

/// Output rows summed at once: four independent sums per block hide the adds' latency (one
/// chain of `K²` adds per block left a Zen 3 waiting on it: 2× slower), and at stride 1 each
/// load serves the up to four rows it is a tap of. Where the rows are not a multiple of four,
/// the last group overlaps the one before, as the blocks of a row do (summing the last rows
/// one at a time was 1.3× slower on 7×7 maps).
const ROWS: usize = 4;

/// One channel's input plane and weights.
struct Plane<'a, const K: usize> {
    x: &'a [f32],
    h: usize,
    w: usize,
    /// Outputs per row.
    ow: usize,
    weights: [[__m256; K]; K],
    bias: __m256,
    act: Activation,
    /// Lane `l` holds `l`.
    index: __m256i,
}

impl<const K: usize> Plane<'_, K> {
    /// Output rows `oy..oy + R` at stride `S`, block by block.
    ///
    /// # Safety
    /// The CPU has AVX2; rows `oy..oy + R` are output rows, and `out` holds the output plane.
    #[inline(always)]
    unsafe fn rows<const S: usize, const R: usize>(&self, oy: usize, out: &mut [f32]) {
        let (pad, w, ow) = (K / 2, self.w, self.ow);
        // Columns the loads of a kernel row span from its first: the block's and the taps'
        // reach at stride 1; pairs of vectors from every even tap at stride 2.
        let reach = match S {
            1 => LANES + K - 1,
            _ => 2 * LANES + 2 * ((K - 1) / 2),
        };
        let first_row = (S * oy) as isize - pad as isize;
        for ox in block_starts(ow) {
            let first = (S * ox) as isize - pad as isize;
            // SAFETY (both): the rows summed lie in the plane, and the lanes read in them in
            // their row (all of them where `first..first + reach` lies inside it).
            let sums = if first >= 0 && first as usize + reach <= w {
                unsafe { self.sums::<S, R, false>(first_row, first, &[self.index; 8]) }
            } else {
                // At stride 1 mask `kx` for tap `kx`; at stride 2 mask `2j + v` for vector
                // `v` of the pair loaded for taps `2j` and `2j + 1`.
                let masks = std::array::from_fn(|m| {
                    let from = match S {
                        1 => m,
                        _ => 2 * (m / 2) + LANES * (m % 2),
                    };
                    // SAFETY: the CPU has AVX2 (the caller's promise).
                    unsafe { inside(first + from as isize, w, self.index) }
                });
                unsafe { self.sums::<S, R, true>(first_row, first, &masks) }
            };
            for (r, &sum) in sums.iter().enumerate() {
                // At stride 2 the sums are in the order (0 1 4 5 2 3 6 7), as 64-bit pairs
                // (0 2 1 3): back in order.
                let to = out[(oy + r) * ow + ox..].as_mut_ptr();
                // SAFETY: the CPU has AVX2; the block's outputs (or the row's, narrower) lie in
                // row `oy + r`.
                unsafe {
                    let sum = match S {
                        1 => sum,
                        _ => _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                            _mm256_castps_pd(sum),
                        )),
                    };
                    let v = _mm256_add_ps(sum, self.bias);
                    let v = match self.act {
                        Activation::None => v,
                        Activation::Hardswish => hardswish_lanes::avx2(v),
                    };
                    store(to, v, ow - ox);
                }
            }
        }
    }

    /// The sums of `R` output rows' blocks whose kernel rows start at plane row `first_row`
    /// and column `first`: each input row's taps loaded once, and added to each output row
    /// whose kernel row it is, in (row, column) order. `masks` as [`Self::taps`] takes them.
    ///
    /// # Safety
    /// The CPU has AVX2; the lanes read (those `masks` keeps where `MASKED`) lie in the
    /// plane's rows.
    #[inline(always)]
    unsafe fn sums<const S: usize, const R: usize, const MASKED: bool>(
        &self,
        first_row: isize,
        first: isize,
        masks: &[__m256i; 8],
    ) -> [__m256; R] {
        // SAFETY: the caller's promises.
        unsafe {
            let mut sums = [_mm256_setzero_ps(); R];
            for i in 0..S * (R - 1) + K {
                let iy = first_row + i as isize;
                if !(0..self.h as isize).contains(&iy) {
                    continue;
                }
                let from = self.x.as_ptr().wrapping_add(iy as usize * self.w);
                let taps = Self::taps::<S, MASKED>(from.wrapping_offset(first), masks);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let Some(row_weights) =
                        i.checked_sub(S * r).and_then(|ky| self.weights.get(ky))
                    else {
                        continue;
                    };
                    for (&tap, &weight) in taps.iter().zip(row_weights) {
                        *sum = _mm256_add_ps(*sum, _mm256_mul_ps(tap, weight));
                    }
                }
            }
            sums
        }
    }

    /// A kernel row's `K` taps for eight outputs at stride `S`, from `from`, its first column.
    /// At stride 1 tap `kx` is eight columns from `from + kx`, read under `masks[kx]` where
    /// `MASKED`; at stride 2 taps `2j` and `2j + 1` the even and odd columns of sixteen from
    /// `from + 2j`, read under `masks[2j]` and `masks[2j + 1]`, in the lanes' order
    /// (0 1 4 5 2 3 6 7).
    ///
    /// # Safety
    /// The CPU has AVX2; the lanes read lie in one row of the plane.
    #[inline(always)]
    unsafe fn taps<const S: usize, const MASKED: bool>(
        from: *const f32,
        masks: &[__m256i; 8],
    ) -> [__m256; K] {
        // SAFETY: the caller's promises.
        unsafe {
            let mut taps = [_mm256_setzero_ps(); K];
            if S == 1 {
                for (kx, tap) in taps.iter_mut().enumerate() {
                    *tap = load::<MASKED>(from.wrapping_add(kx), masks[kx]);
                }
                return taps;
            }
            for j in 0..K.div_ceil(2) {
                let at = from.wrapping_add(2 * j);
                let low = load::<MASKED>(at, masks[2 * j]);
                let high = load::<MASKED>(at.wrapping_add(LANES), masks[2 * j + 1]);
                taps[2 * j] = _mm256_shuffle_ps::<0b10_00_10_00>(low, high);
                if 2 * j + 1 < K {
                    taps[2 * j + 1] = _mm256_shuffle_ps::<0b11_01_11_01>(low, high);
                }
            }
            taps
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block of a row lies inside it, and together they cover it.
    #[test]
    fn blocks_cover_a_row_and_stay_inside_it() {
        for n in 1..=40 {
            let mut covered = vec![false; n];
            for start in block_starts(n) {
                assert!(
                    start + LANES <= n.max(LANES),
                    "row of {n}: block at {start}"
                );
                for c in covered.iter_mut().skip(start).take(LANES) {
                    *c = true;
                }
            }
            assert!(covered.iter().all(|&c| c), "row of {n}");
        }
    }
}
