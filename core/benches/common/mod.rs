//! Layer shapes the benches share.

/// (channels, input side, kernel, stride): EfficientViT-B1 @ 224's depthwise convs — the
/// stem's 3×3 on 112×112, its four stride-2 MBConvs, stage-1/2/3/4 MBConvs, and the 5×5
/// aggregations of stage 3's and stage 4's q, k, v.
pub const DW_SHAPES: [(usize, usize, usize, usize); 11] = [
    (16, 112, 3, 1),
    (64, 112, 3, 2),
    (128, 56, 3, 2),
    (256, 28, 3, 2),
    (512, 14, 3, 2),
    (128, 56, 3, 1),
    (256, 28, 3, 1),
    (512, 14, 3, 1),
    (384, 14, 5, 1),
    (1024, 7, 3, 1),
    (768, 7, 5, 1),
];
