//! f32 depthwise convolution, eight (or sixteen) outputs of a row at a time in registers. With
//! AVX-512 or AVX2, the convs padded by half their 3×3, 5×5 or 7×7 kernel at stride 1 or 2
//! (all of EfficientViT's) read the map directly instead ([`super::depthwise_direct`]); the
//! rest, and every conv on other CPUs, take the phase planes below.
//!
//! Each channel is copied once into `stride` zero-padded *phase planes* (plane `φ` holds
//! the padded columns `stride·j + φ`), so every tap of every output reads one contiguous run:
//! tap `(ky, kx)` of outputs `ox..ox+8` in row `oy` is plane `kx mod stride`, row
//! `stride·oy + ky`, columns `ox + kx div stride`. A block of eight outputs sums its `k²` taps
//! in registers and is stored once (the row-at-a-time loop it replaces loaded and stored the
//! whole row for every tap). Compiled for AVX2 as well where the CPU has it, and with blocks of
//! sixteen for AVX-512 where the CPU has that and a row fills them.
//!
//! Every output sums its taps in (row, column) order from +0, then adds the bias: the same
//! arithmetic as skipping the taps outside the map, since the padding's products are zeros and
//! adding a zero to a sum that started at +0 changes nothing (such a sum is never −0).

use rayon::prelude::*;

use super::product::Activation;
use crate::graph::Conv2d;

/// Outputs per block: one AVX2 register.
const LANES: usize = 8;
/// Outputs per block on AVX-512: one register, for rows of at least this many outputs (B1's
/// 112², 56² and 28² maps; a 7-wide row would leave most of it empty).
const WIDE_LANES: usize = 16;

/// Below this many multiply-accumulates an image's depthwise conv runs on one thread. At a
/// batch of one the pool's other threads are waiting for work (see `exec::helper_threads`),
/// so a split pays from some tens of microseconds' work: B1's 14×14 and 7×7 stages.
const PARALLEL_MACS: usize = 1 << 17;

/// A depthwise conv's sizes.
#[derive(Debug, Clone)]
struct Shape {
    k: usize,
    stride: usize,
    pad: usize,
    in_hw: (usize, usize),
    out_hw: (usize, usize),
    /// Outputs per block: [`LANES`] or [`WIDE_LANES`].
    lanes: usize,
    /// Where tap `(ky, kx)` of a block starts in the phase planes, from the block's first
    /// column in row `stride·oy` of plane 0.
    taps: Vec<usize>,
}

impl Shape {
    fn new(c: &Conv2d, in_hw: (usize, usize), out_hw: (usize, usize), lanes: usize) -> Self {
        let mut s = Shape {
            k: c.kernel,
            stride: c.stride,
            pad: c.padding,
            in_hw,
            out_hw,
            lanes,
            taps: Vec::new(),
        };
        let (k, st, pw) = (s.k, s.stride, s.plane_width());
        let plane_len = s.plane_rows() * pw;
        s.taps = (0..k * k)
            .map(|t| (t % k % st) * plane_len + t / k * pw + t % k / st)
            .collect();
        s
    }

    /// Outputs per row rounded up to whole blocks.
    fn block_width(&self) -> usize {
        self.out_hw.1.div_ceil(self.lanes) * self.lanes
    }

    /// Columns of a phase plane: every block's reads stay inside its row, and every input
    /// column has its place (the last ones may lie past what any output reads).
    fn plane_width(&self) -> usize {
        let reads = self.block_width() + (self.k - 1) / self.stride;
        let columns = (self.pad + self.in_hw.1).div_ceil(self.stride);
        reads.max(columns)
    }

    fn plane_rows(&self) -> usize {
        self.in_hw.0 + 2 * self.pad
    }
}

/// Depthwise convolution of `x` (`[C, h, w]`) into `out` (`[C, oh, ow]`), weights `[C, k, k]`,
/// followed by `act`: in the registers that hold the sums where the direct kernel runs, over
/// each channel's plane while it is in cache where the phase planes do.
pub fn depthwise(
    c: &Conv2d,
    x: &[f32],
    in_hw: (usize, usize),
    (weight, bias): (&[f32], &[f32]),
    act: Activation,
    out: &mut [f32],
    out_hw: (usize, usize),
) {
    if super::depthwise_direct::applies(c, in_hw, out_hw) {
        super::depthwise_direct::depthwise(c, x, in_hw, (weight, bias), act, out);
        return;
    }
    let lanes = if out_hw.1 >= WIDE_LANES && super::has_avx512f() {
        WIDE_LANES
    } else {
        LANES
    };
    let shape = Shape::new(c, in_hw, out_hw, lanes);
    run_shape(&shape, x, (weight, bias), act, out);
}

/// [`depthwise`] for a shape whose blocks hold `shape.lanes` outputs ([`LANES`] or
/// [`WIDE_LANES`]): the same sums either way, only how many are in registers at once differs.
fn run_shape(
    shape: &Shape,
    x: &[f32],
    (weight, bias): (&[f32], &[f32]),
    act: Activation,
    out: &mut [f32],
) {
    let (in_hw, out_hw) = (shape.in_hw, shape.out_hw);
    let (k, plane) = (shape.k, in_hw.0 * in_hw.1);
    let per_channel = out_hw.0 * out_hw.1;
    if per_channel == 0 {
        return;
    }
    let channel = |scratch: &mut Vec<f32>, (ch, o): (usize, &mut [f32])| {
        let xc = &x[ch * plane..(ch + 1) * plane];
        let wc = &weight[ch * k * k..(ch + 1) * k * k];
        run_channel(shape, xc, wc, bias[ch], o, scratch);
        super::product::activate(act, o);
    };
    if out.len() * k * k < PARALLEL_MACS {
        let mut scratch = Vec::new();
        out.chunks_mut(per_channel)
            .enumerate()
            .for_each(|item| channel(&mut scratch, item));
    } else {
        out.par_chunks_mut(per_channel)
            .enumerate()
            .for_each_init(Vec::new, channel);
    }
}

/// One channel: fills the phase planes in `scratch`, then the blocks.
fn run_channel(
    s: &Shape,
    x: &[f32],
    w: &[f32],
    bias: f32,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (h, wd) = s.in_hw;
    let (pw, rows) = (s.plane_width(), s.plane_rows());
    let plane_len = rows * pw;
    // Every channel of one conv writes the same positions, so the padding, zeroed when the
    // scratch is sized for this conv, stays zero for the next channel.
    let len = s.stride * plane_len + s.block_width();
    if scratch.len() != len {
        scratch.clear();
        scratch.resize(len, 0.0);
    }
    let (planes, row_out) = scratch.split_at_mut(s.stride * plane_len);
    for iy in 0..h {
        let src = &x[iy * wd..(iy + 1) * wd];
        let row = (iy + s.pad) * pw;
        if s.stride == 1 {
            planes[row + s.pad..row + s.pad + wd].copy_from_slice(src);
            continue;
        }
        if s.stride == 2 {
            split_pairs(src, planes, plane_len, row, s.pad);
            continue;
        }
        // Padded column `pad + ix` lies in plane `(pad + ix) mod stride`, column
        // `(pad + ix) div stride`: each plane takes every `stride`-th input column from its
        // first one, into consecutive columns (a per-pixel loop that counted the phase up was
        // 10 % of B1's fp32 time).
        for phase in 0..s.stride {
            let first = (phase + s.stride - s.pad % s.stride) % s.stride;
            let at = phase * plane_len + row + (s.pad + first) / s.stride;
            for (dst, &v) in planes[at..]
                .iter_mut()
                .zip(src.iter().skip(first).step_by(s.stride))
            {
                *dst = v;
            }
        }
    }
    let wide = s.lanes == WIDE_LANES;
    #[cfg(target_arch = "x86_64")]
    let cpu = crate::exec::cpu::float_lanes();
    #[cfg(target_arch = "x86_64")]
    if wide && cpu == crate::exec::cpu::FloatLanes::Avx512 {
        // SAFETY: `float_lanes` reports only features the CPU has.
        #[allow(unsafe_code)]
        unsafe {
            rows_avx512(s, planes, w, bias, out, row_out)
        };
        return;
    } else if !wide && cpu >= crate::exec::cpu::FloatLanes::Avx2Fma {
        // SAFETY: as above.
        #[allow(unsafe_code)]
        unsafe {
            rows_avx2(s, planes, w, bias, out, row_out)
        };
        return;
    }
    if wide {
        rows_portable::<WIDE_LANES>(s, planes, w, bias, out, row_out);
    } else {
        rows_portable::<LANES>(s, planes, w, bias, out, row_out);
    }
}

/// One input row into the two phase planes of a stride-2 conv: padded column `pad + ix` goes
/// to plane `(pad + ix) mod 2`, column `(pad + ix) div 2` of the plane row starting at `row`.
/// Taken in (even, odd) pairs so the copy vectorizes as a deinterleave (the general
/// every-`stride`-th loop ran one element at a time: 2× slower on B1's stride-2 convs).
fn split_pairs(src: &[f32], planes: &mut [f32], plane_len: usize, row: usize, pad: usize) {
    let (even, odd) = planes.split_at_mut(plane_len);
    // With an odd padding the first input column is odd: it alone goes before the pairs.
    let lead = pad % 2;
    if lead == 1 && !src.is_empty() {
        odd[row + pad / 2] = src[0];
    }
    let rest = src.get(lead..).unwrap_or_default();
    let at = row + (pad + lead) / 2;
    let pairs = rest.len() / 2;
    let (e, o) = (&mut even[at..at + pairs], &mut odd[at..at + pairs]);
    for ((e, o), pair) in e.iter_mut().zip(o.iter_mut()).zip(rest.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
    if let Some(&last) = rest.chunks_exact(2).remainder().first() {
        even[at + pairs] = last;
    }
}

/// [`rows_portable`] compiled for AVX2: the same operations in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2(s: &Shape, planes: &[f32], w: &[f32], bias: f32, out: &mut [f32], row: &mut [f32]) {
    rows_portable::<LANES>(s, planes, w, bias, out, row)
}

/// [`rows_portable`] in blocks of sixteen, compiled for AVX-512: the same operations in the
/// same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn rows_avx512(s: &Shape, planes: &[f32], w: &[f32], bias: f32, out: &mut [f32], row: &mut [f32]) {
    rows_portable::<WIDE_LANES>(s, planes, w, bias, out, row)
}

/// Picks the kernel for the conv's geometry: the real models' sizes with their kernel and
/// stride fixed at compile time, any other through [`rows_any`].
#[inline(always)]
fn rows_portable<const L: usize>(
    s: &Shape,
    planes: &[f32],
    w: &[f32],
    bias: f32,
    out: &mut [f32],
    row: &mut [f32],
) {
    match (s.k, s.stride) {
        (3, 1) => rows_fixed::<3, 1, L>(s, planes, w, bias, out, row),
        (3, 2) => rows_fixed::<3, 2, L>(s, planes, w, bias, out, row),
        (5, 1) => rows_fixed::<5, 1, L>(s, planes, w, bias, out, row),
        (5, 2) => rows_fixed::<5, 2, L>(s, planes, w, bias, out, row),
        (7, 1) => rows_fixed::<7, 1, L>(s, planes, w, bias, out, row),
        _ => rows_any::<L>(s, planes, w, bias, out, row),
    }
}

/// [`rows_any`] for a `K×K` kernel of stride `ST`, the same sums in the same order. With both
/// fixed the tap loops unroll, the weights stay in registers across a row, and each block
/// checks bounds once per (kernel row, phase) rather than once per tap: the general loop spent
/// more instructions finding a tap than multiplying it.
#[inline(always)]
fn rows_fixed<const K: usize, const ST: usize, const L: usize>(
    s: &Shape,
    planes: &[f32],
    w: &[f32],
    bias: f32,
    out: &mut [f32],
    row: &mut [f32],
) {
    debug_assert_eq!((s.k, s.stride, s.lanes), (K, ST, L));
    let (oh, ow) = s.out_hw;
    let pw = s.plane_width();
    let plane_len = s.plane_rows() * pw;
    let mut wk = [[0.0f32; K]; K];
    for (t, &v) in w.iter().take(K * K).enumerate() {
        wk[t / K][t % K] = v;
    }
    // A block's reads in one phase of one kernel row: its columns and the taps' reach.
    let span = L + (K - 1) / ST;
    for oy in 0..oh {
        for (b, block) in row.chunks_exact_mut(L).enumerate() {
            let mut acc = [0.0f32; L];
            for (ky, wrow) in wk.iter().enumerate() {
                let first = (ST * oy + ky) * pw + b * L;
                let runs: [&[f32]; ST] =
                    std::array::from_fn(|phase| &planes[phase * plane_len + first..][..span]);
                for (kx, &wv) in wrow.iter().enumerate() {
                    let src: &[f32; L] = runs[kx % ST][kx / ST..][..L].try_into().expect("lanes");
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += v * wv;
                    }
                }
            }
            block.copy_from_slice(&acc);
        }
        for (o, &v) in out[oy * ow..(oy + 1) * ow].iter_mut().zip(row.iter()) {
            *o = v + bias;
        }
    }
}

/// Any kernel and stride: each block sums its taps through the offset table.
#[inline(always)]
fn rows_any<const L: usize>(
    s: &Shape,
    planes: &[f32],
    w: &[f32],
    bias: f32,
    out: &mut [f32],
    row: &mut [f32],
) {
    let st = s.stride;
    let (oh, ow) = s.out_hw;
    let pw = s.plane_width();
    for oy in 0..oh {
        for (b, block) in row.chunks_exact_mut(L).enumerate() {
            let start = st * oy * pw + b * L;
            let mut acc = [0.0f32; L];
            for (&offset, &wv) in s.taps.iter().zip(w) {
                let at = start + offset;
                let src: &[f32; L] = planes[at..at + L].try_into().expect("lanes");
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v * wv;
                }
            }
            block.copy_from_slice(&acc);
        }
        for (o, &v) in out[oy * ow..(oy + 1) * ow].iter_mut().zip(row.iter()) {
            *o = v + bias;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition: taps inside the map, in (row, column) order from +0, then the bias.
    pub(in crate::exec::float) fn reference(
        c: &Conv2d,
        x: &[f32],
        (h, w): (usize, usize),
        wt: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let (k, s, p) = (c.kernel, c.stride, c.padding);
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut out = Vec::new();
        for ch in 0..c.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0f32;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                acc += x[ch * h * w + iy as usize * w + ix as usize]
                                    * wt[ch * k * k + ky * k + kx];
                            }
                        }
                    }
                    out.push(acc + bias[ch]);
                }
            }
        }
        out
    }

    /// One random conv of `ch` channels through the kernel and the definition, bit for bit,
    /// without an activation and followed by the Hardswish (channel 0's bias is 0, the case
    /// where a sum's sign of zero could show).
    fn check(rng: &mut Rng, ch: usize, k: usize, stride: usize, pad: usize, hw: (usize, usize)) {
        for act in [Activation::None, Activation::Hardswish] {
            check_with(rng, ch, (k, stride, pad), hw, act);
        }
    }

    fn check_with(
        rng: &mut Rng,
        ch: usize,
        (k, stride, pad): (usize, usize, usize),
        (h, w): (usize, usize),
        act: Activation,
    ) {
        let c = Conv2d {
            stride,
            padding: pad,
            ..Conv2d::depthwise(ch, k, stride)
        };
        let x: Vec<f32> = (0..ch * h * w).map(|_| rng.normal()).collect();
        let wt: Vec<f32> = (0..ch * k * k).map(|_| rng.normal()).collect();
        let bias: Vec<f32> = (0..ch)
            .map(|i| if i == 0 { 0.0 } else { rng.normal() })
            .collect();
        let mut want = reference(&c, &x, (h, w), &wt, &bias);
        if act == Activation::Hardswish {
            want.iter_mut()
                .for_each(|v| *v = crate::exec::float::hardswish(*v));
        }
        let out_hw = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let mut got = vec![f32::NAN; want.len()];
        depthwise(&c, &x, (h, w), (&wt, &bias), act, &mut got, out_hw);
        let same = |got: &[f32]| {
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        assert!(
            same(&got),
            "{ch}×{h}×{w}, k {k}, stride {stride}, pad {pad}, {act:?}"
        );
        // Both block widths, whichever the CPU picks: each through its compiled kernel where
        // the CPU has it, else the portable one.
        for lanes in [LANES, WIDE_LANES] {
            let mut got = vec![f32::NAN; want.len()];
            let shape = Shape::new(&c, (h, w), out_hw, lanes);
            run_shape(&shape, &x, (&wt, &bias), act, &mut got);
            let at = format!("{ch}×{h}×{w}, k {k}, stride {stride}, pad {pad}, {lanes} lanes");
            assert!(same(&got), "{at}");
        }
    }

    #[test]
    fn equals_the_definition_bit_for_bit() {
        let mut rng = Rng::new(9);
        // Real sizes (B1's 3×3 and 5×5 at 56² and 7², stride 2 at 112²) and odd ones.
        for (ch, k, stride, pad, h, w) in [
            (3, 3, 1, 1, 56, 56),
            (40, 3, 1, 1, 56, 56), // past PARALLEL_MACS: channels in parallel
            (2, 5, 1, 2, 7, 7),
            (2, 3, 2, 1, 112, 112),
            (3, 3, 2, 1, 7, 9),
            (2, 5, 2, 2, 13, 6),
            (2, 3, 1, 0, 5, 11),
            (1, 1, 1, 0, 3, 3),
            (2, 3, 3, 1, 10, 17),
            (1, 5, 1, 2, 1, 1),
        ] {
            check(&mut rng, ch, k, stride, pad, (h, w));
        }
    }

    /// Every small geometry: kernels 1–7 (even ones too; 3, 5 and 7 run the fixed-size
    /// kernels at strides 1 and 2), strides 1–3, every padding below the kernel, widths 1–40
    /// (whole blocks of eight or sixteen outputs, partial ones, and the input columns no output
    /// reads).
    #[test]
    fn every_small_geometry_equals_the_definition() {
        let mut rng = Rng::new(4);
        for k in 1..=7 {
            for stride in 1..=3 {
                for pad in 0..k {
                    for w in 1..=40 {
                        let h = 1 + (w * 7 + k) % 5;
                        if h + 2 * pad >= k && w + 2 * pad >= k {
                            check(&mut rng, 2, k, stride, pad, (h, w));
                        }
                    }
                }
            }
        }
    }
}
