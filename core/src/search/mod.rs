//! Choosing bit widths layer by layer: how much each layer's accuracy suffers when its widths
//! change ([`sensitivity`]), and plans for mixed widths built without repeating a recipe's
//! range search ([`splice`]); allocations of widths to layers ([`allocation`]) searched with
//! accelerator designs ([`run`], from a space file by [`job`]).

pub mod allocation;
pub mod job;
pub mod metrics;
pub mod run;
pub mod sensitivity;
pub mod space;
pub mod splice;
pub mod state;

pub use sensitivity::{Sensitivity, SensitivityOptions, SensitivityRow};
pub use splice::Splicer;
