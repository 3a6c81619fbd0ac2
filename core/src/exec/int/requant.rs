//! Requantization: from an integer whose real value is `scale_c·v + offset_c` to the code of an
//! output point. Linear outputs use one dyadic multiply per channel with every constant (the
//! output zero-point, shifts, LayerNorm's β) folded into one addend before the shift:
//! `q = clamp((v·m_c + a_c + 2^(k_c−1)) >> k_c, qmin, qmax)` — a single rounding. Log outputs
//! compare `v` with thresholds. An [`Epilogue`] adds the activation fused before the point.

use serde::{Deserialize, Serialize};

use super::dyadic::Dyadic;
use super::encoding::{Encoding, log_boundaries};
use super::kernels::Isa;
use super::kernels::requant::{self as kernels, Fast, FastHardswish};
use super::nonlinear::LevelEncoder;
use super::nonlinear::hardswish::{hardswish_exponent, hardswish_product};
use super::nonlinear::levels::BinadeLookup;
use crate::error::{Error, Result};

/// The codes a requantization produces: `real = scale_c·(q − zero_c) + offset_c`, saturated to
/// `range`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub scale: &'a [f64],
    pub zero: &'a [i32],
    pub offset: &'a [f64],
    pub range: (i64, i64),
}

/// Per-channel `(m, k)` and addend, saturating to `qmin..=qmax`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requant {
    pub multiplier: Vec<Dyadic>,
    /// In units of `2^−k_c` of the output code: `(offset_c/s_out + zero_out)·2^k_c` (up to
    /// 71 bits when `k` is 62 and the zero-point 255).
    pub addend: Vec<i128>,
    pub qmin: i64,
    pub qmax: i64,
}

impl Requant {
    /// For inputs `scale[c]·v + offset[c]` into codes `(x − out.offset_c)/out.scale_c + zero_c`.
    /// Every vector has one entry per channel or one for all.
    pub fn new(
        scale: &[f64],
        offset: &[f64],
        out: &Target,
        channels: usize,
        what: &str,
    ) -> Result<Self> {
        let Target {
            scale: out_scale,
            zero: out_zero,
            offset: out_offset,
            range: (qmin, qmax),
        } = *out;
        let at = |v: &[f64], c: usize| v[c.min(v.len() - 1)];
        let mut multiplier = Vec::with_capacity(channels);
        let mut addend = Vec::with_capacity(channels);
        for c in 0..channels {
            let so = at(out_scale, c);
            let ratio = at(scale, c) / so;
            let d = Dyadic::from_real(ratio).ok_or_else(|| Error::Graph {
                model: String::new(),
                layer: what.to_string(),
                message: format!(
                    "channel {c}: the scale ratio {ratio:e} cannot be a 31-bit dyadic number"
                ),
            })?;
            let z = out_zero[c.min(out_zero.len() - 1)] as i128;
            let shift = ((at(offset, c) - at(out_offset, c)) / so * 2f64.powi(d.k as i32)).round();
            multiplier.push(d);
            addend.push((z << d.k) + shift as i128);
        }
        Ok(Self {
            multiplier,
            addend,
            qmin,
            qmax,
        })
    }

    /// Channel `c`'s constants with `bias` folded in, for i32 accumulators: the addend
    /// `bias·m + a` is split into a multiple of `2^k` (added after the shift, exactly) and a
    /// remainder below `2^k`, so the sum stays inside i64 whenever `k ≤ 60`.
    #[inline]
    pub(crate) fn fast(&self, c: usize, bias: i64) -> Option<Fast> {
        let d = self.multiplier[c];
        if d.k > 60 || d.k == 0 {
            return None;
        }
        let add = bias as i128 * d.m as i128 + self.addend[c];
        let hi = add >> d.k;
        let lo = add - (hi << d.k) + (1i128 << (d.k - 1));
        i64::try_from(hi).ok().map(|hi| Fast {
            m: d.m,
            lo: lo as i64,
            hi,
            k: d.k as u32,
            qmin: self.qmin,
            qmax: self.qmax,
        })
    }

    /// The same requantization with multipliers of at most `bits` significant bits (shifts and
    /// addends rescaled exactly), for inputs too wide for a 31-bit multiplier in i64.
    pub fn with_mantissa_bits(mut self, bits: u32) -> Self {
        for (d, a) in self.multiplier.iter_mut().zip(&mut self.addend) {
            let drop = (31 - bits).min(d.k as u32) as u8;
            if drop == 0 {
                continue;
            }
            let half = 1i64 << (drop - 1);
            d.m = ((d.m as i64 + half) >> drop) as i32;
            d.k -= drop;
            *a = (*a + (1i128 << (drop - 1))) >> drop;
        }
        self
    }

    /// `dst[i] = apply(src[i] + bias, c)`.
    pub fn apply_slice(&self, isa: Isa, c: usize, bias: i64, src: &[i32], dst: &mut [i32]) {
        match self.fast(c, bias) {
            Some(f) => kernels::requant(isa, &f, src, dst),
            None => {
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = self.apply(v as i64 + bias, c) as i32;
                }
            }
        }
    }

    #[inline]
    pub fn apply(&self, v: i64, c: usize) -> i64 {
        let d = self.multiplier[c];
        let p = v as i128 * d.m as i128 + self.addend[c];
        let r = if d.k == 0 {
            p
        } else {
            (p + (1i128 << (d.k - 1))) >> d.k
        };
        r.clamp(self.qmin as i128, self.qmax as i128) as i64
    }
}

/// From an integer to the codes of an output point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Encoder {
    Linear(Requant),
    /// Log levels, thresholds per channel.
    Levels(Vec<LevelEncoder>),
}

impl Encoder {
    /// For inputs whose real value is `scale[c]·v + offset[c]`.
    pub fn new(
        scale: &[f64],
        offset: &[f64],
        out: &Encoding,
        channels: usize,
        what: &str,
    ) -> Result<Self> {
        match out {
            Encoding::Linear {
                scale: os,
                zero,
                offset: oo,
                qmin,
                qmax,
            } => Ok(Encoder::Linear(Requant::new(
                scale,
                offset,
                &Target {
                    scale: os,
                    zero,
                    offset: oo,
                    range: (*qmin as i64, *qmax as i64),
                },
                channels,
                what,
            )?)),
            Encoding::Log(l) => {
                let (bounds, codes) = log_boundaries(l);
                let at = |v: &[f64], c: usize| v[c.min(v.len() - 1)];
                Ok(Encoder::Levels(
                    (0..channels)
                        .map(|c| {
                            LevelEncoder::new(&bounds, codes.clone(), at(scale, c), at(offset, c))
                        })
                        .collect(),
                ))
            }
        }
    }

    #[inline]
    pub fn encode(&self, v: i64, c: usize) -> i32 {
        match self {
            Encoder::Linear(r) => r.apply(v, c) as i32,
            Encoder::Levels(l) => l[c.min(l.len() - 1)].encode(v),
        }
    }

    /// `dst[i] = encode(src[i], c)` for a run of channel `c`: the requantization in lanes, or
    /// level codes by binade.
    pub fn encode_slice(&self, isa: Isa, c: usize, src: &[i32], dst: &mut [i32]) {
        self.channel(c).encode_slice(isa, src, dst);
    }

    /// Channel `c` ready for many runs of its values ([`ChannelEncoder`]).
    pub fn channel(&self, c: usize) -> ChannelEncoder<'_> {
        match self {
            Encoder::Linear(r) => ChannelEncoder::Linear(r, c),
            Encoder::Levels(l) => {
                ChannelEncoder::Levels(Box::new(l[c.min(l.len() - 1)].binade_lookup()))
            }
        }
    }
}

/// One channel of an [`Encoder`] for runs of its values, a level encoder's look-up by binade
/// made once. Made per run of a token wide (17 runs of 49 or 196 values per head in
/// EfficientViT-B1's linear attention), `binade_lookup` was 0.8 % of B1's integer time by
/// `perf`.
#[derive(Debug)]
pub enum ChannelEncoder<'a> {
    Linear(&'a Requant, usize),
    /// Boxed: the look-up holds 65 bounds.
    Levels(Box<BinadeLookup<'a>>),
}

impl ChannelEncoder<'_> {
    /// `dst[i]` = the code of `src[i]`.
    pub fn encode_slice(&self, isa: Isa, src: &[i32], dst: &mut [i32]) {
        match self {
            ChannelEncoder::Linear(r, c) => r.apply_slice(isa, *c, 0, src, dst),
            ChannelEncoder::Levels(lookup) => lookup.encode_all(isa, src, dst),
        }
    }
}

/// The activation between an accumulator and its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    None,
    Relu,
    Hardswish,
}

/// Accumulator → (activation) → code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Epilogue {
    Plain(Encoder),
    /// ReLU: the code, but never below the code of real 0 (every encoder is monotone).
    Relu {
        out: Encoder,
        floor: Vec<i32>,
    },
    /// Hardswish: requantize to `t` at scale `3/2^j` (clamped where the output saturates or
    /// is 0), form `p = t·clamp(t + 2^j, 0, 2^(j+1))`, clamp `p` to `p_range` (beyond it the
    /// output code saturates anyway), requantize that.
    Hardswish {
        to_t: Requant,
        j: u32,
        p_range: (i64, i64),
        out: Encoder,
    },
}

impl Epilogue {
    /// For an accumulator whose real value is `scale[c]·v + offset[c]` (one entry per output
    /// channel or one for all), into point `out`.
    pub fn new(
        activation: Activation,
        scale: &[f64],
        offset: &[f64],
        out: &Encoding,
        channels: usize,
        what: &str,
    ) -> Result<Self> {
        match activation {
            Activation::None => Ok(Epilogue::Plain(Encoder::new(
                scale, offset, out, channels, what,
            )?)),
            Activation::Relu => Ok(Epilogue::Relu {
                out: Encoder::new(scale, offset, out, channels, what)?,
                floor: (0..channels).map(|c| out.code_of(0.0, c)).collect(),
            }),
            Activation::Hardswish => {
                let (step, top, bottom) = match out {
                    Encoding::Linear {
                        scale: os,
                        qmin,
                        qmax,
                        ..
                    } => {
                        let step = os.iter().copied().fold(f64::INFINITY, f64::min);
                        let real = |q: i32, c: usize| {
                            let (s, z, o) = out.linear(c).expect("linear");
                            s * (q - z) as f64 + o
                        };
                        let top = (0..channels)
                            .map(|c| real(*qmax, c))
                            .fold(f64::NEG_INFINITY, f64::max);
                        let bottom = (0..channels)
                            .map(|c| real(*qmin, c))
                            .fold(f64::INFINITY, f64::min);
                        (step, top, bottom)
                    }
                    Encoding::Log(l) => (
                        l.scale as f64 * 2f64.powi(-(1 << l.bits)),
                        l.scale as f64,
                        0.0,
                    ),
                };
                let j = hardswish_exponent(step);
                let st = 3.0 / 2f64.powi(j as i32);
                // Below −3 the output is 0 whatever t is. Above, it saturates where
                // hardswish(x) passes the largest code's value: x itself from 3 on, the root of
                // x(x + 3)/6 = top below.
                let top = top + step;
                let x_sat = if top >= 3.0 {
                    top
                } else {
                    (-3.0 + (9.0 + 24.0 * top.max(0.0)).sqrt()) / 2.0
                };
                let lo = -(1i64 << j);
                let hi = (x_sat / st).ceil() as i64 + 1;
                let to_t = Requant::new(
                    scale,
                    offset,
                    &Target {
                        scale: &[st],
                        zero: &[0],
                        offset: &[0.0],
                        range: (lo, hi),
                    },
                    channels,
                    what,
                )?;
                let p_unit = st * st / 6.0;
                let p_hi = (top / p_unit).ceil().min(i64::MAX as f64 / 4.0) as i64;
                let p_lo = ((bottom - step).min(0.0) / p_unit)
                    .floor()
                    .max(i64::MIN as f64 / 4.0) as i64;
                Ok(Epilogue::Hardswish {
                    to_t,
                    j,
                    p_range: (p_lo, p_hi),
                    // p is far finer than an output step; 20 multiplier bits (2^−20 relative)
                    // keep |p·m| inside i64.
                    out: match Encoder::new(&[p_unit], &[0.0], out, channels, what)? {
                        Encoder::Linear(r) => Encoder::Linear(r.with_mantissa_bits(20)),
                        levels => levels,
                    },
                })
            }
        }
    }

    /// `dst[i] = apply(src[i] + bias, c)` for a slice of i32 accumulators of channel `c`:
    /// the per-channel constants are looked up once and the common cases run as loops the
    /// compiler vectorises.
    pub fn apply_slice(&self, isa: Isa, c: usize, bias: i64, src: &[i32], dst: &mut [i32]) {
        match self {
            Epilogue::Plain(Encoder::Linear(r)) => r.apply_slice(isa, c, bias, src, dst),
            Epilogue::Relu {
                out: Encoder::Linear(r),
                floor,
            } => {
                r.apply_slice(isa, c, bias, src, dst);
                let f = floor[c.min(floor.len() - 1)];
                dst.iter_mut().for_each(|v| *v = (*v).max(f));
            }
            Epilogue::Hardswish { .. } => match self.fast_hardswish(c, bias) {
                Some(h) => kernels::hardswish(isa, &h, src, dst),
                None => self.apply_slice_generic(c, bias, src, dst),
            },
            _ => self.apply_slice_generic(c, bias, src, dst),
        }
    }

    /// Channel `c`'s Hardswish epilogue in i64 arithmetic with i32 inputs (accumulators plus
    /// `bias`), when its constants allow; `None` for other epilogues.
    pub fn fast_hardswish(&self, c: usize, bias: i64) -> Option<FastHardswish> {
        let Epilogue::Hardswish {
            to_t,
            j,
            p_range: (p_lo, p_hi),
            out: Encoder::Linear(r),
        } = self
        else {
            return None;
        };
        let (t, o) = (to_t.fast(c, bias)?, r.fast(c, 0)?);
        ((p_lo.abs().max(p_hi.abs()) as i128) * (o.m.abs() as i128) < 1 << 62
            && *j < 30
            && t.qmin >= i32::MIN as i64
            && t.qmax <= i32::MAX as i64)
            .then_some(FastHardswish {
                to_t: t,
                j: *j,
                p_range: (*p_lo, *p_hi),
                out: o,
            })
    }

    fn apply_slice_generic(&self, c: usize, bias: i64, src: &[i32], dst: &mut [i32]) {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = self.apply(v as i64 + bias, c);
        }
    }

    #[inline]
    pub fn apply(&self, v: i64, c: usize) -> i32 {
        match self {
            Epilogue::Plain(e) => e.encode(v, c),
            Epilogue::Relu { out, floor } => out.encode(v, c).max(floor[c.min(floor.len() - 1)]),
            Epilogue::Hardswish {
                to_t,
                j,
                p_range,
                out,
            } => {
                let t = to_t.apply(v, c);
                out.encode(hardswish_product(t, *j).clamp(p_range.0, p_range.1), c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requant_folds_zero_point_and_offset() {
        // v at scale 0.1 with offset 0.25 → codes of scale 0.5, zero-point 3:
        // v = 11 → real 1.35 → 2.7 → 3 → code 6 (ratios such as 0.1/0.5 are not exactly dyadic,
        // so exact ties are not tested here).
        let r = Requant::new(
            &[0.1],
            &[0.25],
            &Target {
                scale: &[0.5],
                zero: &[3],
                offset: &[0.0],
                range: (0, 255),
            },
            1,
            "t",
        )
        .unwrap();
        assert_eq!(r.apply(11, 0), 6);
        assert_eq!(r.apply(-100, 0), 0); // saturates
        assert_eq!(r.apply(7, 0), 5); // 0.95/0.5 = 1.9 → 2 → 5
    }

    #[test]
    fn hardswish_epilogue_matches_float_rounding() {
        let out = Encoding::Linear {
            scale: vec![0.05],
            zero: vec![8],
            offset: vec![0.0],
            qmin: 0,
            qmax: 255,
        };
        let e = Epilogue::new(Activation::Hardswish, &[0.01], &[0.0], &out, 1, "t").unwrap();
        let mut off = 0;
        for v in -1000..=1500 {
            let x = v as f64 * 0.01;
            let h = x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
            let want = ((h / 0.05 + 0.5).floor() as i64 + 8).clamp(0, 255) as i32;
            let got = e.apply(v, 0);
            assert!((got - want).abs() <= 1, "v={v}: {got} vs {want}");
            off += usize::from(got != want);
        }
        assert!(off < 25, "{off} of 2,501 differ by one");
    }
}
