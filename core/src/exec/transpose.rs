//! Matrix transposes of 32-bit values (f32 weights, i32 codes), 8 × 8 blocks in AVX2
//! registers where the CPU has it.
//!
//! The int executor's token-major layers compute `[out channels, tokens]` and store tokens
//! first: a transpose per layer per image, 6 % of DeiT-T's int time as a scalar tiled loop
//! (two bounds checks and a strided store per element). The AVX2 path moves 64 values with 8
//! loads, 24 shuffles and 8 stores.

/// 32-bit values that can be moved as raw bits.
pub trait Word: Copy {}
impl Word for f32 {}
impl Word for i32 {}

/// `dst[j·rows + i] = src[i·cols + j]`: the transpose of the row-major `rows × cols` matrix
/// `src`, row-major.
///
/// Panics when `src` or `dst` is shorter than `rows·cols` (a programming error).
pub fn transpose<T: Word>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    let len = rows * cols;
    let (src, dst) = (&src[..len], &mut dst[..len]);
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<T>() == 4 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was checked just above; `T` is 4 bytes (checked) of plain data
        // (`Word`), so its values can be moved as i32 bits; both slices hold `rows·cols`.
        #[allow(unsafe_code)]
        unsafe {
            blocks_avx2(src.as_ptr().cast(), rows, cols, dst.as_mut_ptr().cast())
        };
        // What the blocks leave: the columns right of them, then the rows below.
        let (whole_rows, whole_cols) = (rows / 8 * 8, cols / 8 * 8);
        tiles(src, (rows, cols), dst, 0..whole_rows, whole_cols..cols);
        tiles(src, (rows, cols), dst, whole_rows..rows, 0..cols);
        return;
    }
    tiles(src, (rows, cols), dst, 0..rows, 0..cols);
}

/// The elements of `src` in rows `rs` and columns `cs`, in square tiles so both sides stay in
/// cache.
fn tiles<T: Word>(
    src: &[T],
    (rows, cols): (usize, usize),
    dst: &mut [T],
    rs: std::ops::Range<usize>,
    cs: std::ops::Range<usize>,
) {
    const TILE: usize = 16;
    for i0 in rs.clone().step_by(TILE) {
        for j0 in cs.clone().step_by(TILE) {
            for i in i0..(i0 + TILE).min(rs.end) {
                let row = &src[i * cols..(i + 1) * cols];
                for j in j0..(j0 + TILE).min(cs.end) {
                    dst[j * rows + i] = row[j];
                }
            }
        }
    }
}

/// Every whole 8 × 8 block.
///
/// # Safety
/// AVX2; `src` and `dst` each point at `rows·cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn blocks_avx2(src: *const i32, rows: usize, cols: usize, dst: *mut i32) {
    use std::arch::x86_64::*;
    for i0 in (0..rows / 8 * 8).step_by(8) {
        for j0 in (0..cols / 8 * 8).step_by(8) {
            // SAFETY: rows i0..i0+8 and columns j0..j0+8 lie inside both matrices.
            unsafe {
                let r: [__m256i; 8] = std::array::from_fn(|k| {
                    _mm256_loadu_si256(src.add((i0 + k) * cols + j0).cast())
                });
                // Pairs of rows interleaved, then pairs of pairs: each 128-bit half holds
                // four rows' values of one column...
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
                // ...and the halves of rows 0–3 and 4–7 joined: column j0 + k.
                for k in 0..8 {
                    let (a, b) = (u[k % 4], u[4 + k % 4]);
                    let column = if k < 4 {
                        _mm256_permute2x128_si256::<0x20>(a, b)
                    } else {
                        _mm256_permute2x128_si256::<0x31>(a, b)
                    };
                    _mm256_storeu_si256(dst.add((j0 + k) * rows + i0).cast(), column);
                }
            }
        }
    }
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
        sizes.extend([(768, 197), (197, 768), (192, 50), (1000, 1)]);
        for (rows, cols) in sizes {
            let src: Vec<i32> = (0..rows * cols).map(|v| v as i32 * 7 - 3).collect();
            let mut got = vec![i32::MIN; rows * cols];
            transpose(&src, rows, cols, &mut got);
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
