//! Steps without weights: residual add, global average pooling, DeiT's class token and
//! position table, and the steps that only move codes (concatenation, taking the class token).

use super::super::dyadic::Dyadic;
use super::super::kernels::Isa;
use super::super::kernels::add::{AddLane, AddLanes, add_rows, add_run};
use super::super::requant::Encoder;
use crate::exec::spare::Buffer;
use rayon::prelude::*;

/// Sums of at least this many values run on the pool's threads.
const PARALLEL_VALUES: usize = 1 << 15;
/// Rows per task of a channels-last sum on the pool's threads (a DeiT-T image: 197 rows).
const ROWS_PER_BAND: usize = 16;

/// Which channel an element of one image's tensor belongs to: `(i / inner) % channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMap {
    pub channels: usize,
    pub inner: usize,
}

impl ChannelMap {
    #[inline]
    pub fn of(&self, i: usize) -> usize {
        (i / self.inner) % self.channels
    }
}

/// `a + b` of two differently scaled inputs with one rounding: per channel both ratios share
/// one shift `k`, `q = clamp(((a − z_a)·m_a + (b − z_b)·m_b + c + 2^(k−1)) >> k)`. (I-ViT
/// requantizes each operand and then adds, which rounds twice.)
#[derive(Debug, Clone, PartialEq)]
pub struct Add {
    pub map: ChannelMap,
    pub zero_a: Vec<i32>,
    pub zero_b: Vec<i32>,
    pub m_a: Vec<i64>,
    pub m_b: Vec<i64>,
    pub k: Vec<u8>,
    pub addend: Vec<i64>,
    pub qmin: i64,
    pub qmax: i64,
    /// The largest magnitude of an input code (of either input): whether the lanes may take
    /// the codes as 16-bit words ([`Pairs`](super::super::kernels::add_pairs::Pairs)).
    pub codes: u32,
    /// Every channel's constants in lanes, for channels-last rows, when each has such a form:
    /// found once by [`Add::with_lanes`] (found per call they were a serial stretch of each
    /// of DeiT-T's 24 residual sums: 1 % of its integer time at batch 1 on two threads);
    /// `None` until then, and the rows follow the definition.
    pub lanes: Option<AddLanes>,
}

impl Add {
    /// The step with its [`Add::lanes`].
    pub fn with_lanes(mut self) -> Self {
        let channels = self.map.channels;
        self.lanes = (0..channels).map(|c| self.lane(c)).collect();
        self
    }

    /// Whether every channel's lanes run in 16-bit pairs (`AddLane::pairs`), the faster form.
    pub fn in_pairs(&self) -> bool {
        (0..self.map.channels).all(|c| self.lane(c).is_some_and(|l| l.pairs.is_some()))
    }

    /// Channel `c`'s constants in lanes, when they have that form.
    fn lane(&self, c: usize) -> Option<AddLane> {
        AddLane::new(
            (self.zero_a[c], self.zero_b[c]),
            self.m_a[c],
            self.m_b[c],
            self.addend[c],
            self.k[c],
            self.codes,
        )
    }

    /// Constants for one channel: inputs `s_a·(a − z_a) + o_a` and `s_b·(b − z_b) + o_b` into
    /// codes `(x − o)/s + z` — returns `(m_a, m_b, k, addend)`, or `None` when a ratio is too
    /// large for a 31-bit multiplier.
    pub fn channel(
        (s_a, o_a): (f64, f64),
        (s_b, o_b): (f64, f64),
        (s, z, o): (f64, i32, f64),
    ) -> Option<(i64, i64, u8, i64)> {
        let (ra, rb) = (s_a / s, s_b / s);
        let k = Dyadic::from_real(ra.max(rb))?.k;
        let scale = 2f64.powi(k as i32);
        let addend = ((o_a + o_b - o) / s * scale).round() as i64 + ((z as i64) << k);
        Some((
            (ra * scale).round() as i64,
            (rb * scale).round() as i64,
            k,
            addend,
        ))
    }

    /// Codes of the output: one per pair of input codes.
    pub fn output_len(&self, a: &[i32], b: &[i32]) -> usize {
        a.len().min(b.len())
    }

    pub fn run(&self, isa: Isa, a: &[i32], b: &[i32], out: &mut Buffer<i32>) {
        // Every element is written below, by lanes or by the definition.
        let out = out.overwrite(self.output_len(a, b));
        let ChannelMap { channels, inner } = self.map;
        let range = (self.qmin, self.qmax);
        if inner > 1 {
            // Channel-major: one run of `inner` elements per channel.
            let run = |i: usize, o: &mut [i32], x: &[i32], y: &[i32]| {
                let c = i % channels;
                match self.lane(c) {
                    Some(l) => add_run(isa, &l, range, x, y, o),
                    None => {
                        for ((o, &qa), &qb) in o.iter_mut().zip(x).zip(y) {
                            *o = self.exact(c, qa, qb);
                        }
                    }
                }
            };
            // Runs write only their own outputs: on the pool's threads when there are enough
            // (at batch 1 the residual sums had been serial on the image's thread).
            if out.len() >= PARALLEL_VALUES {
                out.par_chunks_mut(inner)
                    .zip(a.par_chunks(inner).zip(b.par_chunks(inner)))
                    .enumerate()
                    .for_each(|(i, (o, (x, y)))| run(i, o, x, y));
            } else {
                out.chunks_mut(inner)
                    .zip(a.chunks(inner).zip(b.chunks(inner)))
                    .enumerate()
                    .for_each(|(i, (o, (x, y)))| run(i, o, x, y));
            }
        } else {
            // Channels-last rows: every channel's constants side by side.
            match &self.lanes {
                // Bands of whole rows on the pool's threads when there are enough values (at
                // batch 1 DeiT's residual sums had been serial on the image's thread).
                Some(lanes) if out.len() >= PARALLEL_VALUES && channels > 0 => {
                    let band = ROWS_PER_BAND * channels;
                    out.par_chunks_mut(band)
                        .zip(a.par_chunks(band).zip(b.par_chunks(band)))
                        .for_each(|(o, (x, y))| add_rows(isa, lanes, range, x, y, o));
                }
                Some(lanes) => add_rows(isa, lanes, range, a, b, out),
                None => {
                    for (i, ((o, &qa), &qb)) in out.iter_mut().zip(a).zip(b).enumerate() {
                        *o = self.exact(i % channels, qa, qb);
                    }
                }
            }
        }
    }

    /// The definition in i64 (for constants outside the lanes' bounds, and the tests).
    fn exact(&self, c: usize, qa: i32, qb: i32) -> i32 {
        let k = self.k[c];
        let half = if k == 0 { 0 } else { 1i64 << (k - 1) };
        let p = (qa - self.zero_a[c]) as i64 * self.m_a[c]
            + (qb - self.zero_b[c]) as i64 * self.m_b[c]
            + self.addend[c];
        ((p + half) >> k).clamp(self.qmin, self.qmax) as i32
    }
}

/// Mean over each channel's plane: `Σ (q − z)` at scale `s_c/HW`, then requantized.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub plane: usize,
    pub zero: Vec<i32>,
    pub out: Encoder,
}

impl Pool {
    /// Codes of the output: one per channel's plane.
    pub fn output_len(&self, x: &[i32]) -> usize {
        x.len().div_ceil(self.plane)
    }

    pub fn run(&self, x: &[i32], out: &mut Buffer<i32>) {
        let out = out.overwrite(self.output_len(x));
        for ((c, plane), o) in x.chunks(self.plane).enumerate().zip(out) {
            let z = self.zero[c];
            let sum: i64 = plane.iter().map(|&q| (q - z) as i64).sum();
            *o = self.out.encode(sum, c);
        }
    }
}

/// DeiT's `[cls; patches] + pos`: row 0 is a constant code (class token plus its position,
/// quantized at compile time); the patch rows are requantized with the position folded into
/// a per-element addend.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPos {
    pub dim: usize,
    pub class_row: Vec<i32>,
    pub zero: Vec<i32>,
    pub multiplier: Vec<Dyadic>,
    /// `[tokens, dim]`, in units of `2^−k_c` of the output code.
    pub addend: Vec<i64>,
    pub qmin: i64,
    pub qmax: i64,
}

impl ClassPos {
    /// `clamp(⌊((q − z)·m + a)/2^k⌉)`, half up. `(q − z)·m` of i32s stays inside i64
    /// (`|q − z| < 2^32`, `|m| ≤ 2^31`); the sums are checked and go to i128 where they would
    /// leave it (an i128 product for every element had been 1.8 % of DeiT-T's integer time).
    #[inline(always)]
    fn code(&self, q: i32, z: i32, d: Dyadic, a: i64) -> i32 {
        let half = (1i64 << d.k) >> 1;
        let p = (q as i64 - z as i64) * d.m as i64;
        match p.checked_add(a).and_then(|p| p.checked_add(half)) {
            Some(v) => (v >> d.k).clamp(self.qmin, self.qmax) as i32,
            None => ((p as i128 + a as i128 + half as i128) >> d.k)
                .clamp(self.qmin as i128, self.qmax as i128) as i32,
        }
    }

    /// Codes of the output: the class token's row, then the patches'.
    pub fn output_len(&self, x: &[i32]) -> usize {
        self.class_row.len() + x.len()
    }

    pub fn run(&self, x: &[i32], out: &mut Buffer<i32>) {
        let (class, patches) = out
            .overwrite(self.output_len(x))
            .split_at_mut(self.class_row.len());
        class.copy_from_slice(&self.class_row);
        // Elements `first..` of the patches (a whole number of rows), row by row.
        let run = |first: usize, out: &mut [i32], x: &[i32]| {
            let addend = self.addend[first..].chunks(self.dim);
            for ((o, x), a) in out.chunks_mut(self.dim).zip(x.chunks(self.dim)).zip(addend) {
                for ((((o, &q), &z), d), &a) in o
                    .iter_mut()
                    .zip(x)
                    .zip(&self.zero)
                    .zip(&self.multiplier)
                    .zip(a)
                {
                    *o = self.code(q, z, *d, a);
                }
            }
        };
        // Bands of rows on the pool's threads when there are enough values (at batch 1 this
        // had been serial on the image's thread).
        if self.dim == 0 {
            return;
        }
        if patches.len() >= PARALLEL_VALUES {
            let band = ROWS_PER_BAND * self.dim;
            patches
                .par_chunks_mut(band)
                .zip(x.par_chunks(band))
                .enumerate()
                .for_each(|(b, (o, x))| run(b * band, o, x));
        } else {
            run(0, patches, x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random per-channel constants, both layouts, every ISA: the lanes give the definition's
    /// codes.
    #[test]
    fn add_lanes_equal_the_definition() {
        let mut rng = crate::rng::Rng::new(5);
        // (64, 196, 3) and (192, 1, 197), a DeiT-T image's rows: enough values for the runs
        // and the bands of rows to go on the pool (the last band part-filled).
        let cases = [
            (3, 49, 3),
            (5, 1, 3),
            (192, 1, 3),
            (16, 17, 3),
            (1, 64, 3),
            (64, 196, 3),
            (192, 1, 197),
        ];
        for &(channels, inner, rows) in &cases {
            let mut add = Add {
                map: ChannelMap { channels, inner },
                zero_a: Vec::new(),
                zero_b: Vec::new(),
                m_a: Vec::new(),
                m_b: Vec::new(),
                k: Vec::new(),
                addend: Vec::new(),
                qmin: -128,
                qmax: 127,
                codes: 128,
                lanes: None,
            };
            for _ in 0..channels {
                let scale = |rng: &mut crate::rng::Rng| 0.001 + rng.below(1000) as f64 * 1e-4;
                let (sa, sb, so) = (scale(&mut rng), scale(&mut rng), scale(&mut rng));
                let z = rng.below(256) as i32 - 128;
                let (m_a, m_b, k, addend) =
                    Add::channel((sa, 0.01), (sb, -0.02), (so, z, 0.005)).unwrap();
                add.zero_a.push(rng.below(256) as i32 - 128);
                add.zero_b.push(rng.below(256) as i32 - 128);
                add.m_a.push(m_a);
                add.m_b.push(m_b);
                add.k.push(k);
                add.addend.push(addend);
            }
            let n = channels * inner * rows;
            let a: Vec<i32> = (0..n).map(|_| rng.below(256) as i32 - 128).collect();
            let b: Vec<i32> = (0..n).map(|_| rng.below(256) as i32 - 128).collect();
            let want: Vec<i32> = (0..n)
                .map(|i| add.exact(add.map.of(i), a[i], b[i]))
                .collect();
            // Without its lanes (the rows by the definition), then with them.
            for add in [add.clone(), add.with_lanes()] {
                for isa in Isa::available() {
                    // Stale values in a longer buffer: every element must be written.
                    let mut got = Buffer::from(vec![-7; n + 5]);
                    add.run(isa, &a, &b, &mut got);
                    let form = if add.lanes.is_some() {
                        "lanes"
                    } else {
                        "definition"
                    };
                    assert_eq!(*got, want, "{} {channels}×{inner}, {form}", isa.name());
                }
            }
        }
    }

    /// A DeiT-T image's 196 patch rows (enough to go on the pool in bands, the last one
    /// part-filled) and a short input: each code is its element's rounded dyadic product. The
    /// last case's addends lie near the ends of i64, where the sums leave it (i128).
    #[test]
    fn class_and_positions_equal_the_definition() {
        let mut rng = crate::rng::Rng::new(9);
        let dim = 192;
        for (patches, extreme) in [(3, false), (196, false), (5, true)] {
            let n = patches * dim;
            let class_pos = ClassPos {
                dim,
                class_row: (0..dim).map(|c| c as i32 % 7 - 3).collect(),
                zero: (0..dim).map(|_| rng.below(21) as i32 - 10).collect(),
                multiplier: (0..dim)
                    .map(|_| Dyadic {
                        m: 1 + rng.below(1 << 20) as i32,
                        k: 20 + rng.below(6) as u8,
                    })
                    .collect(),
                addend: (0..n)
                    .map(|i| match (extreme, i % 2) {
                        (false, _) => rng.below(1 << 24) as i64 - (1 << 23),
                        (true, 0) => i64::MAX - rng.below(1 << 30) as i64,
                        (true, _) => i64::MIN + rng.below(1 << 30) as i64,
                    })
                    .collect(),
                qmin: -128,
                qmax: 127,
            };
            assert_eq!(n >= PARALLEL_VALUES, patches == 196);
            // The extreme case's sums leave i64 on both sides: the fallback is taken.
            if extreme {
                assert!(class_pos.code(127, -10, class_pos.multiplier[0], i64::MAX) == 127);
            }
            let x: Vec<i32> = (0..n).map(|_| rng.below(256) as i32 - 128).collect();
            let mut want = class_pos.class_row.clone();
            want.extend((0..n).map(|i| {
                let d = class_pos.multiplier[i % dim];
                let p = (x[i] - class_pos.zero[i % dim]) as i128 * d.m as i128
                    + class_pos.addend[i] as i128;
                ((p + (1 << (d.k - 1))) >> d.k).clamp(-128, 127) as i32
            }));
            // Stale values in a longer buffer: every element must be written.
            let mut got = Buffer::from(vec![-7; want.len() + 5]);
            class_pos.run(&x, &mut got);
            assert_eq!(*got, want, "{patches} patches");
        }
    }

    #[test]
    fn add_rounds_once() {
        // a at 0.1 (zero 0), b at 0.3 (zero 10) into 0.2 (zero 5):
        // a = 7 → 0.7, b = 13 → 0.9; sum 1.6 → 8 → code 13.
        let (m_a, m_b, k, addend) = Add::channel((0.1, 0.0), (0.3, 0.0), (0.2, 5, 0.0)).unwrap();
        let add = Add {
            map: ChannelMap {
                channels: 1,
                inner: 1,
            },
            zero_a: vec![0],
            zero_b: vec![10],
            m_a: vec![m_a],
            m_b: vec![m_b],
            k: vec![k],
            addend: vec![addend],
            qmin: 0,
            qmax: 255,
            codes: 255,
            lanes: None,
        }
        .with_lanes();
        let mut out = Buffer::default();
        add.run(Isa::Scalar, &[7, 1], &[13, 10], &mut out);
        // 0.1 + 0 = 0.1 → 0.5 → rounds half up to 1 → code 6 (ratios are dyadic-exact: 1/2, 3/2).
        assert_eq!(*out, [13, 6]);
    }
}
