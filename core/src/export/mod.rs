//! Files qvit writes for other tools: ONNX models for hardware and deployment flows, NumPy
//! arrays beside them, and PNG images.

pub mod npy;
pub mod onnx;
mod png;

pub use png::write_png;
