//! f32 matrix products through the `gemm` crate, behind a safe, bounds-checked interface.
//!
//! Matrices are views into slices with explicit row and column strides, so transposes and
//! sub-blocks (a head's columns of a fused qkv tensor) need no copies. Every view is checked to
//! lie inside its slice before the raw pointers are handed to `gemm`, and the borrow checker
//! guarantees the destination does not alias the operands.
//!
//! The products run single-threaded: executors parallelise over images and fixed-size blocks of
//! rows, so results never depend on the number of threads.

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

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`).
///
/// Panics when the shapes do not chain or a view reaches outside its slice: both are
/// programming errors, never user input.
pub fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool) {
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
    // SAFETY: every element the views address lies inside its slice (checked above); `dst` is a
    // unique borrow, so it cannot overlap `lhs` or `rhs`; gemm reads `dst` only when
    // `accumulate` is set, and then it is initialised memory.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr(),
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
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
