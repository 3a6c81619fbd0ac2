//! The integer-only executor (in progress): the network in integer arithmetic only, with scales
//! existing at compile time alone.
//!
//! Semantics shared by every integer op, chosen once:
//! - **Requantization** multiplies an i32 accumulator by a dyadic number `m/2^k` (`m` a signed
//!   31-bit integer) in i64 and rounds **half up**: `(acc·m + 2^(k−1)) >> k` with an arithmetic
//!   shift. This is TVM's `UPWARD` rounding, the one I-ViT's deployment graph runs; its PyTorch
//!   simulator rounds half to even in float64, which differs only on exact ties. Half-up is a
//!   single add before the shift in hardware, and qvit's fake quantizers round the same way.
//! - **Saturation** clamps to the output type's range after rounding.

pub mod dyadic;
