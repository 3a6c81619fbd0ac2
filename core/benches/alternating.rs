//! Two forms of one kernel timed in alternation, call after call, in one process: on a shared
//! machine whose speed drifts by more than the difference between the forms within a minute,
//! divan's runs of each form's samples one after the other can order them either way, while
//! alternating calls see the same drift. Prints each form's median and tenth-percentile time
//! and their ratio.
//!
//! `cargo bench -p qvit-core --bench alternating [-- avx2]` compares a token-major linear
//! layer's product with its requantization in the product's tiles (`gemm_rows_requantized`)
//! against the product's sums stored and requantized by a pass of their own after, on DeiT-T's
//! layers (a block of 120 or 104 tokens), with VNNI kernels (or AVX2 ones).
//!
//! `cargo bench -p qvit-core --bench alternating -- stacked [avx2]` compares EfficientViT-B1's
//! integer executor (random weights, W8A8 trio-vit) on a run of 4, 8 and 32 images on one
//! thread, image by image against the 1×1 convs of its 7×7 maps taking the run's images at
//! once (`IntExecutor::with_stacking`); the logits are checked equal first.
//!
//! `cargo bench -p qvit-core --bench alternating -- depthwise [avx2]` times each of B1's
//! depthwise steps (one image, one thread, on the step's own input codes) against its kernel
//! alone, the sums without their epilogue: what the rest of the step costs.
//!
//! `cargo bench -p qvit-core --bench alternating -- linear [avx2]` times B1's linear-attention
//! steps (context, query, normalisation; one image, one thread, on each step's own input codes),
//! each kind summed over the model's seven blocks, the tenth percentile and median of many
//! rounds: run two builds one after the other, a few times, to compare a change to them.
//!
//! `cargo bench -p qvit-core --bench alternating -- bytes [avx2]` compares B1's integer
//! executor with every value in i32 codes against the values between its convs as bytes
//! (`IntExecutor::with_byte_codes`), at batch 1 and 8 on one thread and on all; the logits are
//! checked equal first.
//!
//! `cargo bench -p qvit-core --bench alternating -- cold [avx2]` times the same requantized
//! products warm (one weight matrix, one output) against cold weights (48 copies of the
//! matrix, one per call in turn: 5–7 MB) and against cold outputs (48 outputs in turn), three
//! forms in rotation: what the product loses to operands that come from L3 or memory.
//!
//! `cargo bench -p qvit-core --bench alternating -- gelu [avx2]` compares, on the same layers,
//! a GELU table of 10,001 codes (DeiT-T's hold 9,425–10,695) read in the tiles by a load per
//! lane against the same table read by its buckets (`code_table::buckets`; by loads too with
//! AVX2, or without AVX-512 VBMI and VPOPCNTDQ). Figures in BENCHMARKS.md.

use std::time::Instant;

use std::cell::Cell;

use qvit_core::arch::ArchSpec;
use qvit_core::data::{Dataset, Normalize};
use qvit_core::exec::int::code_table::CodeTable;
use qvit_core::exec::int::kernels::columns::{ColumnNarrow, LookUp, Read, Requantize};
use qvit_core::exec::int::kernels::depthwise::{DwShape, depthwise};
use qvit_core::exec::int::kernels::requant::Fast;
use qvit_core::exec::int::kernels::{Isa, PackedA, PackedB, gemm, gemm_rows_requantized};
use qvit_core::exec::int::ops::Scratch;
use qvit_core::exec::int::ops::weighted::{Geometry, Weights as IntWeights};
use qvit_core::exec::int::program::{IntProgram, StepOp};
use qvit_core::exec::int::{IntExecutor, compile};
use qvit_core::graph::Graph;
use qvit_core::quant::{self, QuantSettings, Recipe, calibrate};
use qvit_core::rng::Rng;
use qvit_core::weights::Weights;

/// Calls per timed sample, and samples per form.
const CALLS: usize = 4;
const SAMPLES: usize = 2000;

fn main() {
    // `cargo bench` passes `--bench`; only the forms' names and `avx2` are read.
    let gelu = std::env::args().any(|a| a == "gelu");
    let isa = match std::env::args().any(|a| a == "avx2") {
        true => Isa::Avx2,
        false => Isa::Avx512Vnni,
    };
    if !Isa::available().contains(&isa) {
        println!("this CPU cannot run {}: nothing measured", isa.name());
        return;
    }
    if std::env::args().any(|a| a == "cold") {
        return cold(isa);
    }
    if std::env::args().any(|a| a == "stacked") {
        return stacked(isa);
    }
    if std::env::args().any(|a| a == "depthwise") {
        return depthwise_steps(isa);
    }
    if std::env::args().any(|a| a == "linear") {
        return linear_attention_steps(isa);
    }
    if std::env::args().any(|a| a == "bytes") {
        return byte_codes(isa);
    }
    let forms = match gelu {
        true => ["loads", "buckets"],
        false => ["a pass after", "in the tiles"],
    };
    match gelu {
        true => println!("{}: GELU's codes by loads or by buckets", isa.name()),
        false => println!(
            "{}: the requantization in the tiles against a pass after",
            isa.name()
        ),
    }
    let table = gelu_table();
    if gelu {
        match table.buckets() {
            Some(b) => println!("the table's window: {} buckets of 16 entries", b.count),
            None => println!("the table has no buckets: both forms read it by loads"),
        }
    }
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
        let range = if gelu { (-5_000, 5_000) } else { (-128, 127) };
        let columns = random_columns(&mut rng, cols, range);
        let offsets: Vec<i32> = (0..rows).map(|_| rng.below(1 << 20) as i32).collect();
        let outside = vec![Cell::new(false); rows];
        let look_up = |read| {
            Some(LookUp {
                table: &table,
                outside: &outside,
                read,
            })
        };
        let r = Requantize {
            columns: &columns,
            offsets: &offsets,
            table: None,
        };
        let (by_loads, by_buckets) = (
            Requantize {
                table: look_up(Read::Loads),
                ..r
            },
            Requantize {
                table: look_up(Read::Buckets),
                ..r
            },
        );
        let (mut sums, mut out) = (vec![0; rows * cols], vec![0; rows * cols]);
        // [after or by loads, in the tiles or by buckets]
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..2 * SAMPLES {
            let start = Instant::now();
            for _ in 0..CALLS {
                match (gelu, round % 2) {
                    (true, 0) => {
                        gemm_rows_requantized(isa, &a, 0..rows, &b, &by_loads, &mut sums, &mut out)
                    }
                    (true, _) => gemm_rows_requantized(
                        isa,
                        &a,
                        0..rows,
                        &b,
                        &by_buckets,
                        &mut sums,
                        &mut out,
                    ),
                    (false, 0) => {
                        gemm(isa, &a, &b, &mut sums);
                        columns.apply(isa, &sums, &offsets, &mut out);
                    }
                    (false, _) => {
                        gemm_rows_requantized(isa, &a, 0..rows, &b, &r, &mut sums, &mut out)
                    }
                }
            }
            times[round % 2].push(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
        }
        println!(
            "{rows} tokens × {k} → {cols}: {}",
            compared(forms, &mut times, "µs")
        );
    }
}

/// Two forms' times (sorted here) as `NAME median unit (p10 …)` each and their ratio, the
/// second over the first.
fn compared(forms: [&str; 2], times: &mut [Vec<f64>; 2], unit: &str) -> String {
    for t in times.iter_mut() {
        t.sort_by(f64::total_cmp);
    }
    let (median, tenth) = (|t: &[f64]| t[t.len() / 2], |t: &[f64]| t[t.len() / 10]);
    format!(
        "{} {:.2} {unit} (p10 {:.2}), {} {:.2} {unit} (p10 {:.2}), ratio {:.3}",
        forms[0],
        median(&times[0]),
        tenth(&times[0]),
        forms[1],
        median(&times[1]),
        tenth(&times[1]),
        median(&times[1]) / median(&times[0]),
    )
}

/// Random requantizations of `cols` channels in 32-bit lanes, their results clamped to
/// `qmin..=qmax` (8-bit codes, or GELU's inputs).
fn random_columns(rng: &mut Rng, cols: usize, (qmin, qmax): (i64, i64)) -> ColumnNarrow {
    let channels = (0..cols)
        .map(|_| {
            let fast = Fast {
                m: rng.below(1 << 30) as i32 + 1,
                lo: rng.below(1 << 40) as i64 - (1 << 39),
                hi: rng.below(256) as i64 - 128,
                k: 40,
                qmin,
                qmax,
            };
            fast.narrow()
                .expect("a shift past 32 and a clamp inside 32 bits")
        })
        .collect();
    ColumnNarrow::new(channels)
}

/// DeiT-T's token-major products with their requantization in the tiles: warm, with the
/// weights cycling through 48 copies, and with the outputs cycling through 48 buffers.
fn cold(isa: Isa) {
    const COPIES: usize = 48;
    println!("{}: the requantized products warm and cold", isa.name());
    for (rows, k, cols) in [(120, 192, 576), (120, 192, 768), (120, 768, 192)] {
        let mut rng = Rng::new(1);
        let a: Vec<i8> = (0..rows * k)
            .map(|_| (rng.below(255) as i32 - 127) as i8)
            .collect();
        let a = PackedA::new(&a, rows, k);
        let mut weights = || {
            let b: Vec<u8> = (0..k * cols).map(|_| rng.below(256) as u8).collect();
            PackedB::from_rows(&b, k, cols)
        };
        let copies: Vec<PackedB> = (0..COPIES).map(|_| weights()).collect();
        let columns = random_columns(&mut rng, cols, (-128, 127));
        let offsets: Vec<i32> = (0..rows).map(|_| rng.below(1 << 20) as i32).collect();
        let r = Requantize {
            columns: &columns,
            offsets: &offsets,
            table: None,
        };
        let mut sums = Vec::new();
        let mut outs: Vec<Vec<i32>> = (0..COPIES).map(|_| vec![0; rows * cols]).collect();
        // [warm, cold weights, cold outputs]
        let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..3 * SAMPLES {
            let start = Instant::now();
            for call in 0..CALLS {
                let turn = (round / 3 * CALLS + call) % COPIES;
                let (b, out) = match round % 3 {
                    0 => (&copies[0], 0),
                    1 => (&copies[turn], 0),
                    _ => (&copies[0], turn),
                };
                gemm_rows_requantized(isa, &a, 0..rows, b, &r, &mut sums, &mut outs[out]);
            }
            times[round % 3].push(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
        }
        for t in &mut times {
            t.sort_by(f64::total_cmp);
        }
        let median = |t: &[f64]| t[t.len() / 2];
        let warm = median(&times[0]);
        println!(
            "{rows} tokens × {k} → {cols}: warm {warm:.1} µs, cold weights {:.1} µs ({:.3}), \
             cold outputs {:.1} µs ({:.3})",
            median(&times[1]),
            median(&times[1]) / warm,
            median(&times[2]),
            median(&times[2]) / warm,
        );
    }
}

/// A GELU table as the compiler builds one: inputs at `14/5000` (the sigmoid saturated past
/// ±5,000), outputs 8-bit from −0.17 to 2.8. Its codes change only over the middle 2,048 or so
/// entries, in steps of one, as DeiT-T's do (random weights, repq-vit W8A8: windows of
/// 1,845–2,062 entries).
fn gelu_table() -> CodeTable {
    let (s, step) = (14.0 / 5000.0, (2.5 + 0.17) / 255.0);
    let gelu = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    let code = |i: i64| {
        ((gelu(i as f64 * s) + 0.17) / step)
            .round()
            .clamp(0.0, 255.0) as i32
            - 128
    };
    CodeTable::from_codes(-5_000, (-5_000..=5_000).map(code).collect())
}

/// EfficientViT-B1 (random weights, W8A8 trio-vit) compiled for the integer executor, and
/// `n` random images.
fn b1_program(n: usize) -> (IntProgram, Dataset) {
    let graph = Graph::build(&ArchSpec::resolve("efficientvit-b1").unwrap()).unwrap();
    let folded = Weights::random(&graph, 1).fold(&graph).unwrap();
    let shape = graph.input_shape();
    let mut rng = Rng::new(7);
    let bytes = (0..n * shape.iter().product::<usize>())
        .map(|_| rng.below(256) as u8)
        .collect();
    let data = Dataset::from_bytes(
        "random images",
        [shape[0], shape[1], shape[2]],
        bytes,
        vec![0; n],
        Normalize::imagenet(),
    )
    .unwrap();
    let recipe = Recipe::preset("trio-vit").unwrap();
    let stats = calibrate(&graph, &folded, &data, 4, 4, &mut |_, _| {}).unwrap();
    let settings = QuantSettings {
        recipe: recipe.name.clone(),
        ..QuantSettings::default()
    };
    let plan = quant::build(&graph, &folded, &stats, &recipe, &settings).unwrap();
    (compile(&graph, &folded, &plan).unwrap(), data)
}

/// `f(program, executor, values, scratch)` on one thread, `values` every step's codes for one
/// random image through B1's integer program on `isa`: for timing steps on their own inputs.
fn on_b1_image(
    isa: Isa,
    title: &str,
    f: impl FnOnce(&IntProgram, &IntExecutor, &[Vec<i32>], &mut Scratch) + Send,
) {
    let (program, data) = b1_program(1);
    let exec = IntExecutor::new(&program).with_isa(isa);
    let image = data.batch(0..1).unwrap().images;
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!("{}: {title}", isa.name());
    one_thread.install(|| {
        let values = exec.run_image(&image.data, &|_| true);
        f(&program, &exec, &values, &mut Scratch::default())
    });
}

/// B1's linear-attention steps, each kind's time summed over its blocks: per round every
/// step runs once; the tenth percentile and median of the rounds' sums.
fn linear_attention_steps(isa: Isa) {
    let title = "B1's linear-attention steps, one image";
    on_b1_image(isa, title, |program, exec, values, scratch| {
        let kinds = ["context", "query", "normalize"];
        let kind = |op: &StepOp| match op {
            StepOp::Context(_) => Some(0),
            StepOp::Query(_) => Some(1),
            StepOp::Normalize(_) => Some(2),
            _ => None,
        };
        let steps: Vec<_> = program
            .steps
            .iter()
            .filter_map(|s| kind(&s.op).map(|k| (k, s)))
            .collect();
        let mut times: [Vec<f64>; 3] = Default::default();
        for _ in 0..SAMPLES {
            let mut round = [0.0; 3];
            for &(k, step) in &steps {
                let x: Vec<&[i32]> = step.inputs.iter().map(|&i| &values[i][..]).collect();
                let start = Instant::now();
                let out = exec.run_step(step, &x, scratch);
                round[k] += start.elapsed().as_secs_f64() * 1e6;
                scratch.spare.keep(out);
            }
            for (t, r) in times.iter_mut().zip(round) {
                t.push(r);
            }
        }
        for (name, t) in kinds.iter().zip(&mut times) {
            t.sort_by(f64::total_cmp);
            let blocks = steps.iter().filter(|(k, _)| kinds[*k] == *name).count();
            println!(
                "{name:>9} ({blocks} steps): p10 {:.1} µs, median {:.1} µs",
                t[t.len() / 10],
                t[t.len() / 2]
            );
        }
    });
}

/// B1's integer executor on runs of 4 and 8 images, image by image against stacked.
fn stacked(isa: Isa) {
    let (program, data) = b1_program(32);
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!("{}: EfficientViT-B1's int executor, one thread", isa.name());
    for batch in [4, 8, 32] {
        let images = data.batch(0..batch).unwrap().images;
        let forms =
            [false, true].map(|s| IntExecutor::new(&program).with_isa(isa).with_stacking(s));
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        one_thread.install(|| {
            let logits = forms.map(|e| e.forward(&images).unwrap().data);
            assert_eq!(logits[0], logits[1], "the same logits either way");
            // About as long for each batch size: 80 batches of 4 or 8 images, 20 of 32.
            for round in 0..2 * (640 / batch).min(80) {
                let start = Instant::now();
                forms[round % 2].forward(&images).unwrap();
                times[round % 2].push(start.elapsed().as_secs_f64() * 1e3);
            }
        });
        let forms = ["image by image", "stacked"];
        println!("batch {batch}: {}", compared(forms, &mut times, "ms"));
    }
}

/// B1's integer executor with every value in i32 codes against the values between convs as
/// bytes (`IntExecutor::with_byte_codes`), at batch 1 and 8, on one thread and on the machine's.
fn byte_codes(isa: Isa) {
    let (program, data) = b1_program(8);
    println!(
        "{}: EfficientViT-B1's int executor, values as codes / as bytes",
        isa.name()
    );
    for threads in [1, rayon::current_num_threads()] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for batch in [1, 8] {
            let images = data.batch(0..batch).unwrap().images;
            let forms = [false, true].map(|bytes| {
                IntExecutor::new(&program)
                    .with_isa(isa)
                    .with_byte_codes(bytes)
            });
            let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            pool.install(|| {
                let logits = forms.map(|e| e.forward(&images).unwrap().data);
                assert_eq!(logits[0], logits[1], "the same logits either way");
                for round in 0..2 * 320 / batch {
                    let start = Instant::now();
                    forms[round % 2].forward(&images).unwrap();
                    times[round % 2].push(start.elapsed().as_secs_f64() * 1e3);
                }
            });
            let forms = ["codes", "bytes"];
            let times = compared(forms, &mut times, "ms");
            println!("{threads} thread(s), batch {batch}: {times}");
        }
    }
}

/// Each of B1's depthwise steps on one image (one thread): the whole step against its kernel
/// alone (the sums, no epilogue), on the step's own input codes.
fn depthwise_steps(isa: Isa) {
    let title = "B1's depthwise steps against their kernels";
    on_b1_image(isa, title, |program, exec, values, scratch| {
        for step in &program.steps {
            let StepOp::Weighted(w) = &step.op else {
                continue;
            };
            let (
                IntWeights::Depthwise(weights),
                Geometry::Conv {
                    conv,
                    in_hw,
                    out_hw,
                },
            ) = (&w.weights, &w.geometry)
            else {
                continue;
            };
            let shape = DwShape {
                channels: w.out_channels,
                in_hw: *in_hw,
                out_hw: *out_hw,
                kernel: conv.kernel,
                stride: conv.stride,
                padding: conv.padding,
            };
            let x = &values[step.inputs[0]][..];
            let mut sums = vec![0; w.out_channels * out_hw.0 * out_hw.1];
            let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for round in 0..2 * SAMPLES / 4 {
                let start = Instant::now();
                match round % 2 {
                    0 => {
                        let out = exec.run_step(step, &[x], scratch);
                        scratch.spare.keep(out);
                    }
                    _ => depthwise(isa, &shape, x, &w.zero, w.lift, weights, &mut sums),
                }
                times[round % 2].push(start.elapsed().as_secs_f64() * 1e6);
            }
            for t in &mut times {
                t.sort_by(f64::total_cmp);
            }
            let median = |t: &[f64]| t[t.len() / 2];
            println!(
                "{} ({} × {}², {}×{} / {}): step {:.1} µs, kernel {:.1} µs, the rest {:.1} µs",
                step.name,
                w.out_channels,
                in_hw.0,
                conv.kernel,
                conv.kernel,
                conv.stride,
                median(&times[0]),
                median(&times[1]),
                median(&times[0]) - median(&times[1]),
            );
        }
    });
}
