//! Running an [`IntProgram`]: quantize the image at the boundary, run the steps on integer
//! codes, and report the logits (integers at one common scale) as reals. Images run in
//! parallel, a run of them per thread: each image's steps in order, from the first 1×1 conv
//! on a small map layer by layer over groups of the run's images (such a conv multiplies a
//! group's images at once), and the program's token tail (the classifier head) once for the
//! run's tokens together. Every image's codes are those it gets alone, so results never depend
//! on the thread count or the batch.

use std::ops::Range;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::byte_codes::{self, Store, as_bytes};
use super::kernels::bytes::widen;
use super::kernels::{Isa, Width, width};
use super::ops::weighted::Stores;
use super::ops::{Ctx, Scratch};
use super::program::{IntProgram, Step, StepOp, TokenTail};
use crate::error::{Error, Result};
use crate::eval::Classifier;
use crate::exec::helper_threads::with_helper_threads;
use crate::exec::spare::Buffer;
use crate::exec::step_time::StepTime;
use crate::graph::NodeId;
use crate::quant::quantizer::{Rounding, Uniform};
use crate::quant::uniform_lanes::{Grid, code_slice};
use crate::tensor::Tensor;

/// The most images a run takes layer by layer together (a longer run goes in groups of this
/// many): the group's values then stay in cache from one step to the next. Layer by layer over
/// a run of 32 images, B1 had gained nothing (0.998× the time image by image, `cargo bench -p
/// qvit-core --bench alternating -- stacked`), against 0.96–0.98× for runs of 4 and 8; and a
/// product of 1,568 columns (B1's 14×14 maps, 8 images) had run slower stacked than image by
/// image, its sums past L1 (BENCHMARKS.md, "B1's 7×7 convs over a run of images"). An
/// evaluation's batches of 100 give each of two threads a run of 50.
const STACK_IMAGES: usize = 8;

/// The integer-only executor.
#[derive(Debug, Clone, Copy)]
pub struct IntExecutor<'p> {
    program: &'p IntProgram,
    isa: Isa,
    /// Whether a run of images takes the layers that stack together (see
    /// [`IntExecutor::with_stacking`]).
    stacking: bool,
    /// Whether values pass between convs as bytes where they can, if not as the kernels
    /// choose (see [`IntExecutor::with_byte_codes`]).
    byte_codes: Option<bool>,
}

impl<'p> IntExecutor<'p> {
    /// On the best kernels this CPU has.
    pub fn new(program: &'p IntProgram) -> Self {
        Self {
            program,
            isa: Isa::detect(),
            stacking: true,
            byte_codes: None,
        }
    }

    pub fn with_isa(self, isa: Isa) -> Self {
        Self { isa, ..self }
    }

    /// Whether a thread's run of images goes layer by layer from the first 1×1 conv on a
    /// small map, each such conv taking a group of the run's images at once (the default), or
    /// image by image throughout. The same codes either way; for comparisons of the two.
    pub fn with_stacking(self, stacking: bool) -> Self {
        Self { stacking, ..self }
    }

    /// Whether the values that only convs read, and read as bytes, are stored as bytes (see
    /// [`byte_codes`](super::byte_codes)), or every value as i32 codes. The same codes either
    /// way. By default they are with AVX-512 kernels, whose epilogues store their lanes as
    /// bytes; with AVX2 ones, which write a row of codes first, they ran no faster (B1
    /// `QVIT_ISA=avx2`, BENCHMARKS.md).
    pub fn with_byte_codes(self, byte_codes: bool) -> Self {
        Self {
            byte_codes: Some(byte_codes),
            ..self
        }
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn program(&self) -> &'p IntProgram {
        self.program
    }

    /// The image's codes.
    pub fn quantize_image(&self, image: &[f32]) -> Vec<i32> {
        let mut codes = vec![0; image.len()];
        self.quantize_image_into(image, &mut codes);
        codes
    }

    /// [`IntExecutor::quantize_image`] into `codes` (as long as `image`).
    fn quantize_image_into(&self, image: &[f32], codes: &mut [i32]) {
        // `input.code(x, 0)` for every pixel, in lanes.
        let q = &self.program.input;
        let (s, z) = q.parameters(0);
        let (qmin, qmax) = Uniform::levels(q.bits, q.symmetric);
        let grid = Grid {
            qmin,
            qmax,
            rounding: Rounding::HalfUp,
        };
        code_slice(image, s, z, &grid, codes);
    }

    /// Runs one image; `keep` says which nodes' codes to return (all others are dropped as soon
    /// as their last reader has run). Returns the codes per node (empty where not kept) with the
    /// logits always kept.
    pub fn run_image(&self, image: &[f32], keep: &dyn Fn(usize) -> bool) -> Vec<Vec<i32>> {
        let p = self.program;
        let end = p.steps.len();
        let stores = self.stores(&|_| false);
        let values = Scratch::with_thread_local(|scratch| {
            self.run_image_with(image, (end, &stores), keep, scratch, &mut |_, _| {})
        });
        // Values kept as bytes are returned as their codes.
        let mut lens = vec![0; p.nodes];
        for step in &p.steps {
            if let StepOp::Weighted(w) = &step.op {
                lens[step.node] = w.output_len(&[]);
            }
        }
        (values.into_iter().zip(stores).enumerate())
            .map(|(n, (value, store))| match store {
                Store::Bytes { lift } if !value.is_empty() => {
                    let mut codes = vec![0; lens[n]];
                    widen(self.isa, &as_bytes(&value)[..lens[n]], lift, &mut codes);
                    codes
                }
                _ => value.into_vec(),
            })
            .collect()
    }

    /// Where an image's time goes: `rounds` runs of `image` (at least one), each step timed as
    /// it runs (the pool's threads helping inside it, as at batch 1), and each step's median
    /// time, in program order.
    pub fn time_steps(&self, image: &[f32], rounds: usize) -> Vec<StepTime> {
        let p = self.program;
        let mut times = vec![Vec::new(); p.steps.len()];
        let stores = self.stores(&|_| false);
        let run = (p.steps.len(), stores.as_slice());
        Scratch::with_thread_local(|scratch| {
            for _ in 0..rounds.max(1) {
                let mut record = |i: usize, d: Duration| times[i].push(d);
                let values = self.run_image_with(image, run, &|_| false, scratch, &mut record);
                values.into_iter().for_each(|v| scratch.spare.keep(v));
            }
        });
        p.steps
            .iter()
            .zip(times)
            .map(|(step, mut t)| {
                t.sort();
                let ((kind, shape), macs) = match &step.op {
                    StepOp::Weighted(w) => (w.describe(), w.macs()),
                    op => ((op.kind(), String::new()), 0),
                };
                StepTime {
                    name: step.name.clone(),
                    kind,
                    shape,
                    macs,
                    seconds: t[t.len() / 2].as_secs_f64(),
                }
            })
            .collect()
    }

    /// How each node's codes are stored on this run: as [`byte_codes::plan`] says, but for
    /// the nodes `as_codes` picks, which are stored as i32 codes.
    fn stores(&self, as_codes: &dyn Fn(usize) -> bool) -> Vec<Store> {
        let on = (self.byte_codes).unwrap_or(width(self.isa) == Width::Avx512);
        let mut stores = match on {
            true => byte_codes::plan(self.program),
            false => vec![Store::Codes; self.program.nodes],
        };
        for (n, store) in stores.iter_mut().enumerate() {
            if as_codes(n) {
                *store = Store::Codes;
            }
        }
        stores
    }

    /// [`IntExecutor::run_image`] through the steps before `end`, each node's codes stored as
    /// `stores` says, with the buffers of `scratch`, which keeps what the image leaves for
    /// the next one: a batch's images after the first reuse every step's output allocation
    /// instead of asking for (and zeroing) new ones.
    /// `on_step` hears how long each step took.
    fn run_image_with(
        &self,
        image: &[f32],
        (end, stores): (usize, &[Store]),
        keep: &dyn Fn(usize) -> bool,
        scratch: &mut Scratch,
        on_step: &mut dyn FnMut(usize, Duration),
    ) -> Vec<Buffer<i32>> {
        let p = self.program;
        let mut values: Vec<Buffer<i32>> = vec![Buffer::default(); p.nodes];
        // The image's codes take a spare buffer like every step's output, which keeps the
        // spares no more than the values an image holds at its peak; a new one per image,
        // kept when freed, grew a thread's spares by one buffer per image for good.
        values[0] = scratch.spare.take(image.len());
        self.quantize_image_into(image, &mut values[0]);
        for (i, step) in p.steps[..end].iter().enumerate() {
            let out = {
                let inputs: Vec<&[i32]> = step.inputs.iter().map(|&k| &*values[k]).collect();
                let started = Instant::now();
                let out = self.run_step_stored(step, &inputs, stores, scratch);
                on_step(i, started.elapsed());
                out
            };
            values[step.node] = out;
            for &input in &step.inputs {
                if p.last_use[input] == i && !keep(input) {
                    scratch.spare.keep(std::mem::take(&mut values[input]));
                }
            }
        }
        if !keep(0) && p.last_use[0] != usize::MAX {
            scratch.spare.keep(std::mem::take(&mut values[0]));
        }
        values
    }

    /// Runs one step on the given input codes (one slice per input of the step).
    pub fn run_step(&self, step: &Step, x: &[&[i32]], scratch: &mut Scratch) -> Buffer<i32> {
        let stores = vec![Store::Codes; self.program.nodes];
        self.run_step_stored(step, x, &stores, scratch)
    }

    /// [`IntExecutor::run_step`] on values stored as `stores` says (only weighted steps read
    /// or write bytes).
    fn run_step_stored(
        &self,
        step: &Step,
        x: &[&[i32]],
        stores: &[Store],
        scratch: &mut Scratch,
    ) -> Buffer<i32> {
        let ctx = Ctx { isa: self.isa };
        // The spare buffer that fits best: the largest, taken for any output, had left large
        // outputs to new zeroed allocations (the logits, kept past the image, in the largest
        // buffer: a 3 MB `memset` per image of B1 at batch 1, serial).
        let mut out = scratch
            .spare
            .take(stores[step.node].words(step.op.output_len(x)));
        match &step.op {
            StepOp::Weighted(w) => {
                let stores = Stores {
                    input: stores[step.inputs[0]],
                    output: stores[step.node],
                };
                w.run_stored(ctx, x[0], &mut out, stores, scratch)
            }
            StepOp::Add(a) => a.run(self.isa, x[0], x[1], &mut out),
            StepOp::Pool(pool) => pool.run(x[0], &mut out),
            StepOp::ClassPos(c) => c.run(x[0], &mut out),
            StepOp::LayerNorm(l) => l.run(self.isa, x[0], &mut out, scratch),
            StepOp::ScoresSoftmax(s) => s.run(self.isa, x[0], &mut out, scratch),
            StepOp::Mix(m) => m.run(self.isa, x[0], x[1], &mut out),
            StepOp::Context(c) => c.run(self.isa, x[0], &mut out),
            StepOp::Query(q) => q.run(self.isa, x[0], x[1], &mut out),
            StepOp::Normalize(n) => n.run(self.isa, x[0], &mut out),
            StepOp::Concat => out.concat(x),
            StepOp::TakeClassToken { dim } => out.concat(&[&x[0][..*dim]]),
        }
        out
    }

    /// Logits `[B, classes]` as reals (integer logits × their common scale).
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let p = self.program;
        if images.shape.len() != 4 || images.shape[0] == 0 {
            return Err(Error::Graph {
                model: p.model.clone(),
                layer: "input".into(),
                message: format!(
                    "expected a batch of images [B, C, H, W], got {:?}",
                    images.shape
                ),
            });
        }
        let batch = images.shape[0];
        let item = images.item_len();
        // One run of images per thread, each with the thread's scratch, which the next image
        // (and the next batch) reuses (rayon's `map_init` would make one per split).
        let per_thread = batch.div_ceil(rayon::current_num_threads().max(1));
        // Fewer runs than threads (a batch of one): the idle threads help with each image's
        // splits rather than sleep between them.
        let tail = p.token_tail();
        let rows: Vec<Vec<i32>> = with_helper_threads(batch.div_ceil(per_thread), || {
            images
                .data
                .par_chunks(item * per_thread)
                .map(|run| {
                    Scratch::with_thread_local(|scratch| self.run_images(run, item, tail, scratch))
                })
                .collect()
        });
        let logits: Vec<f32> = rows
            .concat()
            .iter()
            .map(|&v| (v as f64 * p.logit_scale) as f32)
            .collect();
        let classes = logits.len() / batch;
        Ok(Tensor::new(vec![batch, classes], logits))
    }

    /// The integer logits of a run of images (`item` values each) on this thread: each image
    /// through the steps before the program's token `tail` ([`STACK_IMAGES`] at a time: image
    /// by image, then layer by layer from the first step that stacks,
    /// [`IntProgram::stacked_from`]), then the tail once for the run's tokens together (the
    /// same codes as image by image: see [`IntProgram::token_tail`]).
    fn run_images(
        &self,
        images: &[f32],
        item: usize,
        tail: Option<TokenTail>,
        scratch: &mut Scratch,
    ) -> Vec<i32> {
        let p = self.program;
        let (end, wanted) = match tail {
            Some(t) => (t.start, t.input),
            None => (p.steps.len(), p.output),
        };
        // The tail's input tokens, or the logits, of every image in turn: a group of images
        // at a time, each image alone up to the first step that runs the group together,
        // then the steps up to `end` one at a time for every image of the group (see
        // `run_layers`).
        let count = images.len() / item;
        let stores = self.stores(&|n| n == wanted);
        let mut rows: Option<Buffer<i32>> = None;
        for (g, group) in images.chunks(item * STACK_IMAGES).enumerate() {
            let together = match group.len() > item && self.stacking {
                true => p.stacked_from(end),
                false => end,
            };
            let needed_later = |n: usize| n == wanted || p.last_use[n] >= together;
            let mut runs: Vec<Vec<Buffer<i32>>> = group
                .chunks(item)
                .map(|image| {
                    let run = (together, stores.as_slice());
                    self.run_image_with(image, run, &needed_later, scratch, &mut |_, _| {})
                })
                .collect();
            self.run_layers((together..end, &stores), wanted, &mut runs, scratch);
            for (i, values) in runs.into_iter().enumerate() {
                let row = &values[wanted];
                let all = rows.get_or_insert_with(|| scratch.spare.take(count * row.len()));
                let at = g * STACK_IMAGES + i;
                all[at * row.len()..(at + 1) * row.len()].copy_from_slice(row);
                // Every buffer serves the next image.
                values.into_iter().for_each(|v| scratch.spare.keep(v));
            }
        }
        let mut rows = rows.expect("a run holds at least one image");
        for step in &p.steps[end..] {
            let out = self.run_step(step, &[&rows], scratch);
            scratch.spare.keep(std::mem::replace(&mut rows, out));
        }
        let logits = rows.to_vec();
        // The logits' buffer serves the next run.
        scratch.spare.keep(rows);
        logits
    }

    /// The program's `steps` layer by layer over a run of images, `runs[i]` the values of
    /// image `i` (those that later steps read, stored as `stores` says): a layer that
    /// [`Weighted::stacks`] runs every image at once (on codes: such layers neither read nor
    /// write bytes), any other step image by image. Every value is the one the image alone
    /// gives (each image's steps run in program order on its own values), and each image's
    /// values that no later step reads, other than `wanted`, go back to the spares.
    ///
    /// [`Weighted::stacks`]: super::ops::weighted::Weighted::stacks
    fn run_layers(
        &self,
        (steps, stores): (Range<usize>, &[Store]),
        wanted: NodeId,
        runs: &mut [Vec<Buffer<i32>>],
        scratch: &mut Scratch,
    ) {
        let p = self.program;
        let ctx = Ctx { isa: self.isa };
        for i in steps {
            let step = &p.steps[i];
            match &step.op {
                StepOp::Weighted(w) if w.stacks() => {
                    let len = w.output_len(&[]);
                    let mut outs: Vec<Buffer<i32>> =
                        runs.iter().map(|_| scratch.spare.take(len)).collect();
                    let xs: Vec<&[i32]> = runs.iter().map(|v| &*v[step.inputs[0]]).collect();
                    w.run_stacked(ctx, &xs, &mut outs, scratch);
                    for (values, out) in runs.iter_mut().zip(outs) {
                        values[step.node] = out;
                    }
                }
                _ => {
                    for values in runs.iter_mut() {
                        let inputs: Vec<&[i32]> =
                            step.inputs.iter().map(|&k| &*values[k]).collect();
                        let out = self.run_step_stored(step, &inputs, stores, scratch);
                        values[step.node] = out;
                    }
                }
            }
            for values in runs.iter_mut() {
                for &input in &step.inputs {
                    if p.last_use[input] == i && input != wanted {
                        scratch.spare.keep(std::mem::take(&mut values[input]));
                    }
                }
            }
        }
    }
}

impl Classifier for IntExecutor<'_> {
    fn logits(&self, images: &Tensor) -> Result<Tensor> {
        self.forward(images)
    }
}
