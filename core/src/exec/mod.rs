//! Executors: run a graph on a batch of images.
//!
//! `float` is the f32 reference every quantized result is measured against.

pub mod float;
pub mod matmul;
