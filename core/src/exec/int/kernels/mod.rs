//! int8 kernels: the u8 × i8 → i32 matrix product every conv and linear layer runs on, and the
//! depthwise convolution, each with a portable scalar reference and x86 versions chosen at run
//! time (AVX-512 VNNI, AVX2). The SIMD versions compute exactly the same integers as the
//! reference (tested on random shapes, odd sizes included). The steps' element-wise loops
//! (requantization, residual add, the Softmax's exponentials, dot products, `P·V` rows) are one
//! portable body each, also compiled for AVX2 and AVX-512 and chosen the same way.
//!
//! Operands are packed once per layer call: the weights `A` (i8, `rows × K`) with `K` padded to
//! a multiple of 4, the activations `B` (u8, `K × cols`) in panels of 16 columns whose 4
//! consecutive `K` values are adjacent — the layout of VNNI's `vpdpbusd`, which multiplies 4 u8
//! by 4 i8 and adds them to one i32 lane. Activations are u8 because every 8-bit code is
//! non-negative once shifted by its zero-point correction (see the conv step); weights are
//! symmetric i8. A linear layer on many tokens swaps the roles: its tokens, shifted by 128 into
//! i8, are `A` ([`pack::pack_signed_tokens`]) and its weights plus 128 the u8 panels of `B`,
//! packed once (`ops::token_major`), so that the sums come out token-major.

use std::ops::Range;
use std::sync::OnceLock;

use crate::exec::spare::Buffer;

/// Calls the build of a kernel that [`width`] chooses for `isa`:
/// `by_width!(isa, on_avx512, on_avx2, portable, (args…))`, where `on_avx512` is compiled with
/// (some of) AVX-512 F, BW, DQ and VL and `on_avx2` with AVX2 — the features `width` checks.
/// Defined before the kernel modules, which use it.
macro_rules! by_width {
    ($isa:expr, $avx512:path, $avx2:path, $portable:path, ($($arg:expr),* $(,)?)) => {
        match $crate::exec::int::kernels::width($isa) {
            // SAFETY (both): `width` found the features the function is compiled for.
            #[cfg(target_arch = "x86_64")]
            $crate::exec::int::kernels::Width::Avx512 => unsafe { $avx512($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            $crate::exec::int::kernels::Width::Avx2 => unsafe { $avx2($($arg),*) },
            _ => $portable($($arg),*),
        }
    };
}

/// `f::<R>(args…)` for a count `n` of 1–4 rows: kernels that take their row count
/// as a constant, so that their accumulators live in registers — the dot products of the rows
/// a step of [`rows_by_four`] hands over, the row kernels that run a group of rows side by
/// side. Defined before the kernel modules, which use it.
#[cfg(target_arch = "x86_64")]
macro_rules! of_rows {
    ($f:ident, $n:expr, ($($arg:expr),* $(,)?)) => {
        match $n {
            4 => $f::<4>($($arg),*),
            3 => $f::<3>($($arg),*),
            2 => $f::<2>($($arg),*),
            _ => $f::<1>($($arg),*),
        }
    };
}

pub mod add;
pub mod add_pairs;
#[cfg(target_arch = "x86_64")]
mod amx;
mod avx2;
pub mod axpy;
#[cfg(target_arch = "x86_64")]
mod bucket_lanes;
pub mod bytes;
pub mod columns;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
mod depthwise_flat;
#[cfg(target_arch = "x86_64")]
mod depthwise_pairs;
#[cfg(target_arch = "x86_64")]
mod depthwise_quads;
#[cfg(target_arch = "x86_64")]
mod depthwise_windows;
pub mod exps;
#[cfg(target_arch = "x86_64")]
mod finish;
pub mod gram;
pub mod layernorm;
mod narrow_lanes;
pub mod pack;
pub mod pair_products;
pub mod requant;
pub mod scores;
pub mod scores_bytes;
pub mod shift_divide;
pub mod softmax_codes;
#[cfg(target_arch = "x86_64")]
mod spans;
pub mod square_hardswish;
mod vnni;
pub mod weighted_rows;

/// The measured int8 peaks: AVX-512 VNNI's `vpdpbusd` and AVX2's exact `vpmaddwd` + `vpaddd`.
pub use avx2::peak_loop as peak_loop_avx2;
pub use vnni::peak_loop as peak_loop_vnni;

/// Whether the products of `Isa::Avx512Vnni` run on AMX tiles on this CPU (Xeons since
/// Sapphire Rapids, unless `QVIT_ISA` caps them; the kernels' module doc of `amx`).
pub fn products_on_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    return amx::usable();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The measured AMX int8 peak: `iters` rounds of four `tdpbsud` on one core. Returns the MACs
/// done and a value that keeps the work alive; `None` where [`products_on_amx`] is false.
pub fn peak_loop_amx(iters: usize) -> Option<(u64, i32)> {
    #[cfg(target_arch = "x86_64")]
    return amx::peak_loop(iters);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iters;
        None
    }
}

/// `(lo, hi)` as one 32-bit word, `lo` in the low i16: the operand order of `vpmaddwd`, which
/// multiplies two such words' halves and adds the two products (the depthwise tap pairs, the
/// attention scores' dimension pairs, [`pair_products`]).
#[inline(always)]
pub fn pair(lo: i16, hi: i16) -> i32 {
    (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32
}

/// Two [`pair`] words' halves multiplied and the two products added, wrapping in i32: one lane
/// of `vpmaddwd` (and of `vpdpwssd` less its addend), the definition the pair kernels are
/// tested against.
#[inline(always)]
pub fn madd(x: i32, w: i32) -> i32 {
    let lo = (x as i16 as i32).wrapping_mul(w as i16 as i32);
    let hi = ((x >> 16) as i16 as i32).wrapping_mul((w >> 16) as i16 as i32);
    lo.wrapping_add(hi)
}

/// Columns per panel of packed `B`.
pub const PANEL: usize = 16;

/// Which implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Isa {
    /// The best this CPU supports; `QVIT_ISA=scalar|avx2|avx512vnni` forces a lower one (for
    /// benchmarks and for tests of every path; [`crate::exec::cpu`]).
    pub fn detect() -> Isa {
        use crate::exec::cpu::{Cap, cap};
        let best = best_isa();
        match cap() {
            Cap::Portable => Isa::Scalar,
            Cap::Avx2 if best != Isa::Scalar => Isa::Avx2,
            _ => best,
        }
    }

    /// Every implementation this CPU can run.
    pub fn available() -> Vec<Isa> {
        let best = best_isa();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni]
            .into_iter()
            .filter(|&i| i as u8 <= best as u8)
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// The vector width a portable kernel body may be compiled for under `isa` on this CPU: the
/// one choice the element-wise kernels (axpy, attention scores, weighted rows, level encoding) share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    Portable,
    /// AVX2 is present and `isa` is not scalar.
    Avx2,
    /// AVX-512 F, BW, DQ and VL are present (every CPU with BW has the other two) and `isa`
    /// is AVX-512 VNNI.
    Avx512,
}

pub(crate) fn width(isa: Isa) -> Width {
    // The CPU's features, checked once: the five checks per call had been 1.5 % of
    // efficientvit-micro's integer time by `perf` (its kernels run on rows of 7 to 28 codes).
    static FEATURES: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    let (avx512, avx2) = *FEATURES.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl");
            (avx512, std::arch::is_x86_feature_detected!("avx2"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        (false, false)
    });
    if isa == Isa::Avx512Vnni && avx512 {
        Width::Avx512
    } else if isa != Isa::Scalar && avx2 {
        Width::Avx2
    } else {
        Width::Portable
    }
}

fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Isa::Avx512Vnni;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// Weights `rows × K` as groups of 4 consecutive `K` values, each one little-endian i32 (the
/// operand `vpdpbusd` broadcasts); `K` is padded to `k4·4` by zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedA {
    pub rows: usize,
    pub k: usize,
    pub k4: usize,
    pub quads: Vec<i32>,
    /// The same quads sign-extended to four little-endian i16 (the operand AVX2's `vpmaddwd`
    /// broadcasts).
    pub quads16: Vec<i64>,
}

impl PackedA {
    pub fn new(a: &[i8], rows: usize, k: usize) -> Self {
        let k4 = k.div_ceil(4);
        let mut quads = vec![0i32; rows * k4];
        for r in 0..rows {
            for g in 0..k4 {
                let mut q = [0u8; 4];
                for (j, b) in q.iter_mut().enumerate() {
                    if 4 * g + j < k {
                        *b = a[r * k + 4 * g + j] as u8;
                    }
                }
                quads[r * k4 + g] = i32::from_le_bytes(q);
            }
        }
        let quads16 = quads.iter().map(|&q| widen_quad(q)).collect();
        Self {
            rows,
            k,
            k4,
            quads,
            quads16,
        }
    }

    #[inline]
    fn quad(&self, r: usize, g: usize) -> i32 {
        self.quads[r * self.k4 + g]
    }
}

/// A quad's four bytes, each sign-extended to i16, as one little-endian i64 (the operand
/// AVX2's `vpmaddwd` broadcasts).
pub(super) fn widen_quad(q: i32) -> i64 {
    q.to_le_bytes().iter().enumerate().fold(0u64, |v, (j, &x)| {
        v | (x as i8 as i16 as u16 as u64) << (16 * j)
    }) as i64
}

/// Activations `K × cols` in panels: `[cols/16][k4][16][4]`, padding (columns past `cols`, `K`
/// past `k`) zero.
#[derive(Debug, Clone)]
pub struct PackedB {
    pub k: usize,
    pub k4: usize,
    pub cols: usize,
    /// A recycled buffer: it remembers what it held past this matrix, so packing a larger one
    /// into it next zeroes nothing (a `Vec` cut to each matrix's length was zeroed again
    /// whenever a layer's matrix outgrew the one before: 1.5 % of EfficientViT-B1's integer
    /// time at batch 1, on the image's thread, by `perf`).
    pub data: Buffer<u8>,
    /// The last panel's columns, each its `k4` quads in a row (`[c − 16·(panels − 1)][k4]`),
    /// for products that run them as dot products: gathered on first use, once for all the
    /// row blocks of a product rather than once per block. `data` is not changed once a
    /// product has read it.
    last_columns: OnceLock<Vec<i32>>,
}

/// Equal operands: the same matrix, whether or not a product has gathered its last columns.
impl PartialEq for PackedB {
    fn eq(&self, other: &Self) -> bool {
        (self.k, self.k4, self.cols, &self.data[..])
            == (other.k, other.k4, other.cols, &other.data[..])
    }
}

impl PackedB {
    /// Zeroed storage for `k × cols`, reusing `buf`'s allocation.
    pub fn zeroed(k: usize, cols: usize, mut buf: Buffer<u8>) -> Self {
        let k4 = k.div_ceil(4);
        let panels = cols.div_ceil(PANEL);
        buf.zeroed(panels * k4 * PANEL * 4);
        Self {
            k,
            k4,
            cols,
            data: buf,
            last_columns: OnceLock::new(),
        }
    }

    #[inline]
    pub fn index(&self, kk: usize, col: usize) -> usize {
        ((col / PANEL * self.k4 + kk / 4) * PANEL + col % PANEL) * 4 + kk % 4
    }

    #[inline]
    pub fn set(&mut self, kk: usize, col: usize, v: u8) {
        let i = self.index(kk, col);
        self.data[i] = v;
    }

    /// The quads of column `c` of the last panel, `k4` of them in a row, each four bytes as a
    /// little-endian i32 (what a column's dot products read).
    pub fn last_panel_column(&self, c: usize) -> &[i32] {
        let first = (self.cols.max(1) - 1) / PANEL * PANEL;
        assert!(
            (first..self.cols).contains(&c),
            "column {c} is not in the last panel (columns {first}..{})",
            self.cols
        );
        let columns = self.last_columns.get_or_init(|| {
            // The panel's rows hold 16 columns' quads each, `PANEL·4` bytes apart.
            let panel = &self.data[first / PANEL * self.k4 * PANEL * 4..];
            (first..self.cols)
                .flat_map(|c| {
                    let lane = 4 * (c % PANEL);
                    panel.chunks_exact(PANEL * 4).take(self.k4).map(move |row| {
                        i32::from_le_bytes([row[lane], row[lane + 1], row[lane + 2], row[lane + 3]])
                    })
                })
                .collect()
        });
        &columns[(c - first) * self.k4..(c - first + 1) * self.k4]
    }

    /// Packs a row-major `K × cols` matrix.
    pub fn from_rows(b: &[u8], k: usize, cols: usize) -> Self {
        let mut p = Self::zeroed(k, cols, Buffer::default());
        for kk in 0..k {
            for c in 0..cols {
                p.set(kk, c, b[kk * cols + c]);
            }
        }
        p
    }
}

/// `out[r][c] = Σ_k A[r][k]·B[k][c]` (`out` is `rows × cols`, row-major), on `isa`.
pub fn gemm(isa: Isa, a: &PackedA, b: &PackedB, out: &mut [i32]) {
    gemm_rows(isa, a, 0..a.rows, b, out)
}

/// `isa`, or the best this CPU has when that is lower: a forced or stale choice never runs
/// instructions this CPU lacks.
pub(super) fn runnable(isa: Isa) -> Isa {
    if isa as u8 <= best_isa() as u8 {
        isa
    } else {
        best_isa()
    }
}

/// Weight rows per tile of [`gemm_rows`] on `isa`: blocks of rows that are a multiple of it
/// leave no tile part-empty but the last.
pub fn tile_rows(isa: Isa) -> usize {
    match runnable(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if amx::usable() => amx::UNIT_ROWS,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => vnni::MR,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::MR,
        _ => 1,
    }
}

/// Panics unless `a` and `b` agree on K, `rows` are rows of `a` and `out` holds their products.
fn check_rows(a: &PackedA, rows: &Range<usize>, b: &PackedB, out: &[i32]) {
    assert_eq!(a.k4, b.k4, "packed operands disagree on K");
    assert!(
        rows.start <= rows.end && rows.end <= a.rows,
        "rows {rows:?} of {}",
        a.rows
    );
    assert!(out.len() >= rows.len() * b.cols);
}

/// [`gemm`] for weight rows `rows` only: `out` holds those rows (`rows.len() × cols`), so
/// blocks of rows can run on different threads.
pub fn gemm_rows(isa: Isa, a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    check_rows(a, &rows, b, out);
    match (runnable(isa), b.cols) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, 1) => vnni::gemv(a, rows, b, out),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512Vnni, _) => vnni::gemm(a, rows, b, out),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, 1) => avx2::gemv(a, rows, b, out),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, _) => avx2::gemm(a, rows, b, out),
        _ => scalar_rows(a, rows, b, out),
    }
}

/// [`gemm_rows`] then `r`'s requantization of each row's sums (`out[i·cols + c]` = channel
/// `c`'s [`Narrow`](requant::Narrow) of row `rows.start + i`'s sum plus `r.offsets[i]`), then
/// its look-up if it has one ([`columns::LookUp`]): on AVX-512 VNNI and AVX2 in the product's
/// tiles, the sums never stored; in the portable form through `sums`.
pub fn gemm_rows_requantized(
    isa: Isa,
    a: &PackedA,
    rows: Range<usize>,
    b: &PackedB,
    r: &columns::Requantize,
    sums: &mut Vec<i32>,
    out: &mut [i32],
) {
    check_rows(a, &rows, b, out);
    assert!(
        r.columns.channels() == b.cols && r.offsets.len() >= rows.len(),
        "{} channels' constants and {} offsets for {} columns of {} rows",
        r.columns.channels(),
        r.offsets.len(),
        b.cols,
        rows.len()
    );
    assert!(
        r.table.is_none_or(|t| t.outside.len() >= rows.len()),
        "a look-up's mark for every row"
    );
    match runnable(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => vnni::gemm_requantized(a, rows, b, r, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::gemm_requantized(a, rows, b, r, out),
        _ => {
            let n = rows.len();
            // The product writes every sum.
            let sums = crate::exec::spare::prefix_to_overwrite(sums, n * b.cols);
            gemm_rows(isa, a, rows, b, sums);
            r.columns.apply(isa, sums, &r.offsets[..n], out);
            if let Some(look_up) = &r.table {
                let rows = out.chunks_exact_mut(b.cols.max(1)).take(n);
                for (row, outside) in rows.zip(look_up.outside) {
                    if !requant::codes_within(isa, look_up.table, row) {
                        outside.set(true);
                    }
                }
            }
        }
    }
}

/// A column's dot products, row after row: `dots(r, n, sums)` puts the sums of rows
/// `r..r + n` (four, fewer at the end, so the column's loads serve four rows) in `sums[..n]`;
/// row `r`'s goes to `out[(r − first)·cols + c]`, its place in a product whose rows `out`
/// holds from `first`.
#[cfg(target_arch = "x86_64")]
fn rows_by_four(
    rows: Range<usize>,
    first: usize,
    (c, cols): (usize, usize),
    out: &mut [i32],
    mut dots: impl FnMut(usize, usize, &mut [i32; 4]),
) {
    let mut r = rows.start;
    while r < rows.end {
        let n = (rows.end - r).min(4);
        let mut sums = [0; 4];
        dots(r, n, &mut sums);
        for (i, &sum) in sums[..n].iter().enumerate() {
            out[(r - first + i) * cols + c] = sum;
        }
        r += n;
    }
}

/// The reference every SIMD path is tested against.
pub fn gemm_scalar(a: &PackedA, b: &PackedB, out: &mut [i32]) {
    scalar_rows(a, 0..a.rows, b, out)
}

fn scalar_rows(a: &PackedA, rows: Range<usize>, b: &PackedB, out: &mut [i32]) {
    let first = rows.start;
    for r in rows {
        for c in 0..b.cols {
            let mut acc = 0i32;
            for g in 0..a.k4 {
                let w = a.quad(r, g).to_le_bytes();
                let base = b.index(4 * g, c);
                for (j, &wj) in w.iter().enumerate() {
                    acc += wj as i8 as i32 * b.data[base + j] as i32;
                }
            }
            out[(r - first) * b.cols + c] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Random weights (−127..=127) and activations (0..=255) of a product, packed.
    pub(super) fn random_case(
        rng: &mut Rng,
        rows: usize,
        k: usize,
        cols: usize,
    ) -> (PackedA, PackedB) {
        let a: Vec<i8> = (0..rows * k)
            .map(|_| (rng.below(255) as i32 - 127) as i8)
            .collect();
        let b: Vec<u8> = (0..k * cols).map(|_| rng.below(256) as u8).collect();
        (PackedA::new(&a, rows, k), PackedB::from_rows(&b, k, cols))
    }

    #[test]
    fn scalar_by_hand() {
        // [1 −2 3] · [[4, 0], [5, 1], [6, 255]] = [4 − 10 + 18, 0 − 2 + 765] = [12, 763]
        let a = PackedA::new(&[1, -2, 3], 1, 3);
        let b = PackedB::from_rows(&[4, 0, 5, 1, 6, 255], 3, 2);
        let mut out = [0; 2];
        gemm_scalar(&a, &b, &mut out);
        assert_eq!(out, [12, 763]);
    }

    #[test]
    fn a_block_of_rows_equals_those_rows_of_the_whole_product() {
        let mut rng = Rng::new(17);
        // 29 columns (tiles), 49 (a last column as dot products) and one (the matrix-vector
        // products).
        for cols in [29, 49, 1] {
            let (a, b) = random_case(&mut rng, 53, 37, cols);
            let mut whole = vec![0; 53 * cols];
            gemm_scalar(&a, &b, &mut whole);
            for isa in Isa::available() {
                for rows in [0..53, 0..12, 12..48, 48..53, 7..8, 20..20] {
                    let mut got = vec![-1; rows.len() * cols];
                    gemm_rows(isa, &a, rows.clone(), &b, &mut got);
                    assert_eq!(
                        got,
                        whole[rows.start * cols..rows.end * cols],
                        "{} {rows:?} × {cols}",
                        isa.name()
                    );
                }
            }
        }
    }

    #[test]
    fn every_isa_equals_the_scalar_reference() {
        let mut rng = Rng::new(7);
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (4, 4, 16),
            (5, 9, 17),
            (8, 64, 33),
            (13, 27, 49),
            (16, 130, 196),
            (33, 257, 15),
            (64, 576, 50),
            (6, 16, 8),
            (7, 33, 23),
            (12, 64, 40),
            (11, 5, 9),
            // Deep enough that VNNI sweeps its panels in several L1 blocks (4 panels of 8 KiB
            // each here), the last one odd, with a 2-row tail.
            (10, 512, 417),
            // Last panels of 1–4 columns (VNNI: dot products where K repays them) and of 5
            // (a tile), AVX2's last half panels of 1–2 (dot products) and 3–5 (a tile), after
            // full ones or alone.
            (7, 600, 3),
            (6, 40, 2),
            (9, 70, 3),
            (10, 100, 4),
            (5, 48, 19),
            (8, 192, 20),
            (8, 192, 21),
            // Many rows of dot products (and their last ones, fewer than four), a 7×7 map.
            (37, 600, 17),
            (24, 256, 49),
            (31, 130, 2),
            // One column (the matrix-vector products): K with and without a part step of 16
            // quads (VNNI) or 4 (AVX2), rows with and without a part group of 4; the size of
            // EfficientViT-B1's head.
            (9, 1, 1),
            (7, 64, 1),
            (5, 68, 1),
            (13, 260, 1),
            (4, 1537, 1),
            (1600, 1536, 1),
        ];
        if Isa::available().len() == 1 {
            eprintln!("note: this CPU has no AVX2: only the scalar GEMM was tested");
        }
        for isa in Isa::available() {
            for &(rows, k, cols) in &shapes {
                let (a, b) = random_case(&mut rng, rows, k, cols);
                let mut want = vec![0; rows * cols];
                gemm_scalar(&a, &b, &mut want);
                let mut got = vec![-1; rows * cols];
                gemm(isa, &a, &b, &mut got);
                assert_eq!(got, want, "{} on {rows}×{k}×{cols}", isa.name());
            }
        }
    }

    /// The requantization in the product's tiles equals the product's sums requantized after,
    /// channel by channel with each row's offset, on every ISA: channel counts that end in a
    /// part panel (where the plain product would take dot products), rows in part tiles,
    /// blocks of rows that start past the first, and sums with offsets that wrap in i32. Then
    /// each value looked up in a table that holds all of them, or only some (values below and
    /// above it): the rows marked are those with a value past the table, and every value
    /// inside it has its code.
    #[test]
    fn the_requantized_product_equals_the_sums_requantized() {
        use crate::exec::int::code_table::{CodeTable, buckets::valley};
        use columns::{ColumnNarrow, LookUp, Read, Requantize};
        use std::cell::Cell;
        let mut rng = Rng::new(23);
        let channel = |rng: &mut Rng| {
            let k = 32 + rng.below(9) as u32;
            let fast = requant::Fast {
                m: rng.below(1 << 30) as i32 - (1 << 29),
                lo: (rng.below(1 << 40) as i64 - (1 << 39)) << (k - 32),
                hi: rng.below(256) as i64 - 128,
                k,
                qmin: -128,
                qmax: 127,
            };
            fast.narrow()
                .expect("a shift of 32 or more and small bounds")
        };
        for (rows, k, cols) in [
            (1, 1, 1),
            (9, 600, 3),
            (13, 70, 17),
            (8, 192, 32),
            (17, 33, 49),
            (21, 192, 192),
            (12, 768, 50),
        ] {
            let (a, b) = random_case(&mut rng, rows, k, cols);
            let mut sums = vec![0; rows * cols];
            gemm_scalar(&a, &b, &mut sums);
            let columns = ColumnNarrow::new((0..cols).map(|_| channel(&mut rng)).collect());
            let offsets: Vec<i32> = (0..rows).map(|_| rng.next_u64() as u32 as i32).collect();
            for isa in Isa::available() {
                for range in [0..rows, rows / 3..rows, 0..rows / 2] {
                    let n = range.len();
                    let r = Requantize {
                        columns: &columns,
                        offsets: &offsets[range.start..],
                        table: None,
                    };
                    let value = |row: usize, c: usize| {
                        let v = sums[row * cols + c].wrapping_add(offsets[row]);
                        columns.channel(c).apply_i32(v)
                    };
                    let mut got = vec![i32::MIN; n * cols + 5];
                    let mut scratch = Vec::new();
                    gemm_rows_requantized(isa, &a, range.clone(), &b, &r, &mut scratch, &mut got);
                    for (i, row) in range.clone().enumerate() {
                        for c in 0..cols {
                            assert_eq!(
                                got[i * cols + c],
                                value(row, c),
                                "{} row {row} channel {c} of {rows}×{k}×{cols}",
                                isa.name()
                            );
                        }
                    }
                    assert!(
                        got[n * cols..].iter().all(|&g| g == i32::MIN),
                        "past the rows"
                    );
                    // Every value the requantization gives, then the middle 150: random codes
                    // (read by loads), and codes that step by one (by buckets where the CPU
                    // reads them).
                    let tables = [(-128, 256), (-60, 150)];
                    for ((first, len), read) in tables
                        .into_iter()
                        .flat_map(|t| [(t, Read::Loads), (t, Read::Buckets)])
                    {
                        let codes = match read {
                            Read::Loads => (0..len).map(|_| rng.below(1000) as i32).collect(),
                            Read::Buckets => valley(&mut rng, len as usize, 2),
                        };
                        let table = CodeTable::from_codes(first, codes);
                        assert_eq!(table.buckets().is_some(), read == Read::Buckets);
                        let outside = vec![Cell::new(false); n];
                        let look_up = LookUp {
                            table: &table,
                            outside: &outside,
                            read,
                        };
                        let r = Requantize {
                            table: Some(look_up),
                            ..r
                        };
                        gemm_rows_requantized(
                            isa,
                            &a,
                            range.clone(),
                            &b,
                            &r,
                            &mut scratch,
                            &mut got,
                        );
                        for (i, row) in range.clone().enumerate() {
                            let mut past = false;
                            for c in 0..cols {
                                match table.get(value(row, c) as i64) {
                                    Some(code) => assert_eq!(got[i * cols + c], code),
                                    None => past = true,
                                }
                            }
                            let name = isa.name();
                            assert_eq!(outside[i].get(), past, "{name} row {row} of {rows}×{cols}");
                        }
                    }
                }
            }
        }
    }

    /// The tiles' look-up of tables that step by one, read by loads and by buckets, with
    /// each channel scaled so that its values spread over the table rather than pile up at
    /// the clamp (as in the test above): every value's code, and the rows with a value past
    /// a table that holds only the middle ones.
    #[test]
    fn looked_up_products_read_every_entry() {
        use crate::exec::int::code_table::{CodeTable, buckets::valley};
        use columns::{ColumnNarrow, LookUp, Read, Requantize};
        use std::cell::Cell;
        let mut rng = Rng::new(29);
        for (rows, k, cols) in [(13, 70, 17), (21, 192, 192), (9, 600, 35)] {
            let (a, b) = random_case(&mut rng, rows, k, cols);
            let mut sums = vec![0; rows * cols];
            gemm_scalar(&a, &b, &mut sums);
            // Channel c's largest sum maps to about ±160: past the table's ends, a little.
            let columns = ColumnNarrow::new(
                (0..cols)
                    .map(|c| {
                        let most = (0..rows).map(|r| sums[r * cols + c].unsigned_abs()).max();
                        let k = 36;
                        let sign = if rng.below(2) == 0 { 1 } else { -1 };
                        let fast = requant::Fast {
                            m: sign * ((160i64 << k) / most.unwrap().max(1) as i64) as i32,
                            lo: 1 << (k - 1),
                            hi: rng.below(41) as i64 - 20,
                            k,
                            qmin: -128,
                            qmax: 127,
                        };
                        fast.narrow()
                            .expect("a shift of 32 or more and small bounds")
                    })
                    .collect(),
            );
            let offsets = vec![0; rows];
            let value = |row: usize, c: usize| columns.channel(c).apply_i32(sums[row * cols + c]);
            for isa in Isa::available() {
                for ((first, len), spacing, read) in [(-128, 256), (-100, 180)]
                    .into_iter()
                    .flat_map(|t| [(t, 1), (t, 3)])
                    .flat_map(|(t, s)| [(t, s, Read::Loads), (t, s, Read::Buckets)])
                {
                    let table = CodeTable::from_codes(first, valley(&mut rng, len, spacing));
                    assert!(table.buckets().is_some());
                    let outside = vec![Cell::new(false); rows];
                    let r = Requantize {
                        columns: &columns,
                        offsets: &offsets,
                        table: Some(LookUp {
                            table: &table,
                            outside: &outside,
                            read,
                        }),
                    };
                    let mut got = vec![i32::MIN; rows * cols];
                    gemm_rows_requantized(isa, &a, 0..rows, &b, &r, &mut Vec::new(), &mut got);
                    let mut entries = std::collections::HashSet::new();
                    for row in 0..rows {
                        let mut past = false;
                        for c in 0..cols {
                            match table.get(value(row, c) as i64) {
                                Some(code) => {
                                    entries.insert(value(row, c));
                                    let name = isa.name();
                                    assert_eq!(got[row * cols + c], code, "{name} {read:?}");
                                }
                                None => past = true,
                            }
                        }
                        assert_eq!(outside[row].get(), past, "{} row {row}", isa.name());
                    }
                    // Values over most of the table, not only its ends.
                    assert!(entries.len() > len / 4, "{} entries", entries.len());
                }
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        // 255·(−127) summed over K: the AVX2 path must not use saturating 16-bit adds.
        for isa in Isa::available() {
            // 20 columns (tiles) and one (the matrix-vector products).
            for (rows, k, cols) in [(3, 100, 20), (5, 100, 1)] {
                let a = PackedA::new(&vec![-127i8; rows * k], rows, k);
                let b = PackedB::from_rows(&vec![255u8; k * cols], k, cols);
                let mut out = vec![0; rows * cols];
                gemm(isa, &a, &b, &mut out);
                assert!(out.iter().all(|&v| v == -127 * 255 * 100), "{}", isa.name());
            }
        }
    }
}
