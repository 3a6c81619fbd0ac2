//! The f32 reference executor: every op of both families, batched, images in parallel.
//!
//! With BatchNorm folded ([`FoldedWeights`]), a conv's output is already normalised and the
//! norm node passes it through unchanged. Observers see every node's output, which is how
//! calibration records its statistics.

pub mod depthwise;
mod depthwise_direct;
mod exp;
mod gelu;
#[cfg(target_arch = "x86_64")]
mod hardswish_lanes;
mod kernels;
mod one_token;
pub mod product;
mod row_sums;
mod shared_out;
mod stem_conv;
mod timing;
mod widest;

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::exec::helper_threads::with_helper_threads;
use crate::exec::spare::{Buffer, SpareBuffers};
use crate::graph::{Graph, NodeId, Op};
use crate::tensor::{Tensor, TensorMut};
use crate::weights::{FoldedWeights, NodeParams};

pub use exp::exp_shifted;
pub use gelu::gelu_in_place;
use kernels::ConvWeights;
pub use kernels::{gelu, hardswish};
use product::Activation;

std::thread_local! {
    static FORWARDS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether the CPU has AVX-512F, which the wider depthwise kernels need, and `QVIT_ISA` allows
/// them ([`crate::exec::cpu`]).
fn has_avx512f() -> bool {
    crate::exec::cpu::float_lanes() == crate::exec::cpu::FloatLanes::Avx512
}

/// Passes of the float model (unquantized, [`FloatExecutor::forward`] or
/// [`FloatExecutor::forward_observed`]) started on this thread: lets tests prove that work
/// which must not run the float model (re-quantizing from saved statistics) does not.
pub fn forwards_on_this_thread() -> usize {
    FORWARDS.with(|c| c.get())
}

/// A forward pass stopped between two nodes: the values later nodes still read.
#[derive(Debug)]
pub struct PartialForward {
    values: Vec<Option<Value>>,
    next: NodeId,
    batch: usize,
    /// Values no later node reads, for later nodes' outputs.
    spare: SpareBuffers<f32>,
    /// Whether convs apply the activations they absorb ([`Fusions`]): only in a pass whose
    /// transform does nothing, since the conv's own output is never stored.
    fuse: bool,
}

/// A node's output within a pass: its shape, batch first, and its numbers in a [`Buffer`],
/// which remembers what was written past them. A `Vec` cut to a value's length forgets it, so
/// a spare that had held a small value was zeroed again to hold a large one (`memset`, 3.7 %
/// of EfficientViT-B1's fp32 time at batch 8 by `perf`); transforms see it as a [`TensorMut`].
#[derive(Debug)]
struct Value {
    shape: Vec<usize>,
    data: Buffer<f32>,
}

impl Value {
    fn new(shape: Vec<usize>, data: Buffer<f32>) -> Self {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "{shape:?}");
        Self { shape, data }
    }

    /// The `i`-th image's numbers.
    fn item(&self, i: usize) -> &[f32] {
        let n: usize = self.shape[1..].iter().product();
        &self.data[i * n..(i + 1) * n]
    }

    /// The value to read or rewrite in place.
    fn view(&mut self) -> TensorMut<'_> {
        TensorMut {
            shape: &self.shape,
            data: &mut self.data,
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Self::new(t.shape, Buffer::from(t.data))
    }
}

/// A copy holds the numbers only, not what was written past them.
impl Clone for Value {
    fn clone(&self) -> Self {
        Self::new(self.shape.clone(), Buffer::from(self.data.to_vec()))
    }
}

/// A copy holds the values; spare buffers are not copied (a copy starts without).
impl Clone for PartialForward {
    fn clone(&self) -> Self {
        Self {
            values: self.values.clone(),
            next: self.next,
            batch: self.batch,
            spare: SpareBuffers::default(),
            fuse: self.fuse,
        }
    }
}

impl PartialForward {
    /// The first node not yet run.
    pub fn next(&self) -> NodeId {
        self.next
    }
}

/// Images per group of a [`GroupedForward`]. Run as one batch, every node's output for the
/// whole batch streams through memory before the next node reads it (64 images of the micro
/// EfficientViT's 64×14×14 maps are 3.2 MB, past a core's L2); a group's stay in cache from
/// node to node. Measured on the micro EfficientViT's output-aware search (64 images): of 4, 8,
/// 16 and 64, 8 was the fastest in two of three rounds (BENCHMARKS.md, "Grouped passes").
pub const GROUP_IMAGES: usize = 8;

/// Images per group for a whole pass over `batch` images on `threads` threads: at most
/// [`GROUP_IMAGES`], and otherwise as few as spread the batch over the threads in equal groups
/// (5 images on 4 threads: groups of 2, 2 and 1). A thread running a group of its own keeps
/// busy; one helping with another group's splits waits between them (EfficientViT-B1 at batch
/// 8 on two threads, as one group: 5 % of the samples were the helper looking for work).
fn group_images(batch: usize, threads: usize) -> usize {
    let groups = batch.div_ceil(GROUP_IMAGES).max(threads.min(batch)).max(1);
    batch.div_ceil(groups).max(1)
}

/// A per-image transform of a node's output (see [`FloatExecutor::forward_per_image`]).
pub type PerImage<'a> = dyn Fn(NodeId, &mut TensorMut) + Sync + 'a;

/// A forward pass whose batch runs in groups of [`GROUP_IMAGES`] images, each through the
/// network on its own and the groups in parallel. Every op treats each image on its own, so
/// the logits are those of one pass over the whole batch, bit for bit.
#[derive(Debug, Clone)]
pub struct GroupedForward {
    groups: Vec<PartialForward>,
}

impl GroupedForward {
    /// The first node not yet run by every group.
    pub fn next(&self) -> NodeId {
        self.groups
            .iter()
            .map(PartialForward::next)
            .min()
            .unwrap_or(0)
    }
}

thread_local! {
    /// The spare buffers this thread's last grouped pass left, for its next.
    static KEPT: std::cell::Cell<SpareBuffers<f32>> = std::cell::Cell::default();
}

/// Runs `f` on a group's pass of [`FloatExecutor::forward_per_image`] with the spare buffers
/// this thread kept from its last group, and keeps the group's spares after it for the next. A
/// pass starts without spares, so each batch's every node output had been a new zeroed
/// allocation — `memset` and the kernel's page faults on it were 9–10 % of EfficientViT-B1's
/// fp32 time at batch 8 by `perf record`. Such a group takes as many buffers as it gives back
/// (its images come from the spares, its logits are copied out of theirs), so what a thread
/// keeps is what a group (of at most [`GROUP_IMAGES`] images) holds at its peak. A group run
/// nested in another on the same thread (a rayon worker stealing one while it waits) starts
/// with what is left and adds its spares to the thread's when it ends.
///
/// Only whole passes from a fresh image keep their spares: a pass resumed from a copy of
/// another's values (the output-aware search's candidates) gives back more buffers than it
/// took, and kept, they grew without bound (the micro model's trio-vit search 20 % slower).
fn with_kept_spares<R>(pass: &mut PartialForward, f: impl FnOnce(&mut PartialForward) -> R) -> R {
    pass.spare.append(KEPT.take());
    let result = f(pass);
    give_back_spares(std::mem::take(&mut pass.spare));
    result
}

/// How many spare buffers this thread keeps for its next pass (for tests: whole passes leave
/// as many as they found once warm, resumed ones none).
pub fn kept_spare_buffers() -> usize {
    let kept = KEPT.take();
    let count = kept.len();
    KEPT.set(kept);
    count
}

/// Adds `spares` to the ones this thread keeps.
fn give_back_spares(spares: SpareBuffers<f32>) {
    let mut kept = KEPT.take();
    kept.append(spares);
    KEPT.set(kept);
}

/// A copy of `values` in a buffer this thread kept.
fn copy_into_kept(values: &[f32]) -> Buffer<f32> {
    let mut kept = KEPT.take();
    let mut copy = kept.take(values.len());
    copy.copy_from_slice(values);
    give_back_spares(kept);
    copy
}

/// Batches one after another, as one.
fn concat_batches(batches: Vec<Tensor>) -> Tensor {
    let mut shape = batches[0].shape.clone();
    shape[0] = batches.iter().map(Tensor::batch).sum();
    Tensor::new(shape, batches.into_iter().flat_map(|t| t.data).collect())
}

/// Values per parallel run of an activation rewritten in place: 64 KiB, a few microseconds of
/// work, so a pool thread's turn costs little beside it.
const ACTIVATION_RUN: usize = 1 << 14;

/// Runs a graph in f32 with its folded weights.
#[derive(Debug, Clone)]
pub struct FloatExecutor<'m> {
    graph: &'m Graph,
    params: &'m FoldedWeights,
    layouts: WeightLayouts,
    fusions: Arc<Fusions>,
}

/// Per node, its weight in the layout its kernel reads: a linear layer's transpose (see
/// `kernels::linear`), a conv's panels (see [`product`]). Made by the first pass that needs it
/// and shared by every later pass, by the executor's clones, and by executors made
/// [`FloatExecutor::with_weight_layouts`] over the same weights.
#[derive(Debug, Clone)]
pub struct WeightLayouts(Arc<[OnceLock<Vec<f32>>]>);

/// The Hardswish nodes whose conv applies them as it makes its output, in a plain forward
/// pass: in the tiles' epilogue ([`product`]), or over each row block or image while it is in
/// cache. Those that are the only reader of a conv's output (through a folded BatchNorm), so
/// the value before the activation is never needed. The fused pass gives every node the same
/// values, bit for bit.
#[derive(Debug, Default)]
struct Fusions {
    /// Per conv, the activation node it absorbs.
    activation_of: Vec<Option<NodeId>>,
    /// Per activation node, the conv that applied it.
    applied_by: Vec<Option<NodeId>>,
}

impl Fusions {
    fn new(graph: &Graph, params: &FoldedWeights) -> Self {
        let nodes = graph.nodes();
        let source = sources(params, graph);
        let mut readers: Vec<Vec<NodeId>> = vec![Vec::new(); nodes.len()];
        for (id, n) in nodes.iter().enumerate() {
            if source[id] != id {
                continue; // a folded norm: its conv's value under another name
            }
            for &i in &n.inputs {
                readers[source[i]].push(id);
            }
        }
        let mut f = Fusions {
            activation_of: vec![None; nodes.len()],
            applied_by: vec![None; nodes.len()],
        };
        for (id, n) in nodes.iter().enumerate() {
            let is_conv = matches!(
                (&n.op, &params.nodes[id]),
                (Op::Conv2d(_), NodeParams::Conv { .. })
            );
            if let ([a], true) = (readers[id].as_slice(), is_conv)
                && nodes[*a].op == Op::Hardswish
            {
                f.activation_of[id] = Some(*a);
                f.applied_by[*a] = Some(id);
            }
        }
        f
    }

    fn activation(&self, id: NodeId) -> Activation {
        match self.activation_of[id] {
            Some(_) => Activation::Hardswish,
            None => Activation::None,
        }
    }
}

/// For every node, the node whose value it reads as its own (a folded norm reads its conv's).
fn sources(params: &FoldedWeights, graph: &Graph) -> Vec<NodeId> {
    (0..graph.nodes().len())
        .map(|id| match params.nodes[id] {
            NodeParams::Folded => graph.nodes()[id].inputs[0],
            _ => id,
        })
        .collect()
}

impl WeightLayouts {
    /// Empty slots for every node of `graph`.
    pub fn for_graph(graph: &Graph) -> Self {
        Self((0..graph.nodes().len()).map(|_| OnceLock::new()).collect())
    }

    /// Where each transpose made so far lives, for tests that check it is made once.
    #[cfg(test)]
    pub(crate) fn made(&self) -> Vec<*const f32> {
        self.0
            .iter()
            .filter_map(|t| Some(t.get()?.as_ptr()))
            .collect()
    }
}

impl<'m> FloatExecutor<'m> {
    pub fn new(graph: &'m Graph, params: &'m FoldedWeights) -> Result<Self> {
        Self::with_weight_layouts(graph, params, WeightLayouts::for_graph(graph))
    }

    /// An executor that keeps its weight layouts in `layouts`, for an owner that makes a
    /// short-lived executor per pass over weights it holds (fake-quant): every pass after the
    /// first then finds them made. `layouts` must only ever have served executors over
    /// `params` unchanged, since a layout, once made, is never checked against its weight
    /// again.
    pub fn with_weight_layouts(
        graph: &'m Graph,
        params: &'m FoldedWeights,
        layouts: WeightLayouts,
    ) -> Result<Self> {
        params.check_graph(graph)?;
        if layouts.0.len() != graph.nodes().len() {
            return Err(Error::Graph {
                model: graph.model.clone(),
                layer: "weight layouts".into(),
                message: format!(
                    "weight layouts kept for {} nodes, but the graph has {}",
                    layouts.0.len(),
                    graph.nodes().len()
                ),
            });
        }
        Ok(Self {
            graph,
            params,
            layouts,
            fusions: Arc::new(Fusions::new(graph, params)),
        })
    }

    pub fn graph(&self) -> &'m Graph {
        self.graph
    }

    /// Logits `[B, classes]` for images `[B, C, H, W]`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        FORWARDS.with(|c| c.set(c.get() + 1));
        self.forward_in_groups(images, &|_, _| {}, true)
    }

    /// As [`FloatExecutor::forward_transformed`], for a `transform` that treats every image of
    /// the batch on its own (a quantizer does; statistics over the batch do not): the batch
    /// runs in groups of images, a group per thread (`group_images`), each a whole pass with
    /// the spare buffers its thread kept (`with_kept_spares`) that takes its images one at a
    /// time up to its first stacked conv (`advance_image_by_image`), with the same logits.
    pub fn forward_per_image(&self, images: &Tensor, transform: &PerImage<'_>) -> Result<Tensor> {
        self.forward_in_groups(images, transform, false)
    }

    /// [`FloatExecutor::forward_per_image`] with the activations that convs absorb applied in
    /// their epilogues, as [`FloatExecutor::forward`] does: every node's value is the same,
    /// bit for bit, but a transform called at one of the nodes that
    /// [`FloatExecutor::seen_activated`] lists sees that value already activated. For a
    /// `transform` that does nothing at those nodes (a quant plan whose points sit at the
    /// activations, not at the convs before them), whose passes then skip a pass over every
    /// activated map.
    pub fn forward_per_image_fused(
        &self,
        images: &Tensor,
        transform: &PerImage<'_>,
    ) -> Result<Tensor> {
        self.forward_in_groups(images, transform, true)
    }

    /// The nodes whose value a fused pass ([`FloatExecutor::forward_per_image_fused`]) holds
    /// activated when their transform is called: each conv that absorbs an activation, and
    /// the norms folded into it.
    pub fn seen_activated(&self) -> Vec<NodeId> {
        let (source, _) = self.lifetimes();
        (0..source.len())
            .filter(|&id| self.fusions.activation_of[source[id]].is_some())
            .collect()
    }

    /// [`FloatExecutor::forward_per_image`], with the activations its convs absorb applied in
    /// their epilogues when `fuse` (for a `transform` that does nothing at the nodes
    /// [`FloatExecutor::seen_activated`] lists).
    fn forward_in_groups(
        &self,
        images: &Tensor,
        transform: &PerImage<'_>,
        fuse: bool,
    ) -> Result<Tensor> {
        self.check_input(images)?;
        let item = images.item_len();
        let groups: Vec<&[f32]> = images
            .data
            .chunks(group_images(images.shape[0], rayon::current_num_threads()) * item)
            .collect();
        // Fewer groups than threads (a batch of one): the idle threads help with each node's
        // splits rather than sleep between them.
        let stacking = self.first_stacked_node();
        Ok(with_helper_threads(groups.len(), || {
            let logits = groups.par_iter().map(|data| {
                let mut shape = images.shape.clone();
                shape[0] = data.len() / item;
                let mut pass = self.pass_over(Value::new(shape, copy_into_kept(data)));
                pass.fuse = fuse;
                with_kept_spares(&mut pass, |pass| {
                    let transform = &mut |id, t: &mut TensorMut| transform(id, t);
                    if let Some(stop) = stacking.filter(|_| pass.batch > 1) {
                        self.advance_image_by_image(pass, stop, transform);
                    }
                    self.finish(pass, transform)
                })
            });
            concat_batches(logits.collect())
        }))
    }

    /// The first node that runs a group's images as one product ([`kernels::stacks_images`]:
    /// a 1×1 conv on a small map), if any.
    fn first_stacked_node(&self) -> Option<NodeId> {
        let nodes = self.graph.nodes();
        (0..nodes.len()).find(|&id| match &nodes[id].op {
            Op::Conv2d(c) => {
                let input = self.graph.input_shapes(id)[0];
                kernels::stacks_images(c, (input[1], input[2]), 2)
            }
            _ => false,
        })
    }

    /// Runs a fresh pass over a group of images up to `until` one image at a time, then joins
    /// the images' values, so that the pass goes on from `until` over the group together.
    ///
    /// Before the first stacked conv the maps are large (EfficientViT-B1's 112×112 ones are
    /// 3.2 MB of an image): node by node over a group, each node's output for the group
    /// streamed through memory before the next node read it. An image at a time, more of them
    /// stay in L2; from the small maps on, the group's images share each layer's weights.
    /// B1 at batch 8 on an Emerald Rapids: 115.0–115.5 images/s on one thread against
    /// 106.0–106.7 node by node, 229–231 on two against 216–220 (`qvit bench efficientvit-b1
    /// --executors fp32 --batch 8`, BENCHMARKS.md). Every op treats each image on its own, so
    /// the values are those of the group's pass, bit for bit.
    fn advance_image_by_image(
        &self,
        pass: &mut PartialForward,
        until: NodeId,
        transform: &mut dyn FnMut(NodeId, &mut TensorMut),
    ) {
        debug_assert_eq!(pass.next, 0, "a fresh pass");
        let images = pass.values[0]
            .take()
            .expect("a fresh pass holds its images");
        let mut spare = std::mem::take(&mut pass.spare);
        let mut singles = Vec::with_capacity(pass.batch);
        for i in 0..pass.batch {
            let image = images.item(i);
            let mut shape = images.shape.clone();
            shape[0] = 1;
            let mut data = spare.take(image.len());
            data.copy_from_slice(image);
            let mut single = self.pass_over(Value::new(shape, data));
            single.fuse = pass.fuse;
            single.spare = spare;
            self.advance(&mut single, until, transform);
            spare = std::mem::take(&mut single.spare);
            singles.push(single);
        }
        spare.keep(images.data);
        for (id, joined) in pass.values.iter_mut().enumerate() {
            let parts: Vec<Value> = singles
                .iter_mut()
                .filter_map(|s| s.values[id].take())
                .collect();
            let Some(first) = parts.first() else { continue };
            let mut shape = first.shape.clone();
            shape[0] = parts.len();
            let mut data = spare.take(first.data.len() * parts.len());
            for (place, part) in data.chunks_exact_mut(first.data.len()).zip(&parts) {
                place.copy_from_slice(&part.data);
            }
            *joined = Some(Value::new(shape, data));
            parts.into_iter().for_each(|part| spare.keep(part.data));
        }
        pass.spare = spare;
        pass.next = until;
    }

    /// As [`FloatExecutor::forward`], calling `observe(node, output)` for every node in order
    /// (the input image first) with the node's output for the whole batch.
    pub fn forward_observed(
        &self,
        images: &Tensor,
        observe: &mut dyn FnMut(NodeId, &TensorMut),
    ) -> Result<Tensor> {
        FORWARDS.with(|c| c.set(c.get() + 1));
        self.forward_transformed(images, &mut |id, t| observe(id, t))
    }

    /// As [`FloatExecutor::forward_observed`], but `transform(node, output)` may rewrite the
    /// output in place before later nodes read it: the fake-quant executor quantizes here. A
    /// folded BatchNorm is called with its conv's value (the same tensor, already normalised).
    pub fn forward_transformed(
        &self,
        images: &Tensor,
        transform: &mut dyn FnMut(NodeId, &mut TensorMut),
    ) -> Result<Tensor> {
        let mut pass = self.start(images)?;
        Ok(self.finish(&mut pass, transform))
    }

    /// A pass over `images` that has run no node yet; [`FloatExecutor::advance`] and
    /// [`FloatExecutor::finish`] continue it. A pass can be cloned part-way to try several
    /// continuations from one shared prefix (the output-aware range search does).
    pub fn start(&self, images: &Tensor) -> Result<PartialForward> {
        self.check_input(images)?;
        Ok(self.pass_over(Value::from(images.clone())))
    }

    /// A pass that has run no node yet over `images`, already checked.
    fn pass_over(&self, images: Value) -> PartialForward {
        let batch = images.shape[0];
        let mut values: Vec<Option<Value>> = vec![None; self.graph.nodes().len()];
        values[0] = Some(images);
        PartialForward {
            values,
            next: 0,
            batch,
            spare: SpareBuffers::default(),
            fuse: false,
        }
    }

    /// As [`FloatExecutor::start`], the batch split in groups of [`GROUP_IMAGES`].
    pub fn start_grouped(&self, images: &Tensor) -> Result<GroupedForward> {
        self.grouped(images, false)
    }

    /// [`FloatExecutor::start_grouped`] for a pass whose convs apply the activations they
    /// absorb, as [`FloatExecutor::forward_per_image_fused`]'s do (for transforms that do
    /// nothing at the nodes [`FloatExecutor::seen_activated`] lists). Stopped between such a
    /// conv and its activation, the pass holds the conv's value activated; continued, every
    /// node's value is the same, bit for bit.
    pub fn start_grouped_fused(&self, images: &Tensor) -> Result<GroupedForward> {
        self.grouped(images, true)
    }

    fn grouped(&self, images: &Tensor, fuse: bool) -> Result<GroupedForward> {
        self.check_input(images)?;
        let item = images.item_len();
        let groups = images
            .data
            .chunks(GROUP_IMAGES * item)
            .map(|data| {
                let mut shape = images.shape.clone();
                shape[0] = data.len() / item;
                let mut pass = self.pass_over(Value::new(shape, Buffer::from(data.to_vec())));
                pass.fuse = fuse;
                pass
            })
            .collect();
        Ok(GroupedForward { groups })
    }

    /// [`FloatExecutor::advance`] for every group of a grouped pass, the groups in parallel.
    pub fn advance_grouped(
        &self,
        pass: &mut GroupedForward,
        until: NodeId,
        transform: &PerImage<'_>,
    ) {
        pass.groups
            .par_iter_mut()
            .for_each(|group| self.advance(group, until, &mut |id, t| transform(id, t)));
    }

    /// [`FloatExecutor::finish`] for every group of a grouped pass: the logits of the whole batch.
    pub fn finish_grouped(&self, pass: &mut GroupedForward, transform: &PerImage<'_>) -> Tensor {
        let logits: Vec<Tensor> = pass
            .groups
            .par_iter_mut()
            .map(|group| self.finish(group, &mut |id, t| transform(id, t)))
            .collect();
        concat_batches(logits)
    }

    /// [`FloatExecutor::finish_grouped`] on a copy of `pass` (left as it is), handing each
    /// group's logits to `go_on` in the groups' order and stopping as soon as it says `false`:
    /// the groups run in rounds of as many as the pool has threads, so that a search can drop
    /// a trial whose first groups already lose (see `quant::output_search`). Returns whether
    /// every group ran. Each group's logits are those of `finish_grouped`, bit for bit.
    pub fn finish_grouped_while(
        &self,
        pass: &GroupedForward,
        transform: &PerImage<'_>,
        mut go_on: impl FnMut(&Tensor) -> bool,
    ) -> bool {
        let threads = rayon::current_num_threads().max(1);
        for round in pass.groups.chunks(threads) {
            let logits: Vec<Tensor> = round
                .par_iter()
                .map(|group| self.finish(&mut group.clone(), &mut |id, t| transform(id, t)))
                .collect();
            if !logits.iter().all(&mut go_on) {
                return false;
            }
        }
        true
    }

    /// Refuses a batch that is not `[B ≥ 1, C, H, W]` of the graph's input size.
    fn check_input(&self, images: &Tensor) -> Result<()> {
        let expected = self.graph.input_shape();
        if images.shape.len() != 4 || images.shape[1..] != *expected || images.shape[0] == 0 {
            return Err(Error::Graph {
                model: self.graph.model.clone(),
                layer: "input".into(),
                message: format!(
                    "expected a batch of images [B, {}], got {:?}",
                    expected
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    images.shape
                ),
            });
        }
        Ok(())
    }

    /// Runs nodes `pass.next()..until` of a pass, each followed by `transform`.
    pub fn advance(
        &self,
        pass: &mut PartialForward,
        until: NodeId,
        transform: &mut dyn FnMut(NodeId, &mut TensorMut),
    ) {
        let nodes = self.graph.nodes();
        let (source, last_use) = self.lifetimes();
        for id in pass.next..until.min(nodes.len()) {
            let values = &mut pass.values;
            let applied_by = self.fusions.applied_by[id].filter(|_| pass.fuse);
            if let Some(conv) = applied_by {
                // Its conv applied it: the conv's value is this node's.
                values[id] = values[conv].take();
            } else if id > 0 && source[id] == id {
                let input = nodes[id].inputs.first().map(|&i| source[i]);
                let op = &nodes[id].op;
                let out = match input {
                    // An activation whose input no later node reads: rewritten where it lies,
                    // without a new zeroed tensor or a second one streaming through memory.
                    Some(i) if is_activation(op) && last_use[i] == id => {
                        let mut t = values[i].take().expect("computed before use");
                        // Element-wise, so any split gives the same values: runs of a fixed
                        // length rather than images keep both threads busy at batch 1.
                        t.data
                            .par_chunks_mut(ACTIVATION_RUN)
                            .for_each(|x| activate(op, x));
                        t
                    }
                    _ => {
                        let inputs: Vec<&Value> = nodes[id]
                            .inputs
                            .iter()
                            .map(|&i| values[source[i]].as_ref().expect("computed before use"))
                            .collect();
                        let activation = if pass.fuse {
                            self.fusions.activation(id)
                        } else {
                            Activation::None
                        };
                        self.run_node(id, &inputs, pass.batch, activation, &mut pass.spare)
                    }
                };
                values[id] = Some(out);
            }
            transform(
                id,
                &mut values[source[id]].as_mut().expect("just computed").view(),
            );
            for &i in &nodes[id].inputs {
                if last_use[source[i]] == id
                    && let Some(t) = values[source[i]].take()
                {
                    pass.spare.keep(t.data);
                }
            }
            pass.next = id + 1;
        }
    }

    /// Runs the rest of a pass and returns its logits.
    pub fn finish(
        &self,
        pass: &mut PartialForward,
        transform: &mut dyn FnMut(NodeId, &mut TensorMut),
    ) -> Tensor {
        let last = self.graph.nodes().len() - 1;
        self.advance(pass, last + 1, transform);
        let (source, _) = self.lifetimes();
        let logits = pass.values[source[last]]
            .take()
            .expect("the logits are kept");
        // Copied out, so that the buffer they lie in (taken for the logits of a group of
        // images, it may have held a map) serves the next pass.
        let copy = Tensor::new(logits.shape.clone(), logits.data.to_vec());
        pass.spare.keep(logits.data);
        copy
    }

    /// For every node, the node whose value it reads as its own (a folded norm reads its
    /// conv's), and the last node that reads each value (after which it is freed; the logits
    /// never are).
    fn lifetimes(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let nodes = self.graph.nodes();
        let source = sources(self.params, self.graph);
        let mut last_use: Vec<NodeId> = (0..nodes.len()).collect();
        for (id, n) in nodes.iter().enumerate() {
            for &i in &n.inputs {
                last_use[source[i]] = last_use[source[i]].max(id);
            }
        }
        last_use[source[nodes.len() - 1]] = usize::MAX;
        (source, last_use)
    }

    fn run_node(
        &self,
        id: NodeId,
        inputs: &[&Value],
        batch: usize,
        activation: Activation,
        spare: &mut SpareBuffers<f32>,
    ) -> Value {
        let node = self.graph.node(id);
        let mut shape = vec![batch];
        shape.extend_from_slice(&node.shape);
        let len = shape.iter().product();
        let mut out = Value::new(shape, spare.take(len));
        let item = len / batch;
        let input_shapes = self.graph.input_shapes(id);
        let params = &self.params.nodes[id];
        if let (Op::Linear(l), NodeParams::Linear { weight, bias }) = (&node.op, params)
            && input_shapes[0].iter().product::<usize>() == l.in_features
        {
            // One token per image (a classifier): the images side by side, so that the weight
            // streams through once for all of them. Each output's sum is the same whatever the
            // images beside it.
            one_token::linear(
                &inputs[0].data,
                l.in_features,
                weight,
                bias.as_deref(),
                &mut out.data,
            );
            return out;
        }
        if node.op == Op::Add {
            // Element-wise, so any split gives the same values: runs of a fixed length over
            // the whole batch rather than images keep both threads busy at batch 1, each
            // reading half of the operands (an image on one thread: 0.65× its one-thread time
            // on two, by `qvit bench --steps`, its operands half in the other core's cache).
            let (a, b) = (&inputs[0].data, &inputs[1].data);
            out.data
                .par_chunks_mut(ACTIVATION_RUN)
                .zip(
                    a.par_chunks(ACTIVATION_RUN)
                        .zip(b.par_chunks(ACTIVATION_RUN)),
                )
                .for_each(|(o, (a, b))| add(a, b, o));
            return out;
        }
        if let (Op::Conv2d(c), NodeParams::Conv { weight, bias }) = (&node.op, params)
            && kernels::stacks_images(c, (input_shapes[0][1], input_shapes[0][2]), batch)
        {
            // A 1×1 conv on a small map: the batch's images as one product, each output the
            // one its image alone gives.
            let p = ConvWeights {
                weight,
                bias,
                panels: &self.layouts.0[id],
            };
            let plane = input_shapes[0][1] * input_shapes[0][2];
            kernels::pointwise_images(c, &inputs[0].data, plane, &p, activation, &mut out.data);
            return out;
        }
        out.data
            .par_chunks_mut(item)
            .enumerate()
            .for_each(|(b, o)| {
                let x: Vec<&[f32]> = inputs.iter().map(|t| t.item(b)).collect();
                let image = Image {
                    x: &x,
                    input_shapes: &input_shapes,
                    out_shape: &node.shape,
                    layout: &self.layouts.0[id],
                    activation,
                };
                run_image(&node.op, params, &image, o);
            });
        out
    }
}

/// What one op reads for one image.
struct Image<'a> {
    /// The inputs, in the node's order.
    x: &'a [&'a [f32]],
    input_shapes: &'a [&'a [usize]],
    out_shape: &'a [usize],
    /// Where the node keeps its weight in its kernel's layout ([`WeightLayouts`]).
    layout: &'a OnceLock<Vec<f32>>,
    /// What a conv applies to its outputs ([`Fusions`]).
    activation: Activation,
}

/// Runs one op on one image, writing every element of `out` (which holds a former value's
/// numbers: see [`SpareBuffers::take`]).
fn run_image(op: &Op, params: &NodeParams, image: &Image<'_>, out: &mut [f32]) {
    let (x, input_shapes, out_shape) = (image.x, image.input_shapes, image.out_shape);
    let hw = |s: &[usize]| (s[1], s[2]);
    match (op, params) {
        (Op::Conv2d(c), NodeParams::Conv { weight, bias }) => kernels::conv2d(
            c,
            x[0],
            hw(input_shapes[0]),
            &ConvWeights {
                weight,
                bias,
                panels: image.layout,
            },
            image.activation,
            out,
            hw(out_shape),
        ),
        (Op::PatchEmbed(c), NodeParams::Conv { weight, bias }) => {
            let p = ConvWeights {
                weight,
                bias,
                panels: image.layout,
            };
            kernels::patch_embed(c, x[0], hw(input_shapes[0]), &p, out)
        }
        (Op::BatchNorm2d { .. }, NodeParams::ChannelAffine { scale, shift }) => {
            let plane = input_shapes[0][1] * input_shapes[0][2];
            kernels::channel_affine(x[0], plane, scale, shift, out)
        }
        (Op::Linear(l), NodeParams::Linear { weight, bias }) => kernels::linear(
            x[0],
            l.in_features,
            weight,
            image.layout,
            bias.as_deref(),
            out,
        ),
        (Op::LayerNorm { dim, eps }, NodeParams::LayerNorm { weight, bias }) => {
            kernels::layer_norm(x[0], *dim, *eps, weight, bias, out)
        }
        (Op::Hardswish | Op::Relu | Op::Gelu, _) => {
            out.copy_from_slice(x[0]);
            activate(op, out);
        }
        (Op::Softmax, _) => kernels::softmax(x[0], *input_shapes[0].last().expect("rank ≥ 1"), out),
        (Op::Add, _) => add(x[0], x[1], out),
        (Op::Concat, _) => {
            // The two copies on two threads where one is free (an image at batch 1: on one
            // thread, 0.60× its one-thread speed on two, by `qvit bench --steps`).
            let (first, second) = out.split_at_mut(x[0].len());
            rayon::join(
                || first.copy_from_slice(x[0]),
                || second.copy_from_slice(x[1]),
            );
        }
        (Op::GlobalAvgPool, _) => {
            kernels::global_avg_pool(x[0], input_shapes[0][1] * input_shapes[0][2], out)
        }
        (Op::ClassTokenPosEmbed { dim, .. }, NodeParams::ClassTokenPosEmbed { cls, pos }) => {
            out[..*dim].copy_from_slice(cls);
            out[*dim..].copy_from_slice(x[0]);
            out.iter_mut().zip(pos).for_each(|(o, p)| *o += p);
        }
        (Op::TakeClassToken, _) => out.copy_from_slice(&x[0][..out.len()]),
        (
            Op::AttentionScores {
                heads,
                head_dim,
                scale,
            },
            _,
        ) => kernels::attention_scores(x[0], *heads, *head_dim, *scale as f32, out),
        (Op::AttentionMix { heads, head_dim }, _) => {
            kernels::attention_mix(x[0], x[1], *heads, *head_dim, out)
        }
        (Op::LinearAttentionContext { heads, head_dim }, _) => {
            kernels::linear_attention_context(x[0], *heads, *head_dim, out)
        }
        (Op::LinearAttentionQuery { heads, head_dim }, _) => {
            kernels::linear_attention_query(x[0], x[1], *heads, *head_dim, out)
        }
        (
            Op::LinearAttentionNormalize {
                heads,
                head_dim,
                eps,
                ..
            },
            _,
        ) => kernels::linear_attention_normalize(x[0], *heads, *head_dim, *eps as f32, out),
        (op, params) => unreachable!(
            "{} has parameters {params:?} it cannot use (weights folded for another graph)",
            op.kind()
        ),
    }
}

/// `out = a + b`, element by element.
fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    widest::in_widest_lanes(
        #[inline(always)]
        || {
            for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                *o = a + b;
            }
        },
    )
}

/// Whether `op` is an element-wise activation ([`activate`]).
fn is_activation(op: &Op) -> bool {
    matches!(op, Op::Hardswish | Op::Relu | Op::Gelu)
}

/// Applies the activation `op` to `x` in place.
fn activate(op: &Op, x: &mut [f32]) {
    match op {
        Op::Hardswish => map_in_place(x, kernels::hardswish),
        Op::Relu => map_in_place(x, kernels::relu),
        Op::Gelu => gelu::gelu_in_place(x),
        _ => unreachable!("{} is not an activation", op.kind()),
    }
}

/// `x[i] = f(x[i])` in the widest lanes the CPU has ([`widest::in_widest_lanes`]): an
/// element-wise activation over a whole map is worth sixteen lanes rather than SSE's four.
/// `f` must inline (`#[inline(always)]`) to be compiled for them.
fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32) {
    widest::in_widest_lanes(
        #[inline(always)]
        || {
            for v in x {
                *v = f(*v);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_spread_a_batch_over_the_threads() {
        // (batch, threads) → images per group, by hand.
        for (batch, threads, per) in [
            (1, 2, 1),
            (2, 2, 1),
            (8, 2, 4),
            (8, 1, 8),
            (9, 2, 5),
            (16, 2, 8),
            (64, 2, 8),
            (5, 4, 2),
            (8, 16, 1),
        ] {
            assert_eq!(group_images(batch, threads), per, "{batch} on {threads}");
        }
        for batch in 1..200 {
            for threads in 1..17 {
                let per = group_images(batch, threads);
                let groups = batch.div_ceil(per);
                assert!((1..=GROUP_IMAGES).contains(&per), "{batch} on {threads}");
                // Never fewer groups than a batch of whole groups of eight needs, and one per
                // thread whenever the batch splits evenly over them within that size.
                assert!(groups >= batch.div_ceil(GROUP_IMAGES));
                if batch % threads == 0 && batch <= GROUP_IMAGES * threads {
                    assert_eq!(groups, threads, "{batch} on {threads}");
                }
            }
        }
    }
}
