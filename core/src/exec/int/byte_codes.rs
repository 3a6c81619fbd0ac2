//! Codes stored as bytes between two weighted steps. A conv's codes are i32 in the executor's
//! values, but where every step that reads them multiplies them as bytes — a 1×1 conv packs
//! each code plus its `lift` into the product's u8 operand, a depthwise conv reads them as
//! such bytes too — the producing step can store them so: one byte per code, a quarter of the
//! memory its epilogue writes and its readers read. EfficientViT's MBConvs pass their largest
//! values (the expanded channels, into and out of the depthwise conv) this way.
//!
//! A value stored as bytes is still a `Buffer<i32>` (of `⌈len/4⌉` words, its bytes in
//! order), so the executor's buffers and spares serve both; [`plan`] says which values are,
//! and with which `lift`. The codes are the same: each byte is `code + lift`, which the plan
//! checks lies in `0..=255` for every code the producer's encoder can give.

use super::ops::weighted::{Geometry, Output, Weighted, Weights};
use super::program::{IntProgram, StepOp};
use super::requant::{Encoder, Epilogue};

/// How a weighted step's input or output codes lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// One i32 per code.
    Codes,
    /// One byte per code: the code plus `lift`, a u8.
    Bytes { lift: i32 },
}

impl Store {
    /// The i32 words `len` codes take.
    pub fn words(self, len: usize) -> usize {
        match self {
            Store::Codes => len,
            Store::Bytes { .. } => len.div_ceil(4),
        }
    }
}

/// Per node, how the executor stores its codes: [`Store::Bytes`] where the node is a conv's
/// output (an epilogue into a linear encoding) and every step that reads it is a conv that
/// takes bytes (a depthwise conv, or a 1×1 conv on one group that packs its input as it
/// lies), all with the same `lift`, under which every code the encoder gives is a u8; else
/// [`Store::Codes`]. Layers that run a run of images at once ([`Weighted::stacks`]) neither
/// give nor take bytes, nor does the program's output.
pub fn plan(program: &IntProgram) -> Vec<Store> {
    let mut stores = vec![Store::Codes; program.nodes];
    let mut readers: Vec<Vec<&Weighted>> = vec![Vec::new(); program.nodes];
    let mut others = vec![false; program.nodes];
    for step in &program.steps {
        for &input in &step.inputs {
            match &step.op {
                StepOp::Weighted(w) if step.inputs.len() == 1 && takes_bytes(w) => {
                    readers[input].push(w)
                }
                _ => others[input] = true,
            }
        }
    }
    for step in &program.steps {
        let StepOp::Weighted(w) = &step.op else {
            continue;
        };
        let n = step.node;
        let Some((qmin, qmax)) = gives_bytes(w) else {
            continue;
        };
        let Some(first) = readers[n].first() else {
            continue;
        };
        let lift = first.lift;
        let one_lift = readers[n].iter().all(|r| r.lift == lift);
        let bytes = qmin + i64::from(lift) >= 0 && qmax + i64::from(lift) <= 255;
        if !others[n] && one_lift && bytes && n != program.output {
            stores[n] = Store::Bytes { lift };
        }
    }
    stores
}

/// Whether `w` can read its input as bytes: a conv that does not stack, either depthwise or a
/// 1×1 conv (stride 1, no padding) on one group of 8-bit weights, whose packing reads the
/// input as it lies.
fn takes_bytes(w: &Weighted) -> bool {
    let Geometry::Conv { conv, .. } = &w.geometry else {
        return false;
    };
    if w.stacks() || w.token_major.is_some() {
        return false;
    }
    match &w.weights {
        Weights::Depthwise(_) => true,
        Weights::Int8(groups) => {
            groups.len() == 1 && conv.kernel == 1 && conv.stride == 1 && conv.padding == 0
        }
        Weights::Wide(_) => false,
    }
}

/// The code range of `w`'s output if it can write its codes as bytes: a conv that does not
/// stack, of 8-bit or depthwise weights, whose epilogue encodes linearly.
fn gives_bytes(w: &Weighted) -> Option<(i64, i64)> {
    let conv = matches!(w.geometry, Geometry::Conv { .. });
    let weights = matches!(w.weights, Weights::Int8(_) | Weights::Depthwise(_));
    if !conv || !weights || w.stacks() || w.token_major.is_some() {
        return None;
    }
    let Output::Epilogue(
        Epilogue::Plain(Encoder::Linear(r))
        | Epilogue::Relu {
            out: Encoder::Linear(r),
            ..
        }
        | Epilogue::Hardswish {
            out: Encoder::Linear(r),
            ..
        },
    ) = &w.output
    else {
        return None;
    };
    Some((r.qmin, r.qmax))
}

/// The bytes of a value stored as bytes.
pub fn as_bytes(words: &[i32]) -> &[u8] {
    bytemuck::cast_slice(words)
}

/// [`as_bytes`] to write.
pub fn as_bytes_mut(words: &mut [i32]) -> &mut [u8] {
    bytemuck::cast_slice_mut(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::int::kernels::Isa;
    use crate::exec::int::kernels::bytes::{narrow, widen};

    #[test]
    fn bytes_round_trip() {
        for lift in [0, 128] {
            let codes: Vec<i32> = (0..1000).map(|i| (i * 37 % 256) - lift).collect();
            for isa in Isa::available() {
                let mut words = vec![0i32; Store::Bytes { lift }.words(codes.len())];
                narrow(
                    isa,
                    &codes,
                    lift,
                    &mut as_bytes_mut(&mut words)[..codes.len()],
                );
                let mut back = vec![0; codes.len()];
                widen(isa, &as_bytes(&words)[..codes.len()], lift, &mut back);
                assert_eq!(back, codes, "{} lift {lift}", isa.name());
            }
        }
    }
}
