//! The dense 3×3 conv at stride 2 over a few input channels — EfficientViT's stem, 3 → 8–32
//! channels at half the image's size — read straight from the image's even and odd columns.
//!
//! Through `im2col` and the product tiles ([`super::kernels`]' `conv_by_output_rows`) the
//! stem copied each of its 27 taps' 112² inputs one by one at stride 2 and its outputs once
//! more from blocks into rows: 0.38 ms of B1's 8.9 ms on one thread, 3.1× ONNX Runtime's
//! time for the layer (`tools/bench/peer_steps.py --threads 1`). Here each input row is split
//! once into its even and odd columns (the *phase planes*, with a zero column before them and
//! zeros after), so that for outputs `ox..` tap `kx` = 0, 1, 2 reads the odd columns from
//! `ox − 1`, the even ones from `ox` and the odd ones from `ox`: plain loads, shared by every
//! output channel. A tile of 8 output channels × 2 vectors of columns keeps its sums in
//! registers over the whole reduction, broadcasting the weights: 0.145 ms of an image on one
//! thread, its time 2.6× shorter (BENCHMARKS.md, "fp32: the stem from even and odd columns").
//!
//! The arithmetic is the product tiles': each sum starts at +0 and takes its taps in the
//! weight's order `(ci, ky, kx)` by fused multiply-adds, then the bias where it is not +0, then
//! the activation ([`super::hardswish_lanes`]), so the outputs are those of the path it
//! replaces, bit for bit (tested). A tap in the padding adds `w·0`: such a sum is never −0 (a
//! sum of opposite zeros rounds to +0), and adding ±0 to it changes nothing.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::product::Activation;
use super::widest::in_widest_lanes;
use crate::exec::cpu::{FloatLanes, float_lanes};
use crate::graph::Conv2d;

/// Output channels per tile.
const CHANNELS: usize = 8;
/// Columns per tile: two AVX-512 vectors (four AVX2 ones, two tiles of two).
const COLUMNS: usize = 32;
/// Output rows per parallel part: 14 parts on B1's 112² map.
const PART_ROWS: usize = 8;

/// Whether [`conv`] runs `c` from an `hw` map: one group, a 3×3 kernel at stride 2 padded
/// by 1, whole tiles of output channels, and AVX2 and FMA or AVX-512F.
pub fn applies(c: &Conv2d, (h, w): (usize, usize), out_hw: (usize, usize)) -> bool {
    let geometry = (c.groups, c.kernel, c.stride, c.padding) == (1, 3, 2, 1);
    geometry
        && c.out_channels.is_multiple_of(CHANNELS)
        && out_hw == (h.div_ceil(2), w.div_ceil(2))
        && float_lanes() >= FloatLanes::Avx2Fma
}

/// Each input channel's rows split into even and odd columns: row `r` of the padded map
/// (input row `r − 1`; rows 0 and `h + 1` are zeros) has its phase `φ` = 0 and 1 side by
/// side, each a zero, then input columns `φ, φ + 2, …`, then zeros to `len`.
struct PhasePlanes {
    data: Vec<f32>,
    rows: usize,
    len: usize,
}

thread_local! {
    /// The phase planes' buffer between images: taken while a conv runs (a conv nested in
    /// another on the same thread, a rayon worker stealing one while it waits, makes its own).
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

impl PhasePlanes {
    /// The planes of `x` (`cin` channels of `h × w`), in the buffer this thread kept.
    fn new(x: &[f32], cin: usize, (h, w): (usize, usize)) -> Self {
        let (rows, len) = (h + 2, w.div_ceil(2).next_multiple_of(COLUMNS) + 1);
        // Every value is written below: the buffer is not cleared first (zeroing the whole of
        // it was as long as the copy).
        let mut data = SCRATCH.take();
        data.resize(cin * 2 * rows * len, 0.0);
        let fill = |(row, dst): (usize, &mut [f32])| {
            let (ci, r) = (row / rows, row % rows);
            if r == 0 || r == rows - 1 {
                return dst.fill(0.0); // the padding's rows
            }
            let src = &x[(ci * h + r - 1) * w..][..w];
            let (even, odd) = dst.split_at_mut(len);
            even[0] = 0.0;
            even[1 + w.div_ceil(2)..].fill(0.0);
            odd[0] = 0.0;
            odd[1 + w / 2..].fill(0.0);
            // Compiled for the widest lanes, the loop's pairs are split by permutes.
            in_widest_lanes(
                #[inline(always)]
                || {
                    let pairs = src.chunks_exact(2);
                    if let [last] = pairs.remainder() {
                        even[1 + w / 2] = *last;
                    }
                    let (even, odd) = (&mut even[1..], &mut odd[1..]);
                    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                        *e = pair[0];
                        *o = pair[1];
                    }
                },
            )
        };
        if x.len() >= PARALLEL_VALUES {
            data.par_chunks_mut(2 * len).enumerate().for_each(fill);
        } else {
            data.chunks_mut(2 * len).enumerate().for_each(fill);
        }
        Self { data, rows, len }
    }

    /// Where row `r` of channel `ci`'s phase `phase` starts.
    fn row(&self, ci: usize, phase: usize, r: usize) -> *const f32 {
        let at = ((ci * self.rows + r) * 2 + phase) * self.len;
        debug_assert!(at + self.len <= self.data.len());
        self.data.as_ptr().wrapping_add(at)
    }
}

impl Drop for PhasePlanes {
    fn drop(&mut self) {
        SCRATCH.set(std::mem::take(&mut self.data));
    }
}

/// From this many input values the planes are filled, and the rows summed, in parallel.
const PARALLEL_VALUES: usize = 1 << 15;

/// The conv `c` of `x` (`[cin, h, w]`) with `weight` (`[cout, cin, 3, 3]`) and `bias`,
/// followed by `act`, into `out` (`[cout, ⌈h/2⌉, ⌈w/2⌉]`), for a conv that [`applies`].
pub fn conv(
    c: &Conv2d,
    x: &[f32],
    hw: (usize, usize),
    (weight, bias, act): (&[f32], &[f32], Activation),
    out: &mut [f32],
) {
    let (cin, cout) = (c.in_channels, c.out_channels);
    let out_hw = (hw.0.div_ceil(2), hw.1.div_ceil(2));
    assert!(applies(c, hw, out_hw), "the stem kernel does not run {c:?}");
    assert_eq!(x.len(), cin * hw.0 * hw.1, "the conv's input");
    assert_eq!(weight.len(), cout * cin * 9, "the conv's weight");
    assert_eq!(bias.len(), cout, "the conv's bias");
    assert_eq!(out.len(), cout * out_hw.0 * out_hw.1, "the conv's output");
    let planes = PhasePlanes::new(x, cin, hw);
    let panels = panels(weight, cout, cin * 9);
    let tiles = Tiles {
        planes: &planes,
        cin,
        panels: &panels,
        bias,
        act,
        out_hw,
    };
    // The parts write disjoint rows of `out`.
    let shared = super::shared_out::SharedOut::new(out);
    let part = |first: usize| {
        let rows = first..(first + PART_ROWS).min(out_hw.0);
        // SAFETY: `applies` checked the CPU; `conv`'s asserts the sizes the tiles address;
        // each part writes its own output rows.
        unsafe { tiles.rows(rows, shared.get()) }
    };
    let parts = (0..out_hw.0).step_by(PART_ROWS);
    if x.len() >= PARALLEL_VALUES {
        parts.collect::<Vec<_>>().into_par_iter().for_each(part);
    } else {
        parts.for_each(part);
    }
}

/// One conv's operands, as the tiles read them.
struct Tiles<'a> {
    planes: &'a PhasePlanes,
    cin: usize,
    /// The weight by tiles of [`CHANNELS`] ([`panels`]).
    panels: &'a [f32],
    bias: &'a [f32],
    act: Activation,
    out_hw: (usize, usize),
}

/// `weight` (`[cout, depth]`) by tiles of [`CHANNELS`] output channels, each term's weights
/// side by side: the order the tiles broadcast them in.
fn panels(weight: &[f32], cout: usize, depth: usize) -> Vec<f32> {
    let mut out = vec![0.0; cout * depth];
    for (co, row) in weight.chunks_exact(depth).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            out[(co / CHANNELS * depth + t) * CHANNELS + co % CHANNELS] = v;
        }
    }
    out
}

impl Tiles<'_> {
    /// Output rows `rows` of every channel.
    ///
    /// # Safety
    /// The CPU has the features [`applies`] asks; `out` holds the output map; no other
    /// thread writes these rows.
    unsafe fn rows(&self, rows: Range<usize>, out: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY (both): the caller's promises.
        match float_lanes() {
            FloatLanes::Avx512 => unsafe { self.rows_avx512(rows, out) },
            _ => unsafe { self.rows_avx2(rows, out) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, out);
    }

    /// Tap `kx`'s row of `ci` at padded row `r` for outputs from `ox`: the odd columns from
    /// `ox − 1`, the even ones from `ox`, the odd ones from `ox`.
    fn taps(&self, ci: usize, r: usize, ox: usize) -> [*const f32; 3] {
        let (even, odd) = (self.planes.row(ci, 0, r), self.planes.row(ci, 1, r));
        [
            odd.wrapping_add(ox),
            even.wrapping_add(ox + 1),
            odd.wrapping_add(ox + 1),
        ]
    }

    /// The weights of term `t` of the reduction for the channels from `first`, one after
    /// another up to the end of its tile of [`CHANNELS`].
    fn weights(&self, first: usize, t: usize) -> *const f32 {
        let at = (first / CHANNELS * self.cin * 9 + t) * CHANNELS + first % CHANNELS;
        debug_assert!(at < self.panels.len());
        self.panels.as_ptr().wrapping_add(at)
    }
}

#[cfg(target_arch = "x86_64")]
impl Tiles<'_> {
    /// [`Tiles::rows`] in 16 lanes: tiles of 8 channels × 32 columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_avx512(&self, rows: Range<usize>, out: *mut f32) {
        use std::arch::x86_64::*;
        const LANES: usize = 16;
        let (oh, ow) = self.out_hw;
        let cout = self.bias.len();
        for oy in rows {
            for ox in (0..ow).step_by(COLUMNS) {
                let masks: [__mmask16; 2] = std::array::from_fn(|v| {
                    let lanes = (ow - ox).saturating_sub(v * LANES).min(LANES);
                    ((1u32 << lanes) - 1) as __mmask16
                });
                for group in (0..cout).step_by(CHANNELS) {
                    let mut acc = [[_mm512_setzero_ps(); 2]; CHANNELS];
                    for ci in 0..self.cin {
                        for ky in 0..3 {
                            let taps = self.taps(ci, 2 * oy + ky, ox);
                            for (kx, &at) in taps.iter().enumerate() {
                                // SAFETY: a plane's row holds `len` ≥ `ox + 1 + COLUMNS`
                                // values past its start.
                                let t: [__m512; 2] = std::array::from_fn(|v| unsafe {
                                    _mm512_loadu_ps(at.add(v * LANES))
                                });
                                let w = self.weights(group, (ci * 3 + ky) * 3 + kx);
                                for (co, sums) in acc.iter_mut().enumerate() {
                                    // SAFETY: the tile's weights lie in the panels.
                                    let wv = _mm512_set1_ps(unsafe { *w.add(co) });
                                    for (s, &t) in sums.iter_mut().zip(&t) {
                                        *s = _mm512_fmadd_ps(wv, t, *s);
                                    }
                                }
                            }
                        }
                    }
                    for (co, sums) in acc.iter().enumerate() {
                        let bias = self.bias[group + co];
                        let at = out.wrapping_add(((group + co) * oh + oy) * ow + ox);
                        for (v, &s) in sums.iter().enumerate() {
                            let mut s = s;
                            if bias != 0.0 {
                                s = _mm512_add_ps(s, _mm512_set1_ps(bias));
                            }
                            if self.act == Activation::Hardswish {
                                s = super::hardswish_lanes::avx512(s);
                            }
                            // SAFETY: the lanes `masks` keeps are outputs of row `oy`.
                            unsafe {
                                _mm512_mask_storeu_ps(at.wrapping_add(v * LANES), masks[v], s)
                            };
                        }
                    }
                }
            }
        }
    }

    /// [`Tiles::rows`] in 8 lanes: tiles of 4 channels × 16 columns (8 sums of 16 registers).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(&self, rows: Range<usize>, out: *mut f32) {
        use std::arch::x86_64::*;
        const LANES: usize = 8;
        const GROUP: usize = CHANNELS / 2;
        let (oh, ow) = self.out_hw;
        let cout = self.bias.len();
        for oy in rows {
            for ox in (0..ow).step_by(2 * LANES) {
                for group in (0..cout).step_by(GROUP) {
                    let mut acc = [[_mm256_setzero_ps(); 2]; GROUP];
                    for ci in 0..self.cin {
                        for ky in 0..3 {
                            let taps = self.taps(ci, 2 * oy + ky, ox);
                            for (kx, &at) in taps.iter().enumerate() {
                                // SAFETY: as in 16 lanes.
                                let t: [__m256; 2] = std::array::from_fn(|v| unsafe {
                                    _mm256_loadu_ps(at.add(v * LANES))
                                });
                                let w = self.weights(group, (ci * 3 + ky) * 3 + kx);
                                for (co, sums) in acc.iter_mut().enumerate() {
                                    // SAFETY: as in 16 lanes.
                                    let wv = _mm256_set1_ps(unsafe { *w.add(co) });
                                    for (s, &t) in sums.iter_mut().zip(&t) {
                                        *s = _mm256_fmadd_ps(wv, t, *s);
                                    }
                                }
                            }
                        }
                    }
                    for (co, sums) in acc.iter().enumerate() {
                        let bias = self.bias[group + co];
                        let at = out.wrapping_add(((group + co) * oh + oy) * ow + ox);
                        for (v, &s) in sums.iter().enumerate() {
                            let mut s = s;
                            if bias != 0.0 {
                                s = _mm256_add_ps(s, _mm256_set1_ps(bias));
                            }
                            if self.act == Activation::Hardswish {
                                s = super::hardswish_lanes::avx2(s);
                            }
                            let first = ox + v * LANES;
                            if first >= ow {
                                continue;
                            }
                            let len = (ow - first).min(LANES);
                            let to = at.wrapping_add(v * LANES);
                            // SAFETY: the first `len` lanes are outputs of row `oy`; a part
                            // vector goes through the stack (AMD's masked store is slow).
                            unsafe {
                                if len == LANES {
                                    _mm256_storeu_ps(to, s);
                                } else {
                                    let mut lanes = [0f32; LANES];
                                    _mm256_storeu_ps(lanes.as_mut_ptr(), s);
                                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), to, len);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition in the tiles' arithmetic: taps inside the map in `(ci, ky, kx)` order
    /// by fused multiply-adds from +0, the bias where it is not +0, the activation.
    fn reference(
        c: &Conv2d,
        x: &[f32],
        (h, w): (usize, usize),
        (weight, bias, act): (&[f32], &[f32], Activation),
    ) -> Vec<f32> {
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let mut out = Vec::new();
        for (co, &b) in bias.iter().enumerate() {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.0f32;
                    for ci in 0..c.in_channels {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) =
                                    ((2 * oy + ky).checked_sub(1), (2 * ox + kx).checked_sub(1));
                                let (Some(iy), Some(ix)) = (iy, ix) else {
                                    continue;
                                };
                                if iy < h && ix < w {
                                    let wv = weight[((co * c.in_channels + ci) * 3 + ky) * 3 + kx];
                                    s = wv.mul_add(x[(ci * h + iy) * w + ix], s);
                                }
                            }
                        }
                    }
                    if b != 0.0 {
                        s += b;
                    }
                    out.push(match act {
                        Activation::None => s,
                        Activation::Hardswish => crate::exec::float::hardswish(s),
                    });
                }
            }
        }
        out
    }

    /// B1's stem at 224 px and odd sizes (odd widths and heights, rows of less than a tile,
    /// one channel in, one tile of channels out), with and without the Hardswish, in 16 lanes
    /// and in 8 where the CPU has them, bit for bit against the definition.
    #[test]
    fn equals_the_definition_bit_for_bit() {
        let mut rng = Rng::new(3);
        for (cin, cout, h, w) in [
            (3, 16, 224, 224),
            (3, 8, 97, 131),
            (1, 24, 5, 3),
            (4, 32, 50, 47),
            (2, 8, 1, 1),
        ] {
            let c = Conv2d::same(cin, cout, 3, 2);
            let x: Vec<f32> = (0..cin * h * w).map(|_| rng.normal()).collect();
            let weight: Vec<f32> = (0..cout * cin * 9).map(|_| rng.normal()).collect();
            let bias: Vec<f32> = (0..cout)
                .map(|i| if i % 3 == 0 { 0.0 } else { rng.normal() })
                .collect();
            let out_len = cout * h.div_ceil(2) * w.div_ceil(2);
            for act in [Activation::None, Activation::Hardswish] {
                let want = reference(&c, &x, (h, w), (&weight, &bias, act));
                let tiles = |lanes: FloatLanes| {
                    let mut out = vec![f32::NAN; out_len];
                    let planes = PhasePlanes::new(&x, cin, (h, w));
                    let panels = panels(&weight, cout, cin * 9);
                    let t = Tiles {
                        planes: &planes,
                        cin,
                        panels: &panels,
                        bias: &bias,
                        act,
                        out_hw: (h.div_ceil(2), w.div_ceil(2)),
                    };
                    // SAFETY: the caller checked the CPU; `out` holds the map.
                    unsafe {
                        match lanes {
                            FloatLanes::Avx512 => t.rows_avx512(0..h.div_ceil(2), out.as_mut_ptr()),
                            _ => t.rows_avx2(0..h.div_ceil(2), out.as_mut_ptr()),
                        }
                    }
                    out
                };
                let at = format!("{cin} → {cout}, {h}×{w}, {act:?}");
                let same = |got: &[f32]| super::super::product::first_bit_difference(got, &want);
                if applies(&c, (h, w), (h.div_ceil(2), w.div_ceil(2))) {
                    let mut got = vec![f32::NAN; out_len];
                    conv(&c, &x, (h, w), (&weight, &bias, act), &mut got);
                    assert_eq!(same(&got), None, "{at}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    assert_eq!(same(&tiles(FloatLanes::Avx512)), None, "{at}, 16 lanes");
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    assert_eq!(same(&tiles(FloatLanes::Avx2Fma)), None, "{at}, 8 lanes");
                }
            }
        }
    }
}
