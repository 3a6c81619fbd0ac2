//! The integer-only executor: the network in integer arithmetic only, with scales existing at
//! compile time alone. [`compile`] turns a graph, its folded weights and a quant plan into an
//! [`IntProgram`] of integer constants; [`IntExecutor`] runs it.
//!
//! # Semantics
//!
//! Shared by every step, chosen once:
//! - **Codes.** Each stored tensor holds the integer codes of its quantizer (for uniform
//!   quantizers `q = ⌊x/s⌉ + z`). Its real value is `s_c·(q − z_c) + o_c`: per-channel scales come
//!   from Trio-ViT's migration, RepQ-ViT's per-channel LayerNorm outputs and FQ-ViT's power-of-
//!   two factors, offsets from filter-wise shifting. Log codes (log2, log√2) are decoded by
//!   table where they are multiplied, or used as shifts (Trio-ViT's divisor).
//! - **Requantization** multiplies an integer by a dyadic number `m/2^k` (`m` a signed 31-bit
//!   integer), adds one constant (zero-point, shift compensation, LayerNorm's β, all in units of
//!   `2^−k`) and rounds **half up**: `(v·m + a + 2^(k−1)) >> k` with an arithmetic shift, then
//!   saturates to the code range. This is TVM's `UPWARD` rounding, the one I-ViT's deployment
//!   graph runs; I-ViT's PyTorch simulator rounds half to even in float64, which differs only on
//!   exact ties. qvit's fake quantizers round the same way. The product is formed exactly (i128
//!   in this reference; at most 63 bits for a 32-bit accumulator).
//! - **Accumulators.** int8 products accumulate in i32, attention products, pooling sums and
//!   wide (> 8-bit) layers in i64. Every accumulator's bound is checked when the program is
//!   compiled, from the layer's own weight codes and code ranges (GEMM and conv sums,
//!   `q·kᵀ`, `P·V`, pooling, LayerNorm's variance, the Softmax's token count); a layer that
//!   could overflow is refused with an error naming it.
//! - **Biases** are i32 at the accumulator's scale `s_x·s_w[o]`; zero-points are folded into them.
//! - **Residual adds** bring both operands to the output scale with one shared shift and round
//!   once (I-ViT requantizes each operand, which rounds twice).
//! - **Non-linear functions**: see [`nonlinear`]. Softmax is qvit's exactly normalised
//!   integer Softmax ([`nonlinear::softmax`]: logits requantized to base-2 exponents at
//!   `2^−10`, a quadratic `2^−t`, one 32-bit reciprocal per row, probabilities at `2^−24`),
//!   not I-ViT's Shiftmax, whose reciprocal `⌊(2^31 − 1)/S⌋` loses up to half the row's mass
//!   on fine grids. GELU is the tanh form `x·σ(z)` with the sigmoid from one base-2
//!   exponential per element, 15 bits ([`nonlinear::gelu`], input at a quarter of the output
//!   step), not I-ViT's row-wise `x·σ(1.702x)` ShiftGELU with a 7-bit
//!   sigmoid ([`nonlinear::shift_gelu`], kept bit-exact to I-ViT). I-LayerNorm is I-ViT's
//!   (inputs promoted to ~16 bits by a left shift, ten Newton steps, γ and β in the
//!   requantization; the float ε is not modelled). Hardswish works on a value requantized to
//!   `3/2^j`.
//! - **Logits** are requantized per class to one common scale, so argmax over the integers is
//!   argmax over the real logits.
//! - **The image** is quantized once at the boundary with the plan's 8-bit image quantizer,
//!   exactly as the fake-quant executor does (this is the only float operation).

pub mod byte_codes;
pub mod code_table;
pub mod compile;
pub mod dyadic;
pub mod encoding;
pub mod executor;
pub mod kernels;
pub mod nonlinear;
pub mod ops;
pub mod program;
pub mod requant;
pub mod rescale;
pub mod vectors;

pub use compile::compile;
pub use executor::IntExecutor;
pub use program::IntProgram;
