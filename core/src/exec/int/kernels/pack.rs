//! Activations into the kernels' operands: depthwise planes centred to i16
//! ([`centre_planes`]), im2col rows ([`im2col_plane`]), and packed `B` ([`pack_rows`],
//! [`pack_stacked_rows`], [`pack_tokens`]; see [`PackedB`]). Each is one portable body also
//! compiled for AVX2 and AVX-512, written so those builds vectorise: the byte-by-byte packing and the per-element
//! bounds tests of im2col had kept them scalar (8 % of EfficientViT-B1's integer time by
//! `perf`, and the centring 5 % on the x86-64 baseline). In packed `B` each code is lifted by
//! `u` to a u8 and four consecutive `K` values of a column share one 32-bit word: a whole block
//! (16 columns × 4 `K` rows) is 16 words made lane-wise from four rows, or token by token
//! from a token's contiguous codes. Blocks at the edges (past `K` or the last column) are
//! written element by element, zero outside the matrix, so every byte of the storage is
//! written and none needs zeroing first.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::{Isa, PANEL, PackedA, PackedB, runnable, widen_quad};
use crate::exec::spare::{Buffer, resize_to_overwrite};

/// `K × cols` codes stored `K`-major (`src[kk·cols + col]`: planes, im2col rows), each plus
/// `lift`, packed into `buf`'s allocation.
pub fn pack_rows<T: Copy + Into<i32> + Sync>(
    isa: Isa,
    k: usize,
    cols: usize,
    src: &[T],
    lift: i32,
    buf: Buffer<u8>,
) -> PackedB {
    assert!(src.len() >= k * cols, "{k}×{cols} codes from {}", src.len());
    pack_from(isa, k, cols, &Planes { src, cols }, lift, buf)
}

/// The images' `K × positions` codes (`images[i][kk·positions + j]`, each image's planes)
/// side by side as one `K × (images · positions)` matrix, image `i`'s positions its columns
/// `i·positions..`, each plus `lift`, packed into `buf`'s allocation: [`pack_rows`] of the
/// matrix without first copying it (for B1's 7×7 maps at batch 8, up to 1.6 MB that did not
/// stay in L2 before the packer read it again).
pub fn pack_stacked_rows(
    isa: Isa,
    k: usize,
    positions: usize,
    images: &[&[i32]],
    lift: i32,
    buf: Buffer<u8>,
) -> PackedB {
    for (i, image) in images.iter().enumerate() {
        assert_eq!(
            image.len(),
            k * positions,
            "image {i}'s {k}×{positions} codes"
        );
    }
    let source = Stacked { images, positions };
    pack_from(isa, k, images.len() * positions, &source, lift, buf)
}

fn pack_from<T: Copy + Into<i32>, S: Source<T>>(
    isa: Isa,
    k: usize,
    cols: usize,
    src: &S,
    lift: i32,
    buf: Buffer<u8>,
) -> PackedB {
    let mut b = storage(k, cols, buf);
    for_panel_runs(&mut b, |run| {
        by_width!(isa, rows_avx512, rows_avx2, rows_portable, (run, src, lift))
    });
    b
}

/// Where the codes of a `K`-major matrix lie: [`Planes`] or [`Stacked`].
trait Source<T>: Sync {
    /// Columns `first..first + PANEL` (all inside the matrix) where they lie in one slice:
    /// `(codes, stride)`, row `kk`'s at `codes[kk·stride..][..PANEL]`.
    fn panel(&self, first: usize) -> Option<(&[T], usize)>;
    /// Row `kk` of columns `first..first + PANEL` that [`Source::panel`] does not hold.
    fn gather(&self, kk: usize, first: usize) -> [T; PANEL];
    /// The code at row `kk`, column `col`.
    fn at(&self, kk: usize, col: usize) -> T;
}

/// One slice, `src[kk·cols + col]`.
struct Planes<'a, T> {
    src: &'a [T],
    cols: usize,
}

impl<T: Copy + Sync> Source<T> for Planes<'_, T> {
    #[inline(always)]
    fn panel(&self, first: usize) -> Option<(&[T], usize)> {
        Some((&self.src[first..], self.cols))
    }

    fn gather(&self, kk: usize, first: usize) -> [T; PANEL] {
        std::array::from_fn(|c| self.at(kk, first + c))
    }

    #[inline(always)]
    fn at(&self, kk: usize, col: usize) -> T {
        self.src[kk * self.cols + col]
    }
}

/// Images side by side ([`pack_stacked_rows`]).
struct Stacked<'a> {
    images: &'a [&'a [i32]],
    positions: usize,
}

impl Source<i32> for Stacked<'_> {
    #[inline(always)]
    fn panel(&self, first: usize) -> Option<(&[i32], usize)> {
        let (image, at) = (first / self.positions, first % self.positions);
        (at + PANEL <= self.positions).then(|| (&self.images[image][at..], self.positions))
    }

    /// Across the end of an image's row (one panel in three on a 7×7 map): its last `head`
    /// codes, then the next image's first. Where an image holds a panel's width, that is a
    /// window of its last `PANEL` codes and the next image's first `PANEL` side by side:
    /// three vector copies.
    #[inline(always)]
    fn gather(&self, kk: usize, first: usize) -> [i32; PANEL] {
        let p = self.positions;
        let (image, at) = (first / p, first % p);
        if p < PANEL {
            return std::array::from_fn(|c| self.at(kk, first + c));
        }
        let row = |i: usize| &self.images[i][kk * p..][..p];
        let mut window = [0; 2 * PANEL];
        window[..PANEL].copy_from_slice(&row(image)[p - PANEL..]);
        window[PANEL..].copy_from_slice(&row(image + 1)[..PANEL]);
        let head = p - at;
        window[PANEL - head..][..PANEL]
            .try_into()
            .expect("a panel's codes")
    }

    #[inline(always)]
    fn at(&self, kk: usize, col: usize) -> i32 {
        let (image, at) = (col / self.positions, col % self.positions);
        self.images[image][kk * self.positions + at]
    }
}

/// `K × cols` codes stored column-major (`src[col·k + kk]`: a token's channels), each plus
/// `lift`, packed into `buf`'s allocation.
pub fn pack_tokens(
    isa: Isa,
    k: usize,
    cols: usize,
    src: &[i32],
    lift: i32,
    buf: Buffer<u8>,
) -> PackedB {
    assert!(src.len() >= k * cols, "{k}×{cols} codes from {}", src.len());
    let mut b = storage(k, cols, buf);
    for_panel_runs(&mut b, |run| {
        by_width!(
            isa,
            tokens_avx512,
            tokens_avx2,
            tokens_portable,
            (run, src, lift)
        )
    });
    b
}

/// Tokens `[rows, k]` (`src[t·k + kk]`) as the product's signed operand, in `a`'s
/// allocations: row `t` holds token `t`'s codes, each plus `lift` less 128 (the u8 a conv step
/// multiplies, shifted into i8), and `sums[t]` their sum. `quads16` is filled only when `isa`
/// runs the AVX2 product, the one path that reads it. Codes plus `lift` must lie in `0..=255`.
pub fn pack_signed_tokens(
    isa: Isa,
    k: usize,
    src: &[i32],
    lift: i32,
    a: &mut PackedA,
    sums: &mut Vec<i32>,
) {
    assert!(k > 0, "tokens of no channels");
    let (rows, k4) = (src.len() / k, k.div_ceil(4));
    (a.rows, a.k, a.k4) = (rows, k, k4);
    resize_to_overwrite(&mut a.quads, rows * k4);
    resize_to_overwrite(sums, rows);
    let shift = lift.wrapping_sub(128);
    let src = &src[..rows * k];
    by_width!(
        isa,
        signed_avx512,
        signed_avx2,
        signed_portable,
        (k, src, shift, &mut a.quads, sums)
    );
    a.quads16.clear();
    if runnable(isa) == Isa::Avx2 {
        resize_to_overwrite(&mut a.quads16, a.quads.len());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `runnable` found AVX2 on this CPU.
        unsafe {
            widen_quads_avx2(&a.quads, &mut a.quads16)
        };
        #[cfg(not(target_arch = "x86_64"))]
        for (w, &q) in a.quads16.iter_mut().zip(&a.quads) {
            *w = widen_quad(q);
        }
    }
}

/// `wide[i] = widen_quad(quads[i])`, four quads (16 bytes) at a time by one `vpmovsxbw` (the
/// quads one by one had been 2 % of DeiT-T's integer time with AVX2 kernels, by `perf`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn widen_quads_avx2(quads: &[i32], wide: &mut [i64]) {
    use std::arch::x86_64::*;
    let mut pairs = quads.chunks_exact(4).zip(wide.chunks_exact_mut(4));
    for (q, w) in &mut pairs {
        // SAFETY: `q` holds 4 i32 (16 bytes) and `w` 4 i64 (32 bytes).
        unsafe {
            let bytes = _mm_loadu_si128(q.as_ptr().cast());
            _mm256_storeu_si256(w.as_mut_ptr().cast(), _mm256_cvtepi8_epi16(bytes));
        }
    }
    let done = quads.len() / 4 * 4;
    for (w, &q) in wide[done..].iter_mut().zip(&quads[done..]) {
        *w = widen_quad(q);
    }
}

/// Bytes first, 16 codes at a time (one `vpmovdb`), as [`tokens_portable`] packs them; the
/// sums from the codes themselves, `Σ q + k·shift`, since every `q + shift` is its byte.
#[inline(always)]
fn signed_portable(k: usize, src: &[i32], shift: i32, quads: &mut [i32], sums: &mut [i32]) {
    let k4 = k.div_ceil(4);
    let rows = src.chunks_exact(k).zip(quads.chunks_exact_mut(k4));
    for ((codes, quads), sum) in rows.zip(sums) {
        *sum = (codes.iter().fold(0i32, |s, &q| s.wrapping_add(q)))
            .wrapping_add((k as i32).wrapping_mul(shift));
        let mut chunks = codes.chunks_exact(16);
        let mut words = quads.chunks_exact_mut(4);
        for (chunk, words) in (&mut chunks).zip(&mut words) {
            let chunk: &[i32; 16] = chunk.try_into().expect("16 codes");
            let bytes: [u8; 16] = std::array::from_fn(|i| chunk[i].wrapping_add(shift) as u8);
            for (word, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
                *word = i32::from_le_bytes(b.try_into().expect("a word"));
            }
        }
        // The last codes, zero past `k`.
        let rest = chunks.remainder();
        let tail = &mut quads[k / 16 * 4..];
        for (g, word) in tail.iter_mut().enumerate() {
            let mut b = [0u8; 4];
            for (j, byte) in b.iter_mut().enumerate() {
                if let Some(&q) = rest.get(4 * g + j) {
                    *byte = q.wrapping_add(shift) as u8;
                }
            }
            *word = i32::from_le_bytes(b);
        }
    }
}

/// [`signed_avx512`] 16 codes at a time in two AVX2 registers, their bytes by saturating
/// packs (each code plus `shift` is an i8, so saturation keeps it) and a permute that puts the
/// 128-bit lanes' quads back in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn signed_avx2(k: usize, src: &[i32], shift: i32, quads: &mut [i32], sums: &mut [i32]) {
    use std::arch::x86_64::*;
    let k4 = k.div_ceil(4);
    let whole = k / 16 * 16;
    let shifts = _mm256_set1_epi32(shift);
    // The packs leave the bytes of codes 0–3 and 8–11 in dwords 0 and 1, those of 4–7 and
    // 12–15 in dwords 4 and 5: the permute puts them in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let rows = src.chunks_exact(k).zip(quads.chunks_exact_mut(k4));
    for ((codes, quads), sum) in rows.zip(sums) {
        let bytes = quads.as_mut_ptr().cast::<u8>();
        let mut lanes = _mm256_setzero_si256();
        for at in (0..whole).step_by(16) {
            // SAFETY: `at + 16 ≤ k`: 16 codes of the row, and 16 of its `4·k4 ≥ k` bytes.
            unsafe {
                let a = _mm256_loadu_si256(codes.as_ptr().add(at).cast());
                let b = _mm256_loadu_si256(codes.as_ptr().add(at + 8).cast());
                lanes = _mm256_add_epi32(lanes, _mm256_add_epi32(a, b));
                let words =
                    _mm256_packs_epi32(_mm256_add_epi32(a, shifts), _mm256_add_epi32(b, shifts));
                let packed = _mm256_packs_epi16(words, words);
                let ordered = _mm256_permutevar8x32_epi32(packed, order);
                _mm_storeu_si128(bytes.add(at).cast(), _mm256_castsi256_si128(ordered));
            }
        }
        let mut partial = [0i32; 8];
        // SAFETY: `partial` holds 8 i32.
        unsafe { _mm256_storeu_si256(partial.as_mut_ptr().cast(), lanes) };
        let rest = codes[whole..].iter().fold(0i32, |s, &q| s.wrapping_add(q));
        *sum = partial
            .iter()
            .fold(rest, |s, &p| s.wrapping_add(p))
            .wrapping_add((k as i32).wrapping_mul(shift));
        last_quads(codes, shift, whole, quads);
    }
}

/// The quads of a row's codes from `whole` (a multiple of 16) on, zero past the row's end, as
/// [`signed_portable`] writes them.
#[inline(always)]
fn last_quads(codes: &[i32], shift: i32, whole: usize, quads: &mut [i32]) {
    for (j, word) in quads.iter_mut().enumerate().skip(whole / 4) {
        let byte = |i: usize| {
            codes
                .get(4 * j + i)
                .map_or(0, |&q| q.wrapping_add(shift) as u8)
        };
        *word = i32::from_le_bytes(std::array::from_fn(byte));
    }
}

/// [`signed_portable`] in one pass over each row, 16 codes at a time: each vector of codes is
/// added to the row's sum lanes and stored as bytes while in a register (the portable form,
/// compiled for AVX-512, read each row twice: its sum, then its bytes). The last codes, and
/// the zeros past `k`, as [`signed_portable`] writes them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn signed_avx512(k: usize, src: &[i32], shift: i32, quads: &mut [i32], sums: &mut [i32]) {
    use std::arch::x86_64::*;
    let k4 = k.div_ceil(4);
    let whole = k / 16 * 16;
    let shifts = _mm512_set1_epi32(shift);
    let rows = src.chunks_exact(k).zip(quads.chunks_exact_mut(k4));
    for ((codes, quads), sum) in rows.zip(sums) {
        let bytes = quads.as_mut_ptr().cast::<u8>();
        let mut lanes = _mm512_setzero_si512();
        for at in (0..whole).step_by(16) {
            // SAFETY: `at + 16 ≤ k`: 16 codes of the row, and 16 of its `4·k4 ≥ k` bytes.
            unsafe {
                let v = _mm512_loadu_si512(codes.as_ptr().add(at).cast());
                lanes = _mm512_add_epi32(lanes, v);
                let b = _mm512_cvtepi32_epi8(_mm512_add_epi32(v, shifts));
                _mm_storeu_si128(bytes.add(at).cast(), b);
            }
        }
        let rest = codes[whole..].iter().fold(0i32, |s, &q| s.wrapping_add(q));
        *sum = _mm512_reduce_add_epi32(lanes)
            .wrapping_add(rest)
            .wrapping_add((k as i32).wrapping_mul(shift));
        last_quads(codes, shift, whole, quads);
    }
}

/// Matrices of at least this many codes are packed on the pool's threads.
const PARALLEL_CODES: usize = 1 << 15;

/// A run of whole panels of a [`PackedB`]: `data` holds its panels `first..`.
struct Panels<'a> {
    data: &'a mut [u8],
    first: usize,
    k: usize,
    k4: usize,
    cols: usize,
}

/// `pack(run)` over runs of `b`'s panels, which are independent: for a large matrix a few runs
/// per thread on the pool (at batch 1 the packing had been 6 % of EfficientViT-B1's image
/// thread, serial), else one run. Each byte is written by the run that holds it, so the
/// split changes nothing in the result.
fn for_panel_runs(b: &mut PackedB, pack: impl Fn(&mut Panels) + Sync) {
    let (k, k4, cols) = (b.k, b.k4, b.cols);
    let panel_bytes = k4 * PANEL * 4;
    let panels = cols.div_ceil(PANEL);
    if panel_bytes == 0 || panels == 0 {
        return;
    }
    let runs = if k * cols >= PARALLEL_CODES {
        2 * rayon::current_num_threads()
    } else {
        1
    };
    let per_run = panels.div_ceil(runs);
    b.data
        .par_chunks_mut(per_run * panel_bytes)
        .enumerate()
        .for_each(|(r, data)| {
            pack(&mut Panels {
                data,
                first: r * per_run,
                k,
                k4,
                cols,
            })
        });
}

/// Storage for `k × cols`, not zeroed: the packers write every byte of it.
fn storage(k: usize, cols: usize, mut buf: Buffer<u8>) -> PackedB {
    let k4 = k.div_ceil(4);
    buf.overwrite(cols.div_ceil(PANEL) * k4 * PANEL * 4);
    PackedB {
        k,
        k4,
        cols,
        data: buf,
        last_columns: Default::default(),
    }
}

/// Writes the blocks at the edges (a last panel of fewer than 16 columns, a last quad of `K`
/// shorter than 4) element by element: `value(kk, col)` is a code plus `lift`; zero past `K`
/// or the last column.
#[inline(always)]
fn fill_edges(b: &mut Panels, value: impl Fn(usize, usize) -> i32) {
    let (k, cols, k4) = (b.k, b.cols, b.k4);
    let panels = b.data.len() / (k4 * PANEL * 4);
    for local in 0..panels {
        let first = (b.first + local) * PANEL;
        let quads = if first + PANEL <= cols {
            k / 4..k4
        } else {
            0..k4
        };
        for g in quads {
            let at = (local * k4 + g) * PANEL * 4;
            let out = &mut b.data[at..at + PANEL * 4];
            for (lane, quad) in out.chunks_exact_mut(4).enumerate() {
                for (j, byte) in quad.iter_mut().enumerate() {
                    let (kk, col) = (4 * g + j, first + lane);
                    *byte = if kk < k && col < cols {
                        value(kk, col) as u8
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// A code plus `lift`, truncated to u8, in the low byte of a u32.
#[inline(always)]
fn byte(v: i32, lift: i32) -> u32 {
    (v.wrapping_add(lift) & 0xff) as u32
}

/// Four codes plus `lift` as the bytes of a little-endian u32.
#[inline(always)]
fn word(q: &[i32; 4], lift: i32) -> u32 {
    byte(q[0], lift) | byte(q[1], lift) << 8 | byte(q[2], lift) << 16 | byte(q[3], lift) << 24
}

/// Whole blocks four rows at a time: a block's 16 words from four 16-code rows, lane-wise.
#[inline(always)]
fn rows_portable<T: Copy + Into<i32>, S: Source<T>>(b: &mut Panels, src: &S, lift: i32) {
    let (cols, k4) = (b.cols, b.k4);
    // Panel by panel, then block by block: a block's panel and quad as `i / k4` and `i % k4`
    // had cost a division per 64 bytes.
    for (p, panel) in b.data.chunks_exact_mut(k4 * PANEL * 4).enumerate() {
        let first = (b.first + p) * PANEL;
        if first + PANEL > cols {
            continue; // an edge panel
        }
        // The blocks of whole quads (a last part quad is an edge block).
        let blocks = panel.chunks_exact_mut(PANEL * 4).take(b.k / 4).enumerate();
        match src.panel(first) {
            Some((codes, stride)) => {
                for (g, out) in blocks {
                    let rows: [&[T; PANEL]; 4] = std::array::from_fn(|j| {
                        let row = &codes[(4 * g + j) * stride..][..PANEL];
                        row.try_into().expect("a block's row")
                    });
                    block_words(out, rows, lift);
                }
            }
            None => {
                for (g, out) in blocks {
                    let rows: [[T; PANEL]; 4] =
                        std::array::from_fn(|j| src.gather(4 * g + j, first));
                    block_words(out, rows.each_ref(), lift);
                }
            }
        }
    }
    fill_edges(b, |kk, col| src.at(kk, col).into().wrapping_add(lift));
}

/// A block's 16 words from its four rows of 16 codes, lane-wise.
#[inline(always)]
fn block_words<T: Copy + Into<i32>>(out: &mut [u8], rows: [&[T; PANEL]; 4], lift: i32) {
    for (lane, bytes) in out.chunks_exact_mut(4).enumerate() {
        let q = [0, 1, 2, 3].map(|j| rows[j][lane].into());
        bytes.copy_from_slice(&word(&q, lift).to_le_bytes());
    }
}

/// Whole blocks token by token: a token's codes are contiguous, 16 words (64 codes) are made
/// at a time, and each word goes to its block at the token's lane.
#[inline(always)]
fn tokens_portable(b: &mut Panels, src: &[i32], lift: i32) {
    let (k, cols, k4) = (b.k, b.cols, b.k4);
    let quads = k / 4;
    let panels = b.data.len() / (k4 * PANEL * 4);
    // The run's whole panels (the last panel of the matrix may be an edge).
    let whole = (b.first + panels).min(cols / PANEL);
    for col in b.first * PANEL..whole * PANEL {
        let (panel, lane) = (col / PANEL - b.first, col % PANEL);
        let codes = &src[col * k..][..quads * 4];
        let mut put = |g: usize, w: u32| {
            let at = ((panel * k4 + g) * PANEL + lane) * 4;
            b.data[at..at + 4].copy_from_slice(&w.to_le_bytes());
        };
        let mut chunks = codes.chunks_exact(64);
        for (c, chunk) in chunks.by_ref().enumerate() {
            // Bytes first: the truncation of contiguous codes is one `vpmovdb` per 16.
            let chunk: &[i32; 64] = chunk.try_into().expect("64 codes");
            let bytes: [u8; 64] = std::array::from_fn(|i| chunk[i].wrapping_add(lift) as u8);
            for (j, w) in bytes.chunks_exact(4).enumerate() {
                put(
                    16 * c + j,
                    u32::from_le_bytes(w.try_into().expect("a word")),
                );
            }
        }
        let done = codes.len() / 64 * 16;
        for (j, q) in chunks.remainder().chunks_exact(4).enumerate() {
            put(done + j, word(q.try_into().expect("a quad"), lift));
        }
    }
    fill_edges(b, |kk, col| src[col * k + kk].wrapping_add(lift));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2<T: Copy + Into<i32>, S: Source<T>>(b: &mut Panels, src: &S, lift: i32) {
    rows_portable(b, src, lift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn rows_avx512<T: Copy + Into<i32>, S: Source<T>>(b: &mut Panels, src: &S, lift: i32) {
    rows_portable(b, src, lift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tokens_avx2(b: &mut Panels, src: &[i32], lift: i32) {
    tokens_portable(b, src, lift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn tokens_avx512(b: &mut Panels, src: &[i32], lift: i32) {
    tokens_portable(b, src, lift)
}

/// The depthwise kernels' operand: `out[c·plane + i] = x[c·plane + i] − zero[c]` as i16, for
/// channel planes of `plane` codes (codes of at most 8 bits less their zero-point fit i16).
pub fn centre_planes(isa: Isa, x: &[i32], plane: usize, zero: &[i32], out: &mut Vec<i16>) {
    assert!(plane > 0 && x.len() <= plane * zero.len());
    resize_to_overwrite(out, x.len());
    by_width!(
        isa,
        centre_avx512,
        centre_avx2,
        centre_portable,
        (x, plane, zero, out)
    )
}

#[inline(always)]
fn centre_portable(x: &[i32], plane: usize, zero: &[i32], out: &mut [i16]) {
    let planes = x.chunks(plane).zip(out.chunks_mut(plane));
    for ((src, dst), &z) in planes.zip(zero) {
        for (o, &q) in dst.iter_mut().zip(src) {
            *o = q.wrapping_sub(z) as i16;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn centre_avx2(x: &[i32], plane: usize, zero: &[i32], out: &mut [i16]) {
    centre_portable(x, plane, zero, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn centre_avx512(x: &[i32], plane: usize, zero: &[i32], out: &mut [i16]) {
    centre_portable(x, plane, zero, out)
}

/// The windows of a k×k convolution over one `h × w` input plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub in_hw: (usize, usize),
    pub out_hw: (usize, usize),
}

impl Windows {
    /// The output columns `ox` whose input column `ox·stride + j − padding` lies inside the
    /// plane, for kernel column `j`: a range, since the input column grows with `ox`.
    fn inside(&self, j: usize) -> std::ops::Range<usize> {
        let (w, ow, st) = (self.in_hw.1, self.out_hw.1, self.stride);
        // ox·st + j ≥ padding, and ox·st + j − padding ≤ w − 1.
        let lo = self.padding.saturating_sub(j).div_ceil(st).min(ow);
        let hi = match (w + self.padding).checked_sub(j + 1) {
            Some(last) => (last / st + 1).min(ow),
            None => 0,
        };
        lo..hi.max(lo)
    }
}

/// im2col of one input plane: `rows[(i·k + j)·P + oy·OW + ox]` = the code under kernel tap
/// `(i, j)` of output `(oy, ox)` plus `lift`, or `pad` outside the plane. Each output row is a
/// run of padding, a strided copy and padding again, so no element tests its own bounds.
pub fn im2col_plane(isa: Isa, win: &Windows, plane: &[i32], lift: i32, pad: i16, rows: &mut [i16]) {
    let ((h, w), (oh, ow)) = (win.in_hw, win.out_hw);
    assert!(plane.len() >= h * w && rows.len() >= win.kernel * win.kernel * oh * ow);
    by_width!(
        isa,
        im2col_avx512,
        im2col_avx2,
        im2col_portable,
        (win, plane, lift, pad, rows)
    )
}

#[inline(always)]
fn im2col_portable(win: &Windows, plane: &[i32], lift: i32, pad: i16, rows: &mut [i16]) {
    let ((h, w), (oh, ow)) = (win.in_hw, win.out_hw);
    let (kz, st) = (win.kernel, win.stride);
    let p = oh * ow;
    for i in 0..kz {
        for j in 0..kz {
            let row = &mut rows[(i * kz + j) * p..][..p];
            let inside = win.inside(j);
            for (oy, out) in row.chunks_exact_mut(ow).enumerate() {
                let iy = (oy * st + i).checked_sub(win.padding).filter(|&iy| iy < h);
                let Some(iy) = iy else {
                    out.fill(pad);
                    continue;
                };
                out[..inside.start].fill(pad);
                out[inside.end..].fill(pad);
                if inside.is_empty() {
                    continue;
                }
                let first = inside.start * st + j - win.padding;
                let out = &mut out[inside.clone()];
                let src = &plane[iy * w + first..][..(out.len() - 1) * st + 1];
                strided_copy(src, st, lift, out);
            }
        }
    }
}

/// `out[n] = src[n·stride] + lift` as i16, for `src` exactly `(out.len() − 1)·stride + 1`
/// long. Strides 1 and 2 (every conv of the shipped models) as whole chunks, which vectorise;
/// `step_by` did not.
#[inline(always)]
fn strided_copy(src: &[i32], stride: usize, lift: i32, out: &mut [i16]) {
    let code = |q: i32| q.wrapping_add(lift) as i16;
    match stride {
        1 => out.iter_mut().zip(src).for_each(|(o, &q)| *o = code(q)),
        2 => {
            let (last, body) = out.split_last_mut().expect("a column");
            for (o, pair) in body.iter_mut().zip(src.chunks_exact(2)) {
                *o = code(pair[0]);
            }
            *last = code(src[src.len() - 1]);
        }
        _ => out
            .iter_mut()
            .zip(src.iter().step_by(stride))
            .for_each(|(o, &q)| *o = code(q)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn im2col_avx2(win: &Windows, plane: &[i32], lift: i32, pad: i16, rows: &mut [i16]) {
    im2col_portable(win, plane, lift, pad, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
fn im2col_avx512(win: &Windows, plane: &[i32], lift: i32, pad: i16, rows: &mut [i16]) {
    im2col_portable(win, plane, lift, pad, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Both source layouts and i16 rows, odd `K` and column counts, small matrices and ones
    /// packed in runs on the pool, storage with stale bytes: on every ISA the packing equals the reference packer's of the same u8 matrix.
    #[test]
    fn packing_equals_the_reference_on_every_isa() {
        let mut rng = Rng::new(3);
        let shapes = [
            (1, 1),
            (4, 16),
            (7, 33),
            (64, 196),
            (13, 50),
            (192, 197),
            (27, 3136),
            // Past `PARALLEL_CODES`: runs of panels on the pool, the last run short.
            (131, 301),
        ];
        for (k, cols) in shapes {
            let rows: Vec<i32> = (0..k * cols).map(|_| rng.below(256) as i32 - 128).collect();
            let bytes: Vec<u8> = rows.iter().map(|&q| (q + 128) as u8).collect();
            let want = PackedB::from_rows(&bytes, k, cols);
            let narrow: Vec<i16> = rows.iter().map(|&q| (q + 128) as i16).collect();
            let tokens: Vec<i32> = (0..k * cols)
                .map(|i| rows[(i % k) * cols + i / k])
                .collect();
            for isa in Isa::available() {
                let stale = Buffer::from(vec![7; want.data.len() + 5]);
                let got = pack_rows(isa, k, cols, &rows, 128, stale.clone());
                assert_eq!(got, want, "{isa:?} rows {k}×{cols}");
                let got = pack_rows(isa, k, cols, &narrow, 0, Buffer::default());
                assert_eq!(got, want, "{isa:?} i16 rows {k}×{cols}");
                let got = pack_tokens(isa, k, cols, &tokens, 128, stale);
                assert_eq!(got, want, "{isa:?} tokens {k}×{cols}");
            }
        }
    }

    /// Images of 1–49 positions side by side (blocks inside one image, across two and, for
    /// maps narrower than a panel, across several), odd `K`, runs on the pool: the packing
    /// of the images' planes copied into one matrix, on every ISA.
    #[test]
    fn stacked_images_pack_as_their_matrix() {
        let mut rng = Rng::new(41);
        for (k, positions, count) in [(1, 1, 1), (5, 3, 7), (8, 49, 8), (13, 16, 3), (260, 49, 8)] {
            let images: Vec<Vec<i32>> = (0..count)
                .map(|_| {
                    (0..k * positions)
                        .map(|_| rng.below(256) as i32 - 128)
                        .collect()
                })
                .collect();
            let cols = count * positions;
            let mut matrix = vec![0; k * cols];
            for (i, image) in images.iter().enumerate() {
                for (kk, plane) in image.chunks_exact(positions).enumerate() {
                    matrix[kk * cols + i * positions..][..positions].copy_from_slice(plane);
                }
            }
            let views: Vec<&[i32]> = images.iter().map(|v| &v[..]).collect();
            for isa in Isa::available() {
                let want = pack_rows(isa, k, cols, &matrix, 128, Buffer::default());
                let stale = Buffer::from(vec![7; want.data.len() + 3]);
                let got = pack_stacked_rows(isa, k, positions, &views, 128, stale);
                assert_eq!(got, want, "{isa:?} {count} images of {k}×{positions}");
            }
        }
    }

    /// Tokens of signed (lift 128) and unsigned codes, `K` a multiple of 4 or not, into
    /// operands that held other tokens: the same quads as the i8 matrix packed by
    /// [`PackedA::new`], the sums of each row, and `quads16` exactly where AVX2 runs.
    #[test]
    fn tokens_pack_into_the_signed_operand() {
        let mut rng = Rng::new(23);
        let mut packed = PackedA::new(&[5; 12], 4, 3);
        let mut sums = vec![9; 7];
        for (tokens, k, lift) in [
            (3, 8, 128),
            (5, 7, 0),
            (112, 192, 128),
            (4, 37, 0),
            (3, 768, 128),
            (2, 1, 0),
            (0, 4, 128),
        ] {
            let codes: Vec<i32> = (0..tokens * k)
                .map(|_| rng.below(256) as i32 - lift)
                .collect();
            let signed: Vec<i8> = codes.iter().map(|&q| (q + lift - 128) as i8).collect();
            let want = PackedA::new(&signed, tokens, k);
            for isa in Isa::available() {
                pack_signed_tokens(isa, k, &codes, lift, &mut packed, &mut sums);
                assert_eq!(
                    (packed.rows, packed.k, packed.k4),
                    (tokens, k, k.div_ceil(4))
                );
                assert_eq!(packed.quads, want.quads, "{} {tokens} × {k}", isa.name());
                let sum = |t: usize| signed[t * k..(t + 1) * k].iter().map(|&v| v as i32).sum();
                assert_eq!(sums, (0..tokens).map(sum).collect::<Vec<i32>>());
                match super::super::runnable(isa) {
                    Isa::Avx2 => assert_eq!(packed.quads16, want.quads16),
                    _ => assert!(packed.quads16.is_empty()),
                }
            }
        }
    }

    /// Planes of 1–200 codes, the last one short: on every ISA each code less its channel's
    /// zero-point, whatever the buffer held before.
    #[test]
    fn centring_equals_the_definition_on_every_isa() {
        let mut rng = Rng::new(9);
        for plane in [1, 3, 16, 17, 49, 200] {
            let channels = 1 + rng.below(9);
            let zero: Vec<i32> = (0..channels).map(|_| rng.below(256) as i32 - 128).collect();
            let len = channels * plane - rng.below(plane);
            let x: Vec<i32> = (0..len).map(|_| rng.below(256) as i32 - 128).collect();
            let want: Vec<i16> = (0..len).map(|i| (x[i] - zero[i / plane]) as i16).collect();
            for isa in Isa::available() {
                let mut got = vec![5; 3 * len];
                centre_planes(isa, &x, plane, &zero, &mut got);
                assert_eq!(got, want, "{isa:?} plane {plane}");
            }
        }
    }

    /// Kernels 1–7, strides 1–4, paddings 0–3 over planes from 1×1 to 17×23 (and 224²): on
    /// every ISA each tap of each output is the code under it, or the padding.
    #[test]
    fn im2col_equals_the_definition_on_every_isa() {
        let mut rng = Rng::new(5);
        let mut planes = vec![(1, 1), (2, 3), (5, 5), (17, 23), (224, 224)];
        planes.extend((0..6).map(|_| (1 + rng.below(12), 1 + rng.below(12))));
        let mut checked = 0;
        for (h, w) in planes {
            for kernel in 1..=7 {
                for stride in 1..=4 {
                    for padding in 0..=3.min(kernel - 1) {
                        if h + 2 * padding < kernel || w + 2 * padding < kernel {
                            continue;
                        }
                        if (h, w) == (224, 224) && (kernel, stride, padding) != (3, 2, 1) {
                            continue;
                        }
                        let out_hw = (
                            (h + 2 * padding - kernel) / stride + 1,
                            (w + 2 * padding - kernel) / stride + 1,
                        );
                        let win = Windows {
                            kernel,
                            stride,
                            padding,
                            in_hw: (h, w),
                            out_hw,
                        };
                        let plane: Vec<i32> =
                            (0..h * w).map(|_| rng.below(256) as i32 - 128).collect();
                        let p = out_hw.0 * out_hw.1;
                        let mut want = vec![0i16; kernel * kernel * p];
                        for i in 0..kernel {
                            for j in 0..kernel {
                                for oy in 0..out_hw.0 {
                                    for ox in 0..out_hw.1 {
                                        let iy = (oy * stride + i) as isize - padding as isize;
                                        let ix = (ox * stride + j) as isize - padding as isize;
                                        let inside = (0..h as isize).contains(&iy)
                                            && (0..w as isize).contains(&ix);
                                        want[(i * kernel + j) * p + oy * out_hw.1 + ox] = if inside
                                        {
                                            (plane[iy as usize * w + ix as usize] + 128) as i16
                                        } else {
                                            -9
                                        };
                                    }
                                }
                            }
                        }
                        for isa in Isa::available() {
                            let mut got = vec![77i16; want.len()];
                            im2col_plane(isa, &win, &plane, 128, -9, &mut got);
                            assert_eq!(got, want, "{isa:?} {win:?}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500, "only {checked} shapes");
    }
}
