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

/// `dst.copy_from_slice(src)` for a run of at least 16 codes as 16-code moves, the last one
/// overlapping the one before, which the compiler keeps in registers: `copy_from_slice` of a
/// length known only at run time is a `memmove` call. Per channel and image of a stacked
/// product (49 codes on B1's 7×7 maps) that was 1 % of B1's integer time at batch 8, per run
/// of a patch (DeiT's 16 codes) 1.1 % of DeiT-T's (`perf`). Shorter runs are copied by it.
fn copy_run(dst: &mut [i32], src: &[i32]) {
    const RUN: usize = 16;
    let n = dst.len();
    assert_eq!(n, src.len(), "a run of codes into one as long");
    if n < RUN {
        return dst.copy_from_slice(src);
    }
    let mut copy = |at: usize| {
        let to: &mut [i32; RUN] = (&mut dst[at..at + RUN]).try_into().expect("16 codes");
        *to = src[at..at + RUN].try_into().expect("16 codes");
    };
    for at in (0..n - RUN).step_by(RUN) {
        copy(at);
    }
    copy(n - RUN);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_copy_whatever_their_length() {
        for n in 0..70 {
            let src: Vec<i32> = (0..n as i32).map(|v| v * 7 - 3).collect();
            let mut dst = vec![-1; n];
            copy_run(&mut dst, &src);
            assert_eq!(dst, src, "{n} codes");
        }
    }
}
