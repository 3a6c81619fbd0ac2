//! The f64 sums of eight rows side by side, each row's terms added in its own order, as
//! LayerNorm's mean and variance and Softmax's normalisation define them.
//!
//! A row's additions each wait on the one before, so the eight rows run side by side, lane `r`
//! summing row `r`. Compiled by itself, that loop read each value with a scalar load and
//! converted and added it in `xmm` registers, eight of each per column (`perf annotate` of
//! DeiT-T's fp32 executor). Here eight columns of the eight rows are loaded as eight vectors
//! and transposed ([`block8`](crate::exec::transpose::block8), 24 shuffles), so each column is
//! one vector of its rows' values: one conversion to f64 and one addition per column
//! (LayerNorm's variance: a subtraction and a product besides). Each lane adds the same terms
//! in the same order with the same roundings as the scalar fold, so the sums are the same bits.

/// Rows per group: enough for a step that runs one sum per row in order to run the rows' sums
/// side by side, and a vector of f64 with AVX-512.
pub(super) const ROW_GROUP: usize = 8;

/// What a row's sum adds for each of its values `v`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Term {
    /// `v` itself.
    Value,
    /// `(v − centre[r])²` for row `r`.
    SquareFrom([f64; ROW_GROUP]),
}

impl Term {
    #[inline(always)]
    fn of(self, r: usize, v: f32) -> f64 {
        match self {
            Term::Value => v as f64,
            // `powi(2)` is the product `d·d`, rounded once.
            Term::SquareFrom(centre) => (v as f64 - centre[r]).powi(2),
        }
    }
}

/// For each row `r` of `x` (rows of `n` values, at most [`ROW_GROUP`] of them),
/// `fold(init, |sum, v| sum + term(r, v))` over the row in order, in f64.
pub(super) fn row_sums(x: &[f32], n: usize, init: f64, term: Term) -> [f64; ROW_GROUP] {
    let mut sums = [init; ROW_GROUP];
    if n == 0 {
        return sums;
    }
    if x.len() != ROW_GROUP * n {
        // A last group of fewer rows: each row alone.
        for (r, (row, sum)) in x.chunks(n).zip(&mut sums).enumerate() {
            *sum = row.iter().fold(init, |sum, &v| sum + term.of(r, v));
        }
        return sums;
    }
    let done = in_lanes(x, n, term, &mut sums);
    add_columns(x, n, done, term, &mut sums);
    sums
}

/// Adds the whole blocks of eight columns in the widest lanes the CPU has; returns how many
/// columns that was (none without lanes).
fn in_lanes(x: &[f32], n: usize, term: Term, sums: &mut [f64; ROW_GROUP]) -> usize {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    {
        use crate::exec::cpu::{FloatLanes, float_lanes};
        match float_lanes() {
            // SAFETY: `float_lanes` reports only features the CPU has.
            FloatLanes::Avx512 => unsafe { lanes::avx512(x, n, term, sums) },
            // SAFETY: as above.
            FloatLanes::Avx2Fma => unsafe { lanes::avx2(x, n, term, sums) },
            FloatLanes::Baseline => 0,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, n, term, sums);
        0
    }
}

/// Adds columns `from..n` of the eight rows to their sums, column by column.
#[inline(always)]
fn add_columns(x: &[f32], n: usize, from: usize, term: Term, sums: &mut [f64; ROW_GROUP]) {
    for i in from..n {
        for (r, sum) in sums.iter_mut().enumerate() {
            *sum += term.of(r, x[r * n + i]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod lanes {
    use std::arch::x86_64::*;

    use super::{ROW_GROUP, Term};
    use crate::exec::transpose::block8;

    // A group's rows are one vector's f64 lanes with AVX-512, two with AVX2, and eight columns
    // of them one 8 × 8 transpose.
    const _: () = assert!(ROW_GROUP == 8);

    /// Columns `i..i + 8` of the eight rows of `n` values at `x`, one vector per column (lane
    /// `r` row `r`): each row's eight values loaded, then transposed as 32-bit words.
    ///
    /// # Safety
    /// `x` holds eight rows of `n` values and `i + 8 ≤ n`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn columns(x: &[f32], n: usize, i: usize) -> [__m256; 8] {
        debug_assert!(x.len() == ROW_GROUP * n && i + 8 <= n);
        // SAFETY: row `r`'s values `i..i + 8` lie inside `x` (the caller's promise).
        let rows: [__m256i; 8] = std::array::from_fn(|r| unsafe {
            _mm256_loadu_si256(x.as_ptr().add(r * n + i).cast())
        });
        block8(rows).map(|column| _mm256_castsi256_ps(column))
    }

    /// Adds every whole block of eight columns to `sums`, in order; returns the columns done.
    #[target_feature(enable = "avx512f")]
    pub(super) fn avx512(x: &[f32], n: usize, term: Term, sums: &mut [f64; ROW_GROUP]) -> usize {
        let whole = n / 8 * 8;
        // SAFETY (every intrinsic): AVX-512 F, which implies AVX, as this function is compiled
        // for; `columns` reads inside `x` as `i + 8 ≤ whole ≤ n`.
        unsafe {
            let mut acc = _mm512_loadu_pd(sums.as_ptr());
            let centre = match term {
                Term::SquareFrom(c) => _mm512_loadu_pd(c.as_ptr()),
                Term::Value => _mm512_setzero_pd(),
            };
            for i in (0..whole).step_by(8) {
                for column in columns(x, n, i) {
                    let v = _mm512_cvtps_pd(column);
                    let v = match term {
                        Term::Value => v,
                        Term::SquareFrom(_) => {
                            let d = _mm512_sub_pd(v, centre);
                            _mm512_mul_pd(d, d)
                        }
                    };
                    acc = _mm512_add_pd(acc, v);
                }
            }
            _mm512_storeu_pd(sums.as_mut_ptr(), acc);
        }
        whole
    }

    /// [`avx512`] with each column's f64 in two halves of four rows.
    #[target_feature(enable = "avx2")]
    pub(super) fn avx2(x: &[f32], n: usize, term: Term, sums: &mut [f64; ROW_GROUP]) -> usize {
        let whole = n / 8 * 8;
        // SAFETY (every intrinsic): AVX2, which implies AVX, as this function is compiled
        // for; `columns` reads inside `x` as `i + 8 ≤ whole ≤ n`.
        unsafe {
            let mut acc = [
                _mm256_loadu_pd(sums.as_ptr()),
                _mm256_loadu_pd(sums.as_ptr().add(4)),
            ];
            let centre = match term {
                Term::SquareFrom(c) => [
                    _mm256_loadu_pd(c.as_ptr()),
                    _mm256_loadu_pd(c.as_ptr().add(4)),
                ],
                Term::Value => [_mm256_setzero_pd(); 2],
            };
            for i in (0..whole).step_by(8) {
                for column in columns(x, n, i) {
                    let halves = [
                        _mm256_castps256_ps128(column),
                        _mm256_extractf128_ps::<1>(column),
                    ];
                    for (h, half) in halves.into_iter().enumerate() {
                        let v = _mm256_cvtps_pd(half);
                        let v = match term {
                            Term::Value => v,
                            Term::SquareFrom(_) => {
                                let d = _mm256_sub_pd(v, centre[h]);
                                _mm256_mul_pd(d, d)
                            }
                        };
                        acc[h] = _mm256_add_pd(acc[h], v);
                    }
                }
            }
            _mm256_storeu_pd(sums.as_mut_ptr(), acc[0]);
            _mm256_storeu_pd(sums.as_mut_ptr().add(4), acc[1]);
        }
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition: each row's fold in order.
    fn folded(x: &[f32], n: usize, init: f64, term: Term) -> Vec<f64> {
        x.chunks(n)
            .enumerate()
            .map(|(r, row)| row.iter().fold(init, |sum, &v| sum + term.of(r, v)))
            .collect()
    }

    /// Eight rows and fewer, row lengths below a block, whole blocks and blocks with a tail
    /// (DeiT-T's 192 and 197 among them), both terms, a NaN and infinities: the same bits as
    /// the definition, whatever the CPU's lanes.
    #[test]
    fn sums_equal_the_rows_folds_bit_for_bit() {
        let mut rng = Rng::new(12);
        for n in [1, 5, 8, 9, 16, 61, 192, 197, 768] {
            for rows in [ROW_GROUP, 3] {
                let mut x: Vec<f32> = (0..rows * n).map(|_| 3.0 * rng.normal() + 1.0).collect();
                if n == 61 {
                    x[2 * n + 17] = f32::NAN;
                    x[5 % rows * n + 3] = f32::INFINITY;
                }
                let centre: [f64; ROW_GROUP] = std::array::from_fn(|_| rng.normal() as f64);
                for (init, term) in [
                    (-0.0, Term::Value),
                    (0.0, Term::Value),
                    (-0.0, Term::SquareFrom(centre)),
                ] {
                    let got = row_sums(&x, n, init, term);
                    let want = folded(&x, n, init, term);
                    for (r, w) in want.iter().enumerate() {
                        assert_eq!(
                            got[r].to_bits(),
                            w.to_bits(),
                            "row {r} of {rows} × {n}, {term:?}: {} against {w}",
                            got[r]
                        );
                    }
                }
            }
        }
    }
}
