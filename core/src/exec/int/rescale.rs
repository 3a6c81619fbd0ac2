//! The constants a hardware flow needs to rebuild each step, as the golden vectors' manifest
//! lists them: every requantization as a rescale record (the fields of TOSA's `RESCALE`:
//! multiplier, shift, zero-points folded into one addend, rounding, saturation), every
//! threshold encoder (log codes, the Softmax output) with its thresholds, and each
//! non-linear step's constants.

use serde::Serialize;

use super::encoding::Encoding;
use super::nonlinear::gelu::{GELU_INPUT_BITS, SIGMOID_BITS};
use super::nonlinear::softmax::{EXP_BITS, FRACTION_B, PROBABILITY_BITS};
use super::ops::linear_attention::Divide;
use super::ops::weighted::Output;
use super::program::StepOp;
use super::requant::{Encoder, Epilogue, Requant};

/// The rounding every record uses.
pub const ROUNDING: &str = "half up: (v·multiplier + addend + 2^(shift−1)) >> shift, arithmetic \
                            shift, then saturate";

/// One requantization, per channel (one entry when shared by all channels).
#[derive(Debug, Clone, Serialize)]
pub struct Rescale {
    /// What is requantized into what.
    pub stage: String,
    pub multiplier: Vec<i64>,
    pub shift: Vec<u8>,
    /// Added before the shift, in units of `2^−shift` of the output: the output zero-point,
    /// offsets (filter-wise shifts, β) and any other constant, folded.
    pub addend: Vec<i128>,
    /// Subtracted from the input codes before the multiply (0 where the step centres them
    /// itself or folds them into the bias).
    pub input_zero_point: Vec<i32>,
    pub rounding: &'static str,
    pub saturate: (i64, i64),
}

/// Rounding to non-uniform levels: `codes[i]` where `i` counts the thresholds `v` exceeds.
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    pub stage: String,
    /// Per channel.
    pub thresholds: Vec<Vec<i64>>,
    pub codes: Vec<Vec<i32>>,
}

/// Everything beyond the weights and biases that a step needs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepConstants {
    pub rescale: Vec<Rescale>,
    pub thresholds: Vec<Thresholds>,
    /// The constants of the step's non-linear function (see its documentation in
    /// `qvit_core::exec::int::nonlinear`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonlinear: Option<serde_json::Value>,
    /// What the output codes mean: `real = scale·(q − zero_point) + offset` or log levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<serde_json::Value>,
}

impl StepConstants {
    fn requant(&mut self, stage: &str, r: &Requant, input_zero: &[i32]) {
        self.rescale.push(Rescale {
            stage: stage.into(),
            multiplier: r.multiplier.iter().map(|d| d.m as i64).collect(),
            shift: r.multiplier.iter().map(|d| d.k).collect(),
            addend: r.addend.clone(),
            input_zero_point: input_zero.to_vec(),
            rounding: ROUNDING,
            saturate: (r.qmin, r.qmax),
        });
    }

    fn encoder(&mut self, stage: &str, e: &Encoder, input_zero: &[i32]) {
        match e {
            Encoder::Linear(r) => self.requant(stage, r, input_zero),
            Encoder::Levels(levels) => self.thresholds.push(Thresholds {
                stage: stage.into(),
                thresholds: levels.iter().map(|l| l.thresholds.clone()).collect(),
                codes: levels.iter().map(|l| l.codes.clone()).collect(),
            }),
        }
    }

    fn epilogue(&mut self, stage: &str, e: &Epilogue, input_zero: &[i32]) {
        match e {
            Epilogue::Plain(out) => self.encoder(stage, out, input_zero),
            Epilogue::Relu { out, floor } => {
                self.encoder(stage, out, input_zero);
                self.nonlinear = Some(serde_json::json!({
                    "function": "relu: max(code, code of real 0)",
                    "floor": floor,
                }));
            }
            Epilogue::Hardswish {
                to_t,
                j,
                p_range,
                out,
            } => {
                self.requant(
                    &format!("{stage} → hardswish input t at 3/2^j"),
                    to_t,
                    input_zero,
                );
                self.encoder("hardswish product → output", out, &[0]);
                self.nonlinear = Some(serde_json::json!({
                    "function": "hardswish: p = clamp(t·clamp(t + 2^j, 0, 2^(j+1)), p_range)",
                    "j": j,
                    "p_range": p_range,
                }));
            }
        }
    }
}

/// The constants of one step, with its output point's encoding when it has one.
pub fn step_constants(op: &StepOp, output: Option<&Encoding>) -> StepConstants {
    let mut c = StepConstants {
        output_encoding: output.map(encoding_json),
        ..Default::default()
    };
    let none: &[i32] = &[0];
    match op {
        StepOp::Weighted(w) => match &w.output {
            Output::Epilogue(e) => c.epilogue("accumulator + bias → output", e, none),
            Output::Logits(r) => c.requant("accumulator + bias → logits (one scale)", r, none),
            Output::Gelu {
                to_x, gelu, out, ..
            } => {
                c.requant("accumulator + bias → GELU input x", to_x, none);
                c.encoder("x·σ(z) → output", out, none);
                c.nonlinear = Some(serde_json::json!({
                    "function": "gelu: x·σ(z), z the tanh form; t = (c1·min(|x|, limit) + c3·min(|x|, limit)³ + 2^(shift−1)) >> shift at 2^−input_bits; e = 2^−t·2^30; σ = 2^30 or e over 2^30 + e",
                    "c1": gelu.c1,
                    "c3": gelu.c3,
                    "shift": gelu.shift,
                    "limit": gelu.limit,
                    "input_bits": GELU_INPUT_BITS,
                    "sigmoid_bits": SIGMOID_BITS,
                }));
            }
        },
        StepOp::Add(a) => {
            c.rescale.push(Rescale {
                stage: "a·m_a + b·m_b → output (one shared shift)".into(),
                multiplier: a.m_a.iter().chain(&a.m_b).copied().collect(),
                shift: a.k.clone(),
                addend: a.addend.iter().map(|&v| v as i128).collect(),
                input_zero_point: a.zero_a.iter().chain(&a.zero_b).copied().collect(),
                rounding: ROUNDING,
                saturate: (a.qmin, a.qmax),
            });
            c.nonlinear = Some(serde_json::json!({
                "layout": "multiplier and input_zero_point hold operand a's channels, then b's",
            }));
        }
        StepOp::Pool(p) => c.encoder("sum over the plane → output", &p.out, &p.zero),
        StepOp::ClassPos(p) => c.rescale.push(Rescale {
            stage: "patch + position embedding → output".into(),
            multiplier: p.multiplier.iter().map(|d| d.m as i64).collect(),
            shift: p.multiplier.iter().map(|d| d.k).collect(),
            addend: p.addend.iter().map(|&v| v as i128).collect(),
            input_zero_point: p.zero.clone(),
            rounding: ROUNDING,
            saturate: (p.qmin, p.qmax),
        }),
        StepOp::LayerNorm(l) => {
            c.epilogue("I-LayerNorm z → output (γ, β folded)", &l.out, none);
            c.nonlinear = Some(serde_json::json!({
                "function": "i_layernorm: y = (q − zero) << shift; exact mean (half even), ten Newton steps from 2^16, z = (y·⌊(2^31−1)/std⌋) >> 1",
                "zero": l.zero,
                "shift": l.shift,
            }));
        }
        StepOp::ScoresSoftmax(s) => {
            c.requant(
                "q·kᵀ → base-2 exponent at 2^−input_bits",
                &s.to_x,
                &[s.zero],
            );
            c.thresholds.push(Thresholds {
                stage: format!("probability at 2^−{PROBABILITY_BITS} → output"),
                thresholds: vec![s.codes.thresholds.clone()],
                codes: vec![s.codes.codes.clone()],
            });
            c.nonlinear = Some(serde_json::json!({
                "function": "softmax_row: e = 2^−(max − x)/2^input_bits (quadratic fraction), one normalised reciprocal per row",
                "input_bits": s.input_bits,
                "exp_bits": EXP_BITS,
                "probability_bits": PROBABILITY_BITS,
                "fraction_b_q16": FRACTION_B,
                "fraction_a_q16": (1 << 15) + FRACTION_B,
            }));
        }
        StepOp::Mix(m) => {
            c.encoder("P·V → output", &m.out, &[m.zero]);
            c.nonlinear = Some(serde_json::json!({
                "probability_of_code": m.probability,
            }));
        }
        StepOp::Context(x) => {
            c.encoder("v·kᵀ products → output", &x.products, &x.zero);
            c.encoder("key sums → output", &x.key_sums, &x.zero);
        }
        StepOp::Query(q) => {
            c.encoder("dividends → output", &q.dividends, &q.zero);
            c.encoder("divisors → output", &q.divisors, &q.zero);
            c.nonlinear = Some(serde_json::json!({
                "product_zero": q.product_zero,
                "key_sum_zero": q.key_sum_zero,
            }));
        }
        StepOp::Normalize(n) => {
            c.requant(
                "dividend → output (before the division)",
                &n.out,
                &[n.dividend_zero],
            );
            c.nonlinear = Some(match &n.divide {
                Divide::Shift => serde_json::json!({
                    "divide": "log2 divisor code c: shift left by c",
                    "out_zero": n.out_zero,
                }),
                Divide::Integer { divisor } => serde_json::json!({
                    "divide": "integer division by the divisor code's value",
                    "divisor_of_code": divisor,
                    "out_zero": n.out_zero,
                }),
            });
        }
        StepOp::Concat | StepOp::TakeClassToken { .. } => {}
    }
    c
}

fn encoding_json(e: &Encoding) -> serde_json::Value {
    match e {
        Encoding::Linear {
            scale,
            zero,
            offset,
            qmin,
            qmax,
        } => serde_json::json!({
            "kind": "uniform",
            "scale": scale,
            "zero_point": zero,
            "offset": offset,
            "qmin": qmin,
            "qmax": qmax,
        }),
        Encoding::Log(l) => serde_json::json!({
            "kind": "log",
            "bits": l.bits,
            "root": l.root,
            "scale": l.scale,
            "zero_code": l.zero_code,
        }),
    }
}
