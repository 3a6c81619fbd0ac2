//! The integer non-linear functions, each a pure function on integers with its constants as
//! arguments: I-ViT's Shiftmax, ShiftGELU and I-LayerNorm (reference `i-vit.md` §2–4, with the
//! canonical semantics of §6.1), the executor's exactly normalised Softmax ([`softmax`]) and
//! tanh-form GELU ([`gelu`]), an integer Hardswish, and the threshold encoder that rounds a
//! value to logarithmic levels (the Trio-ViT divisor, log2 / log√2 attention).

pub mod gelu;
pub mod hardswish;
pub mod layernorm;
pub mod levels;
pub mod shiftexp;
pub mod softmax;

pub use gelu::gelu;
pub use hardswish::hardswish_product;
pub use layernorm::{i_layernorm, newton_sqrt, round_half_even_div};
pub use levels::LevelEncoder;
pub use shiftexp::{shift_exp, shift_gelu, shiftmax};
pub use softmax::softmax_row;
