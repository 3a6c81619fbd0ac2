//! Loops the compiler vectorizes, compiled for the widest vectors the CPU has. The crate is
//! built for baseline x86-64, so a plain loop over f64 (LayerNorm's, Softmax's normalization,
//! the bias additions, linear attention's divisions) ran in SSE's two or four lanes: LayerNorm
//! alone was 3.8 % of DeiT-T's fp32 time, all of it in `xmm` registers. Compiled for AVX-512 F
//! or AVX2 the same operations run in the same order on wider registers, so every number is the
//! same (Rust never contracts `a·b + c` into a fused multiply-add).

/// Runs `f` compiled for AVX-512 F where the CPU has it, else for AVX2, else as it is (as far
/// as `QVIT_ISA` allows: [`crate::exec::cpu::float_lanes`]). Only
/// what is inlined into the wrapper is compiled for its features: `f` must be a closure marked
/// `#[inline(always)]` whose loop calls only `#[inline(always)]` functions (without the mark,
/// LayerNorm's closure stayed out of line and ran in SSE still, by `perf annotate`).
#[inline(always)]
pub(super) fn in_widest_lanes<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    {
        use crate::exec::cpu::{FloatLanes, float_lanes};
        match float_lanes() {
            // SAFETY: `float_lanes` reports only features the CPU has.
            FloatLanes::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above.
            FloatLanes::Avx2Fma => return unsafe { avx2(f) },
            FloatLanes::Baseline => {}
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
