//! A linear layer on one token per image (a classifier's): every output the dot product of its
//! weight row with the token, for all the images of a pass in one sweep over the weight.
//!
//! EfficientViT-B1's head streams 16 MB of weights per image through two such layers. Through
//! `gemm`'s matrix-vector path that took 0.99 ms of a 9.3 ms image (`qvit bench --steps`,
//! 1.9× ONNX Runtime's time), and a batch read the weights once per image. Here blocks of
//! [`ROWS`] weight rows are read as parallel streams and, while they are in L1, dotted with
//! every image's token.
//!
//! **The order of the sums**, the same for every image, batch, block and thread count, and on
//! every CPU: lane `j` of sixteen adds `w[k]·x[k]` for `k ≡ j (mod 16)` in increasing `k`, each
//! by one fused multiply-add from +0; the lanes are then added in halves (`j + 8`, `j + 4`,
//! `j + 2`, `j + 1`); the bias is added last. The tests' `reference` writes that order down one
//! output at a time, and hold the lanes to it bit for bit.

use rayon::prelude::*;

use crate::exec::cpu::{FloatLanes, float_lanes};

/// Values per lane group: a 512-bit vector of f32.
const LANES: usize = 16;
/// Weight rows dotted side by side: four streams the prefetchers follow, four independent
/// chains of multiply-adds.
const ROWS: usize = 4;
/// Outputs per parallel block: 64 rows of B1's 1,536 inputs are 384 KiB, and B1's two layers
/// give 25 and 16 blocks, enough for two to four threads to share evenly.
const BLOCK: usize = 64;
/// Below this many multiply-accumulates the layer runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 18;

/// `out[i, o] = Σ_k weight[o, k]·x[i, k] + bias[o]` for each image `i` (`x` row-major
/// `images × in_features`, `weight` row-major `out_features × in_features`, `out` row-major
/// `images × out_features`), in the order the module describes.
///
/// Panics when the slices' sizes do not chain (programming errors: the graph checks shapes).
pub fn linear(
    x: &[f32],
    in_features: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(in_features > 0, "a linear layer has inputs");
    let out_features = weight.len() / in_features;
    let images = x.len() / in_features;
    assert_eq!(
        weight.len(),
        out_features * in_features,
        "whole weight rows"
    );
    assert_eq!(x.len(), images * in_features, "whole tokens");
    assert_eq!(out.len(), images * out_features, "one output row per token");
    if let Some(b) = bias {
        assert_eq!(b.len(), out_features, "one bias per output");
    }
    // Blocks of outputs for all images, `[output][image]`, then laid out `[image][output]`.
    let mut by_output = vec![0.0; out_features * images];
    let block = |(index, o): (usize, &mut [f32])| {
        let first = index * BLOCK;
        let rows = o.len() / images.max(1);
        let w = &weight[first * in_features..(first + rows) * in_features];
        dot_block(w, in_features, x, o);
    };
    let chunk = (BLOCK * images).max(1);
    if images * out_features * in_features >= PARALLEL_MACS {
        by_output.par_chunks_mut(chunk).enumerate().for_each(block);
    } else {
        by_output.chunks_mut(chunk).enumerate().for_each(block);
    }
    for (i, row) in out.chunks_exact_mut(out_features.max(1)).enumerate() {
        for (o, v) in row.iter_mut().enumerate() {
            let sum = by_output[o * images + i];
            *v = bias.map_or(sum, |b| sum + b[o]);
        }
    }
}

/// The sums of a block of weight rows `w` with every token of `x`, `out[row · images + i]`.
fn dot_block(w: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
    let images = x.len() / k;
    let mut rows = w.chunks_exact(ROWS * k);
    let mut outs = out.chunks_exact_mut(ROWS * images);
    for (w, o) in (&mut rows).zip(&mut outs) {
        let w: [&[f32]; ROWS] = std::array::from_fn(|r| &w[r * k..(r + 1) * k]);
        for (i, x) in x.chunks_exact(k).enumerate() {
            for (r, sum) in dots(w, x).into_iter().enumerate() {
                o[r * images + i] = sum;
            }
        }
    }
    for (w, o) in rows
        .remainder()
        .chunks_exact(k)
        .zip(outs.into_remainder().chunks_exact_mut(images))
    {
        for (o, x) in o.iter_mut().zip(x.chunks_exact(k)) {
            let [sum] = dots([w], x);
            *o = sum;
        }
    }
}

/// `R` dot products with one token, in sixteen lanes each.
fn dots<const R: usize>(w: [&[f32]; R], x: &[f32]) -> [f32; R] {
    let whole = x.len() / LANES * LANES;
    let mut lanes = whole_lanes(float_lanes(), w.map(|w| &w[..whole]), &x[..whole]);
    for (lanes, w) in lanes.iter_mut().zip(w) {
        for (j, (w, x)) in w[whole..].iter().zip(&x[whole..]).enumerate() {
            lanes[j] = w.mul_add(*x, lanes[j]);
        }
    }
    lanes.map(halves)
}

/// The lanes' sums over whole groups of sixteen values (`x.len()` a multiple of [`LANES`]), in
/// vectors of `on` where the CPU has them (the compiler keeps `mul_add` on arrays in scalar
/// registers), else in the scalar lanes, which give the same bits.
fn whole_lanes<const R: usize>(on: FloatLanes, w: [&[f32]; R], x: &[f32]) -> [[f32; LANES]; R] {
    assert!(x.len().is_multiple_of(LANES) && w.iter().all(|w| w.len() == x.len()));
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    match on {
        // SAFETY: AVX-512 F is checked in the guard; the slices' lengths are checked above
        // and the loads stay inside them.
        FloatLanes::Avx512 if is_x86_feature_detected!("avx512f") => {
            return unsafe { vectors::avx512(w, x) };
        }
        // SAFETY: as above (AVX2 and FMA).
        FloatLanes::Avx2Fma
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") =>
        {
            return unsafe { vectors::avx2(w, x) };
        }
        _ => {}
    }
    let mut lanes = [[0.0f32; LANES]; R];
    for (start, x) in x
        .chunks_exact(LANES)
        .enumerate()
        .map(|(c, x)| (c * LANES, x))
    {
        for (lanes, w) in lanes.iter_mut().zip(w) {
            for (j, (w, x)) in w[start..start + LANES].iter().zip(x).enumerate() {
                lanes[j] = w.mul_add(*x, lanes[j]);
            }
        }
    }
    lanes
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vectors {
    use std::arch::x86_64::*;

    use super::LANES;

    /// Sixteen lanes as one 512-bit vector.
    #[target_feature(enable = "avx512f")]
    pub(super) fn avx512<const R: usize>(w: [&[f32]; R], x: &[f32]) -> [[f32; LANES]; R] {
        let mut sums = [_mm512_setzero_ps(); R];
        for start in (0..x.len()).step_by(LANES) {
            // SAFETY: `start + 16 ≤ x.len()`, which every row of `w` has.
            let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(start)) };
            for (sum, w) in sums.iter_mut().zip(w) {
                // SAFETY: as above.
                let w = unsafe { _mm512_loadu_ps(w.as_ptr().add(start)) };
                *sum = _mm512_fmadd_ps(w, v, *sum);
            }
        }
        sums.map(|sum| {
            let mut lanes = [0.0; LANES];
            // SAFETY: `lanes` holds sixteen values.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
            lanes
        })
    }

    /// Sixteen lanes as two 256-bit vectors, `j < 8` and `j ≥ 8`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2<const R: usize>(w: [&[f32]; R], x: &[f32]) -> [[f32; LANES]; R] {
        let mut sums = [[_mm256_setzero_ps(); 2]; R];
        for start in (0..x.len()).step_by(LANES) {
            // SAFETY: `start + 16 ≤ x.len()`, which every row of `w` has.
            let v = unsafe {
                [
                    _mm256_loadu_ps(x.as_ptr().add(start)),
                    _mm256_loadu_ps(x.as_ptr().add(start + 8)),
                ]
            };
            for (sum, w) in sums.iter_mut().zip(w) {
                for (h, (sum, v)) in sum.iter_mut().zip(v).enumerate() {
                    // SAFETY: as above.
                    let w = unsafe { _mm256_loadu_ps(w.as_ptr().add(start + 8 * h)) };
                    *sum = _mm256_fmadd_ps(w, v, *sum);
                }
            }
        }
        sums.map(|halves| {
            let mut lanes = [0.0; LANES];
            // SAFETY: `lanes` holds two vectors of eight.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), halves[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), halves[1]);
            }
            lanes
        })
    }
}

/// The sixteen lanes added in halves: `j + 8`, then `j + 4`, `j + 2`, `j + 1`.
#[inline(always)]
fn halves(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            lanes[j] += lanes[j + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// One output in the module's order, term by term: what the lanes must equal.
#[cfg(test)]
fn reference(w: &[f32], x: &[f32], bias: Option<f32>) -> f32 {
    let mut lanes = [0.0f32; LANES];
    for (k, (w, x)) in w.iter().zip(x).enumerate() {
        lanes[k % LANES] = w.mul_add(*x, lanes[k % LANES]);
    }
    let mut level = lanes.to_vec();
    while level.len() > 1 {
        let half = level.len() / 2;
        level = (0..half).map(|j| level[j] + level[j + half]).collect();
    }
    bias.map_or(level[0], |b| level[0] + b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    fn by_reference(x: &[f32], k: usize, w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let m = w.len() / k;
        x.chunks(k)
            .flat_map(|x| {
                (0..m).map(move |o| reference(&w[o * k..(o + 1) * k], x, bias.map(|b| b[o])))
            })
            .collect()
    }

    /// Each output, bit for bit, the reference's order, on sizes around the lanes and the
    /// blocks (a tail of inputs, a last block of rows short of [`ROWS`]) up to B1's head, for
    /// one to five images and one to three threads.
    #[test]
    fn outputs_equal_the_reference_order_bit_for_bit() {
        let mut rng = Rng::new(11);
        let sizes = [
            (1, 1),
            (3, 2),
            (15, 5),
            (16, 4),
            (17, 7),
            (33, 65),
            (192, 1000),
            (1536, 1600),
            (1600, 1000),
        ];
        for (k, m) in sizes {
            let w: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let bias: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
            for images in [1, 2, 5] {
                let x: Vec<f32> = (0..images * k).map(|_| rng.normal()).collect();
                for b in [None, Some(&bias[..])] {
                    let want = by_reference(&x, k, &w, b);
                    for threads in 1..=3 {
                        let pool = crate::exec::test_pool(threads);
                        let mut got = vec![f32::NAN; images * m];
                        pool.install(|| linear(&x, k, &w, b, &mut got));
                        assert_eq!(bits(&got), bits(&want), "{k} → {m}, {images} images");
                    }
                }
            }
        }
    }

    /// The reference's order by hand: 18 terms in sixteen lanes, lanes 0 and 1 holding two.
    #[test]
    fn the_order_by_hand() {
        let w: Vec<f32> = (1..=18).map(|v| v as f32).collect();
        let x = vec![1.0; 18];
        // Lanes: 1 + 17, 2 + 18, 3, …, 16: the sum of 1..=18.
        assert_eq!(reference(&w, &x, Some(0.5)), 171.5);
        let mut out = [0.0];
        linear(&x, 18, &w, Some(&[0.5]), &mut out);
        assert_eq!(out, [171.5]);
        // 2²⁴ in lane 0 and ones in the others: the first half-step adds lane 8's one to
        // 2²⁴ and loses it (2²⁴ + 1 rounds to even), while lanes 1–7 become twos, then fours,
        // then an eight, which 2²⁴ keeps: 2²⁴ + 2 + 4 + 8. In order of `k`, every one is lost.
        let mut w = vec![1.0f32; 16];
        w[0] = 16_777_216.0;
        let got = reference(&w, &[1.0; 16], None);
        assert_eq!(got, 16_777_216.0 + 14.0, "lanes summed in halves");
    }

    /// The vectors of every width this CPU has equal the baseline's scalar lanes bit for bit,
    /// on one to five rows of lengths from 16 to B1's 1,600.
    #[test]
    fn every_width_equals_the_scalar_lanes() {
        let mut on = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                on.push(FloatLanes::Avx2Fma);
            }
            if is_x86_feature_detected!("avx512f") {
                on.push(FloatLanes::Avx512);
            }
        }
        if on.is_empty() {
            eprintln!("every_width_equals_the_scalar_lanes: no vector widths on this CPU");
        }
        let mut rng = Rng::new(5);
        for len in [16, 32, 48, 160, 1536, 1600] {
            let x: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
            let w: Vec<Vec<f32>> = (0..5)
                .map(|_| (0..len).map(|_| rng.normal()).collect())
                .collect();
            let rows: [&[f32]; 5] = std::array::from_fn(|r| &w[r][..]);
            let want = whole_lanes(FloatLanes::Baseline, rows, &x);
            for &lanes in &on {
                assert_eq!(
                    whole_lanes(lanes, rows, &x).map(|l| bits(&l)),
                    want.map(|l| bits(&l)),
                    "{lanes:?}, {len} values"
                );
                let [one] = whole_lanes(lanes, [rows[0]], &x);
                assert_eq!(bits(&one), bits(&want[0]), "{lanes:?}, one row");
            }
        }
    }

    /// NaN and infinities reach the outputs they take part in, and only those.
    #[test]
    fn non_finite_values_reach_their_outputs() {
        let k = 40;
        let mut w = vec![0.5f32; 3 * k];
        w[k + 3] = f32::INFINITY;
        w[2 * k + 39] = f32::NAN;
        let mut out = [0.0; 3];
        linear(&[1.0; 40], k, &w, None, &mut out);
        assert_eq!(out[0], 20.0);
        assert_eq!(out[1], f32::INFINITY);
        assert!(out[2].is_nan());
    }
}
