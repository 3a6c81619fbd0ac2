//! The integer non-linear functions against the float functions they replace, over the whole
//! int8 input range; prints the table quoted in `docs/int-executor.md`:
//! `cargo test --release -p qvit-core --test int_functions -- --nocapture`.

use qvit_core::exec::int::encoding::{Encoding, log_boundaries};
use qvit_core::exec::int::nonlinear::hardswish::{hardswish_exponent, hardswish_product};
use qvit_core::exec::int::nonlinear::shiftexp::exp_unit;
use qvit_core::exec::int::nonlinear::{
    LevelEncoder, gelu_exponent_bits, i_layernorm, shiftmax, sigmoid_gelu,
};
use qvit_core::quant::quantizer::Log;
use qvit_core::rng::Rng;

fn row(name: &str, domain: &str, err: f64, unit: &str) {
    eprintln!("| {name} | {domain} | {err:.4} {unit} |");
}

#[test]
fn errors_over_the_int8_range() {
    eprintln!("| function | inputs | max abs error |\n|---|---|---|");
    let mut rng = Rng::new(5);

    // Shiftmax: rows of 50 int8 logits at scale 2^−4 (the executor's input grid for 50 tokens
    // is finer; a coarse grid is the worst case), probabilities against float softmax.
    let mut worst: f64 = 0.0;
    let mut buf = Vec::new();
    for _ in 0..2000 {
        let x: Vec<i32> = (0..50).map(|_| rng.below(255) as i32 - 127).collect();
        let s = 1.0 / 16.0;
        let mut out = vec![0; 50];
        shiftmax(&x, exp_unit(s), 15, 16, &mut buf, &mut out);
        let m = *x.iter().max().unwrap() as f64;
        let e: Vec<f64> = x.iter().map(|&v| ((v as f64 - m) * s).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (o, ei) in out.iter().zip(&e) {
            worst = worst.max((*o as f64 / 32768.0 - ei / sum).abs());
        }
    }
    row(
        "Shiftmax (n = 15, 16-bit out)",
        "50 int8 logits, s = 1/16",
        worst,
        "(probability)",
    );
    assert!(worst < 0.05);

    // GELU at the executor's grid: s a quarter of a 0.04 output step.
    let s = 0.01;
    let x0 = exp_unit((s as f32 * 1.702) as f64);
    let n = gelu_exponent_bits(x0);
    let mut worst: f64 = 0.0;
    for x in -600..=600 {
        let got = sigmoid_gelu(x, x0, n, 15) as f64 * s / 32768.0;
        let v = x as f64 * s;
        let want = v * 0.5 * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
        worst = worst.max((got - want).abs());
    }
    row(
        "GELU (x·σ(1.702x), shift exp)",
        "[−6, 6] at s = 0.01",
        worst,
        "",
    );
    assert!(worst < 0.03);

    // I-LayerNorm: rows of 64 int8 values promoted by 7 bits, against float LayerNorm.
    let mut worst: f64 = 0.0;
    for t in 0..2000 {
        let spread = 1 + (t % 127) as usize;
        let x: Vec<i64> = (0..64)
            .map(|_| (rng.below(2 * spread + 1) as i64 - spread as i64) << 7)
            .collect();
        let mut z = vec![0i64; 64];
        i_layernorm(&x, &mut z);
        let mean = x.iter().sum::<i64>() as f64 / 64.0;
        let sd = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 64.0).sqrt();
        for (&zi, &xi) in z.iter().zip(&x) {
            let got = zi as f64 * 8.0 / 2f64.powi(30);
            let want = if sd > 0.0 {
                (xi as f64 - mean) / sd
            } else {
                0.0
            };
            worst = worst.max((got - want).abs());
        }
    }
    row(
        "I-LayerNorm",
        "64 int8 values (<< 7), any spread",
        worst,
        "(normalised units)",
    );
    assert!(worst < 0.02);

    // Hardswish: every int8 input at scale 0.05 into an output step of 0.05.
    let step = 0.05;
    let j = hardswish_exponent(step);
    let st = 3.0 / 2f64.powi(j as i32);
    let mut worst: f64 = 0.0;
    for q in -128..=127 {
        let x = q as f64 * 0.05;
        let t = (x / st + 0.5).floor() as i64;
        let got = hardswish_product(t, j) as f64 * st * st / 6.0;
        worst = worst.max((got - x * (x + 3.0).clamp(0.0, 6.0) / 6.0).abs() / step);
    }
    row(
        "Hardswish",
        "int8 at s = 0.05",
        worst,
        "output steps (before rounding)",
    );
    assert!(worst < 0.05);

    // The log2 divisor: thresholds against the float log quantizer, integers at scale 1/8.
    let l = Log {
        bits: 4,
        root: 1,
        scale: 256.0,
        zero_code: false,
    };
    let (b, codes) = log_boundaries(&l);
    let enc = LevelEncoder::new(&b, codes, 0.125, 0.0);
    let e = Encoding::Log(l.clone());
    let mut differ = 0;
    for v in 0..(1 << 14) {
        differ += usize::from(enc.encode(v) != e.code_of(v as f64 * 0.125, 0));
    }
    row(
        "log2 divisor (4-bit, thresholds)",
        "0 … 2^14 at s = 1/8",
        differ as f64,
        "codes differ",
    );
    assert_eq!(differ, 0);
}
