//! Convolutions (k×k, depthwise, grouped, patch embedding) and linear layers: an integer
//! product, the i32 bias, then the epilogue into the next point.
//!
//! Zero-points: the product needs `Σ W·(q − z)`. The int8 path multiplies u8 values `q + u`
//! (`u` = 128 when codes are signed, else 0) and subtracts `Σ W·(z + u)` per output channel;
//! padding is stored as `z + u`, which that correction cancels exactly. Depthwise and wide
//! (more than 8-bit) layers work on centred values `q − z` directly.

use super::super::kernels::depthwise::{DwShape, depthwise};
use super::super::kernels::{PackedA, PackedB, gemm};
use super::super::nonlinear::shift_gelu;
use super::super::requant::{Encoder, Epilogue, Requant};
use super::{Ctx, Scratch};
use crate::graph::Conv2d;

/// A conv's settings with its input and output sides.
type ConvGeometry<'a> = (&'a Conv2d, (usize, usize), (usize, usize));

/// Where inputs and outputs lie.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    /// `[C, H, W]` → `[O, OH, OW]`.
    Conv {
        conv: Conv2d,
        in_hw: (usize, usize),
        out_hw: (usize, usize),
    },
    /// `[C, H, W]` → tokens `[P, O]`, non-overlapping patches.
    Patch {
        conv: Conv2d,
        in_hw: (usize, usize),
        out_hw: (usize, usize),
    },
    /// `[N, K]` → `[N, O]` (`N` = 1 for a vector).
    Tokens { tokens: usize },
}

/// Integer weights, laid out for their kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// One packed i8 matrix per group, `out/groups × in/groups·k·k`.
    Int8(Vec<PackedA>),
    /// Depthwise, `[C, k, k]`.
    Depthwise(Vec<i16>),
    /// More than 8 bits: `[O, in/groups·k·k]`, run by the scalar path in i64.
    Wide(Vec<i32>),
}

/// What becomes of the accumulators.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Epilogue(Epilogue),
    /// DeiT's fc1 + GELU: requantize each token's row to `x` (one scale), ShiftGELU, encode.
    Gelu {
        to_x: Requant,
        x0: i64,
        out: Encoder,
    },
    /// The network's logits: per-class scales brought to one, so argmax compares real values.
    Logits(Requant),
}

/// One weighted layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    pub geometry: Geometry,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub weights: Weights,
    /// The float bias at the accumulator's scale, per output channel.
    pub bias: Vec<i64>,
    /// `Σ W·(z + u)` per output channel (int8 path only).
    pub correction: Vec<i64>,
    /// Zero-point per input channel.
    pub zero: Vec<i32>,
    /// `u`, making every input code a u8.
    pub lift: i32,
    pub output: Output,
}

impl Weighted {
    fn patch_or_kernel(&self) -> Option<ConvGeometry<'_>> {
        match &self.geometry {
            Geometry::Conv {
                conv,
                in_hw,
                out_hw,
            }
            | Geometry::Patch {
                conv,
                in_hw,
                out_hw,
            } => Some((conv, *in_hw, *out_hw)),
            Geometry::Tokens { .. } => None,
        }
    }

    /// Output positions per channel and whether outputs are stored token-major (`[P, O]`).
    fn positions(&self) -> (usize, bool) {
        match &self.geometry {
            Geometry::Conv { out_hw, .. } => (out_hw.0 * out_hw.1, false),
            Geometry::Patch { out_hw, .. } => (out_hw.0 * out_hw.1, true),
            Geometry::Tokens { tokens } => (*tokens, true),
        }
    }

    /// Reduction length per group.
    fn k(&self) -> usize {
        let cin_g = self.in_channels / self.groups;
        match self.patch_or_kernel() {
            Some((c, _, _)) => cin_g * c.kernel * c.kernel,
            None => cin_g,
        }
    }

    pub fn run(&self, ctx: Ctx, x: &[i32], out: &mut Vec<i32>, s: &mut Scratch) {
        let (p, token_major) = self.positions();
        let o = self.out_channels;
        out.clear();
        out.resize(o * p, 0);
        // Accumulators (bias and zero-point correction applied) as [O][P].
        s.wide.clear();
        s.wide.resize(o * p, 0);
        match &self.weights {
            Weights::Depthwise(w) => {
                let (conv, in_hw, out_hw) = self.patch_or_kernel().expect("depthwise is a conv");
                s.centred.clear();
                let plane = in_hw.0 * in_hw.1;
                s.centred.extend(
                    x.iter()
                        .enumerate()
                        .map(|(i, &q)| (q - self.zero[i / plane]) as i16),
                );
                s.acc.resize(o * p, 0);
                let shape = DwShape {
                    channels: o,
                    in_hw,
                    out_hw,
                    kernel: conv.kernel,
                    stride: conv.stride,
                    padding: conv.padding,
                };
                depthwise(ctx.isa, &shape, &s.centred, w, &mut s.acc);
                for (i, (dst, &a)) in s.wide.iter_mut().zip(&s.acc).enumerate() {
                    *dst = a as i64 + self.bias[i / p];
                }
            }
            Weights::Int8(groups) => {
                let k = self.k();
                let cin_g = self.in_channels / self.groups;
                let cout_g = o / self.groups;
                for (g, a) in groups.iter().enumerate() {
                    let mut b = PackedB::zeroed(k, p, std::mem::take(&mut s.packed));
                    self.pack_group(x, g, cin_g, &mut b);
                    s.acc.resize(cout_g * p, 0);
                    gemm(ctx.isa, a, &b, &mut s.acc);
                    s.packed = b.data;
                    for r in 0..cout_g {
                        let oc = g * cout_g + r;
                        let add = self.bias[oc] - self.correction[oc];
                        for (dst, &v) in s.wide[oc * p..(oc + 1) * p]
                            .iter_mut()
                            .zip(&s.acc[r * p..(r + 1) * p])
                        {
                            *dst = v as i64 + add;
                        }
                    }
                }
            }
            Weights::Wide(w) => self.run_wide(x, w, &mut s.wide),
        }
        self.finish(s, out, p, token_major);
    }

    /// Fills packed `B` for group `g`: im2col for convs (padding = `z + u`), the transpose of
    /// the token matrix for linear layers.
    fn pack_group(&self, x: &[i32], g: usize, cin_g: usize, b: &mut PackedB) {
        let lift = self.lift;
        match self.patch_or_kernel() {
            None => {
                let kdim = self.in_channels;
                for (t, row) in x.chunks(kdim).enumerate() {
                    for (kk, &q) in row.iter().enumerate() {
                        b.set(kk, t, (q + lift) as u8);
                    }
                }
            }
            Some((conv, (h, w), (oh, ow))) => {
                let k = conv.kernel;
                let (st, pad) = (conv.stride as isize, conv.padding as isize);
                for ci in 0..cin_g {
                    let c = g * cin_g + ci;
                    let plane = &x[c * h * w..(c + 1) * h * w];
                    let pad_value = (self.zero[c] + lift) as u8;
                    for i in 0..k {
                        for j in 0..k {
                            let kk = (ci * k + i) * k + j;
                            for oy in 0..oh {
                                let iy = oy as isize * st + i as isize - pad;
                                for ox in 0..ow {
                                    let ix = ox as isize * st + j as isize - pad;
                                    let v =
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            pad_value
                                        } else {
                                            (plane[iy as usize * w + ix as usize] + lift) as u8
                                        };
                                    b.set(kk, oy * ow + ox, v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The scalar i64 path for weights or inputs wider than 8 bits.
    fn run_wide(&self, x: &[i32], w: &[i32], acc: &mut [i64]) {
        let (p, _) = self.positions();
        let k = self.k();
        let cin_g = self.in_channels / self.groups;
        let cout_g = self.out_channels / self.groups;
        for oc in 0..self.out_channels {
            let g = oc / cout_g;
            let wr = &w[oc * k..(oc + 1) * k];
            for pos in 0..p {
                let mut sum = self.bias[oc];
                match self.patch_or_kernel() {
                    None => {
                        let row = &x[pos * self.in_channels..(pos + 1) * self.in_channels];
                        for (kk, &wv) in wr.iter().enumerate() {
                            sum += wv as i64 * (row[kk] - self.zero[kk]) as i64;
                        }
                    }
                    Some((conv, (h, wd), (_, ow))) => {
                        let kz = conv.kernel;
                        let (oy, ox) = (pos / ow, pos % ow);
                        for ci in 0..cin_g {
                            let c = g * cin_g + ci;
                            for i in 0..kz {
                                for j in 0..kz {
                                    let iy =
                                        (oy * conv.stride + i) as isize - conv.padding as isize;
                                    let ix =
                                        (ox * conv.stride + j) as isize - conv.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let q = x[c * h * wd + iy as usize * wd + ix as usize];
                                    sum += wr[(ci * kz + i) * kz + j] as i64
                                        * (q - self.zero[c]) as i64;
                                }
                            }
                        }
                    }
                }
                acc[oc * p + pos] = sum;
            }
        }
    }

    fn finish(&self, s: &mut Scratch, out: &mut [i32], p: usize, token_major: bool) {
        let o = self.out_channels;
        let at = |oc: usize, pos: usize| {
            if token_major {
                pos * o + oc
            } else {
                oc * p + pos
            }
        };
        match &self.output {
            Output::Epilogue(e) => {
                for oc in 0..o {
                    for pos in 0..p {
                        out[at(oc, pos)] = e.apply(s.wide[oc * p + pos], oc);
                    }
                }
            }
            Output::Logits(r) => {
                for oc in 0..o {
                    for pos in 0..p {
                        out[at(oc, pos)] = r.apply(s.wide[oc * p + pos], oc) as i32;
                    }
                }
            }
            Output::Gelu { to_x, x0, out: enc } => {
                let mut row = std::mem::take(&mut s.row);
                let mut y = vec![0i64; o];
                for pos in 0..p {
                    row.clear();
                    row.extend((0..o).map(|oc| to_x.apply(s.wide[oc * p + pos], oc) as i32));
                    shift_gelu(&row, *x0, 23, &mut y);
                    for (oc, &v) in y.iter().enumerate() {
                        out[at(oc, pos)] = enc.encode(v, oc);
                    }
                }
                s.row = row;
            }
        }
    }
}
