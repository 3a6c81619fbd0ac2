//! Design-space exploration: spaces of accelerator designs, sweeps over them, Pareto fronts,
//! and the scatter that shows them.

pub mod accuracy;
pub mod pareto;
pub mod scatter;
pub mod space;
pub mod sweep;

pub use space::{DesignSpace, Sampling};
pub use sweep::Shard;
