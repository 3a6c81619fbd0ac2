//! # qvit-core
//!
//! Everything numerical in qvit and every file format it reads or writes. The data flows one way
//! through the stages, each in its own module:
//!
//! ```text
//! presets/models/*.ron ──► arch::ArchSpec ──► graph::Graph (ops, shapes, params, MACs)
//! ```
//!
//! ```
//! use qvit_core::arch::ArchSpec;
//! use qvit_core::graph::Graph;
//!
//! let spec = ArchSpec::preset("efficientvit-b1")?.with_resolution(288)?;
//! let graph = Graph::build(&spec)?;
//! assert_eq!(graph.params(), 9_102_024);
//! assert_eq!(graph.macs(), 855_643_648);
//! # Ok::<(), qvit_core::Error>(())
//! ```
//!
//! Later stages (weights, executors, quantization, cost models, sweeps) consume these values and
//! never reach back into an earlier stage's internals.

pub mod accel;
pub mod arch;
pub mod assets;
pub mod cache;
pub mod data;
pub mod digest;
pub mod error;
pub mod eval;
pub mod exec;
pub mod explore;
pub mod export;
pub mod figure;
pub mod graph;
pub mod pipeline;
pub mod project;
pub mod quant;
pub mod rng;
pub mod ron_io;
pub mod search;
pub mod tensor;
pub mod weights;

pub use error::{Error, Result};
