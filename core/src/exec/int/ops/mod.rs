//! The integer program's steps, one module per kind of op. Each step reads the integer codes of
//! earlier values and writes the codes of one value; all constants were computed by
//! [`super::compile`].

pub mod elementwise;
pub mod layernorm;
pub mod linear_attention;
pub mod softmax_attention;
pub mod weighted;

use super::kernels::Isa;

/// Reusable buffers of one worker, so steps do not allocate per call once warm.
#[derive(Debug, Default)]
pub struct Scratch {
    pub packed: Vec<u8>,
    pub acc: Vec<i32>,
    pub wide: Vec<i64>,
    pub centred: Vec<i16>,
    pub codes: Vec<i32>,
    /// Values no later step reads, kept for the next steps' outputs ([`Scratch::output`]).
    spare: Vec<Vec<i32>>,
}

impl Scratch {
    /// A buffer for a step's output: the roomiest spare one, or a new one. Its length and
    /// contents are a former value's; every op sets the length it writes, so a step whose
    /// kernels write every element zeroes only what the buffer grows by.
    pub fn output(&mut self) -> Vec<i32> {
        let roomiest = (0..self.spare.len()).max_by_key(|&i| self.spare[i].capacity());
        roomiest.map_or_else(Vec::new, |i| self.spare.swap_remove(i))
    }

    /// Keeps a value no later step reads for [`Scratch::output`].
    pub fn recycle(&mut self, value: Vec<i32>) {
        if value.capacity() > 0 {
            self.spare.push(value);
        }
    }
}

/// Makes `buf` `len` long for a kernel that writes every element: a recycled buffer keeps its
/// former contents and only what it grows by is zeroed; one too small for `len` is emptied
/// first, so that growing it copies nothing.
pub fn resize_to_overwrite(buf: &mut Vec<i32>, len: usize) {
    if buf.capacity() < len {
        buf.clear();
    }
    buf.resize(len, 0);
}

/// How a step runs.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub isa: Isa,
}
