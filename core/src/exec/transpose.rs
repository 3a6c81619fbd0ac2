//! Matrix transposes of 32-bit values (f32 weights, i32 codes), 8 × 8 blocks in AVX2
//! registers where the CPU has it.
//!
//! The int executor's token-major layers compute `[out channels, tokens]` and store tokens
//! first: a transpose per layer per image, 6 % of DeiT-T's int time as a scalar tiled loop
//! (two bounds checks and a strided store per element). The AVX2 path moves 64 values with 8
//! loads, 24 shuffles and 8 stores.

use std::ops::Range;

use rayon::prelude::*;

/// 32-bit values that can be moved as raw bits.
pub trait Word: Copy + Send + Sync {}
impl Word for f32 {}
impl Word for i32 {}

/// From this many values a [`transpose_parallel`] splits its work (DeiT-T's narrowest
/// token-major layers: 192 channels × 197 tokens, 37,824 values).
const PARALLEL_VALUES: usize = 1 << 15;

/// `dst[j·rows + i] = src[i·cols + j]`: the transpose of the row-major `rows × cols` matrix
/// `src`, row-major.
///
/// Panics when `src` or `dst` is shorter than `rows·cols` (a programming error).
pub fn transpose<T: Word>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    let len = rows * cols;
    transpose_columns(&src[..len], (rows, cols), 0..cols, &mut dst[..len]);
}

/// [`transpose`] on the pool's threads when the matrix is large: bands of `dst` rows (of
/// `src` columns), each written by one task. An image alone (batch 1) would otherwise
/// transpose a token-major layer's output on one core while the other waits.
pub fn transpose_parallel<T: Word>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    let len = rows * cols;
    if len < PARALLEL_VALUES {
        return transpose(src, rows, cols, dst);
    }
    // Columns per band: whole 8 × 8 blocks, about 16 bands.
    let band = cols.div_ceil(16).next_multiple_of(8);
    let src = &src[..len];
    dst[..len]
        .par_chunks_mut(band * rows)
        .enumerate()
        .for_each(|(b, d)| {
            let cs = b * band..(b * band + band).min(cols);
            transpose_columns(src, (rows, cols), cs, d)
        });
}

/// Columns `cs` of `src` as the rows of `dst`: `dst[(j − cs.start)·rows + i] = src[i·cols + j]`.
fn transpose_columns<T: Word>(
    src: &[T],
    (rows, cols): (usize, usize),
    cs: Range<usize>,
    dst: &mut [T],
) {
    assert!(src.len() == rows * cols && cs.end <= cols && dst.len() == cs.len() * rows);
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<T>() == 4 && std::arch::is_x86_feature_detected!("avx2") {
        let whole_cols = cs.start..cs.start + cs.len() / 8 * 8;
        // SAFETY: AVX2 was checked just above; `T` is 4 bytes (checked) of plain data
        // (`Word`), so its values can be moved as i32 bits; `src` holds `rows·cols` values,
        // `whole_cols` lies inside `cs` and `dst` holds `cs.len()·rows` (asserted).
        #[allow(unsafe_code)]
        unsafe {
            blocks_avx2(
                src.as_ptr().cast(),
                (rows, cols),
                whole_cols.clone(),
                cs.start,
                dst.as_mut_ptr().cast(),
            )
        };
        // What the blocks leave: the columns right of them, then the rows below.
        let whole_rows = rows / 8 * 8;
        tiles(
            src,
            (rows, cols),
            dst,
            (0..whole_rows, whole_cols.end..cs.end),
            cs.start,
        );
        tiles(
            src,
            (rows, cols),
            dst,
            (whole_rows..rows, cs.clone()),
            cs.start,
        );
        return;
    }
    let first = cs.start;
    tiles(src, (rows, cols), dst, (0..rows, cs), first);
}

/// The elements of `src` in rows `rs` and columns `cs` into `dst`'s rows from column `first`,
/// in square tiles so both sides stay in cache.
fn tiles<T: Word>(
    src: &[T],
    (rows, cols): (usize, usize),
    dst: &mut [T],
    (rs, cs): (Range<usize>, Range<usize>),
    first: usize,
) {
    const TILE: usize = 16;
    for i0 in rs.clone().step_by(TILE) {
        for j0 in cs.clone().step_by(TILE) {
            for i in i0..(i0 + TILE).min(rs.end) {
                let row = &src[i * cols..(i + 1) * cols];
                for j in j0..(j0 + TILE).min(cs.end) {
                    dst[(j - first) * rows + i] = row[j];
                }
            }
        }
    }
}

/// Every whole 8 × 8 block of the columns `cs` (a whole number of blocks), into `dst`'s rows
/// from column `first`.
///
/// # Safety
/// AVX2; `src` points at `rows·cols` values, `cs` lies inside `first..first + n` with `dst`
/// pointing at `n·rows` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn blocks_avx2(
    src: *const i32,
    (rows, cols): (usize, usize),
    cs: Range<usize>,
    first: usize,
    dst: *mut i32,
) {
    use std::arch::x86_64::*;
    for i0 in (0..rows / 8 * 8).step_by(8) {
        for j0 in cs.clone().step_by(8) {
            // SAFETY: rows i0..i0+8 and columns j0..j0+8 lie inside both matrices.
            unsafe {
                let r: [__m256i; 8] = std::array::from_fn(|k| {
                    _mm256_loadu_si256(src.add((i0 + k) * cols + j0).cast())
                });
                for (k, column) in block8(r).into_iter().enumerate() {
                    _mm256_storeu_si256(dst.add((j0 - first + k) * rows + i0).cast(), column);
                }
            }
        }
    }
}

/// The 8 × 8 transpose of 32-bit values in AVX2 registers: element `k` of result `j` is element
/// `j` of `r[k]` (row `k`'s value in column `j`), by 24 shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn block8(r: [std::arch::x86_64::__m256i; 8]) -> [std::arch::x86_64::__m256i; 8] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved, then pairs of pairs: each 128-bit half holds four rows'
    // values of one column...
    let t: [__m256i; 8] = std::array::from_fn(|k| {
        let (a, b) = (r[k / 2 * 2], r[k / 2 * 2 + 1]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    let u: [__m256i; 8] = std::array::from_fn(|k| {
        let base = k / 4 * 4;
        let (a, b) = (t[base + (k % 4) / 2], t[base + (k % 4) / 2 + 2]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    // ...and the halves of rows 0–3 and 4–7 joined: column k.
    std::array::from_fn(|k| {
        let (a, b) = (u[k % 4], u[4 + k % 4]);
        if k < 4 {
            _mm256_permute2x128_si256::<0x20>(a, b)
        } else {
            _mm256_permute2x128_si256::<0x31>(a, b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        let mut t = [0; 6];
        transpose(&[1, 2, 3, 4, 5, 6], 2, 3, &mut t);
        assert_eq!(t, [1, 4, 2, 5, 3, 6]);
    }

    /// Every size up to 25 × 25 (whole blocks, partial ones, none) and DeiT-T's, in i32 and
    /// f32, against the definition.
    #[test]
    fn equals_the_definition() {
        let mut sizes: Vec<(usize, usize)> = (0..=25)
            .flat_map(|r| (0..=25).map(move |c| (r, c)))
            .collect();
        // Past `PARALLEL_VALUES`: bands of whole blocks, a last partial band, one band.
        sizes.extend([
            (768, 197),
            (197, 768),
            (192, 197),
            (192, 50),
            (1000, 1),
            (3, 30000),
        ]);
        for (rows, cols) in sizes {
            let src: Vec<i32> = (0..rows * cols).map(|v| v as i32 * 7 - 3).collect();
            let mut got = vec![i32::MIN; rows * cols];
            transpose(&src, rows, cols, &mut got);
            let mut got_par = vec![i32::MIN; rows * cols];
            transpose_parallel(&src, rows, cols, &mut got_par);
            assert_eq!(got_par, got, "{rows}×{cols} in bands");
            let floats: Vec<f32> = src.iter().map(|&v| v as f32 + 0.5).collect();
            let mut got_f = vec![f32::NAN; rows * cols];
            transpose(&floats, rows, cols, &mut got_f);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(got[j * rows + i], src[i * cols + j], "{rows}×{cols}");
                    assert_eq!(got_f[j * rows + i], floats[i * cols + j], "{rows}×{cols}");
                }
            }
        }
    }
}
