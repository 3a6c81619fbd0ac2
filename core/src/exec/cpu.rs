//! What qvit's own kernels may use of this CPU's vector units, decided once per process.
//!
//! `QVIT_ISA=avx2` runs a machine with AVX-512 as an AVX2-only one (most AMD workstations and
//! many cluster nodes have no AVX-512), the float kernels as well as the integer ones, so that
//! the speed of both paths and the ratio between them can be measured on one machine;
//! `QVIT_ISA=avx512vnni` runs a Xeon with AMX as one without (its int8 products on VNNI), and
//! `QVIT_ISA=scalar` leaves qvit's kernels in portable code. The `gemm` crate's f32
//! microkernels, which the float executor calls for its larger products, are capped with the
//! float kernels ([`matmul`](super::matmul)).

use std::sync::OnceLock;

/// The most `QVIT_ISA` lets qvit's kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cap {
    /// Portable code only (`QVIT_ISA=scalar`).
    Portable,
    /// Nothing past AVX2 and FMA (`QVIT_ISA=avx2`).
    Avx2,
    /// Nothing past AVX-512 and its VNNI: no AMX tiles (`QVIT_ISA=avx512vnni`).
    Avx512,
    /// Whatever the CPU has (no `QVIT_ISA`, or `amx`).
    Everything,
}

/// The cap `QVIT_ISA` sets, read once. An unknown value is reported on stderr once and
/// ignored, rather than silently measuring something other than what was asked for.
pub fn cap() -> Cap {
    static CAP: OnceLock<Cap> = OnceLock::new();
    *CAP.get_or_init(|| {
        let value = std::env::var("QVIT_ISA").ok();
        let (cap, known) = parse_cap(value.as_deref());
        if !known {
            eprintln!(
                "qvit: QVIT_ISA={:?} is not one of scalar, avx2, avx512vnni, amx; using \
                 everything this CPU has",
                value.unwrap_or_default()
            );
        }
        cap
    })
}

/// `QVIT_ISA`'s value as a cap, and whether the value was one qvit knows.
fn parse_cap(value: Option<&str>) -> (Cap, bool) {
    match value {
        None | Some("") | Some("amx") => (Cap::Everything, true),
        Some("avx512vnni") => (Cap::Avx512, true),
        Some("avx2") => (Cap::Avx2, true),
        Some("scalar") => (Cap::Portable, true),
        Some(_) => (Cap::Everything, false),
    }
}

/// The widest vectors the float executor's own kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FloatLanes {
    /// The x86-64 baseline the crate is compiled for (or another architecture).
    Baseline,
    /// 8 lanes: AVX2 and FMA.
    Avx2Fma,
    /// 16 lanes: AVX-512 F and VL (which every CPU with AVX-512 F but the Xeon Phi has).
    Avx512,
}

impl FloatLanes {
    pub fn name(self) -> &'static str {
        match self {
            FloatLanes::Baseline => "baseline",
            FloatLanes::Avx2Fma => "avx2-fma",
            FloatLanes::Avx512 => "avx512",
        }
    }
}

/// The float kernels' lanes on this CPU under [`cap`], checked once.
pub fn float_lanes() -> FloatLanes {
    static LANES: OnceLock<FloatLanes> = OnceLock::new();
    *LANES.get_or_init(|| {
        let allowed = match cap() {
            Cap::Portable => FloatLanes::Baseline,
            Cap::Avx2 => FloatLanes::Avx2Fma,
            Cap::Avx512 | Cap::Everything => FloatLanes::Avx512,
        };
        detected_float_lanes().min(allowed)
    })
}

fn detected_float_lanes() -> FloatLanes {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
            return FloatLanes::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return FloatLanes::Avx2Fma;
        }
    }
    FloatLanes::Baseline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvit_isa_values_cap_as_documented() {
        assert_eq!(parse_cap(None), (Cap::Everything, true));
        assert_eq!(parse_cap(Some("amx")), (Cap::Everything, true));
        assert_eq!(parse_cap(Some("avx512vnni")), (Cap::Avx512, true));
        assert_eq!(parse_cap(Some("avx2")), (Cap::Avx2, true));
        assert_eq!(parse_cap(Some("scalar")), (Cap::Portable, true));
        assert_eq!(parse_cap(Some("AVX2 ")), (Cap::Everything, false));
    }

    #[test]
    fn the_float_lanes_never_exceed_the_cpu_or_the_cap() {
        let lanes = float_lanes();
        assert!(lanes <= detected_float_lanes());
        match cap() {
            Cap::Portable => assert_eq!(lanes, FloatLanes::Baseline),
            Cap::Avx2 => assert!(lanes <= FloatLanes::Avx2Fma),
            Cap::Avx512 | Cap::Everything => assert_eq!(lanes, detected_float_lanes()),
        }
    }
}
