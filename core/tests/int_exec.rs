//! The integer executor against the fake-quant executor on the shipped micro models: top-1 on
//! test images and, per quantization point, how many integer codes are within ±1 of the codes
//! the fake-quant executor's values have.

use qvit_core::arch::ArchSpec;
use qvit_core::assets;
use qvit_core::data::{Dataset, Normalize};
use qvit_core::eval::evaluate;
use qvit_core::exec::int::encoding::Encoding;
use qvit_core::exec::int::{IntExecutor, compile};
use qvit_core::graph::Graph;
use qvit_core::quant::{self, FakeQuantExecutor, QuantPlan, QuantSettings, Recipe, calibrate};
use qvit_core::weights::{FoldedWeights, Weights};

struct Micro {
    graph: Graph,
    folded: FoldedWeights,
}

fn micro(name: &str) -> Micro {
    let graph = Graph::build(&ArchSpec::preset(name).unwrap()).unwrap();
    let folded = Weights::load(&assets::weights(name), &graph)
        .unwrap()
        .fold(&graph)
        .unwrap();
    Micro { graph, folded }
}

fn dataset(test: bool) -> Dataset {
    let (images, labels) = if test {
        assets::fashion_mnist_test()
    } else {
        assets::fashion_mnist_calibration()
    };
    Dataset::idx(&images, &labels, Normalize::fashion_mnist()).unwrap()
}

fn plan(m: &Micro, recipe: &str, bits: &str) -> QuantPlan {
    let stats = calibrate(
        &m.graph,
        &m.folded,
        &dataset(false),
        256,
        32,
        &mut |_, _| {},
    )
    .unwrap();
    let settings = QuantSettings {
        recipe: recipe.into(),
        bits: bits.parse().unwrap(),
        overrides: Vec::new(),
        ..Default::default()
    };
    quant::build(
        &m.graph,
        &m.folded,
        &stats,
        &Recipe::preset(recipe).unwrap(),
        &settings,
    )
    .unwrap()
}

/// The code a fake-quant value stands for.
fn code_of(e: &Encoding, x: f32, c: usize) -> i32 {
    match e {
        Encoding::Linear { .. } => {
            let (s, z, o) = e.linear(c).unwrap();
            ((x as f64 - o) / s).round() as i32 + z
        }
        Encoding::Log(_) => e.code_of(x as f64, c),
    }
}

/// Per point: (name, elements, within ±1, max |difference|). `local`: every step runs on the
/// codes of the fake-quant executor's inputs, so each op's arithmetic is measured alone;
/// otherwise the integer network runs end to end and differences accumulate.
fn agreement(
    m: &Micro,
    plan: &QuantPlan,
    images: usize,
    local: bool,
) -> Vec<(String, usize, usize, i32)> {
    let program = compile(&m.graph, &m.folded, plan).unwrap();
    let int = IntExecutor::new(&program);
    let fake = FakeQuantExecutor::new(&m.graph, &m.folded, plan).unwrap();
    let batch = dataset(true).batch(0..images).unwrap();
    let n = m.graph.nodes().len();
    let mut fake_values: Vec<Option<qvit_core::tensor::Tensor>> = vec![None; n];
    fake.forward_observed(&batch.images, &mut |id, t| {
        fake_values[id] = Some(t.clone())
    })
    .unwrap();
    let mut rows: Vec<(String, usize, usize, i32)> = program
        .points
        .iter()
        .map(|p| (p.name.clone(), 0, 0, 0))
        .collect();
    let mut scratch = Default::default();
    for b in 0..images {
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
            got[0] = int.quantize_image(batch.images.item(b));
            for step in &program.steps {
                let inputs: Vec<&[i32]> = step
                    .inputs
                    .iter()
                    .map(|&k| fake_codes[k].as_slice())
                    .collect();
                let out = int.run_step(step, &inputs, &mut scratch);
                if fake_codes[step.node].is_empty() {
                    fake_codes[step.node] = out.clone(); // moves codes only (concat, class token)
                }
                got[step.node] = out;
            }
            got
        } else {
            int.run_image(batch.images.item(b), &|_| true)
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

fn report(model: &str, recipe: &str, rows: &[(String, usize, usize, i32)]) -> f64 {
    let total: usize = rows.iter().map(|r| r.1).sum();
    let within: usize = rows.iter().map(|r| r.2).sum();
    eprintln!("{model} {recipe}: per-point codes within ±1 LSB of fake-quant");
    for (name, n, w, max) in rows {
        eprintln!(
            "  {:6.2} %  max {:3}  {name}",
            100.0 * *w as f64 / *n as f64,
            max
        );
    }
    let share = 100.0 * within as f64 / total as f64;
    eprintln!("  all: {share:.3} % of {total} elements");
    share
}

#[test]
fn efficientvit_trio_vit_codes_match_fake_quant() {
    let m = micro("efficientvit-micro");
    let p = plan(&m, "trio-vit", "w8a8");
    let end_to_end = agreement(&m, &p, 32, false);
    report("efficientvit-micro trio-vit end to end", "", &end_to_end);
    let rows = agreement(&m, &p, 64, true);
    let share = report("efficientvit-micro", "trio-vit, layer by layer", &rows);
    assert!(share >= 99.0, "{share:.3} % within ±1 LSB");
}

#[test]
fn efficientvit_int_top1_matches_fake_quant() {
    let m = micro("efficientvit-micro");
    let p = plan(&m, "trio-vit", "w8a8");
    let program = compile(&m.graph, &m.folded, &p).unwrap();
    let data = dataset(true);
    let n = 2000;
    let int = evaluate(
        &IntExecutor::new(&program),
        &data,
        100,
        Some(n),
        &mut |_| {},
    )
    .unwrap();
    let fake = evaluate(
        &FakeQuantExecutor::new(&m.graph, &m.folded, &p).unwrap(),
        &data,
        100,
        Some(n),
        &mut |_| {},
    )
    .unwrap();
    eprintln!(
        "top-1 on {n}: int {:.2} %, fake {:.2} %",
        int.top1(),
        fake.top1()
    );
    assert!((int.top1() - fake.top1()).abs() <= 0.2);
}

#[test]
fn deit_codes_match_fake_quant_except_the_approximated_nonlinearities() {
    let m = micro("deit-micro");
    for recipe in ["fq-vit", "repq-vit"] {
        let p = plan(&m, recipe, "w8a8");
        let rows = agreement(&m, &p, 16, true);
        let share = report("deit-micro", &format!("{recipe}, layer by layer"), &rows);
        let _ = share;
    }
}

#[test]
fn deit_int_top1_matches_fake_quant() {
    let m = micro("deit-micro");
    for recipe in ["fq-vit", "repq-vit"] {
        let p = plan(&m, recipe, "w8a8");
        let program = compile(&m.graph, &m.folded, &p).unwrap();
        let data = dataset(true);
        let n = 1000;
        let int = evaluate(
            &IntExecutor::new(&program),
            &data,
            100,
            Some(n),
            &mut |_| {},
        )
        .unwrap();
        let fake = evaluate(
            &FakeQuantExecutor::new(&m.graph, &m.folded, &p).unwrap(),
            &data,
            100,
            Some(n),
            &mut |_| {},
        )
        .unwrap();
        eprintln!(
            "{recipe} top-1 on {n}: int {:.2} %, fake {:.2} %",
            int.top1(),
            fake.top1()
        );
    }
}
