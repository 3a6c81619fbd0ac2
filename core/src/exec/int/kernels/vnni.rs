//! The AVX-512 VNNI product: `vpdpbusd` multiplies 4 u8 activations by 4 i8 weights and adds
//! the sum to an i32 lane, 64 MACs per instruction. A tile is `MR` weight rows × `NP` panels of
//! 16 columns, held in `MR·NP` zmm accumulators across the whole `K` loop.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::bucket_lanes::BucketLanes;
#[cfg(target_arch = "x86_64")]
use super::columns::{Block512, LookedUp, Read, Requantize};
#[cfg(target_arch = "x86_64")]
use super::finish::{Finish, Sums};
use super::{PANEL, PackedA, PackedB};
#[cfg(target_arch = "x86_64")]
use super::{amx, amx::TILE_ROWS, amx::UNIT_ROWS};

#[cfg(target_arch = "x86_64")]
pub fn gemm(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    assert_features();
    // SAFETY: the features the function is compiled for were checked just above.
    unsafe { gemm_vnni(a, rows, b, out, &Sums) }
}

/// [`gemm`] with each row's sums requantized by `r` in the tile, while they are in registers,
/// and stored as codes: the sums never pass through memory.
#[cfg(target_arch = "x86_64")]
pub fn gemm_requantized(
    a: &PackedA,
    rows: Range<usize>,
    b: &PackedB,
    r: &Requantize,
    out: &mut [i32],
) {
    assert_features();
    // `gemm_rows_requantized` checked the constants, offsets and marks against the rows and
    // columns; `LookedUp::new` checks the marks again.
    assert!(r.columns.channels() == b.cols && r.offsets.len() >= rows.len());
    match &r.table {
        None => {
            // SAFETY: the features the function is compiled for were checked just above.
            unsafe { gemm_vnni(a, rows, b, out, r) }
        }
        Some(look_up) => {
            let looked_up = LookedUp::new(r, look_up, rows.len());
            let buckets = match look_up.read {
                // SAFETY: the features `new` is compiled for were checked above.
                Read::Buckets if BucketLanes::run() => unsafe { BucketLanes::new(look_up.table) },
                _ => None,
            };
            match buckets {
                Some(lanes) => {
                    let f = Bucketed { looked_up, lanes };
                    // SAFETY: as above.
                    unsafe { gemm_vnni(a, rows, b, out, &f) }
                }
                // SAFETY: as above.
                None => unsafe { gemm_vnni(a, rows, b, out, &looked_up) },
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn assert_features() {
    assert!(
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    );
}

#[cfg(target_arch = "x86_64")]
impl Finish<__m512i> for Requantize<'_> {
    const DOTS: bool = false;
    type Block = Block512;
    #[inline(always)]
    unsafe fn block(&self, col: usize) -> Block512 {
        // SAFETY: the caller's promises; a panel's first column is a multiple of 16 below the
        // channels (asserted equal to the columns in `gemm_requantized`).
        unsafe { self.columns.block512(col) }
    }
    #[inline(always)]
    fn initial(&self, r: usize) -> i32 {
        self.offsets[r]
    }
    #[inline(always)]
    unsafe fn finish(&self, block: &Block512, _: usize, sums: __m512i) -> __m512i {
        // SAFETY: AVX-512 F is the caller's promise.
        unsafe { block.apply(sums) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Finish<__m512i> for LookedUp<'_> {
    const DOTS: bool = false;
    /// The channels' constants and the lanes that are channels.
    type Block = (Block512, __mmask16);
    #[inline(always)]
    unsafe fn block(&self, col: usize) -> Self::Block {
        let lanes = (self.columns.channels() - col).min(PANEL);
        // SAFETY: as for `Requantize`.
        let block = unsafe { self.columns.block512(col) };
        (block, (1u32 << lanes).wrapping_sub(1) as __mmask16)
    }
    #[inline(always)]
    fn initial(&self, r: usize) -> i32 {
        self.offsets[r]
    }
    #[inline(always)]
    unsafe fn finish(&self, (block, lanes): &Self::Block, r: usize, sums: __m512i) -> __m512i {
        // SAFETY: AVX-512 F and `r` are the caller's promises (`r` < the rows `new` took).
        unsafe { self.look_up512(block.apply(sums), *lanes, r) }
    }
}

/// A [`LookedUp`] whose table the tiles read by its buckets; run by tiles compiled for VBMI
/// and VPOPCNTDQ besides ([`Tiles`]).
#[cfg(target_arch = "x86_64")]
struct Bucketed<'a> {
    looked_up: LookedUp<'a>,
    lanes: BucketLanes,
}

#[cfg(target_arch = "x86_64")]
impl Finish<__m512i> for Bucketed<'_> {
    const DOTS: bool = false;
    type Block = (Block512, __mmask16);
    #[inline(always)]
    unsafe fn block(&self, col: usize) -> Self::Block {
        // SAFETY: as for `LookedUp`.
        unsafe { Finish::<__m512i>::block(&self.looked_up, col) }
    }
    #[inline(always)]
    fn initial(&self, r: usize) -> i32 {
        Finish::<__m512i>::initial(&self.looked_up, r)
    }
    #[inline(always)]
    unsafe fn finish(&self, (block, lanes): &Self::Block, r: usize, sums: __m512i) -> __m512i {
        // SAFETY: the features of `BucketLanes::run` (checked before a `Bucketed` is made,
        // and the tiles it runs are compiled for them) and `r` are the caller's promises.
        unsafe {
            let x = block.apply(sums);
            self.looked_up.entries512(x, *lanes, r);
            self.lanes.codes(x)
        }
    }
}

/// The tiles a [`Finish`] runs: compiled for AVX-512 F, BW and VNNI, and for the features its
/// `finish` needs besides (a function inlines only into one compiled for its features).
#[cfg(target_arch = "x86_64")]
trait Tiles: Finish<__m512i> + Sized {
    /// Whether the finish stores the sums as they are, from 0 ([`Sums`]): AMX tiles then
    /// store them in place.
    const PLAIN: bool = false;

    /// [`tile`] of rows `r0..r0 + M` and panels `p0..p0 + N`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI, and what the finish needs besides.
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(
        &self,
        (a, b): (&PackedA, &PackedB),
        out: &mut [i32],
        first: usize,
        r0: usize,
        p0: usize,
    ) {
        // SAFETY: the features are the caller's promise.
        unsafe { tile::<M, N, Self>(a, b, (out, self), first, r0, p0) }
    }

    /// [`amx::finish`] of a unit's sums.
    ///
    /// # Safety
    /// As for [`Tiles::tile`].
    #[inline(always)]
    unsafe fn finish_unit(&self, sums: &amx::Sums, place: amx::Place) {
        // SAFETY: the features are the caller's promise.
        unsafe { finish_unit::<Self>(sums, place, self) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Tiles for super::finish::Sums {
    const PLAIN: bool = true;
}
#[cfg(target_arch = "x86_64")]
impl Tiles for Requantize<'_> {}
#[cfg(target_arch = "x86_64")]
impl Tiles for LookedUp<'_> {}
#[cfg(target_arch = "x86_64")]
impl Tiles for Bucketed<'_> {
    #[inline(always)]
    unsafe fn tile<const M: usize, const N: usize>(
        &self,
        (a, b): (&PackedA, &PackedB),
        out: &mut [i32],
        first: usize,
        r0: usize,
        p0: usize,
    ) {
        // SAFETY: the features are the caller's promise.
        unsafe { tile_buckets::<M, N>(a, b, (out, self), first, r0, p0) }
    }

    #[inline(always)]
    unsafe fn finish_unit(&self, sums: &amx::Sums, place: amx::Place) {
        // SAFETY: the features are the caller's promise.
        unsafe { finish_unit_buckets(sums, place, self) }
    }
}

/// Weight rows per tile. `vpdpbusd` has a latency of 4–5 cycles and issues up to twice a cycle
/// (Intel's Sapphire/Emerald Rapids), so a tile needs ≥ 10 independent accumulators to keep the
/// unit busy: 8 rows × 2 panels gives 16, plus 2 activation registers and one broadcast weight
/// (19 of the 32 zmm registers). 4 × 2 (8 chains) held the Intel core to 36–51 % of its peak.
#[cfg(target_arch = "x86_64")]
pub(super) const MR: usize = 8;
/// The most columns of a last, part-filled panel that run as dot products ([`dots`]).
#[cfg(target_arch = "x86_64")]
const DOT_COLUMNS: usize = 4;
/// Panels of 16 columns per tile.
#[cfg(target_arch = "x86_64")]
const NP: usize = 2;
/// The activation panels one sweep of row tiles works on: half of a 48 KiB L1 (Intel) and
/// most of a 32 KiB one (AMD), leaving room for the weights passing through.
#[cfg(target_arch = "x86_64")]
const L1_BLOCK_BYTES: usize = 24 * 1024;

/// # Safety
/// The CPU has AVX-512 F, BW and VNNI, and what `f`'s [`Tiles`] need besides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn gemm_vnni<F: Tiles>(
    a: &PackedA,
    rows: Range<usize>,
    b: &PackedB,
    out: &mut [i32],
    f: &F,
) {
    let first = rows.start;
    // The rows that fill tiles of 16 run on AMX where the CPU has it, the rest (and all rows
    // of a `K` the tiles do not suit) on the VNNI tiles below.
    let rows = match amx::Plan::new(a, rows.len()) {
        Some(plan) => {
            let on_tiles = rows.start..rows.start + rows.len() / TILE_ROWS * TILE_ROWS;
            // SAFETY: `Plan::new` found AMX usable; the rest are the caller's promises.
            unsafe { gemm_amx(plan, (a, on_tiles.clone()), (b, out), first, f) };
            on_tiles.end..rows.end
        }
        None => rows,
    };
    // A last panel of a few columns is cheaper as their dot products than as a panel, whose
    // tile does the work of all 16 (a 7×7 map's 49 columns: 4 panels' work for 3.06). Per
    // weight row, a panel costs `k4` `vpdpbusd`; a column's dot product `⌈k4/16⌉` and a
    // horizontal sum of about 8 instructions, which short rows (grouped convs) do not repay.
    let ragged = b.cols % PANEL;
    let dots_pay = F::DOTS && ragged <= DOT_COLUMNS && ragged * (b.k4.div_ceil(16) + 8) < b.k4;
    let panels = match dots_pay {
        true => b.cols / PANEL,
        false => b.cols.div_ceil(PANEL),
    };
    let dot_columns = panels * PANEL..b.cols;
    // `out` holds rows from `first` on: tiles write row `r` at `r − first`.
    if panels == 0 {
        dots(a, rows, first, b, dot_columns, out);
        return;
    }
    // Every row tile sweeps a block of panels that stays in L1 while the weights stream past
    // it: a tile reads 2 activation vectors (128 bytes) but only 8 weight quads (32 bytes) per
    // step, so it is the activations that must not come from L2.
    let panel_bytes = b.k4 * PANEL * 4;
    let block = (L1_BLOCK_BYTES / panel_bytes).max(1).next_multiple_of(NP);
    let mut p_block = 0;
    while p_block < panels {
        let p_end = (p_block + block).min(panels);
        let mut r = rows.start;
        while r < rows.end {
            let mr = (rows.end - r).min(MR);
            let mut p = p_block;
            while p < p_end {
                let np = (p_end - p).min(NP);
                // One instance per edge shape, so every accumulator array has a constant size and
                // lives in registers.
                macro_rules! edge {
                    ($($m:literal),*) => {
                        match (mr, np) {
                            // SAFETY: the features are the caller's promise.
                            $(($m, 2) => unsafe { f.tile::<$m, 2>((a, b), out, first, r, p) },
                              ($m, _) => unsafe { f.tile::<$m, 1>((a, b), out, first, r, p) },)*
                            _ => unreachable!("tiles have 1–{MR} rows"),
                        }
                    };
                }
                edge!(8, 7, 6, 5, 4, 3, 2, 1);
                p += np;
            }
            // The dot columns of these rows in the last sweep, while their weights are in
            // L1, rather than in a pass of their own over every weight row again.
            if p_end == panels && !dot_columns.is_empty() {
                dots(a, r..r + mr, first, b, dot_columns.clone(), out);
            }
            r += mr;
        }
        p_block = p_end;
    }
}

/// The product of rows `rows` (a multiple of 16 of them) on AMX tiles, in units of 32 rows
/// by 2 panels that sweep blocks of panels as [`gemm_vnni`]'s tiles do; `out` holds rows from
/// `first` on.
///
/// # Safety
/// As for [`gemm_vnni`]; `plan` was made on this CPU.
#[cfg(target_arch = "x86_64")]
unsafe fn gemm_amx<F: Tiles>(
    plan: amx::Plan,
    (a, rows): (&PackedA, Range<usize>),
    (b, out): (&PackedB, &mut [i32]),
    first: usize,
    f: &F,
) {
    assert!(rows.len().is_multiple_of(TILE_ROWS));
    // SAFETY: `plan` was made where AMX is usable (the caller's promise); a product runs no
    // other product on its thread before it returns.
    let tiles = unsafe { amx::TileRegs::configure(plan) };
    let panels = b.cols.div_ceil(PANEL);
    let block = (L1_BLOCK_BYTES / (b.k4 * PANEL * 4))
        .max(1)
        .next_multiple_of(NP);
    let mut sums = amx::Sums::default();
    for p_block in (0..panels).step_by(block) {
        let p_end = (p_block + block).min(panels);
        for r in rows.clone().step_by(UNIT_ROWS) {
            let row_tiles = ((rows.end - r) / TILE_ROWS).min(2);
            for p in (p_block..p_end).step_by(2) {
                let n = (p_end - p).min(2);
                tiles.unit((a, b), (r, row_tiles), (p, n));
                // Plain sums of full panels go from the tiles to their place in `out`;
                // others through `sums` and the finish.
                if F::PLAIN && (p + n) * PANEL <= b.cols {
                    for (i, j) in (0..row_tiles).flat_map(|i| (0..n).map(move |j| (i, j))) {
                        let at = (r + i * TILE_ROWS - first) * b.cols + (p + j) * PANEL;
                        tiles.store(2 * i + j, out, at, b.cols);
                    }
                    continue;
                }
                tiles.store_all(&mut sums);
                let place = amx::Place {
                    out: &mut *out,
                    first,
                    cols: b.cols,
                    r0: r,
                    rows: row_tiles,
                    p0: p,
                    panels: n,
                };
                // SAFETY: the features are the caller's promise; the unit's rows are rows of
                // `out` from `first`.
                unsafe { f.finish_unit(&sums, place) };
            }
        }
    }
}

/// [`amx::finish`] compiled for the features [`Tiles`]' finishes need.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn finish_unit<F: Finish<__m512i>>(sums: &amx::Sums, place: amx::Place, f: &F) {
    // SAFETY: this function is compiled for the features the body needs.
    unsafe { amx::finish(sums, place, f) }
}

/// [`finish_unit`] for a [`Bucketed`] finish, compiled for VBMI and VPOPCNTDQ as well.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx512vpopcntdq")]
fn finish_unit_buckets(sums: &amx::Sums, place: amx::Place, f: &Bucketed) {
    // SAFETY: this function is compiled for the features the body and the finish need.
    unsafe { amx::finish(sums, place, f) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile<const M: usize, const N: usize, F: Finish<__m512i>>(
    a: &PackedA,
    b: &PackedB,
    (out, f): (&mut [i32], &F),
    first: usize,
    r0: usize,
    p0: usize,
) {
    // SAFETY: this function is compiled for the features the body needs.
    unsafe { tile_body::<M, N, F>(a, b, (out, f), first, r0, p0) }
}

/// [`tile`] for a [`Bucketed`] finish, compiled for VBMI and VPOPCNTDQ as well.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi,avx512vpopcntdq")]
fn tile_buckets<const M: usize, const N: usize>(
    a: &PackedA,
    b: &PackedB,
    (out, f): (&mut [i32], &Bucketed),
    first: usize,
    r0: usize,
    p0: usize,
) {
    // SAFETY: this function is compiled for the features the body and the finish need.
    unsafe { tile_body::<M, N, Bucketed>(a, b, (out, f), first, r0, p0) }
}

/// An `M × N`-panel tile: the sums of rows `r0..r0 + M` on panels `p0..p0 + N`, over the
/// whole `K`, finished by `f` and stored at row `r − first`.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI and what `f.finish` needs besides (the caller is
/// compiled for them, so that this body and the finish inline into it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_body<const M: usize, const N: usize, F: Finish<__m512i>>(
    a: &PackedA,
    b: &PackedB,
    (out, f): (&mut [i32], &F),
    first: usize,
    r0: usize,
    p0: usize,
) {
    let k4 = a.k4;
    assert!(r0 + M <= a.rows && (p0 + N) * k4 * PANEL * 4 <= b.data.len());
    let weights = &a.quads[r0 * k4..(r0 + M) * k4];
    // SAFETY (every intrinsic below on registers only): the features are the caller's
    // promise.
    let mut acc: [[__m512i; N]; M] =
        std::array::from_fn(|i| [unsafe { _mm512_set1_epi32(f.initial(r0 + i - first)) }; N]);
    let bptr = b.data.as_ptr();
    let wptr = weights.as_ptr();
    // The next row tile's weights, a line of each row per 16 quads (64 bytes), fetched while
    // this tile runs: on a small map a weight row serves few panels and comes from L3 (B1 at
    // batch 1 took 3–4 % longer without: BENCHMARKS.md, thirty-seventh session). A tile of
    // the same rows on the next panels fetches them again, which costs little.
    let next = (r0 + 2 * M <= a.rows).then(|| a.quads[(r0 + M) * k4..].as_ptr());
    for g in 0..k4 {
        if let Some(next) = next
            && g % 16 == 0
        {
            for i in 0..M {
                // SAFETY: a hint only: it reads nothing and never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * k4 + g).cast()) };
            }
        }
        let mut bv = [unsafe { _mm512_setzero_si512() }; N];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: panel p0 + j < panels and g < k4, so the 64 bytes at this offset lie in
            // `b.data` (asserted above).
            *v = unsafe { _mm512_loadu_si512(bptr.add(((p0 + j) * k4 + g) * PANEL * 4).cast()) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: i < M and g < k4, so `i·k4 + g` lies in `weights` (M rows of k4 quads).
            let w = unsafe { _mm512_set1_epi32(*wptr.add(i * k4 + g)) };
            for (j, c) in row.iter_mut().enumerate() {
                *c = unsafe { _mm512_dpbusd_epi32(*c, bv[j], w) };
            }
        }
    }
    for j in 0..N {
        let col = (p0 + j) * PANEL;
        let n = (b.cols - col).min(PANEL);
        // SAFETY: the features are the caller's promise; `col` is a panel's first column.
        let block = unsafe { f.block(col) };
        for (i, row) in acc.iter().enumerate() {
            let at = (r0 + i - first) * b.cols + col;
            let dst = &mut out[at..at + n];
            // SAFETY: as above; row `r0 + i − first` is one of `out`'s (`dst` is in it).
            let v = unsafe { f.finish(&block, r0 + i - first, row[j]) };
            // A masked store writes the panel's first `n` lanes only (a copy through a stack
            // buffer compiled to a `memcpy` call per accumulator, as slow as a short K loop).
            let mask: __mmask16 = (1u32 << n).wrapping_sub(1) as u16;
            // SAFETY: `dst` holds `n` ≤ 16 i32 and the mask writes lanes 0..n only.
            unsafe { _mm512_mask_storeu_epi32(dst.as_mut_ptr(), mask, v) };
        }
    }
}

/// [`gemm`] of one column (`b.cols == 1`, a linear layer on one token, as the classifier
/// heads are): each weight row a dot product with the column ([`dots`]), where a tile
/// would use one of its panel's 16 columns.
#[cfg(target_arch = "x86_64")]
pub fn gemv(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    assert!(
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    );
    assert!(b.cols == 1 && a.k4 == b.k4 && rows.end <= a.rows && out.len() >= rows.len());
    let first = rows.start;
    // SAFETY: the features were checked just above.
    unsafe { dots(a, rows, first, b, 0..1, out) }
}

/// Columns `columns` of rows `rows` of the product as dot products: each weight row's quads
/// (contiguous in [`PackedA`]) with the column's, gathered once, 64 MACs per `vpdpbusd` as in
/// a full panel. `out` holds rows from `first` on, of all `b.cols` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn dots(
    a: &PackedA,
    rows: Range<usize>,
    first: usize,
    b: &PackedB,
    columns: Range<usize>,
    out: &mut [i32],
) {
    assert!(a.k4 == b.k4 && first <= rows.start && rows.end <= a.rows);
    assert!(columns.end <= b.cols && out.len() >= (rows.end - first) * b.cols);
    assert_eq!(a.quads.len(), a.rows * a.k4);
    for c in columns {
        let x = b.last_panel_column(c);
        // `row_dots` is callable safely: this function is compiled for the features it needs.
        super::rows_by_four(rows.clone(), first, (c, b.cols), out, |r, n, sums| {
            of_rows!(row_dots, n, (a, r, x, sums))
        });
    }
}

/// `sums[i] = Σ_g A[r0 + i]'s quad g · x[g]` for `i < R`, 16 quads per step, the last step
/// masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn row_dots<const R: usize>(a: &PackedA, r0: usize, x: &[i32], sums: &mut [i32; 4]) {
    let k4 = a.k4;
    assert!((r0 + R) * k4 <= a.quads.len() && x.len() == k4);
    let mut acc = [_mm512_setzero_si512(); R];
    let w = a.quads[r0 * k4..].as_ptr();
    // The next rows' weights, fetched while these are summed (their rows follow).
    let ahead = r0 + 2 * R <= a.rows;
    let mut g = 0;
    while g < k4 {
        let n = (k4 - g).min(16);
        if ahead {
            for i in R..2 * R {
                // A hint only: it reads nothing and never faults.
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(i * k4 + g).cast());
            }
        }
        let mask: __mmask16 = (1u32 << n).wrapping_sub(1) as u16;
        // SAFETY: the mask reads quads `g..g + n` only, inside `x` and each row (asserted).
        unsafe {
            let xv = _mm512_maskz_loadu_epi32(mask, x.as_ptr().add(g));
            for (i, acc) in acc.iter_mut().enumerate() {
                let wv = _mm512_maskz_loadu_epi32(mask, w.add(i * k4 + g));
                *acc = _mm512_dpbusd_epi32(*acc, xv, wv);
            }
        }
        g += n;
    }
    for (s, acc) in sums.iter_mut().zip(acc) {
        *s = _mm512_reduce_add_epi32(acc);
    }
}

/// The CPU's int8 peak on one core, measured: `iters` rounds of 12 independent `vpdpbusd`
/// (64 MACs each) on registers only. Returns the MACs done and a value that keeps the work
/// alive; `None` without AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
pub fn peak_loop(iters: usize) -> Option<(u64, i32)> {
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni"))
    {
        return None;
    }
    // SAFETY: the features were checked just above.
    Some(unsafe { peak_vnni(iters) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn peak_vnni(iters: usize) -> (u64, i32) {
    let a = _mm512_set1_epi32(0x0102_0304);
    let b = _mm512_set1_epi32(0x0101_0101);
    let mut acc = [_mm512_setzero_si512(); 12];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_dpbusd_epi32(*r, a, b);
        }
    }
    let mut sum = _mm512_setzero_si512();
    for r in acc {
        sum = _mm512_add_epi32(sum, r);
    }
    (iters as u64 * 12 * 64, _mm512_reduce_add_epi32(sum))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn gemv(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    super::scalar_rows(a, rows, b, out)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn peak_loop(_iters: usize) -> Option<(u64, i32)> {
    None
}

#[cfg(not(target_arch = "x86_64"))]
pub fn gemm(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    super::scalar_rows(a, rows, b, out)
}
