//! Upper bounds on a model spec's sizes: far above any published ViT (EfficientViT-B3 is 512
//! channels wide at 288 px; ViT-H is 1,280 wide and 32 deep), low enough that every shape,
//! parameter and MAC count of a valid spec fits comfortably in 64 bits and a graph of it fits in
//! memory. A spec beyond them is refused with the field and the bound, instead of building a
//! graph that wraps an integer or exhausts memory.

use crate::error::Result;

/// Input side in pixels.
pub const MAX_RESOLUTION: usize = 2048;
/// Channels of any layer (widths, hidden sizes, embedding dimensions).
pub const MAX_CHANNELS: usize = 16_384;
/// Blocks in one stage (EfficientViT) or in the encoder (DeiT).
pub const MAX_DEPTH: usize = 256;
/// Output classes.
pub const MAX_CLASSES: usize = 100_000;
/// Input channels and kernel or patch sides.
pub const MAX_SMALL: usize = 64;

/// Refuses `value` above `max`, naming the field.
pub fn at_most(origin: &str, field: &str, value: usize, max: usize) -> Result<()> {
    crate::error::at_most(origin, field, value, max, "no published model comes close")
}
