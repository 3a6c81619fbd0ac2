//! The integer executor against the fake-quant executor, code by code.

use qvit_core::exec::int::encoding::Encoding;
use qvit_core::exec::int::{IntExecutor, compile};
use qvit_core::graph::Graph;
use qvit_core::quant::{FakeQuantExecutor, QuantPlan};
use qvit_core::tensor::Tensor;
use qvit_core::weights::FoldedWeights;

/// One point: (name, elements, within ±1, max |difference|).
pub type Agreement = (String, usize, usize, i32);

/// The code a fake-quant value stands for.
pub fn code_of(e: &Encoding, x: f32, c: usize) -> i32 {
    match e {
        Encoding::Linear { .. } => {
            let (s, z, o) = e.linear(c).unwrap();
            ((x as f64 - o) / s).round() as i32 + z
        }
        Encoding::Log(_) => e.code_of(x as f64, c),
    }
}

/// Per point, how the integer codes compare with the codes of the fake-quant executor's values
/// on `images`. `local`: every step runs on the codes of the fake-quant executor's inputs, so
/// each op's arithmetic is measured alone; otherwise the integer network runs end to end and
/// differences accumulate.
pub fn agreement(
    graph: &Graph,
    folded: &FoldedWeights,
    plan: &QuantPlan,
    images: &Tensor,
    local: bool,
) -> Vec<Agreement> {
    let program = compile(graph, folded, plan).unwrap();
    let int = IntExecutor::new(&program);
    let fake = FakeQuantExecutor::new(graph, folded, plan).unwrap();
    let n = graph.nodes().len();
    let mut fake_values: Vec<Option<Tensor>> = vec![None; n];
    fake.forward_observed(images, &mut |id, t| fake_values[id] = Some(t.to_tensor()))
        .unwrap();
    let mut rows: Vec<Agreement> = program
        .points
        .iter()
        .map(|p| (p.name.clone(), 0, 0, 0))
        .collect();
    let mut scratch = Default::default();
    for b in 0..images.batch() {
        // The fake-quant executor's values as codes, node by node.
        let mut fake_codes: Vec<Vec<i32>> = vec![Vec::new(); n];
        for p in &program.points {
            let f = fake_values[p.node].as_ref().unwrap().item(b);
            let dst = &mut fake_codes[p.node];
            dst.resize(f.len(), 0);
            p.layout
                .for_each(|c, i| dst[i] = code_of(&p.encoding, f[i], c));
        }
        let codes = if local {
            let mut got: Vec<Vec<i32>> = vec![Vec::new(); n];
            got[0] = int.quantize_image(images.item(b));
            for step in &program.steps {
                let inputs: Vec<&[i32]> = step
                    .inputs
                    .iter()
                    .map(|&k| fake_codes[k].as_slice())
                    .collect();
                let out = int.run_step(step, &inputs, &mut scratch).into_vec();
                if fake_codes[step.node].is_empty() {
                    fake_codes[step.node] = out.clone(); // moves codes only (concat, class token)
                }
                got[step.node] = out;
            }
            got
        } else {
            int.run_image(images.item(b), &|_| true)
        };
        for (row, p) in rows.iter_mut().zip(&program.points) {
            let (got, want) = (&codes[p.node], &fake_codes[p.node]);
            p.layout.for_each(|_, i| {
                let d = (got[i] - want[i]).abs();
                row.1 += 1;
                row.2 += usize::from(d <= 1);
                row.3 = row.3.max(d);
            });
        }
    }
    rows
}

/// Prints the points where some code differs by more than 1 and the share over all points;
/// returns that share (%).
pub fn report(model: &str, recipe: &str, rows: &[Agreement]) -> f64 {
    let total: usize = rows.iter().map(|r| r.1).sum();
    let within: usize = rows.iter().map(|r| r.2).sum();
    eprintln!("{model} {recipe}: per-point codes within ±1 LSB of fake-quant");
    for (name, n, w, max) in rows {
        if w < n {
            eprintln!(
                "  {:6.2} %  max {:3}  {name}",
                100.0 * *w as f64 / *n as f64,
                max
            );
        }
    }
    let share = 100.0 * within as f64 / total as f64;
    eprintln!("  all: {share:.3} % of {total} elements");
    share
}
