//! The float executor's nodes timed one by one on an image (`qvit bench --steps`): where its
//! time goes, beside the integer executor's steps and a peer's per-node profile.

use std::time::{Duration, Instant};

use super::{FloatExecutor, Value, copy_into_kept, with_kept_spares};
use crate::error::Result;
use crate::exec::helper_threads::with_helper_threads;
use crate::exec::step_time::{StepTime, describe_node};
use crate::tensor::Tensor;

impl FloatExecutor<'_> {
    /// Runs [`FloatExecutor::forward`]'s pass over one image (`image`: `[1, C, H, W]`)
    /// `rounds` times (at least once) and gives each node that computes the median of its
    /// times, named as the integer executor's steps are ([`describe_node`]). Nodes that
    /// compute nothing of their own are left out: the input, norms folded into their conv,
    /// and activations a conv applies in its epilogue (its time holds theirs).
    pub fn time_nodes(&self, image: &Tensor, rounds: usize) -> Result<Vec<StepTime>> {
        self.check_input(image)?;
        let nodes = self.graph.nodes();
        let mut times = vec![Vec::new(); nodes.len()];
        for _ in 0..rounds.max(1) {
            // One image leaves the other threads idle between a node's splits: as in
            // `forward`, they help with them.
            with_helper_threads(1, || {
                let mut pass =
                    self.pass_over(Value::new(image.shape.clone(), copy_into_kept(&image.data)));
                pass.fuse = true;
                let mut last = Instant::now();
                with_kept_spares(&mut pass, |pass| {
                    self.finish(pass, &mut |id, _| {
                        let now = Instant::now();
                        times[id].push(now - last);
                        last = now;
                    })
                });
            });
        }
        let (source, _) = self.lifetimes();
        let computes =
            |id: usize| id > 0 && source[id] == id && self.fusions.applied_by[id].is_none();
        Ok(nodes
            .iter()
            .enumerate()
            .zip(times)
            .filter(|((id, _), _)| computes(*id))
            .map(|((id, node), mut t)| {
                t.sort();
                let input = self.graph.input_shapes(id);
                let (kind, shape, macs) =
                    describe_node(node, input.first().copied().unwrap_or(&[]));
                StepTime {
                    name: node.name.clone(),
                    kind,
                    shape,
                    macs,
                    seconds: t.get(t.len() / 2).map_or(0.0, Duration::as_secs_f64),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::arch::ArchSpec;
    use crate::exec::float::FloatExecutor;
    use crate::graph::{Graph, Op};
    use crate::rng::Rng;
    use crate::tensor::Tensor;
    use crate::weights::Weights;

    /// Every node that computes is timed once under its own name, with the weighted layers'
    /// MACs; the input, the folded norms and the Hardswishes the convs apply are left out.
    #[test]
    fn every_node_that_computes_is_timed_once() {
        for model in ["efficientvit-micro", "deit-micro"] {
            let graph = Graph::build(&ArchSpec::resolve(model).unwrap()).unwrap();
            let folded = Weights::random(&graph, 5).fold(&graph).unwrap();
            let exec = FloatExecutor::new(&graph, &folded).unwrap();
            let mut shape = vec![1];
            shape.extend_from_slice(graph.input_shape());
            let mut rng = Rng::new(6);
            let n = shape.iter().product();
            let image = Tensor::new(shape, (0..n).map(|_| rng.normal()).collect());
            let steps = exec.time_nodes(&image, 2).unwrap();
            let nodes = graph.nodes();
            let fused = exec.fusions.applied_by.iter().flatten().count();
            let norms = nodes
                .iter()
                .filter(|n| matches!(n.op, Op::BatchNorm2d { .. }))
                .count();
            assert_eq!(steps.len(), nodes.len() - 1 - norms - fused, "{model}");
            let weighted: u64 = nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Conv2d(_) | Op::Linear(_) | Op::PatchEmbed(_)))
                .map(|n| n.macs)
                .sum();
            assert_eq!(
                steps.iter().map(|s| s.macs).sum::<u64>(),
                weighted,
                "{model}"
            );
            let mut names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), steps.len(), "{model}: a node timed twice");
            assert!(
                steps
                    .iter()
                    .all(|s| s.kind != "input" && s.kind != "batch_norm")
            );
            assert!(steps.iter().any(|s| s.seconds > 0.0), "{model}");
            // Weighted layers say what they work on: a map's side or the tokens.
            let first = &steps[0];
            match model {
                "efficientvit-micro" => {
                    assert_eq!((first.kind, first.shape.as_str()), ("3×3 conv", "14×14"))
                }
                _ => assert_eq!(first.kind, "patch embedding"),
            }
            assert!(
                steps
                    .iter()
                    .any(|s| s.kind == "linear" && s.shape == "1 token")
            );
        }
    }

    #[test]
    fn an_image_of_the_wrong_size_is_refused() {
        let graph = Graph::build(&ArchSpec::resolve("efficientvit-micro").unwrap()).unwrap();
        let folded = Weights::random(&graph, 5).fold(&graph).unwrap();
        let exec = FloatExecutor::new(&graph, &folded).unwrap();
        let image = Tensor::new(vec![1, 1, 5, 5], vec![0.0; 25]);
        assert!(exec.time_nodes(&image, 1).is_err());
    }
}
