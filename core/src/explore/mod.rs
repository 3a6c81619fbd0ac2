//! Design-space exploration: spaces of accelerator designs, sweeps over them, Pareto fronts.

pub mod accuracy;
pub mod pareto;
pub mod space;
pub mod sweep;

pub use space::{DesignSpace, Sampling};
pub use sweep::Shard;
