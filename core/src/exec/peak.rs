//! The machine's multiply-accumulate peaks, measured rather than quoted: the fp32 loops here
//! (twelve independent FMA chains on registers, in 8 lanes for AVX2 + FMA and 16 for
//! AVX-512F), the int8 ones beside the int8 kernels ([`peak_loop_avx2`], [`peak_loop_vnni`]).
//! `qvit bench` runs them on all its threads at once and reads each executor's throughput as a
//! share of its peak; against each other they bound what the integer executor can gain over
//! the float one on a machine, since an int8 product cannot beat fp32 by more than the ratio of
//! the two peaks.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::time::Instant;

use crate::exec::int::kernels::{
    Isa, peak_loop_amx, peak_loop_avx2, peak_loop_vnni, products_on_amx,
};

/// A peak measured on every thread of a pool at once.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Peak {
    /// The instruction the loop repeats.
    pub instruction: &'static str,
    /// Billions of multiply-accumulates per second, all threads together.
    pub gmacs: f64,
    pub threads: usize,
}

/// The fp32 peak on every thread of the current rayon pool: 16-lane FMAs where the float
/// kernels use AVX-512F ([`crate::exec::cpu::float_lanes`]), else 8-lane ones; `None` without
/// FMA.
pub fn fp32_peak() -> Option<Peak> {
    if crate::exec::cpu::float_lanes() == crate::exec::cpu::FloatLanes::Avx512 {
        on_all_threads(("vfmadd231ps zmm", MACS_PER_ROUND), peak_loop_avx512)
    } else {
        on_all_threads(("vfmadd231ps ymm", MACS_PER_ROUND), peak_loop_fma)
    }
}

/// The int8 peak of the products `isa` runs, on every thread of the current rayon pool: exact
/// `vpmaddwd` + `vpaddd` pairs for AVX2, `vpdpbusd` for AVX-512 VNNI, AMX's `tdpbsud` where
/// the VNNI products run on tiles ([`products_on_amx`]); `None` for the scalar kernels, which
/// have no peak worth the name.
pub fn int8_peak(isa: Isa) -> Option<Peak> {
    match isa {
        Isa::Scalar => None,
        Isa::Avx2 => on_all_threads(("vpmaddwd ymm", MACS_PER_ROUND), peak_loop_avx2),
        Isa::Avx512Vnni if products_on_amx() => {
            on_all_threads(("tdpbsud tmm", AMX_MACS_PER_ROUND), peak_loop_amx)
        }
        Isa::Avx512Vnni => on_all_threads(("vpdpbusd zmm", MACS_PER_ROUND), peak_loop_vnni),
    }
}

/// About this many MACs per thread and round: tens of milliseconds at any of the peaks, long
/// enough that starting the threads does not count.
const MACS_PER_ROUND: u64 = 1_000_000_000;
/// The same for AMX's tiles, 16,384 MACs per instruction: about as long a round.
const AMX_MACS_PER_ROUND: u64 = 16 * MACS_PER_ROUND;

/// `peak_loop` on every thread of the current pool at once, about `macs_per_round` MACs per
/// thread and round, the best of five rounds (the first ones can run before the cores have
/// reached their clock).
fn on_all_threads<T: Send>(
    (instruction, macs_per_round): (&'static str, u64),
    peak_loop: impl Fn(usize) -> Option<(u64, T)> + Sync,
) -> Option<Peak> {
    let (macs_per_iter, _) = peak_loop(1)?;
    let iters = (macs_per_round / macs_per_iter.max(1)) as usize;
    let threads = rayon::current_num_threads();
    let mut best = 0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let done = rayon::broadcast(|_| peak_loop(iters).map(std::hint::black_box));
        let seconds = start.elapsed().as_secs_f64();
        let macs: u64 = done.iter().flatten().map(|(m, _)| m).sum();
        best = best.max(macs as f64 / seconds / 1e9);
    }
    Some(Peak {
        instruction,
        gmacs: best,
        threads,
    })
}

/// Twelve chains: enough to cover the FMA's latency (4 cycles) on two ports.
const CHAINS: usize = 12;

/// `iters` rounds of twelve independent 8-lane FMAs (`vfmadd231ps ymm`). Returns the MACs done
/// and a value that keeps the work alive; `None` without AVX2 and FMA.
pub fn peak_loop_fma(iters: usize) -> Option<(u64, f32)> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were checked just above.
        return Some(unsafe { peak_fma(iters) });
    }
    let _ = iters;
    None
}

/// `iters` rounds of twelve independent 16-lane FMAs (`vfmadd231ps zmm`); `None` without
/// AVX-512F.
pub fn peak_loop_avx512(iters: usize) -> Option<(u64, f32)> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was checked just above.
        return Some(unsafe { peak_avx512(iters) });
    }
    let _ = iters;
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn peak_fma(iters: usize) -> (u64, f32) {
    // Multipliers just below 1 and small addends keep every lane finite over any count.
    let b = _mm256_set1_ps(0.999_9);
    let c = _mm256_set1_ps(1e-3);
    let mut acc: [__m256; CHAINS] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
    for _ in 0..iters {
        // Opaque each round, so the chains can be neither folded nor hoisted.
        let b = std::hint::black_box(b);
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, b, c);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for r in acc {
        sum = _mm256_add_ps(sum, r);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds exactly 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    (iters as u64 * (CHAINS * 8) as u64, lanes.iter().sum())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn peak_avx512(iters: usize) -> (u64, f32) {
    let b = _mm512_set1_ps(0.999_9);
    let c = _mm512_set1_ps(1e-3);
    let mut acc: [__m512; CHAINS] = std::array::from_fn(|i| _mm512_set1_ps(i as f32));
    for _ in 0..iters {
        let b = std::hint::black_box(b);
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, b, c);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for r in acc {
        sum = _mm512_add_ps(sum, r);
    }
    (
        iters as u64 * (CHAINS * 16) as u64,
        _mm512_reduce_add_ps(sum),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loops count their MACs and keep finite values; each runs where its ISA exists.
    #[test]
    fn the_peak_loops_count_their_work() {
        if let Some((macs, v)) = peak_loop_fma(3) {
            assert_eq!(macs, 3 * 12 * 8);
            assert!(v.is_finite());
        }
        if let Some((macs, v)) = peak_loop_avx512(3) {
            assert_eq!(macs, 3 * 12 * 16);
            assert!(v.is_finite());
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            peak_loop_fma(1).is_some(),
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        );
    }

    /// Each ISA the int kernels can run has a peak, measured on the pool's threads; the
    /// scalar kernels have none.
    #[test]
    fn peaks_are_measured_on_the_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(int8_peak(Isa::Scalar), None);
            for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
                let p = int8_peak(isa).expect("every vector ISA has a peak loop");
                assert!(p.gmacs.is_finite() && p.gmacs > 0.0, "{isa:?}: {p:?}");
                assert_eq!(p.threads, 2);
            }
            if let Some(p) = fp32_peak() {
                assert!(p.gmacs.is_finite() && p.gmacs > 0.0, "{p:?}");
            }
        });
    }
}
