//! The integer program's steps, one module per kind of op. Each step reads the integer codes of
//! earlier values and writes the codes of one value; all constants were computed by
//! [`super::compile`].

pub mod elementwise;
pub mod layernorm;
pub mod linear_attention;
pub mod softmax_attention;
pub mod weighted;

use super::kernels::Isa;
use crate::exec::spare::SpareBuffers;

/// Reusable buffers of one worker, so steps do not allocate per call once warm.
#[derive(Debug, Default)]
pub struct Scratch {
    pub packed: Vec<u8>,
    pub acc: Vec<i32>,
    pub wide: Vec<i64>,
    pub centred: Vec<i16>,
    pub codes: Vec<i32>,
    /// Values no later step reads, for later steps' outputs.
    pub spare: SpareBuffers<i32>,
}

/// How a step runs.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub isa: Isa,
}
