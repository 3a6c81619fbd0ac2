//! BatchNorm statistics measured from the model's own activations.
//!
//! Random weights with made-up BatchNorm statistics give activations whose scale drifts from
//! layer to layer (growing or vanishing through a deep network), unlike a trained model's,
//! whose norms were fitted to the activations they see. Measuring each norm's running mean and
//! variance on a batch, in graph order so that each sees the activations of the norms before it
//! already measured, gives a model whose every norm outputs `γ·x̂ + β` with `x̂` of zero mean
//! and unit variance per channel — activations of a trained model's shape, from any weights.

use super::Weights;
use crate::error::{Error, Result};
use crate::exec::float::FloatExecutor;
use crate::graph::{Graph, Op, ParamRole};
use crate::tensor::Tensor;

impl Weights {
    /// These weights with every BatchNorm's running mean and (biased) variance replaced by its
    /// input's per-channel statistics over `images` (`[B, C, H, W]`), measured in one pass.
    pub fn with_measured_batch_norms(&self, graph: &Graph, images: &Tensor) -> Result<Weights> {
        // Identity norms (μ = 0, σ² = 1 − ε, γ = 1, β = 0) so each one sees its raw input;
        // the pass then normalises in place with the measured statistics.
        let mut identity = self.clone();
        let mut norms = Vec::new();
        for (id, node) in graph.nodes().iter().enumerate() {
            let Op::BatchNorm2d { channels, eps } = node.op else {
                continue;
            };
            let name = |role| {
                node.params
                    .iter()
                    .find(|p| p.role == role)
                    .map(|p| p.name.clone())
                    .ok_or_else(|| Error::InvalidField {
                        origin: self.origin.clone(),
                        field: node.name.clone(),
                        message: format!("a BatchNorm without its {role:?} parameter"),
                    })
            };
            let names = [
                name(ParamRole::NormWeight)?,
                name(ParamRole::NormBias)?,
                name(ParamRole::RunningMean)?,
                name(ParamRole::RunningVar)?,
            ];
            let get = |n: &str| -> Result<Vec<f32>> {
                self.get(n)
                    .map(|t| t.data.clone())
                    .ok_or_else(|| Error::InvalidField {
                        origin: self.origin.clone(),
                        field: n.to_string(),
                        message: "missing".into(),
                    })
            };
            let (gamma, beta) = (get(&names[0])?, get(&names[1])?);
            let shape = vec![channels];
            for (n, v) in names.iter().zip([1.0, 0.0, 0.0, (1.0 - eps) as f32]) {
                identity.replace(n, Tensor::new(shape.clone(), vec![v; channels]))?;
            }
            norms.push((id, eps, names, gamma, beta));
        }
        let folded = identity.fold(graph)?;
        let mut measured: Vec<(Vec<f32>, Vec<f32>)> = Vec::with_capacity(norms.len());
        let mut next = 0;
        FloatExecutor::new(graph, &folded)?.forward_transformed(images, &mut |id, t| {
            let Some((node, eps, _, gamma, beta)) = norms.get(next) else {
                return;
            };
            if id != *node {
                return;
            }
            next += 1;
            let channels = gamma.len();
            let plane = t.item_len() / channels;
            let count = (t.batch() * plane) as f64;
            let mut stats = Vec::with_capacity(channels);
            for c in 0..channels {
                let values = || {
                    t.data
                        .chunks(t.item_len())
                        .flat_map(move |item| &item[c * plane..(c + 1) * plane])
                };
                let mean = values().map(|&v| v as f64).sum::<f64>() / count;
                let var = values().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / count;
                stats.push((mean, var));
            }
            for item in t.data.chunks_mut(plane * channels) {
                for (c, &(mean, var)) in stats.iter().enumerate() {
                    let k = gamma[c] as f64 / (var + eps).sqrt();
                    for v in &mut item[c * plane..(c + 1) * plane] {
                        *v = (k * (*v as f64 - mean) + beta[c] as f64) as f32;
                    }
                }
            }
            measured.push(stats.iter().map(|&(m, v)| (m as f32, v as f32)).unzip());
        })?;
        let mut out = self.clone();
        for ((_, _, names, _, _), (mean, var)) in norms.iter().zip(measured) {
            let shape = vec![mean.len()];
            out.replace(&names[2], Tensor::new(shape.clone(), mean))?;
            out.replace(&names[3], Tensor::new(shape, var))?;
        }
        out.origin = format!("{} (BatchNorm statistics measured)", self.origin);
        Ok(out)
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

    /// After measuring, every folded norm's output has per-channel mean β and variance γ² on
    /// the images it was measured on.
    #[test]
    fn measured_norms_normalise_their_inputs() {
        let graph = Graph::build(&ArchSpec::resolve("efficientvit-micro").unwrap()).unwrap();
        let mut rng = Rng::new(3);
        let shape = [
            4,
            graph.input_shape()[0],
            graph.input_shape()[1],
            graph.input_shape()[2],
        ];
        let n = shape.iter().product();
        let images = Tensor::new(shape.to_vec(), (0..n).map(|_| rng.normal()).collect());
        let weights = Weights::random(&graph, 11)
            .with_measured_batch_norms(&graph, &images)
            .unwrap();
        let folded = weights.fold(&graph).unwrap();
        let mut checked = 0;
        FloatExecutor::new(&graph, &folded)
            .unwrap()
            .forward_observed(&images, &mut |id, t| {
                let node = &graph.nodes()[id];
                let Op::BatchNorm2d { channels, .. } = node.op else {
                    return;
                };
                let param = |suffix: &str| {
                    let p = node
                        .params
                        .iter()
                        .find(|p| p.name.ends_with(suffix))
                        .unwrap();
                    weights.get(&p.name).unwrap().data.clone()
                };
                let (gamma, beta) = (param(".weight"), param(".bias"));
                let plane = t.item_len() / channels;
                for c in 0..channels {
                    let v: Vec<f64> = t
                        .data
                        .chunks(t.item_len())
                        .flat_map(|item| &item[c * plane..(c + 1) * plane])
                        .map(|&x| x as f64)
                        .collect();
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
                    let want = (gamma[c] as f64).powi(2);
                    // Not to f32 rounding: a channel whose mean dwarfs its spread cancels
                    // digits in the folded bias, and the pass here runs the folded model
                    // (0.8 % at most on this model).
                    let tolerance = 0.02 * want;
                    assert!(
                        (mean - beta[c] as f64).powi(2) < tolerance,
                        "{}: mean {mean}",
                        node.name
                    );
                    assert!(
                        (var - want).abs() < tolerance,
                        "{}: var {var} vs {want}",
                        node.name
                    );
                }
                checked += 1;
            })
            .unwrap();
        assert!(checked > 5, "{checked} norms");
    }
}
