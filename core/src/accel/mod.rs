//! Accelerator cost models: a model's workload (hardware operations with shapes and bit widths)
//! and the cycle models that price it.

pub mod trio_vit;
pub mod workload;
