//! The integer program's steps, one module per kind of op. Each step reads the integer codes of
//! earlier values and writes the codes of one value; all constants were computed by
//! [`super::compile`].

pub mod elementwise;
pub mod layernorm;
pub mod linear_attention;
pub mod softmax_attention;
pub mod token_major;
pub mod weighted;

use std::cell::Cell;

use super::kernels::Isa;
use crate::exec::spare::{Buffer, SpareBuffers, with_kept};

/// Reusable buffers of one worker, so steps do not allocate per call once warm.
#[derive(Debug, Default)]
pub struct Scratch {
    pub packed: Buffer<u8>,
    pub acc: Vec<i32>,
    pub wide: Vec<i64>,
    pub centred: Vec<i16>,
    pub codes: Vec<i32>,
    /// Values no later step reads, for later steps' outputs.
    pub spare: SpareBuffers<i32>,
}

impl Scratch {
    /// Runs `f` with this thread's scratch, kept from its last run for the next: a batch of
    /// one (or the first image of a thread's share of a batch) would otherwise allocate and
    /// zero every step's output afresh, since a fresh scratch has no spare buffers. A run
    /// nested in another on the same thread (a rayon worker stealing another image while it
    /// waits) gets an empty scratch of its own; the last to finish is kept. The price is the
    /// memory of the thread's last run, held until its next: no more than the run's peak
    /// (peak RSS of `qvit bench efficientvit-b1 --executors int --batch 1,8 --seconds 1`:
    /// 224–263 MB before, 225 MB after).
    pub fn with_thread_local<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        thread_local! {
            static KEPT: Cell<Scratch> = Cell::default();
        }
        with_kept(&KEPT, f)
    }
}

/// How a step runs.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub isa: Isa,
}
