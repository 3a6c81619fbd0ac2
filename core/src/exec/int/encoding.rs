//! What the integers stored at a quantization point mean: the compile-time description that
//! turns an [`ActivationPlan`] into scales, zero-points and offsets (or a table of levels).
//! Nothing here runs per element; the executor sees only the integer constants derived from it.

use crate::error::{Error, Result};
use crate::quant::plan::ActivationPlan;
use crate::quant::quantizer::{Log, Quantizer, Uniform};

/// The real value of a stored code.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoding {
    /// `real = scale_c·(q − zero_c) + offset_c`, codes in `qmin..=qmax`. One entry per channel
    /// of the point's layout (or one for all). Per-channel scales come from Trio-ViT's
    /// migration factors, RepQ-ViT's per-channel LayerNorm scales, FQ-ViT's power-of-two
    /// factors; offsets from filter-wise shifting.
    Linear {
        scale: Vec<f64>,
        zero: Vec<i32>,
        offset: Vec<f64>,
        qmin: i32,
        qmax: i32,
    },
    /// Logarithmic levels `real = Δ·2^(−q/root)`; with `zero_code` the last code is 0.
    Log(Log),
}

impl Encoding {
    /// The encoding of one activation point's codes.
    pub fn of(plan: &ActivationPlan) -> Result<Self> {
        let channels = plan.layout.channels;
        check_plan(plan)?;
        let expand = |v: &[f32], group: usize| -> Vec<f64> {
            if v.len() == 1 {
                vec![v[0] as f64]
            } else {
                (0..channels)
                    .map(|c| v[(c / group.max(1)).min(v.len() - 1)] as f64)
                    .collect()
            }
        };
        let per_channel = |base: Vec<f64>, f: &dyn Fn(usize) -> f64| -> Vec<f64> {
            (0..channels)
                .map(|c| base[c.min(base.len() - 1)] * f(c))
                .collect()
        };
        match &plan.quantizer {
            Quantizer::Uniform(u) => {
                let (qmin, qmax) = Uniform::levels(u.bits, u.symmetric);
                let mut scale = expand(&u.scale, u.group);
                if let Some(m) = &plan.migration {
                    scale = per_channel(scale, &|c| m[c] as f64);
                }
                let zero = expand(&u.zero_point, u.group)
                    .into_iter()
                    .map(|z| z as i32)
                    .collect();
                let offset = match &plan.shift {
                    Some(z) => z.iter().map(|&v| v as f64).collect(),
                    None => vec![0.0],
                };
                Ok(Encoding::Linear {
                    scale,
                    zero,
                    offset,
                    qmin: qmin as i32,
                    qmax: qmax as i32,
                })
            }
            Quantizer::PowerOfTwoFactor(p) => Ok(Encoding::Linear {
                scale: (0..channels)
                    .map(|c| {
                        p.scale as f64 * f64::from(1u32 << p.alpha.get(c).copied().unwrap_or(0))
                    })
                    .collect(),
                zero: vec![p.zero_point as i32],
                offset: vec![0.0],
                qmin: 0,
                qmax: ((1u32 << p.bits) - 1) as i32,
            }),
            Quantizer::Log(l) => Ok(Encoding::Log(l.clone())),
            Quantizer::Twin(_) => Err(Error::Graph {
                model: String::new(),
                layer: plan.point.clone(),
                message:
                    "twin-uniform codes (ptq4vit) cannot be compiled to the integer executor; \
                          use a uniform, log2 or log√2 recipe for this tensor"
                        .into(),
            }),
        }
    }

    /// The smallest and largest stored code.
    pub fn code_range(&self) -> (i32, i32) {
        match self {
            Encoding::Linear { qmin, qmax, .. } => (*qmin, *qmax),
            Encoding::Log(l) => (0, (1 << l.bits) - 1),
        }
    }

    /// `(scale, zero, offset)` of channel `c` of a linear encoding (a per-tensor encoding's one
    /// value for every channel); `None` for a log encoding or one with no values.
    pub fn linear(&self, c: usize) -> Option<(f64, i32, f64)> {
        match self {
            Encoding::Linear {
                scale,
                zero,
                offset,
                ..
            } => {
                let at = |len: usize| len.checked_sub(1).map(|last| c.min(last));
                Some((
                    *scale.get(at(scale.len())?)?,
                    *zero.get(at(zero.len())?)?,
                    *offset.get(at(offset.len())?)?,
                ))
            }
            Encoding::Log(_) => None,
        }
    }

    /// True when every channel has the same scale and zero-point and no offset.
    pub fn is_per_tensor(&self) -> bool {
        match self {
            Encoding::Linear {
                scale,
                zero,
                offset,
                ..
            } => {
                scale.iter().all(|&s| s == scale[0])
                    && zero.iter().all(|&z| z == zero[0])
                    && offset.iter().all(|&o| o == 0.0)
            }
            Encoding::Log(_) => true,
        }
    }

    /// Concatenation along the channel axis (`channels` each).
    pub fn concat(parts: &[(&Encoding, usize)]) -> Option<Encoding> {
        let mut scale = Vec::new();
        let mut zero = Vec::new();
        let mut offset = Vec::new();
        let (mut lo, mut hi) = (i32::MAX, i32::MIN);
        for (e, channels) in parts {
            let (qmin, qmax) = e.code_range();
            lo = lo.min(qmin);
            hi = hi.max(qmax);
            for c in 0..*channels {
                let (s, z, o) = e.linear(c)?;
                scale.push(s);
                zero.push(z);
                offset.push(o);
            }
        }
        Some(Encoding::Linear {
            scale,
            zero,
            offset,
            qmin: lo,
            qmax: hi,
        })
    }

    /// The real value of code `q` in channel `c` (for reports: the executor never decodes).
    pub fn value_of(&self, q: i32, c: usize) -> f64 {
        match self {
            Encoding::Linear { .. } => {
                let (s, z, o) = self.linear(c).expect("linear");
                s * (q - z) as f64 + o
            }
            Encoding::Log(l) => log_level(l, q),
        }
    }

    /// The code a real value takes (compile time only: constants such as the code of 0).
    pub fn code_of(&self, x: f64, c: usize) -> i32 {
        match self {
            Encoding::Linear { qmin, qmax, .. } => {
                let (s, z, o) = self.linear(c).expect("linear");
                (((x - o) / s + 0.5).floor() as i64 + z as i64).clamp(*qmin as i64, *qmax as i64)
                    as i32
            }
            Encoding::Log(l) => match l.code(x as f32) {
                Some(q) => q as i32,
                None => (1 << l.bits) - 1,
            },
        }
    }
}

/// Real boundaries between consecutive levels of a log quantizer, ascending, with the code of
/// each interval: where `⌊−root·log2(x/Δ)⌉` changes, `x = Δ·2^(−(q + ½)/root)`.
pub fn log_boundaries(l: &Log) -> (Vec<f64>, Vec<i32>) {
    let root = l.root as f64;
    let top = l.max_level() as i32;
    let zero = (1i32 << l.bits) - 1;
    let mut bounds = Vec::new();
    let mut codes = Vec::new();
    // Below the smallest level: the zero code, or the smallest level when there is none.
    codes.push(if l.zero_code { zero } else { top });
    if l.zero_code {
        bounds.push(l.scale as f64 * (-(top as f64 + 0.5) / root).exp2());
        codes.push(top);
    }
    for q in (0..top).rev() {
        bounds.push(l.scale as f64 * (-(q as f64 + 0.5) / root).exp2());
        codes.push(q);
    }
    (bounds, codes)
}

/// The real level of a log code (0 for the zero code).
pub fn log_level(l: &Log, q: i32) -> f64 {
    if l.zero_code && q == (1 << l.bits) - 1 {
        0.0
    } else {
        l.scale as f64 * (-(q as f64) / l.root as f64).exp2()
    }
}

/// What the compiler relies on in a point's plan (plans are plain data and may be edited):
/// non-empty per-tensor or per-channel vectors, finite positive scales, migration factors and
/// shifts for every channel, bit widths the codes fit.
fn check_plan(plan: &ActivationPlan) -> Result<()> {
    let channels = plan.layout.channels;
    let bad = |message: String| {
        Err(Error::Graph {
            model: String::new(),
            layer: plan.point.clone(),
            message: format!("the quant plan is not usable here: {message}"),
        })
    };
    let per_channel = |v: usize| v == 1 || v >= channels;
    let finite_positive = |v: &[f32]| v.iter().all(|x| x.is_finite() && *x > 0.0);
    if let Quantizer::Uniform(u) = &plan.quantizer {
        if u.scale.is_empty() || u.zero_point.is_empty() || !finite_positive(&u.scale) {
            return bad(format!(
                "scales {:?} must be finite, positive and given",
                &u.scale[..u.scale.len().min(4)]
            ));
        }
        if !(2..=16).contains(&u.bits) {
            return bad(format!("{} bits (2 to 16 are supported)", u.bits));
        }
    }
    if let Quantizer::PowerOfTwoFactor(p) = &plan.quantizer
        && !(p.scale.is_finite()
            && p.scale > 0.0
            && (2..=16).contains(&p.bits)
            && p.alpha.iter().all(|&a| a <= 16))
    {
        return bad("a power-of-two factor quantizer needs a positive scale, 2–16 bits and factors up to 2^16".into());
    }
    if let Some(m) = &plan.migration
        && (m.len() < channels || !finite_positive(m))
    {
        return bad(format!(
            "{} migration factors for {channels} channels",
            m.len()
        ));
    }
    if let Some(z) = &plan.shift
        && (!per_channel(z.len()) || z.iter().any(|v| !v.is_finite()))
    {
        return bad(format!("{} shifts for {channels} channels", z.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_boundaries_agree_with_the_float_quantizer() {
        for (root, zero_code) in [(1, false), (1, true), (2, true)] {
            let l = Log {
                bits: 4,
                root,
                scale: 0.5,
                zero_code,
            };
            let (b, codes) = log_boundaries(&l);
            for i in 0..20_000 {
                let x = i as f64 * 3e-5;
                let want = l.code(x as f32).map_or((1 << 4) - 1, |q| q as i32);
                let got = codes[b.partition_point(|&t| x > t)];
                // Exactly at a boundary f32 and f64 may disagree; nowhere else.
                let near = b.iter().any(|&t| (x - t).abs() < 1e-6);
                assert!(
                    got == want || near,
                    "root {root}: x={x} got {got} want {want}"
                );
            }
        }
    }
}
