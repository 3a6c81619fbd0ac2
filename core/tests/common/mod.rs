//! Helpers shared by the integration tests: the shipped micro models and Fashion-MNIST sets.
#![allow(dead_code)] // each test file uses its own subset

pub mod agreement;

#[allow(unused_imports)] // not every test file uses them
pub use agreement::{Agreement, agreement, report};

use qvit_core::arch::ArchSpec;
use qvit_core::assets;
use qvit_core::data::{Dataset, Normalize};
use qvit_core::graph::Graph;
use qvit_core::weights::{FoldedWeights, Weights};

/// A shipped micro model with its trained weights, BatchNorm folded.
pub struct Micro {
    pub graph: Graph,
    pub folded: FoldedWeights,
}

pub fn micro(name: &str) -> Micro {
    let graph = Graph::build(&ArchSpec::preset(name).unwrap()).unwrap();
    let folded = Weights::load(&assets::weights(name), &graph)
        .unwrap()
        .fold(&graph)
        .unwrap();
    Micro { graph, folded }
}

/// The shipped 1,024 calibration images.
pub fn calibration_set() -> Dataset {
    let (images, labels) = assets::fashion_mnist_calibration();
    Dataset::idx(&images, &labels, Normalize::fashion_mnist()).unwrap()
}

/// The shipped 10,000 test images.
pub fn test_set() -> Dataset {
    let (images, labels) = assets::fashion_mnist_test();
    Dataset::idx(&images, &labels, Normalize::fashion_mnist()).unwrap()
}
