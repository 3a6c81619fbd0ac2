//! Accelerator cost models: a model's workload (hardware operations with shapes and bit widths),
//! accelerator configurations on FPGA parts, and the cycle models that price them.

pub mod config;
pub mod cost;
pub mod packing;
pub mod parts;
pub mod published;
pub mod report;
pub mod systolic;
pub mod trio_vit;
pub mod workload;

pub use config::AccelConfig;
pub use cost::{Totals, cost, totals};
pub use report::{Bound, CostReport, LayerCost, write_layers_csv};
pub use workload::Workload;
