//! Which of the `gemm` crate's f32 microkernels run [`matmul`](super::matmul)'s products.
//!
//! The crate's own entry point picks its widest kernels from the CPU alone (AVX-512 here, by
//! the workspace's `x86-v4` feature), so `QVIT_ISA=avx2` used to leave most of the fp32
//! executor's time on AVX-512 (61 % of DeiT-T's samples, by `perf`: BENCHMARKS.md). Its
//! blocked driver and each width's microkernels are public, so the capped widths call the
//! driver with the AVX2 + FMA kernels, or the portable ones, as an AVX2-only or a baseline
//! CPU would run them.
#![allow(unsafe_code)]

use crate::exec::cpu::FloatLanes;

/// A set of the crate's microkernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernels {
    /// The crate's choice for this CPU (AVX-512 F where it has it).
    Widest,
    /// 8 lanes of AVX2 with FMA.
    #[cfg(target_arch = "x86_64")]
    Fma,
    /// One lane, a multiply and an add per term.
    #[cfg(target_arch = "x86_64")]
    Portable,
}

/// The kernels for the float lanes [`float_lanes`](crate::exec::cpu::float_lanes) allows.
pub(super) fn for_lanes(lanes: FloatLanes) -> Kernels {
    #[cfg(target_arch = "x86_64")]
    match lanes {
        FloatLanes::Avx512 => Kernels::Widest,
        FloatLanes::Avx2Fma => Kernels::Fma,
        FloatLanes::Baseline => Kernels::Portable,
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = lanes;
        Kernels::Widest
    }
}

/// Tells `gemm` to read its left operand where it lies whenever that operand's columns are
/// contiguous and a whole number of registers tall, rather than copying it into panels first
/// once a call has more than 48 columns (its default). Set only with AVX-512, where
/// [`Kernels::Widest`] runs on x86-64. A linear layer's left operand is its transposed weight
/// (`outᵀ = w · xᵀ`, features down the columns): the copy read every weight again for each call
/// of more than 48 token rows, 11 % of DeiT-T's fp32 samples at batch 1, and the kernels read
/// the weight in place at about the same speed (side by side, one thread: DeiT-T batch 1
/// 1.013–1.040×, batch 8 1.000–1.013×, B1 0.99–1.03×). With the AVX2 kernels the copy pays
/// for itself (DeiT-T batch 1 0.94–0.96× without it), so they keep the default. Which
/// operand is read from where changes no sum.
#[cfg(target_arch = "x86_64")]
fn lhs_in_place() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| gemm_common::gemm::set_lhs_packing_threshold_single_thread(256));
}

/// One product as the crate takes it: `dst = lhs · rhs`, or `dst += lhs · rhs` when
/// `accumulate`, each matrix a pointer with its column and row strides.
pub(super) struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst: (*mut f32, usize, usize),
    pub accumulate: bool,
    pub lhs: (*const f32, usize, usize),
    pub rhs: (*const f32, usize, usize),
}

/// Runs `p` on `kernels`, on this thread.
///
/// # Safety
/// The crate's: every element the pointers and strides address is inside its allocation,
/// `dst` overlaps neither operand, and `dst` is initialised when `accumulate`. `kernels` came
/// from [`for_lanes`] of lanes this CPU has.
pub(super) unsafe fn product(kernels: Kernels, p: Product) {
    let alpha = if p.accumulate { 1.0 } else { 0.0 };
    // The crate's arguments in its order: `$before` comes first, `$after` just before the
    // parallelism.
    macro_rules! call {
        ($f:expr; $($before:expr),*; $($after:expr),*) => {
            $f(
                $($before,)*
                p.m,
                p.n,
                p.k,
                p.dst.0,
                p.dst.1 as isize,
                p.dst.2 as isize,
                p.accumulate,
                p.lhs.0,
                p.lhs.1 as isize,
                p.lhs.2 as isize,
                p.rhs.0,
                p.rhs.1 as isize,
                p.rhs.2 as isize,
                alpha,
                1.0,
                false,
                false,
                false,
                $($after,)*
                gemm_common::Parallelism::None,
            )
        };
    }
    // The crate's own instantiations (`gemm_def!`), with the microkernel sets named here:
    // `N` lanes per register, tiles of `MR_DIV_N·N` rows by `NR` columns.
    macro_rules! driver {
        ($simd:expr, $set:path, $lanes:expr) => {{
            use $set as set;
            const N: usize = $lanes;
            call!(
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    f32,
                    N,
                    { set::MR_DIV_N * N },
                    { set::NR },
                    { set::MR_DIV_N },
                    { set::H_M },
                    { set::H_N },
                >;
                $simd;
                |a, b, c| a * b + c,
                &set::UKR,
                &set::H_UKR,
                false
            )
        }};
    }
    match kernels {
        Kernels::Widest => {
            #[cfg(target_arch = "x86_64")]
            lhs_in_place();
            // SAFETY: the caller's promises, which are the crate's.
            unsafe { call!(gemm_f32::gemm::f32::get_gemm_fn();;) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernels::Fma => {
            // `for_lanes` gave FMA kernels only for lanes that have AVX2 and FMA, which are
            // all `V3` needs with the x86-64 baseline.
            let simd = gemm_common::simd::V3::try_new().expect("AVX2 and FMA (`float_lanes`)");
            // SAFETY: the caller's promises; the kernels run on the features just checked.
            unsafe { driver!(simd, gemm_f32::microkernel::fma::f32, 8) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernels::Portable => {
            // SAFETY: the caller's promises; the portable kernels need no feature.
            unsafe {
                driver!(
                    gemm_common::simd::Scalar,
                    gemm_f32::microkernel::scalar::f32,
                    1
                )
            }
        }
    }
}
