//! The LayerNorm step: decode each channel to one common integer scale (FQ-ViT's power-of-two
//! factors become left shifts), promote to about 16 bits (a left shift, so the integer mean and
//! the ten Newton steps of I-LayerNorm work in their accurate range), normalise with
//! I-LayerNorm, and let the epilogue apply γ, β and any fused activation: the normalised value
//! `z·√C/2^30` has per-channel scale `γ_c·√C/2^30` and offset `β_c`.

use super::super::kernels::Isa;
use super::super::kernels::layernorm::{GROUP, RowNorm};
use super::super::kernels::requant::{Fast, Narrow};
use super::super::nonlinear::i_layernorm;
use super::super::requant::{Encoder, Epilogue};
use super::Scratch;
use crate::exec::spare::Buffer;
use rayon::prelude::*;

/// Rows of at least this many values are normalised on the pool's threads.
const PARALLEL_VALUES: usize = 1 << 14;
/// Rows per task on the pool's threads (a DeiT-T image: 197 rows of 192).
const ROWS_PER_BAND: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub dim: usize,
    pub zero: Vec<i32>,
    /// Left shift per channel: its power-of-two factor plus the common promotion.
    pub shift: Vec<u32>,
    pub out: Epilogue,
    /// `out`'s faster forms, found once by [`LayerNorm::with_lanes`]; none until then (the
    /// rows then follow the definition).
    pub forms: Forms,
}

/// A LayerNorm's output requantization in its faster forms, where they exist: per channel in
/// i64 (a plain linear output), and the whole step in lanes where every channel also has a
/// 32-bit form. Found per call they were a serial stretch of every LayerNorm: at batch 1 on
/// two threads DeiT-T's 25 LayerNorms took 0.74× their one-thread time (`qvit bench
/// deit-tiny --executors int --batch 1 --steps --threads 1`, then `2`), its products and
/// attention 0.52–0.61×.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forms {
    fast: Option<Vec<Fast>>,
    lanes: Option<RowNorm>,
}

impl LayerNorm {
    /// Codes of the output: one per input code.
    pub fn output_len(&self, x: &[i32]) -> usize {
        x.len()
    }

    pub fn run(&self, isa: Isa, x: &[i32], out: &mut Buffer<i32>, s: &mut Scratch) {
        // Every row is written below, by lanes or by the definition.
        let out = out.overwrite(self.output_len(x));
        let d = self.dim;
        if d == 0 {
            return;
        }
        let forms = (self.forms.lanes.as_ref(), self.forms.fast.as_deref());
        let rows = |x: &[i32], out: &mut [i32], wide: &mut Vec<i64>, codes: &mut Vec<i32>| {
            self.rows(isa, forms, x, out, wide, codes)
        };
        // Rows are independent: bands of them on the pool's threads when there are enough
        // (at batch 1 DeiT's 25 LayerNorms had been serial on the image's thread).
        if x.len() >= PARALLEL_VALUES {
            let band = ROWS_PER_BAND * d;
            out.par_chunks_mut(band)
                .zip(x.par_chunks(band))
                .for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(wide, codes), (o, x)| rows(x, o, wide, codes),
                );
        } else {
            rows(x, out, &mut s.wide, &mut s.codes);
        }
    }

    /// The rows of `x` into `out`: in lanes where their values stay in 32 bits, else by the
    /// definition (`wide`, `codes`: scratch).
    fn rows(
        &self,
        isa: Isa,
        (lanes, fast): (Option<&RowNorm>, Option<&[Fast]>),
        x: &[i32],
        out: &mut [i32],
        wide: &mut Vec<i64>,
        codes: &mut Vec<i32>,
    ) {
        let d = self.dim;
        wide.resize(2 * d, 0);
        codes.resize(GROUP * d, 0);
        let (centred, z) = wide.split_at_mut(d);
        // A group of rows at a time in lanes, which turn away the rows whose values leave them.
        let group = GROUP * d;
        for (rows, orows) in x.chunks(group).zip(out.chunks_mut(group)) {
            let ran = match lanes {
                Some(l) => l.rows(isa, rows, &mut codes[..rows.len()], orows),
                None => 0,
            };
            let each = rows.chunks(d).zip(orows.chunks_mut(d)).enumerate();
            for (_, (row, orow)) in each.filter(|(r, _)| ran & 1 << r == 0) {
                self.row_by_definition(fast, row, orow, (centred, z));
            }
        }
    }

    /// One row by I-LayerNorm's definition and the output requantization (in i64 where it
    /// has that form), `centred` and `z` scratch as long as the row.
    fn row_by_definition(
        &self,
        fast: Option<&[Fast]>,
        row: &[i32],
        orow: &mut [i32],
        (centred, z): (&mut [i64], &mut [i64]),
    ) {
        for (c, (dst, &q)) in centred.iter_mut().zip(row).enumerate() {
            *dst = ((q - self.zero[c]) as i64) << self.shift[c];
        }
        i_layernorm(centred, z);
        match fast {
            Some(f) if z.iter().all(|v| v.unsigned_abs() < 1 << 31) => {
                for ((o, &v), f) in orow.iter_mut().zip(z.iter()).zip(f) {
                    *o = f.apply(v) as i32;
                }
            }
            _ => {
                for (c, o) in orow.iter_mut().enumerate() {
                    *o = self.out.apply(z[c], c);
                }
            }
        }
    }

    /// The step with its [`Forms`].
    pub fn with_lanes(mut self) -> Self {
        // A plain linear output's per-channel requantizations in i64 form, valid for inputs
        // below 2^31 in magnitude — which `z ≈ 2^30·y/std` is (checked per row).
        let fast: Option<Vec<Fast>> = match &self.out {
            Epilogue::Plain(Encoder::Linear(r)) => (0..self.dim).map(|c| r.fast(c, 0)).collect(),
            _ => None,
        };
        // The step in lanes ([`RowNorm`]), when every channel's output requantization also
        // has a 32-bit form.
        let narrow: Option<Vec<Narrow>> = fast
            .as_ref()
            .and_then(|f| f.iter().map(Fast::narrow).collect());
        let lanes = narrow.and_then(|n| RowNorm::new(&self.zero, &self.shift, &n));
        self.forms = Forms { fast, lanes };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::encoding::Encoding;
    use super::super::super::requant::Activation;
    use super::*;
    use crate::rng::Rng;

    /// DeiT-T's width, per-channel γ scales and β offsets, rows of every spread: the lanes'
    /// codes are the epilogue's definition applied to I-LayerNorm's output.
    #[test]
    fn rows_equal_the_definition() {
        let d = 192;
        let mut rng = Rng::new(4);
        let scale: Vec<f64> = (0..d)
            .map(|_| (100 + rng.below(1000)) as f64 * 1e-10)
            .collect();
        let offset: Vec<f64> = (0..d).map(|_| rng.below(200) as f64 * 1e-3 - 0.1).collect();
        let out = Encoding::Linear {
            scale: vec![0.03],
            zero: vec![-3],
            offset: vec![0.0],
            qmin: -128,
            qmax: 127,
        };
        let ln = LayerNorm {
            dim: d,
            zero: (0..d).map(|_| rng.below(20) as i32 - 10).collect(),
            shift: (0..d).map(|c| 6 + (c % 3) as u32).collect(),
            out: Epilogue::new(Activation::None, &scale, &offset, &out, d, "ln").unwrap(),
            forms: Forms::default(),
        }
        .with_lanes();
        // Enough rows to go on the pool in bands, the last band part-filled.
        let rows = 100;
        assert!(rows * d >= PARALLEL_VALUES && rows % ROWS_PER_BAND != 0);
        let mut x: Vec<i32> = (0..rows * d)
            .map(|i| {
                let spread = 1 + (i / d) * 6;
                rng.below(2 * spread + 1) as i32 - spread as i32
            })
            .collect();
        // The last row's values pass 2^31 once shifted: the definition's path.
        x[(rows - 1) * d] = 1 << 25;
        assert!(ln.forms.lanes.is_some(), "the rows run in lanes");
        for isa in Isa::available() {
            // Stale values in a longer buffer: every element must be written.
            let mut got = Buffer::from(vec![-7; x.len() + 5]);
            ln.run(isa, &x, &mut got, &mut Scratch::default());
            assert_rows(&ln, &x, &got);
            // Without its forms the step follows the definition: the same codes.
            let plain = LayerNorm {
                forms: Forms::default(),
                ..ln.clone()
            };
            let mut got = Buffer::from(vec![-7; x.len() + 5]);
            plain.run(isa, &x, &mut got, &mut Scratch::default());
            assert_rows(&plain, &x, &got);
        }
    }

    /// `got` is, row by row, the epilogue's definition applied to I-LayerNorm's output.
    fn assert_rows(ln: &LayerNorm, x: &[i32], got: &[i32]) {
        let d = ln.dim;
        for (r, row) in x.chunks(d).enumerate() {
            let centred: Vec<i64> = (0..d)
                .map(|c| ((row[c] - ln.zero[c]) as i64) << ln.shift[c])
                .collect();
            let mut z = vec![0; d];
            i_layernorm(&centred, &mut z);
            for c in 0..d {
                assert_eq!(
                    got[r * d + c],
                    ln.out.apply(z[c], c),
                    "row {r}, channel {c}"
                );
            }
        }
    }
}
