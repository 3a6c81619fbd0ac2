//! f32 matrix products through the `gemm` crate's f32 kernels (`gemm-f32`), behind a safe,
//! bounds-checked interface.
//!
//! Matrices are views into slices with explicit row and column strides, so transposes and
//! sub-blocks (a head's columns of a fused qkv tensor) need no copies. Every view is checked to
//! lie inside its slice before the raw pointers are handed to `gemm`, and the borrow checker
//! guarantees the destination does not alias the operands.
//!
//! The products run single-threaded: executors parallelise over images and fixed-size blocks of
//! rows, so results never depend on the number of threads. Nor on the CPU's caches: `gemm`
//! splits long reductions into blocks sized from the L1 cache (512 terms on a 32 KiB L1,
//! 1,024 on a 48 KiB one), which changes the order of the sums, so [`matmul`] cuts them into
//! the blocks a 512-term split gives before `gemm` sees them.
//!
//! The microkernels are the widest [`float_lanes`] allows ([`kernels`]), so `QVIT_ISA=avx2`
//! runs the products as an AVX2 machine does.

mod kernels;

use crate::exec::cpu::float_lanes;
use kernels::Kernels;

/// A read-only matrix view.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A writable matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

impl<'a> MatMut<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * row_stride + (cols - 1) * col_stride < len
}

/// The longest reduction `gemm` runs in one block on every CPU (its lower bound on the block).
const DEPTH_BLOCK: usize = 512;

/// The reduction ranges of a `rows × depth × cols` product: equal blocks of at most
/// [`DEPTH_BLOCK`] where `gemm` would block it by cache size (products of more than 64 rows or
/// columns with both above 1; smaller ones and matrix-vector products sum in an order of their
/// own that does not depend on the CPU), else one range.
fn depth_blocks(rows: usize, depth: usize, cols: usize) -> impl Iterator<Item = (usize, usize)> {
    let blocked = depth > DEPTH_BLOCK && rows > 1 && cols > 1 && (rows > 64 || cols > 64);
    let step = if blocked {
        depth.div_ceil(depth.div_ceil(DEPTH_BLOCK))
    } else {
        depth.max(1)
    };
    (0..depth)
        .step_by(step)
        .map(move |start| (start, (start + step).min(depth)))
}

/// The reduction blocks each of `matmul`'s sums adds up one after the other when `gemm` runs
/// its blocked kernels: [`depth_blocks`], and within them `gemm`'s own for products of at most
/// 64 × 64 outputs, which it sums in blocks of 512 terms from the first.
pub(crate) fn summation_blocks(rows: usize, depth: usize, cols: usize) -> Vec<(usize, usize)> {
    if rows <= 64 && cols <= 64 {
        (0..depth)
            .step_by(DEPTH_BLOCK)
            .map(|start| (start, (start + DEPTH_BLOCK).min(depth)))
            .collect()
    } else {
        depth_blocks(rows, depth, cols).collect()
    }
}

/// Whether a product of `depth` terms per sum and `cols` columns sums every output over the same
/// blocks whatever its number of rows, from two up ([`summation_blocks`]): a depth of one
/// block, or more than 64 columns (then the rows never pick `gemm`'s blocks of 512). So its
/// rows may be cut into blocks of any size from two (a single row is a matrix-vector product,
/// summed in another order) and give the same bits.
pub(crate) fn rows_cut_freely(depth: usize, cols: usize) -> bool {
    depth <= DEPTH_BLOCK || cols > 64
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`).
///
/// Panics when the shapes do not chain or a view reaches outside its slice: both are
/// programming errors, never user input.
pub fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    matmul_on(kernels::for_lanes(float_lanes()), dst, lhs, rhs, accumulate)
}

/// [`matmul`] on the given microkernels.
fn matmul_on(on: Kernels, dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions differ");
    assert_eq!((dst.rows, dst.cols), (lhs.rows, rhs.cols), "output shape");
    let check = |name: &str, len: usize, rows, cols, row_stride, col_stride| {
        assert!(
            fits(len, rows, cols, row_stride, col_stride),
            "the {name} view reaches outside its slice"
        );
    };
    check(
        "lhs",
        lhs.data.len(),
        lhs.rows,
        lhs.cols,
        lhs.row_stride,
        lhs.col_stride,
    );
    check(
        "rhs",
        rhs.data.len(),
        rhs.rows,
        rhs.cols,
        rhs.row_stride,
        rhs.col_stride,
    );
    check(
        "dst",
        dst.data.len(),
        dst.rows,
        dst.cols,
        dst.row_stride,
        dst.col_stride,
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if lhs.cols == 0 {
        if !accumulate {
            for r in 0..dst.rows {
                for c in 0..dst.cols {
                    dst.data[r * dst.row_stride + c * dst.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    for (start, end) in depth_blocks(dst.rows, lhs.cols, dst.cols) {
        // Later blocks add to what the earlier ones wrote.
        let accumulate = accumulate || start > 0;
        // The microkernels write column-major tiles, so a destination stored by rows is
        // computed as its transpose, dstᵀ = rhsᵀ · lhsᵀ (the `gemm` crate's front end does the
        // same; qvit calls its f32 half directly).
        let lhs_block = Operand {
            data: lhs.data,
            offset: start * lhs.col_stride,
            row_stride: lhs.row_stride,
            col_stride: lhs.col_stride,
        };
        let rhs_block = Operand {
            data: rhs.data,
            offset: start * rhs.row_stride,
            row_stride: rhs.row_stride,
            col_stride: rhs.col_stride,
        };
        let by_rows = dst.col_stride < dst.row_stride;
        let (m, n) = if by_rows {
            (dst.cols, dst.rows)
        } else {
            (dst.rows, dst.cols)
        };
        let (dst_row_stride, dst_col_stride) = if by_rows {
            (dst.col_stride, dst.row_stride)
        } else {
            (dst.row_stride, dst.col_stride)
        };
        let (first, second) = if by_rows {
            (rhs_block.t(), lhs_block.t())
        } else {
            (lhs_block, rhs_block)
        };
        // SAFETY: every element the views address lies inside its slice (checked above), and
        // so does every block of the reduction (columns `start..end` of `lhs`, the same rows
        // of `rhs`), transposed or not; `dst` is a unique borrow, so it cannot overlap `lhs`
        // or `rhs`; gemm reads `dst` only when `accumulate` is set, and then it is
        // initialised memory.
        #[allow(unsafe_code)]
        unsafe {
            kernels::product(
                on,
                kernels::Product {
                    m,
                    n,
                    k: end - start,
                    dst: (dst.data.as_mut_ptr(), dst_col_stride, dst_row_stride),
                    accumulate,
                    lhs: (
                        first.data.as_ptr().add(first.offset),
                        first.col_stride,
                        first.row_stride,
                    ),
                    rhs: (
                        second.data.as_ptr().add(second.offset),
                        second.col_stride,
                        second.row_stride,
                    ),
                },
            );
        }
    }
}

/// One operand's reduction block as `gemm` reads it: a start in `data` and two strides.
struct Operand<'a> {
    data: &'a [f32],
    offset: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Operand<'_> {
    /// The transpose: the same elements with rows and columns swapped.
    fn t(self) -> Self {
        Operand {
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    /// Where [`rows_cut_freely`] holds, a product cut into blocks of rows of any size from two
    /// gives the bits of the product in one call (DeiT-T's and B1's layer shapes, a depth past
    /// 512, few and many columns); where it does not, the summation blocks do depend on the
    /// rows.
    #[test]
    fn rows_cut_freely_keeps_every_sum() {
        let mut rng = crate::rng::Rng::new(9);
        for (depth, cols, free) in [
            (192, 576, true),
            (768, 192, true),
            (1100, 100, true),
            (300, 24, true),
            (1100, 24, false),
        ] {
            assert_eq!(rows_cut_freely(depth, cols), free, "{depth} × {cols}");
            let blocks = |rows| summation_blocks(rows, depth, cols);
            if !free {
                assert_ne!(blocks(32), blocks(100), "{depth} × {cols}");
                continue;
            }
            assert!((2..=200).all(|rows| blocks(rows) == blocks(2)));
            let rows = 97;
            let a: Vec<f32> = (0..rows * depth).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..depth * cols).map(|_| rng.normal()).collect();
            let rhs = MatRef::row_major(&b, depth, cols);
            let mut whole = vec![0.0; rows * cols];
            matmul(
                MatMut::row_major(&mut whole, rows, cols),
                MatRef::row_major(&a, rows, depth),
                rhs,
                false,
            );
            for block in [2, 3, 16, 33, 49, 65] {
                let mut cut = vec![f32::NAN; rows * cols];
                for (o, x) in cut.chunks_mut(block * cols).zip(a.chunks(block * depth)) {
                    let n = x.len() / depth;
                    if n == 1 {
                        // A last block of one row: the matrix-vector product, not checked.
                        o.copy_from_slice(&whole[(rows - 1) * cols..]);
                        continue;
                    }
                    matmul(
                        MatMut::row_major(o, n, cols),
                        MatRef::row_major(x, n, depth),
                        rhs,
                        false,
                    );
                }
                let same = whole
                    .iter()
                    .zip(&cut)
                    .all(|(w, c)| w.to_bits() == c.to_bits());
                assert!(same, "{depth} × {cols} in blocks of {block} rows");
            }
        }
    }

    #[test]
    fn small_product_by_hand() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2×3
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]; // 3×2
        let mut c = [0.0; 4];
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            false,
        );
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            true,
        );
        assert_eq!(c, [116.0, 128.0, 278.0, 308.0]);
    }

    #[test]
    fn transposed_and_odd_shapes_match_the_naive_product() {
        let mut rng = crate::rng::Rng::new(5);
        for (m, k, n) in [(1, 1, 1), (3, 17, 5), (33, 7, 65), (16, 64, 49)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let mut c = vec![0.0; m * n];
            matmul(
                MatMut::row_major(&mut c, m, n),
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&bt, n, k).t(),
                false,
            );
            for (x, y) in c.iter().zip(naive(&a, &b, m, k, n)) {
                assert!((x - y).abs() < 1e-4, "{m}×{k}×{n}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn reductions_are_blocked_by_rule_not_by_cache() {
        let blocks = |r, d, c| depth_blocks(r, d, c).collect::<Vec<_>>();
        assert_eq!(blocks(100, 512, 100), [(0, 512)]);
        assert_eq!(blocks(100, 768, 197), [(0, 384), (384, 768)]);
        assert_eq!(blocks(65, 1025, 2), [(0, 342), (342, 684), (684, 1025)]);
        // gemm's own orders: small products and matrix-vector products stay whole.
        assert_eq!(blocks(64, 2048, 64), [(0, 2048)]);
        assert_eq!(blocks(1, 2048, 1000), [(0, 2048)]);
        assert_eq!(blocks(3, 0, 3), []);
        // A 768-deep product is exactly its two 384-deep halves summed, whatever the L1 cache
        // (a 48 KiB one would make gemm run it as one block).
        let (m, k, n) = (100, 768, 70);
        let mut rng = crate::rng::Rng::new(8);
        let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut whole = vec![0.0; m * n];
        matmul(
            MatMut::row_major(&mut whole, m, n),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            false,
        );
        let mut halves = vec![0.0; m * n];
        for (i, (start, end)) in [(0, 384), (384, 768)].into_iter().enumerate() {
            let lhs = MatRef {
                data: &a[start..],
                rows: m,
                cols: end - start,
                row_stride: k,
                col_stride: 1,
            };
            let rhs = MatRef::row_major(&b[start * n..end * n], end - start, n);
            matmul(MatMut::row_major(&mut halves, m, n), lhs, rhs, i > 0);
        }
        assert_eq!(whole, halves);
    }

    /// The microkernel sets this CPU runs: the crate's widest and, on x86-64, the AVX2 + FMA
    /// set where the CPU has it and the portable one.
    fn kernel_sets() -> Vec<Kernels> {
        let mut sets = vec![Kernels::Widest];
        #[cfg(target_arch = "x86_64")]
        {
            if float_lanes() >= crate::exec::cpu::FloatLanes::Avx2Fma {
                sets.push(Kernels::Fma);
            }
            sets.push(Kernels::Portable);
        }
        sets
    }

    type Shape = (usize, usize, usize);

    /// `lhs · rhs` on `on`, `rhs` given by rows or, when `transposed`, as the transpose of
    /// its `n × k` rows (attention's Q·Kᵀ).
    fn product_on(
        on: Kernels,
        a: &[f32],
        b: &[f32],
        (m, k, n): Shape,
        transposed: bool,
    ) -> Vec<f32> {
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let rhs = match transposed {
            true => MatRef::row_major(&bt, n, k).t(),
            false => MatRef::row_major(b, k, n),
        };
        let mut c = vec![f32::NAN; m * n];
        matmul_on(
            on,
            MatMut::row_major(&mut c, m, n),
            MatRef::row_major(a, m, k),
            rhs,
            false,
        );
        c
    }

    /// Odd shapes and DeiT-T's and B1's (qkv, fc2, scores, a 1×1 conv on a 28² map), by rows
    /// and with a transposed right side: every microkernel set gives the product. The portable
    /// set gives it bit for bit as `naive` sums it, a rounded multiply then an add per term in
    /// order (reductions within one block); the FMA set gives the widest set's bits wherever
    /// the tiles run, since each sum is then one chain of fused multiply-adds in order in both
    /// (the crate's horizontal kernels, for products of at most 16 × 16 whose operands are both
    /// contiguous along the reduction, sum lanes of their own width, so `QVIT_ISA=avx2` may
    /// move those in the last bits, as an AVX2 machine does).
    #[test]
    fn every_kernel_set_gives_the_product() {
        let mut rng = crate::rng::Rng::new(6);
        let shapes: [Shape; 9] = [
            (1, 1, 1),
            (3, 17, 5),
            (16, 16, 16),
            (33, 7, 65),
            (16, 64, 49),
            (197, 192, 576),
            (197, 768, 192),
            (197, 64, 197),
            (64, 256, 784),
        ];
        for (m, k, n) in shapes {
            let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let want = naive(&a, &b, m, k, n);
            for transposed in [false, true] {
                for on in kernel_sets() {
                    let got = product_on(on, &a, &b, (m, k, n), transposed);
                    let at = format!("{on:?} {m}×{k}×{n}, transposed {transposed}");
                    for (x, y) in got.iter().zip(&want) {
                        assert!((x - y).abs() <= 1e-5 * k as f32, "{at}: {x} vs {y}");
                    }
                    #[cfg(target_arch = "x86_64")]
                    match on {
                        Kernels::Portable if (3..=DEPTH_BLOCK).contains(&k) && m > 1 && n > 1 => {
                            assert!(bits(&got) == bits(&want), "{at}: not naive's bits")
                        }
                        Kernels::Fma if !(transposed && m * n <= 256) => {
                            let widest = product_on(Kernels::Widest, &a, &b, (m, k, n), transposed);
                            assert!(bits(&got) == bits(&widest), "{at}: not the widest's bits")
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    #[should_panic(expected = "the lhs view reaches outside its slice")]
    fn a_view_outside_its_slice_is_refused() {
        let a = [0.0; 5];
        let mut c = [0.0; 4];
        matmul(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&a, 3, 2),
            false,
        );
    }
}
