//! The fake-quant executor: the float executor with every weight replaced by its quantized
//! value and every activation point rounded to its quantizer's levels as it is produced.

use rayon::prelude::*;

use super::plan::{QuantPlan, WeightPlan, input_channel, out_channels};
use super::prepared::PreparedPoint;
use crate::error::Result;
use crate::eval::Classifier;
use crate::exec::float::{FloatExecutor, WeightLayouts};
use crate::graph::{Graph, NodeId};
use crate::tensor::{Tensor, TensorMut};
use crate::weights::{FoldedWeights, NodeParams};

/// Weights after quantization and dequantization, `Q(W ⊙ r)/r` per layer; biases stay in
/// float (the integer executor stores them as i32 at the accumulator's scale).
pub fn fake_quantized_weights(
    graph: &Graph,
    params: &FoldedWeights,
    plan: &QuantPlan,
) -> FoldedWeights {
    let mut out = params.clone();
    for wp in &plan.weights {
        fake_quantize_layer(graph, params, wp, &mut out);
    }
    out
}

/// Replaces the weights of `wp`'s layer in `out` by `params`' weights fake-quantized with `wp`
/// (so a plan that differs from another in a few layers can start from the other's weights).
pub fn fake_quantize_layer(
    graph: &Graph,
    params: &FoldedWeights,
    wp: &WeightPlan,
    out: &mut FoldedWeights,
) {
    let op = &graph.node(wp.node).op;
    let (
        NodeParams::Conv { weight: from, .. } | NodeParams::Linear { weight: from, .. },
        NodeParams::Conv { weight, .. } | NodeParams::Linear { weight, .. },
    ) = (&params.nodes[wp.node], &mut out.nodes[wp.node])
    else {
        return;
    };
    let per_out = weight.len() / out_channels(op);
    for (e, (w, &x)) in weight.iter_mut().zip(from.iter()).enumerate() {
        let r = wp
            .input_scale
            .as_ref()
            .map_or(1.0, |s| s[input_channel(op, e)]);
        *w = wp.quantizer.fake(x * r, e / per_out) / r;
    }
}

/// For every node, the indices of the activation plans applied to its output.
pub(crate) fn points_by_node(graph: &Graph, plan: &QuantPlan) -> Vec<Vec<usize>> {
    let mut at_node = vec![Vec::new(); graph.nodes().len()];
    for (i, a) in plan.activations.iter().enumerate() {
        at_node[a.node].push(i);
    }
    at_node
}

/// Whether a fake-quant pass with the points `at_node` may let the convs apply the activations
/// they absorb ([`FloatExecutor::forward_per_image_fused`]): a value is quantized where it is
/// stored, after such an activation, so only a plan with a point at such a conv keeps them
/// apart. A fused pass skips a pass over every activated map.
pub(crate) fn convs_may_fuse(float: &FloatExecutor, at_node: &[Vec<usize>]) -> bool {
    float
        .seen_activated()
        .into_iter()
        .all(|id| at_node[id].is_empty())
}

/// Fake-quantizes a node's output (a batch) with the activation plans `points` in place.
pub(crate) fn quantize_output(plan: &QuantPlan, points: &[usize], t: &mut TensorMut) {
    if points.is_empty() {
        return;
    }
    let prepared: Vec<PreparedPoint> = points
        .iter()
        .map(|&p| PreparedPoint::new(&plan.activations[p]))
        .collect();
    apply_prepared(&prepared.iter().collect::<Vec<_>>(), t);
}

/// The activation points of every node from one on, prepared once for a pass whose batch runs
/// in groups ([`FloatExecutor::finish_grouped`]): [`quantize_output`] in each group's transform
/// prepared every point again for every group (eight per pass of the output-aware search,
/// whose passes are its time).
pub(crate) struct PreparedNodes<'a> {
    at_node: Vec<Vec<PreparedPoint<'a>>>,
}

impl<'a> PreparedNodes<'a> {
    /// The points `at_node` lists for nodes `from..` of `plan`, all but `skip`.
    pub(crate) fn new(
        plan: &'a QuantPlan,
        at_node: &[Vec<usize>],
        from: NodeId,
        skip: Option<usize>,
    ) -> Self {
        let at_node = at_node
            .iter()
            .enumerate()
            .map(|(id, points)| {
                points
                    .iter()
                    .filter(|&&p| id >= from && Some(p) != skip)
                    .map(|&p| PreparedPoint::new(&plan.activations[p]))
                    .collect()
            })
            .collect();
        Self { at_node }
    }

    /// [`quantize_output`] at node `id`, from the prepared points.
    pub(crate) fn apply(&self, id: NodeId, t: &mut TensorMut) {
        let points: Vec<&PreparedPoint> = self.at_node[id].iter().collect();
        apply_prepared(&points, t);
    }
}

/// Applies prepared points to every image of a batch in place.
fn apply_prepared(points: &[&PreparedPoint], t: &mut TensorMut) {
    if points.is_empty() {
        return;
    }
    let item = t.item_len();
    if t.shape[0] < rayon::current_num_threads() {
        // Too few images to keep the pool busy: split each.
        for x in t.data.chunks_exact_mut(item) {
            for p in points {
                p.apply_split(x);
            }
        }
        return;
    }
    t.data.par_chunks_mut(item).for_each(|x| {
        for p in points {
            p.apply(x);
        }
    });
}

/// Runs a model with a quant plan applied.
#[derive(Debug)]
pub struct FakeQuantExecutor<'m> {
    graph: &'m Graph,
    plan: &'m QuantPlan,
    weights: FoldedWeights,
    /// The float executor's layouts of `weights` (linear transposes, conv panels), kept across
    /// passes: an evaluation makes an executor per batch, which made them again every time
    /// (4 % of DeiT-T's time at batch 1).
    layouts: WeightLayouts,
    /// Activation plans to apply at each node, prepared once.
    at_node: Vec<Vec<usize>>,
    prepared: Vec<PreparedPoint<'m>>,
}

impl<'m> FakeQuantExecutor<'m> {
    pub fn new(graph: &'m Graph, params: &FoldedWeights, plan: &'m QuantPlan) -> Result<Self> {
        plan.check_model(graph)?;
        Ok(Self {
            graph,
            plan,
            weights: fake_quantized_weights(graph, params, plan),
            layouts: WeightLayouts::for_graph(graph),
            at_node: points_by_node(graph, plan),
            prepared: plan.activations.iter().map(PreparedPoint::new).collect(),
        })
    }

    pub fn plan(&self) -> &QuantPlan {
        self.plan
    }

    /// The dequantized weights the executor runs with.
    pub fn weights(&self) -> &FoldedWeights {
        &self.weights
    }

    /// Logits for a batch of images.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let float = self.float()?;
        let transform = |id, t: &mut TensorMut| apply_prepared(&self.points(id), t);
        match convs_may_fuse(&float, &self.at_node) {
            true => float.forward_per_image_fused(images, &transform),
            false => float.forward_per_image(images, &transform),
        }
    }

    /// As [`FakeQuantExecutor::forward`], calling `observe(node, output)` after each node's
    /// output has been quantized.
    pub fn forward_observed(
        &self,
        images: &Tensor,
        observe: &mut dyn FnMut(NodeId, &TensorMut),
    ) -> Result<Tensor> {
        let float = self.float()?;
        float.forward_transformed(images, &mut |id, t| {
            apply_prepared(&self.points(id), t);
            observe(id, t);
        })
    }

    /// A float executor over the fake-quantized weights, sharing the weight layouts.
    fn float(&self) -> Result<FloatExecutor<'_>> {
        FloatExecutor::with_weight_layouts(self.graph, &self.weights, self.layouts.clone())
    }

    /// The prepared activation points at node `id`.
    fn points(&self, id: NodeId) -> Vec<&PreparedPoint<'m>> {
        self.at_node[id]
            .iter()
            .map(|&p| &self.prepared[p])
            .collect()
    }
}

impl Classifier for FakeQuantExecutor<'_> {
    fn logits(&self, images: &Tensor) -> Result<Tensor> {
        self.forward(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;
    use crate::assets;
    use crate::data::{Dataset, Normalize};
    use crate::quant::{CalibrationStats, QuantSettings, Recipe, build, calibrate};
    use crate::weights::Weights;

    /// A shipped micro model, the shipped calibration images and statistics of 16 of them.
    fn shipped(name: &str) -> (Graph, FoldedWeights, Dataset, CalibrationStats) {
        let graph = Graph::build(&ArchSpec::preset(name).unwrap()).unwrap();
        let folded = Weights::load(&assets::weights(name), &graph)
            .unwrap()
            .fold(&graph)
            .unwrap();
        let (images, labels) = assets::fashion_mnist_calibration();
        let data = Dataset::idx(&images, &labels, Normalize::fashion_mnist()).unwrap();
        let stats = calibrate(&graph, &folded, &data, 16, 16, &mut |_, _| {}).unwrap();
        (graph, folded, data, stats)
    }

    /// An evaluation runs a pass per batch: the first makes the layouts of the fake-quantized
    /// weights (the linear layers' transposes), and every later pass finds them.
    #[test]
    fn passes_share_the_weight_layouts() {
        let (graph, folded, data, stats) = shipped("deit-micro");
        let settings = QuantSettings {
            recipe: "minmax".into(),
            bits: "w8a8".parse().unwrap(),
            ..Default::default()
        };
        let recipe = Recipe::preset("minmax").unwrap();
        let plan = build(&graph, &folded, &stats, &recipe, &settings).unwrap();
        let fake = FakeQuantExecutor::new(&graph, &folded, &plan).unwrap();
        let batch = data.batch(0..4).unwrap().images;
        let first = fake.forward(&batch).unwrap();
        let made = fake.layouts.made();
        assert!(!made.is_empty(), "deit-micro's linear layers run blocked");
        let second = fake.forward(&batch).unwrap();
        assert_eq!(fake.layouts.made(), made, "a later pass made them again");
        assert_eq!(first.data, second.data);
    }

    /// On efficientvit-micro, whose convs absorb Hardswish, every recipe's points sit after the
    /// activations, so `forward` lets the convs apply them; its logits are those of a pass
    /// with every node apart (an observed pass), bit for bit.
    #[test]
    fn convs_apply_their_activations_with_the_same_logits() {
        let (graph, folded, data, stats) = shipped("efficientvit-micro");
        let batch = data.batch(0..5).unwrap().images;
        for (recipe, bits) in [("minmax", "w8a8"), ("trio-vit", "w8a8"), ("fq-vit", "w4a4")] {
            let settings = QuantSettings {
                recipe: recipe.into(),
                bits: bits.parse().unwrap(),
                ..Default::default()
            };
            let plan = build(
                &graph,
                &folded,
                &stats,
                &Recipe::preset(recipe).unwrap(),
                &settings,
            )
            .unwrap();
            let fake = FakeQuantExecutor::new(&graph, &folded, &plan).unwrap();
            let absorbed = fake.float().unwrap().seen_activated();
            assert!(
                !absorbed.is_empty(),
                "the micro model's convs absorb Hardswish"
            );
            assert!(
                absorbed.iter().all(|&id| fake.at_node[id].is_empty()),
                "{recipe}: a point at a conv that absorbs its activation"
            );
            let fused = fake.forward(&batch).unwrap();
            let apart = fake.forward_observed(&batch, &mut |_, _| {}).unwrap();
            let bits_of = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits_of(&fused), bits_of(&apart), "{recipe} {bits}");
        }
    }
}
