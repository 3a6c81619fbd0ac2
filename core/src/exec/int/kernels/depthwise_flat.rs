//! Stride-1 depthwise convolution on AVX-512 VNNI over *flattened* padded planes: one
//! `vpdpwssd` multiplies a tap pair for 16 outputs and adds them, whatever the map's width.
//!
//! A channel's padded plane `P` (`h + 2p` rows of `wp = w + 2p` codes less the zero-point,
//! zeros around) is read as one long row. Output `(y, x)` sits at flat position `n = y·wp + x`
//! and its tap `(i, j)` reads `P[n + i·wp + j]`, so every tap is a contiguous run for every
//! output at once, across row ends. The positions `x ≥ ow` of each flat row (the last `k − 1`)
//! are computed too and dropped when the sums are stored (`vpcompressd`): on a 7×7 map with a
//! 3×3 kernel that is 49 of 63 positions kept, where rows of their own would use 7 of 16 lanes.
//!
//! The taps pair `(2p, 2p + 1)` as in [`super::depthwise_pairs`], here in words that hold each
//! code twice: word `m` holds `(P[m], P[m + 1])`, and pair `p` of kernel row `i` is word
//! `n + i·wp + 2p` (an odd kernel's last tap pairs with a zero weight). The words are built 16 at a time straight from the codes: a masked load of the
//! codes the vector holds, spread to their lanes by `vpexpandd` (padding lanes 0). A channel's
//! words are built one channel ahead of their use, so that the products' loads, each of which
//! straddles two of the words' stores, do not wait on stores still in flight.
//!
//! Exact: the same i32 sums as the definition (the products and sums wrap as `vpmaddwd`'s and
//! `vpaddd`'s do), tested with every other depthwise path on every small geometry.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::depthwise::DwShape;
use super::depthwise_pairs::weight_pairs;

/// Lanes of a vector of words, codes or sums.
const LANES: usize = 16;

/// Whether the flat kernel runs this shape: one that [`flattens`], on a plane that fits L1.
pub fn supports(s: &DwShape) -> bool {
    flattens(s) && Flat::words(s) <= L1_WORDS
}

/// Whether a shape's outputs are its flattened padded plane's valid windows: stride 1,
/// kernels 3, 5 and 7 with the padding that keeps the map's size or less.
pub(super) fn flattens(s: &DwShape) -> bool {
    let (h, w) = s.in_hw;
    let (k, p) = (s.kernel, s.padding);
    s.stride == 1
        && matches!(k, 3 | 5 | 7)
        && p < k
        && h + 2 * p >= k
        && w + 2 * p >= k
        && s.out_hw == (h + 2 * p + 1 - k, w + 2 * p + 1 - k)
}

/// The lanes of a flattened plane (`wp` wide): per vector of `inputs` vectors of flat
/// positions, the lanes holding a code (`w` from `(r, p)` for each padded row `r`), and per
/// vector of `outputs`, the lanes of real outputs (`ow` from the start of each of the first
/// `oh` rows).
pub(super) fn plane_lanes(s: &DwShape, inputs: usize, outputs: usize) -> (Vec<Lanes>, Vec<Lanes>) {
    let (h, w) = s.in_hw;
    let (oh, ow) = s.out_hw;
    let p = s.padding;
    let wp = w + 2 * p;
    let codes: Vec<Lanes> = (runs(inputs, (p..p + h).map(|r| r * wp + p), w).into_iter())
        .map(Lanes::new)
        .collect();
    let keep: Vec<Lanes> = (runs(outputs, (0..oh).map(|y| y * wp), ow).into_iter())
        .map(Lanes::new)
        .collect();
    // What the kernels' unsafe reads and masked stores rely on: every code read once, every
    // output stored once.
    assert_eq!(codes.iter().map(|l| l.count).sum::<usize>(), h * w);
    assert_eq!(keep.iter().map(|l| l.count).sum::<usize>(), oh * ow);
    (codes, keep)
}

/// Stores the lanes `keep` marks of one vector of sums compactly at `out[stored..]`, and
/// returns `stored` past them. The whole vector where it fits: the lanes past the kept ones
/// land on outputs that a later store (this channel's next vector, or the next channel's
/// first) writes again. Only the call's very end is stored masked. (Measured while this kernel
/// still ran the int8 bench's 16 × 112² map, on AMD Zen 4: 97 µs with every sum stored masked,
/// 73 with whole vectors.)
///
/// # Safety
/// The CPU has AVX-512 F; the kept lanes of all a call's vectors number no more than
/// `out.len()`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_kept(
    out: &mut [i32],
    stored: usize,
    keep: &Lanes,
    sums: __m512i,
) -> usize {
    let sums = _mm512_maskz_compress_epi32(keep.at, sums);
    let at = out[stored..].as_mut_ptr();
    // SAFETY: `out` holds 16 values from `at`, or (masked) the `count` kept, which over all
    // vectors number `oh·ow` ≤ `out.len()`.
    unsafe {
        match stored + LANES <= out.len() {
            true => _mm512_storeu_si512(at.cast(), sums),
            false => _mm512_mask_storeu_epi32(at, keep.first, sums),
        }
    };
    stored + keep.count
}

/// The most words a channel's plane may take: two channels' (the one built ahead and the one
/// read) then fit in a 32 KiB L1 data cache. On the larger planes the kernel lost to
/// [`super::depthwise_pairs`] (the int8 bench's 16 × 112² map: 73 µs against 61 on AMD Zen 4;
/// 128 × 56², whose planes fit, 134 against 138).
const L1_WORDS: usize = 4096;

/// Where a call's codes, words and sums lie, the same for every channel.
struct Flat {
    /// The padded row's width.
    wp: usize,
    /// Per vector of flat positions `16u..16u + 16`, the lanes holding a code (the others are
    /// padding): one more than the words, whose last vector reads one position past its own.
    codes: Vec<Lanes>,
    /// Per vector of outputs, the lanes of real ones (`x < ow`, `y < oh`).
    keep: Vec<Lanes>,
    /// Vectors of words a channel needs: the last output vector's last tap pair reads word
    /// `16·outputs − 1 + (k − 1)·wp + 2·(pairs − 1)`.
    word_vectors: usize,
}

impl Flat {
    /// Vectors of outputs (flat positions `0..oh·wp`) and of words for the shape `s`.
    fn vectors(s: &DwShape) -> (usize, usize) {
        let (k, wp) = (s.kernel, s.in_hw.1 + 2 * s.padding);
        let out_vectors = (s.out_hw.0 * wp).div_ceil(LANES);
        let last_word = out_vectors * LANES - 1 + (k - 1) * wp + 2 * (k.div_ceil(2) - 1);
        (out_vectors, (last_word + 1).div_ceil(LANES))
    }

    /// Words of one channel's plane.
    fn words(s: &DwShape) -> usize {
        Flat::vectors(s).1 * LANES
    }

    fn new(s: &DwShape) -> Flat {
        let (out_vectors, word_vectors) = Flat::vectors(s);
        let (codes, keep) = plane_lanes(s, word_vectors + 1, out_vectors);
        Flat {
            wp: s.in_hw.1 + 2 * s.padding,
            codes,
            keep,
            word_vectors,
        }
    }

    /// Lays out the words of the channel whose `h·w` codes are `codes`, less `zero`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW; `codes` holds the `h·w` codes of the shape `Flat::new`
    /// was made for; `words` holds `word_vectors` vectors.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fill(&self, codes: &[i32], zero: i32, words: &mut [i32]) {
        debug_assert!(words.len() >= self.word_vectors * LANES);
        let zero = _mm512_set1_epi32(zero);
        let mut taken = 0;
        let mut plane = |lanes: &Lanes| {
            // SAFETY: the masks' lanes count the channel's codes exactly once each
            // (`Flat::new`), so the `count` read lie inside `codes`; the others are not read.
            let v = unsafe { _mm512_maskz_loadu_epi32(lanes.first, codes.as_ptr().add(taken)) };
            taken += lanes.count;
            _mm512_maskz_expand_epi32(lanes.at, _mm512_sub_epi32(v, zero))
        };
        let mut next = plane(&self.codes[0]);
        for (u, out) in words
            .chunks_exact_mut(LANES)
            .take(self.word_vectors)
            .enumerate()
        {
            let here = next;
            next = plane(&self.codes[u + 1]);
            // Lane l: P[m] in the low half, P[m + 1] (the next lane's code) in the high.
            let following = _mm512_alignr_epi32::<1>(next, here);
            let word =
                _mm512_mask_blend_epi16(0xAAAA_AAAA, here, _mm512_slli_epi32::<16>(following));
            // SAFETY: `out` holds one whole vector.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), word) };
        }
    }

    /// The sums of one channel from its words, stored compactly (`oh·ow`) at the start of
    /// `out`, which holds them and any later channels' of the call (written after these).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and VNNI; `words` was filled by [`Flat::fill`] for this shape;
    /// `out` holds at least `oh·ow` sums.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn products<const K: usize>(
        &self,
        words: &[i32],
        taps: &[[i32; 4]; K],
        out: &mut [i32],
    ) {
        let pairs = K.div_ceil(2);
        let words = words.as_ptr();
        let mut stored = 0;
        for (v, keep) in self.keep.iter().enumerate() {
            let mut acc = _mm512_setzero_si512();
            for (i, row) in taps.iter().enumerate() {
                for (p, &tap) in row.iter().enumerate().take(pairs) {
                    // SAFETY: the last read ends at word `16·word_vectors` (`Flat::new`),
                    // inside `words`.
                    let w = unsafe {
                        _mm512_loadu_si512(words.add(v * LANES + i * self.wp + 2 * p).cast())
                    };
                    acc = _mm512_dpwssd_epi32(acc, w, _mm512_set1_epi32(tap));
                }
            }
            // SAFETY: the kept lanes number `oh·ow` ≤ `out.len()` over the vectors.
            stored = unsafe { store_kept(out, stored, keep, acc) };
        }
    }
}

/// Lane masks of `vectors` vectors over flat positions, set on the runs of `len` positions
/// from each of `starts`: row by row, since a test per lane, with its division by the row's
/// width, would be paid on every call.
fn runs(vectors: usize, starts: impl Iterator<Item = usize>, len: usize) -> Vec<u16> {
    let mut masks = vec![0u16; vectors];
    for start in starts {
        let mut at = start;
        while at < start + len {
            let (v, lane) = (at / LANES, at % LANES);
            let here = (LANES - lane).min(start + len - at);
            masks[v] |= (((1u32 << here) - 1) << lane) as u16;
            at += here;
        }
    }
    masks
}

/// Some lanes of a vector, and as many lanes from the first: where `vpexpandd` spreads them
/// to or `vpcompressd` gathers them from. (Counted once per call: without the `popcnt`
/// feature, `count_ones` had been a dozen instructions per vector.)
#[derive(Clone, Copy)]
pub(super) struct Lanes {
    pub(super) at: u16,
    pub(super) first: u16,
    pub(super) count: usize,
}

impl Lanes {
    fn new(at: u16) -> Lanes {
        let count = at.count_ones() as usize;
        Lanes {
            at,
            first: ((1u32 << count) - 1) as u16,
            count,
        }
    }
}

/// Every channel of `s` (which [`supports`]): `x` planes of codes with per-channel
/// `zero`-points, `w` `[C, K, K]`, `out` i32 planes; nothing past the planes is written.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn avx512<const K: usize>(
    s: &DwShape,
    x: &[i32],
    zero: &[i32],
    w: &[i16],
    out: &mut [i32],
) {
    assert!(supports(s) && s.kernel == K);
    let plane = s.in_hw.0 * s.in_hw.1;
    let out_plane = s.out_hw.0 * s.out_hw.1;
    assert!(x.len() >= s.channels * plane && w.len() >= s.channels * K * K);
    assert!(zero.len() >= s.channels && out.len() >= s.channels * out_plane);
    // Whole vectors are stored up to the end of the call's planes, never past it.
    let out = &mut out[..s.channels * out_plane];
    let flat = Flat::new(s);
    // Two channels' words: the next one's are built before this one's are read.
    let len = flat.word_vectors * LANES;
    let mut words = vec![0i32; 2 * len];
    let (mut ready, mut building) = words.split_at_mut(len);
    let codes = |c: usize| &x[c * plane..(c + 1) * plane];
    // SAFETY (all `unsafe` below): the CPU has AVX-512 F, BW and VNNI (the caller's promise);
    // each buffer holds `word_vectors` vectors and each channel's output `oh·ow` sums.
    unsafe { flat.fill(codes(0), zero[0], ready) };
    for c in 0..s.channels {
        if c + 1 < s.channels {
            unsafe { flat.fill(codes(c + 1), zero[c + 1], building) };
        }
        let taps = weight_pairs::<K>(&w[c * K * K..(c + 1) * K * K]);
        let dst = &mut out[c * out_plane..];
        unsafe { flat.products::<K>(ready, &taps, dst) };
        std::mem::swap(&mut ready, &mut building);
    }
}
