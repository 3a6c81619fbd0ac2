//! Post-training quantization: calibration statistics, quantizers and range searches, the
//! method zoo as recipes, quant plans, and the fake-quant executor.
//!
//! ```text
//! Graph + FoldedWeights ──calibrate──► CalibrationStats ──(Recipe, bits, overrides)──► QuantPlan
//!                                        (saved, reused)                                  │
//!                                                   FakeQuantExecutor ◄───────────────────┘
//! ```
//!
//! Changing a recipe or bit width rebuilds the plan from the saved statistics; only
//! [`calibrate`] runs the float model.

pub mod bits;
pub mod diagnostics;
pub mod fake;
pub mod histogram;
pub mod log_codes;
pub mod log_lanes;
pub mod lp_error;
pub mod output_search;
pub mod plan;
pub mod points;
pub mod prepared;
pub mod quantizer;
pub mod range;
pub mod recipe;
pub mod record;
pub mod settings;
pub mod stats;
pub mod techniques;
pub mod uniform_lanes;

pub use bits::BitWidths;
pub use fake::FakeQuantExecutor;
pub use plan::{QuantPlan, build, build_reporting};
pub use points::{QuantPoint, TensorKind, points};
pub use quantizer::{Quantizer, Rounding};
pub use recipe::Recipe;
pub use settings::{
    FixedWidth, LayerBits, Override, QuantExecutor, QuantSettings, family_recipe, fixed_widths,
};
pub use stats::{CalibrationStats, Sample, calibrate, calibrate_until};
