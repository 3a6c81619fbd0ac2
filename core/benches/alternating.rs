//! Two forms of one kernel timed in alternation, call after call, in one process: on a shared
//! machine whose speed drifts by more than the difference between the forms within a minute,
//! divan's runs of each form's samples one after the other can order them either way, while
//! alternating calls see the same drift. Prints each form's median and tenth-percentile time
//! and their ratio.
//!
//! `cargo bench -p qvit-core --bench alternating [-- avx2]` compares a token-major linear
//! layer's product with its requantization in the product's tiles (`gemm_rows_requantized`)
//! against the product's sums stored and requantized by a pass of their own after, on DeiT-T's
//! layers (a block of 120 or 104 tokens), with VNNI kernels (or AVX2 ones); figures in
//! BENCHMARKS.md.

use std::time::Instant;

use qvit_core::exec::int::kernels::columns::{ColumnNarrow, Requantize};
use qvit_core::exec::int::kernels::requant::Fast;
use qvit_core::exec::int::kernels::{Isa, PackedA, PackedB, gemm, gemm_rows_requantized};
use qvit_core::rng::Rng;

/// Calls per timed sample, and samples per form.
const CALLS: usize = 4;
const SAMPLES: usize = 2000;

fn main() {
    // `cargo bench` passes `--bench`; only `avx2` is read.
    let isa = match std::env::args().any(|a| a == "avx2") {
        true => Isa::Avx2,
        false => Isa::Avx512Vnni,
    };
    if !Isa::available().contains(&isa) {
        println!("this CPU cannot run {}: nothing measured", isa.name());
        return;
    }
    println!(
        "{}: the requantization in the tiles against a pass after",
        isa.name()
    );
    for (rows, k, cols) in [
        (120, 192, 576),
        (120, 192, 768),
        (120, 768, 192),
        (104, 192, 576),
        (104, 768, 192),
    ] {
        let mut rng = Rng::new(1);
        let a: Vec<i8> = (0..rows * k)
            .map(|_| (rng.below(255) as i32 - 127) as i8)
            .collect();
        let b: Vec<u8> = (0..k * cols).map(|_| rng.below(256) as u8).collect();
        let (a, b) = (PackedA::new(&a, rows, k), PackedB::from_rows(&b, k, cols));
        let channels = (0..cols)
            .map(|_| {
                let fast = Fast {
                    m: rng.below(1 << 30) as i32 + 1,
                    lo: rng.below(1 << 40) as i64 - (1 << 39),
                    hi: rng.below(256) as i64 - 128,
                    k: 40,
                    qmin: -128,
                    qmax: 127,
                };
                fast.narrow().expect("a shift past 32 and an 8-bit clamp")
            })
            .collect();
        let columns = ColumnNarrow::new(channels);
        let offsets: Vec<i32> = (0..rows).map(|_| rng.below(1 << 20) as i32).collect();
        let r = Requantize {
            columns: &columns,
            offsets: &offsets,
            table: None,
        };
        let (mut sums, mut out) = (vec![0; rows * cols], vec![0; rows * cols]);
        // [after, in the tiles]
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..2 * SAMPLES {
            let start = Instant::now();
            for _ in 0..CALLS {
                match round % 2 {
                    0 => {
                        gemm(isa, &a, &b, &mut sums);
                        columns.apply(isa, &sums, &offsets, &mut out);
                    }
                    _ => gemm_rows_requantized(isa, &a, 0..rows, &b, &r, &mut sums, &mut out),
                }
            }
            times[round % 2].push(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
        }
        for t in &mut times {
            t.sort_by(f64::total_cmp);
        }
        let (median, tenth) = (|t: &[f64]| t[t.len() / 2], |t: &[f64]| t[t.len() / 10]);
        println!(
            "{rows} tokens × {k} → {cols}: after {:.1} µs (p10 {:.1}), in the tiles {:.1} µs \
             (p10 {:.1}), ratio {:.3}",
            median(&times[0]),
            tenth(&times[0]),
            median(&times[1]),
            tenth(&times[1]),
            median(&times[1]) / median(&times[0]),
        );
    }
}
