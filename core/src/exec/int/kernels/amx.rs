//! Intel AMX's int8 tiles (Sapphire Rapids and later Xeons): `tdpbsud` multiplies a 16 × 64
//! tile of i8 by a 16 × 64 tile of u8 quads into 16 × 16 i32 sums, 16,384 MACs per
//! instruction, where one `vpdpbusd` does 64. On the Xeon of BENCHMARKS.md one core reached
//! 3.2 TMAC/s on registers, 7× its VNNI peak.
//!
//! The operands need no packing of their own: a tile of 16 weight rows is 16 rows of
//! [`PackedA`]'s quads (a row's quads are adjacent, rows `4·k4` bytes apart) and a tile of
//! activations is 16 consecutive quad rows of one [`PackedB`] panel (64 bytes each, adjacent),
//! which is the `K × 16` layout of `tdpbsud`'s second source. `tdpbsud` takes its first source
//! as signed and its second as unsigned, as `vpdpbusd` takes the weights and the activations,
//! and its sums wrap in i32 as `vpdpbusd`'s do: both products are the same integers.
//!
//! Rust has no stable AMX intrinsics, so the tiles are driven by inline assembly; the
//! compiler never touches the tile registers, which therefore hold their values between the
//! assembly blocks of one product. Linux lends a process the tiles' 8 KiB of state only once
//! asked (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), which [`usable`] does once.
#![allow(unsafe_code)]

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::finish::Finish;
use super::{PANEL, PackedA, PackedB};

/// Rows of a tile of weights and of its sums.
pub(super) const TILE_ROWS: usize = 16;
/// Weight rows of a unit: two tiles, each multiplied by two panels (four tiles of sums, two
/// of weights and two of activations: the eight tile registers).
pub(super) const UNIT_ROWS: usize = 2 * TILE_ROWS;
/// The most quads a tile row holds: 64 bytes.
const MOST_QUADS: usize = 16;

/// Whether the products may run on AMX: the CPU has AMX-TILE and AMX-INT8 (and AVX-512 F,
/// BW and VNNI, whose instructions finish the sums), `QVIT_ISA` asks for everything it has
/// ([`crate::exec::cpu::cap`]), and the kernel granted the tiles' state. Decided once.
pub(super) fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 25 & 1 == 1);
        tile && int8
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && crate::exec::cpu::cap() == crate::exec::cpu::Cap::Everything
            && permitted()
    })
}

/// Asks Linux for the tiles' state (`XFEATURE_XTILEDATA`) for the whole process; `false` if
/// the kernel refuses (before Linux 5.16, or where a hypervisor hides AMX).
#[cfg(target_os = "linux")]
fn permitted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a system call that takes two integers and changes only the process's permitted
    // extended states.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn permitted() -> bool {
    false
}

/// How a product runs on tiles: its rows in [`UNIT_ROWS`] and its `K` in steps of `step`
/// quads, a divisor of `k4` (the tiles' shape is set once per product, so every step has the
/// same length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    step: usize,
}

impl Plan {
    /// The plan for `rows` rows of `a` times any `B`, when tiles pay: `K` has a [`step`] and
    /// there is a full tile of rows. `None` leaves the product to the VNNI tiles.
    pub(super) fn new(a: &PackedA, rows: usize) -> Option<Plan> {
        let step = step(a.k4)?;
        (rows >= TILE_ROWS && usable()).then_some(Plan { step })
    }

    /// The tile configuration: sums 16 × 16 i32 (tiles 0–3), weights 16 rows × `step` quads
    /// (4, 5), activations `step` quad rows × 16 columns (6, 7).
    fn config(self) -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1: eight tiles of up to 16 rows of 64 bytes
        let shapes = [(16, 64); 4]
            .into_iter()
            .chain([(16, 4 * self.step); 2])
            .chain([(self.step, 64); 2]);
        for (t, (rows, bytes)) in shapes.enumerate() {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(bytes as u16).to_le_bytes());
            c[48 + t] = rows as u8;
        }
        TileConfig(c)
    }
}

/// The quads of `K` a step of the tiles takes: the largest divisor of `k4` that fits a tile
/// row, if it is at least 8. A shorter step spends most of each `tdpbsud` on nothing: with
/// `K` = 16 (4 quads: EfficientViT-B1's grouped 1×1 convs, its input stem's pointwise conv)
/// the VNNI tiles ran 1.0–1.8× faster (`cargo bench -p qvit-core --bench int8 --
/// "gemm_int8::2::\(16,"` with and without `QVIT_ISA=avx512vnni`, Emerald Rapids), and
/// 1.2× slower with `K` = 32.
fn step(k4: usize) -> Option<usize> {
    (8..=MOST_QUADS).rev().find(|&d| k4.is_multiple_of(d))
}

/// `ldtilecfg`'s 64-byte operand.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

/// The tiles configured for a product's plan on this thread, released when dropped (so that
/// the thread's context switches stop saving them). Tied to the thread that configured them:
/// the configuration is a thread's state.
pub(super) struct TileRegs {
    step: usize,
    this_thread: std::marker::PhantomData<*const ()>,
}

impl TileRegs {
    /// # Safety
    /// [`usable`] is true, and no other `TileRegs` lives on this thread (each configuration
    /// replaces the last, and a drop releases them all).
    pub(super) unsafe fn configure(plan: Plan) -> TileRegs {
        let config = plan.config();
        // SAFETY: AMX is present and permitted (the caller's promise); the configuration is
        // valid for palette 1 (rows ≤ 16, bytes per row ≤ 64, ≥ 4 and a multiple of 4).
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
        TileRegs {
            step: plan.step,
            this_thread: std::marker::PhantomData,
        }
    }

    /// The sums of weight rows `r0..r0 + 32` and panels `p0, p0 + 1` over the whole `K`, left
    /// in tiles 0–3 (`[row tile][panel]`) for [`TileRegs::store`]. `rows` and `panels` (1 or 2
    /// each) say which are wanted; a missing second one repeats the first rather than read
    /// past the operands.
    pub(super) fn unit(
        &self,
        (a, b): (&PackedA, &PackedB),
        (r0, rows): (usize, usize),
        (p0, panels): (usize, usize),
    ) {
        let k4 = a.k4;
        assert!(a.k4 == b.k4 && k4.is_multiple_of(self.step) && (1..=2).contains(&rows));
        assert!((1..=2).contains(&panels) && r0 + rows * TILE_ROWS <= a.rows);
        assert!((p0 + panels) * k4 * PANEL * 4 <= b.data.len());
        let a0 = a.quads[r0 * k4..].as_ptr();
        let a1 = a.quads[(r0 + (rows - 1) * TILE_ROWS) * k4..].as_ptr();
        let b0 = b.data[p0 * k4 * PANEL * 4..].as_ptr();
        let b1 = b.data[(p0 + panels - 1) * k4 * PANEL * 4..].as_ptr();
        self.zero_sums();
        // SAFETY: the tiles are configured for this step (`configure`). Each step reads 16
        // rows of `4·step` bytes from `a0`/`a1` (rows `4·k4` bytes apart: rows `r0..r0 + 32`
        // at most, in `a.quads`) and `step` rows of 64 bytes from `b0`/`b1` (within one
        // panel), `k4 / step` steps in all.
        unsafe {
            asm!(
                "2:",
                "tileloadd tmm4, [{a0} + {a_stride}*1]",
                "tileloadd tmm6, [{b0} + {b_stride}*1]",
                "tileloadd tmm7, [{b1} + {b_stride}*1]",
                "tdpbsud tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {a_stride}*1]",
                "tdpbsud tmm1, tmm4, tmm7",
                "tdpbsud tmm2, tmm5, tmm6",
                "tdpbsud tmm3, tmm5, tmm7",
                "add {a0}, {a_step}",
                "add {a1}, {a_step}",
                "add {b0}, {b_step}",
                "add {b1}, {b_step}",
                "dec {steps}",
                "jnz 2b",
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                steps = inout(reg) k4 / self.step => _,
                a_stride = in(reg) 4 * k4,
                b_stride = in(reg) 64usize,
                a_step = in(reg) 4 * self.step,
                b_step = in(reg) 64 * self.step,
                options(nostack, readonly),
            );
        }
    }

    /// Sets the four tiles of sums to zero.
    fn zero_sums(&self) {
        // SAFETY: the tiles are configured; registers only.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            )
        };
    }

    /// Stores the 16 × 16 sums of tile `t` (0–3, `[row tile][panel]` of the last
    /// [`TileRegs::unit`]) as 16 rows of 16 i32 at `out[at..]`, `stride` i32 apart.
    pub(super) fn store(&self, t: usize, out: &mut [i32], at: usize, stride: usize) {
        assert!(stride >= PANEL && at + (TILE_ROWS - 1) * stride + PANEL <= out.len());
        let dst = out[at..].as_mut_ptr();
        let stride = 4 * stride;
        // `tilestored` of tile register `tmm$tile`, which is part of the instruction.
        macro_rules! store {
            ($tile:literal) => {
                asm!(
                    concat!("tilestored [{} + {}*1], tmm", $tile),
                    in(reg) dst,
                    in(reg) stride,
                    options(nostack)
                )
            };
        }
        // SAFETY: the tiles are configured; the store writes 16 rows of 64 bytes, `stride`
        // bytes apart, inside `out` (asserted).
        unsafe {
            match t {
                0 => store!(0),
                1 => store!(1),
                2 => store!(2),
                _ => store!(3),
            }
        }
    }

    /// [`TileRegs::store`] of all four tiles into `sums`.
    pub(super) fn store_all(&self, sums: &mut Sums) {
        for t in 0..4 {
            self.store(t, &mut sums.0, t * TILE_ROWS * PANEL, PANEL);
        }
    }
}

impl Drop for TileRegs {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured (`configure`), so AMX is present and permitted.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// A unit's sums: four 16 × 16 tiles of i32, `[row tile][panel]`, row-major.
#[repr(C, align(64))]
pub(super) struct Sums([i32; 4 * TILE_ROWS * PANEL]);

impl Default for Sums {
    fn default() -> Self {
        Sums([0; 4 * TILE_ROWS * PANEL])
    }
}

/// The rows and panels a unit's sums cover and where they go: `out` holds the product's
/// rows from `first`, `cols` columns each.
pub(super) struct Place<'a> {
    pub out: &'a mut [i32],
    pub first: usize,
    pub cols: usize,
    pub r0: usize,
    pub rows: usize,
    pub p0: usize,
    pub panels: usize,
}

/// `f`'s finish of a unit's sums, stored at their rows and columns of `out` (a last panel's
/// columns past `cols` are not stored).
///
/// # Safety
/// The CPU has AVX-512 F and BW and what `f.finish` needs besides (the caller is compiled for
/// them, so that this body and the finish inline into it).
#[inline(always)]
pub(super) unsafe fn finish<F: Finish<__m512i>>(sums: &Sums, place: Place, f: &F) {
    let Place {
        out,
        first,
        cols,
        r0,
        rows,
        p0,
        panels,
    } = place;
    for j in 0..panels {
        let col = (p0 + j) * PANEL;
        let n = (cols - col).min(PANEL);
        let mask: __mmask16 = (1u32 << n).wrapping_sub(1) as u16;
        // SAFETY: the features are the caller's promise; `col` is a panel's first column.
        let block = unsafe { f.block(col) };
        for i in 0..rows * TILE_ROWS {
            let r = r0 + i - first;
            let tile = (i / TILE_ROWS) * 2 + j;
            let at = r * cols + col;
            let dst = &mut out[at..at + n];
            let src = &sums.0[(tile * TILE_ROWS + i % TILE_ROWS) * PANEL..][..PANEL];
            // SAFETY: `src` holds 16 i32 and `dst` `n` ≤ 16, which the mask writes alone; the
            // features and `r` (a row of the output) are the caller's promises.
            unsafe {
                let v = _mm512_loadu_si512(src.as_ptr().cast());
                let v = _mm512_add_epi32(v, _mm512_set1_epi32(f.initial(r)));
                _mm512_mask_storeu_epi32(dst.as_mut_ptr(), mask, f.finish(&block, r, v));
            }
        }
    }
}

/// The AMX int8 peak on one core, measured: `iters` rounds of four independent `tdpbsud` on
/// tiles loaded once. Returns the MACs done and a value that keeps the work alive; `None`
/// where [`usable`] is false.
pub fn peak_loop(iters: usize) -> Option<(u64, i32)> {
    if !usable() {
        return None;
    }
    let plan = Plan { step: MOST_QUADS };
    let ones = [0x0101_0101i32; TILE_ROWS * MOST_QUADS];
    let mut sums = Sums::default();
    // SAFETY: `usable` is true; no product runs on this thread meanwhile.
    let tiles = unsafe { TileRegs::configure(plan) };
    tiles.zero_sums();
    // SAFETY: the tiles are configured; the loads read 16 rows of 64 bytes of `ones` (1 KiB)
    // and the store writes the first 1 KiB of `sums`.
    unsafe {
        asm!(
            "tileloadd tmm4, [{x} + {stride}*1]",
            "tileloadd tmm5, [{x} + {stride}*1]",
            "tileloadd tmm6, [{x} + {stride}*1]",
            "tileloadd tmm7, [{x} + {stride}*1]",
            "2:",
            "tdpbsud tmm0, tmm4, tmm6",
            "tdpbsud tmm1, tmm4, tmm7",
            "tdpbsud tmm2, tmm5, tmm6",
            "tdpbsud tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            "tilestored [{out} + {stride}*1], tmm0",
            x = in(reg) ones.as_ptr(),
            out = in(reg) sums.0.as_mut_ptr(),
            stride = in(reg) 64usize,
            n = inout(reg) iters.max(1) => _,
            options(nostack),
        );
    }
    drop(tiles);
    let macs = 4 * (TILE_ROWS * PANEL * 4 * MOST_QUADS) as u64 * iters.max(1) as u64;
    Some((macs, sums.0[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::kernels::tests::random_case;
    use crate::exec::int::kernels::{Isa, gemm_rows, gemm_scalar};
    use crate::rng::Rng;

    /// Says so on stderr where the tests below cannot run the tiles.
    fn tiles_here() -> bool {
        if !usable() {
            eprintln!("note: no usable AMX on this CPU (or QVIT_ISA caps it): tiles not tested");
        }
        usable()
    }

    #[test]
    fn steps_divide_k_and_fit_a_tile_row() {
        // B1's and DeiT's K: 32, 64, 128 … 1024 channels, 9·16 (a 3×3 conv of 16), 768; 16
        // channels (4 quads) too short.
        assert_eq!(step(4), None);
        assert_eq!(step(8), Some(8));
        assert_eq!(step(36), Some(12));
        assert_eq!(step(192), Some(16));
        // K = 132 (33 quads: 11), 36 (9 quads), 20, 8 and 12 (5, 2 and 3 quads: too short),
        // 17·4 (no divisor from 8 to 16).
        assert_eq!(step(33), Some(11));
        assert_eq!(step(9), Some(9));
        assert_eq!(step(5), None);
        assert_eq!(step(2), None);
        assert_eq!(step(3), None);
        assert_eq!(step(17), None);
        for k4 in 1..2000 {
            if let Some(s) = step(k4) {
                assert!(
                    k4.is_multiple_of(s) && (8..=MOST_QUADS).contains(&s),
                    "{k4}: {s}"
                );
            }
        }
    }

    /// One unit's four tiles of sums, stored, against the definition: every shape of unit
    /// (one or two row tiles, one or two panels) and steps of 8 to 16 quads, several steps.
    #[test]
    fn a_unit_equals_the_scalar_product() {
        if !tiles_here() {
            return;
        }
        let mut rng = Rng::new(41);
        for (rows, k, cols) in [(32, 64, 32), (16, 32, 16), (32, 36, 20), (48, 132, 40)] {
            let (a, b) = random_case(&mut rng, rows, k, cols);
            let mut want = vec![0; rows * cols];
            gemm_scalar(&a, &b, &mut want);
            let plan = Plan::new(&a, rows).expect("a step and a tile of rows");
            // SAFETY: `usable` is true (the plan says so); this test's thread runs no other
            // product meanwhile.
            let tiles = unsafe { TileRegs::configure(plan) };
            for (r0, row_tiles) in [(0, 1), (0, 2), (rows - TILE_ROWS, 1)] {
                if r0 + row_tiles * TILE_ROWS > rows {
                    continue;
                }
                for (p0, panels) in [(0, 1), (0, 2), (cols.div_ceil(PANEL) - 1, 1)] {
                    if p0 + panels > cols.div_ceil(PANEL) {
                        continue;
                    }
                    let mut sums = Sums::default();
                    tiles.unit((&a, &b), (r0, row_tiles), (p0, panels));
                    tiles.store_all(&mut sums);
                    let at = |i: usize, j: usize| (0..PANEL).map(move |c| (i, j, c));
                    let every = (0..row_tiles * TILE_ROWS)
                        .flat_map(|i| (0..panels).flat_map(move |j| at(i, j)));
                    for (i, panel, lane) in every {
                        let (r, c) = (r0 + i, (p0 + panel) * PANEL + lane);
                        let tile = (i / TILE_ROWS) * 2 + panel;
                        let got = sums.0[(tile * TILE_ROWS + i % TILE_ROWS) * PANEL + lane];
                        // Columns past `cols` are the panel's zero padding.
                        let want = if c < cols { want[r * cols + c] } else { 0 };
                        assert_eq!(got, want, "row {r} column {c} of {rows}×{k}×{cols}");
                    }
                }
            }
        }
    }

    /// The products on tiles (rows in tiles of 16, the rest on VNNI) equal the scalar
    /// reference: `K` of every step length and of none (VNNI alone), rows that leave a tail,
    /// blocks of rows that start past the first, ragged last panels, and the extreme products.
    #[test]
    fn products_on_tiles_equal_the_scalar_reference() {
        if !tiles_here() {
            return;
        }
        let mut rng = Rng::new(43);
        let shapes = [
            (16, 16, 196),
            (47, 130, 40),
            (64, 768, 197),
            (33, 44, 5),
            (32, 20, 50),
            (40, 8, 30),
            (120, 192, 576),
            (96, 256, 49),
        ];
        for (rows, k, cols) in shapes {
            let (a, b) = random_case(&mut rng, rows, k, cols);
            let mut want = vec![0; rows * cols];
            gemm_scalar(&a, &b, &mut want);
            for range in [0..rows, 5..rows, 0..rows / 2 + 1] {
                let mut got = vec![i32::MIN; range.len() * cols];
                gemm_rows(Isa::Avx512Vnni, &a, range.clone(), &b, &mut got);
                let expected = &want[range.start * cols..range.end * cols];
                assert!(got == expected, "{range:?} of {rows}×{k}×{cols}");
            }
        }
        // The extreme products, 255 · (−128), over a long K: exact, never saturated.
        let (rows, k, cols) = (32, 4096, 32);
        let a = PackedA::new(&vec![-128i8; rows * k], rows, k);
        let b = PackedB::from_rows(&vec![255u8; k * cols], k, cols);
        let mut out = vec![0; rows * cols];
        gemm_rows(Isa::Avx512Vnni, &a, 0..rows, &b, &mut out);
        assert!(out.iter().all(|&v| v == -128 * 255 * 4096));
    }

    /// The peak loop counts its MACs and runs where the tiles do.
    #[test]
    fn the_peak_loop_runs_where_tiles_do() {
        match peak_loop(3) {
            Some((macs, first)) => {
                assert_eq!(macs, 3 * 4 * 16 * 16 * 64);
                // Each sum of tile 0: 3 rounds of 64 products of 1 · 1.
                assert_eq!(first, 3 * 64);
            }
            None => assert!(!usable()),
        }
    }
}
