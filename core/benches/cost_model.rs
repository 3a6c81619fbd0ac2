//! Accelerator cost-model speed: whole-model evaluations per second (what bounds a sweep).
//!
//! cargo bench -p qvit-core --bench cost_model

use qvit_core::accel::{AccelConfig, Workload, totals};
use qvit_core::arch::ArchSpec;
use qvit_core::graph::Graph;

fn main() {
    divan::main();
}

fn b1_workload() -> Workload {
    let spec = ArchSpec::preset("efficientvit-b1").unwrap();
    Workload::uniform(&Graph::build(&spec).unwrap(), 8, 8)
}

/// One full-model evaluation of EfficientViT-B1 @ 224 on the ZCU102 preset (corrected model).
#[divan::bench]
fn efficientvit_b1_on_trio_vit_zcu102(bencher: divan::Bencher) {
    let workload = b1_workload();
    let config = AccelConfig::preset("trio-vit-zcu102").unwrap();
    bencher.bench_local(|| totals(divan::black_box(&workload), divan::black_box(&config)).unwrap());
}

/// The same with the published reference model.
#[divan::bench]
fn efficientvit_b1_on_trio_vit_reference(bencher: divan::Bencher) {
    let workload = b1_workload();
    let config = AccelConfig::preset("trio-vit-reference-16").unwrap();
    bencher.bench_local(|| totals(divan::black_box(&workload), divan::black_box(&config)).unwrap());
}
