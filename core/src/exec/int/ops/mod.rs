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
    /// Buffers of values no later step reads, handed out again as steps' outputs: a fresh
    /// allocation of a large value costs a page fault per 4 KiB as it is first written.
    spare: Vec<Vec<i32>>,
}

/// Spare value buffers kept at most (the largest are kept).
const SPARE_BUFFERS: usize = 8;

impl Scratch {
    /// An empty buffer for a step's output: the largest spare one, or a new one.
    pub fn output_buffer(&mut self) -> Vec<i32> {
        let largest = (0..self.spare.len()).max_by_key(|&i| self.spare[i].capacity());
        let mut buffer = largest.map_or_else(Vec::new, |i| self.spare.swap_remove(i));
        buffer.clear();
        buffer
    }

    /// Keeps the buffer of a value no later step reads, for [`Scratch::output_buffer`].
    pub fn recycle(&mut self, buffer: Vec<i32>) {
        if buffer.capacity() == 0 {
            return;
        }
        self.spare.push(buffer);
        if self.spare.len() > SPARE_BUFFERS {
            let smallest = (0..self.spare.len()).min_by_key(|&i| self.spare[i].capacity());
            if let Some(i) = smallest {
                self.spare.swap_remove(i);
            }
        }
    }
}

/// How a step runs.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub isa: Isa,
}
