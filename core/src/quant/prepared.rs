//! An activation point's fake-quant prepared once for a batch: the quantizer's per-channel
//! parameters in flat arrays (or, where a channel's runs are short, one per element of an
//! image), the log coder looked up, so each image's work is whole slices through SIMD lanes.

use rayon::prelude::*;

use crate::exec::cpu::{FloatLanes, float_lanes};

use super::log_codes::Coder;
use super::plan::ActivationPlan;
use super::points::{Layout, Run};
use super::quantizer::{Quantizer, Uniform};
use super::uniform_lanes::{
    Grid, Param, Params, Reciprocals, code_bound, fake_channels, fake_slice, reciprocals,
};

/// Channel runs shorter than this take per-element parameters over the whole image instead,
/// so a small feature map (a 4×4 stage has runs of 16) is one slice, not a call per channel,
/// where the lanes by reciprocals ([`fake_channels`]) do not run.
const SHORT_RUN: usize = 64;

/// Values of one image from which [`PreparedPoint::apply_split`] splits them: 64 KiB, a few
/// microseconds of work, so a pool thread's turn costs little beside it.
const PARALLEL_VALUES: usize = 1 << 14;

/// `(m, h)` per channel or element: migration factors and shifts.
type Migration = Option<(Vec<f32>, Vec<f32>)>;

/// [`Reciprocals`] of a point's parameters, where every scale and factor has one.
#[derive(Debug)]
struct Inverses {
    scale: Vec<f32>,
    migration: Option<Vec<f32>>,
    bound: f32,
}

impl Inverses {
    /// The reciprocals of elements `range` of the arrays, or of channel `one`'s entries.
    fn of(&self, range: std::ops::Range<usize>, one: Option<usize>) -> Reciprocals<'_> {
        fn param(v: &[f32], range: std::ops::Range<usize>, one: Option<usize>) -> Param<'_> {
            match one {
                Some(c) => Param::One(v[c]),
                None => Param::Each(&v[range]),
            }
        }
        Reciprocals {
            scale: param(&self.scale, range.clone(), one),
            migration: self.migration.as_deref().map(|m| param(m, range, one)),
            bound: self.bound,
        }
    }
}

/// What one image's work needs, looked up once.
#[derive(Debug)]
enum How {
    /// Uniform parameters per channel, or per element of `[channels, inner]` when
    /// `per_element`.
    Uniform {
        grid: Grid,
        scale: Vec<f32>,
        zero: Vec<f32>,
        migration: Migration,
        /// The reciprocals, laid out as `scale` and `migration`, where they exist.
        inverses: Option<Inverses>,
        per_element: bool,
    },
    Log(Coder),
    /// Every other quantizer: [`ActivationPlan::fake`] per element.
    Scalar,
}

/// One point ready to fake-quantize many images.
#[derive(Debug)]
pub struct PreparedPoint<'a> {
    plan: &'a ActivationPlan,
    how: How,
}

impl<'a> PreparedPoint<'a> {
    pub fn new(plan: &'a ActivationPlan) -> Self {
        let how = match &plan.quantizer {
            Quantizer::Uniform(u) => uniform(plan, u),
            Quantizer::Log(l) if plan.migration.is_none() && plan.shift.is_none() => {
                How::Log(Coder::new(l.root, plan.rounding))
            }
            _ => How::Scalar,
        };
        Self { plan, how }
    }

    /// Fake-quantizes the point's elements of one image's tensor in place: bit for bit what
    /// [`ActivationPlan::fake`] gives each of them.
    pub fn apply(&self, item: &mut [f32]) {
        self.apply_part(item, &self.plan.layout, 0);
    }

    /// As [`PreparedPoint::apply`], a large image's values in parts on the pool (a batch of
    /// one image has no other work for the pool's other threads: on EfficientViT-B1 the image's
    /// thread spent 10 % of its time quantizing alone). Every value is quantized on its own,
    /// so the parts give the same bits.
    pub fn apply_split(&self, item: &mut [f32]) {
        let layout = &self.plan.layout;
        assert!(
            item.len() >= layout.outer * layout.channels * layout.inner,
            "a tensor of {} elements is smaller than its layout {layout:?}",
            item.len()
        );
        let parts = layout.parts(PARALLEL_VALUES);
        if parts.len() < 2 {
            return self.apply(item);
        }
        let mut slices = Vec::with_capacity(parts.len());
        let (mut rest, mut at) = (item, 0);
        for part in &parts {
            let (_, tail) = rest.split_at_mut(part.range.start - at);
            let (values, tail) = tail.split_at_mut(part.range.len());
            slices.push(values);
            (rest, at) = (tail, part.range.end);
        }
        parts
            .par_iter()
            .zip(slices)
            .for_each(|(part, xs)| self.apply_part(xs, &part.layout, part.first_channel));
    }

    /// Fake-quantizes the elements of `layout` in `item`, whose channel 0 is the point's
    /// channel `first_channel` (a part of the image, [`Layout::parts`]).
    fn apply_part(&self, item: &mut [f32], layout: &Layout, first_channel: usize) {
        let plan = self.plan;
        let channels = first_channel..first_channel + layout.channels;
        match &self.how {
            How::Scalar => layout.map(item, |c, x| plan.fake(x, first_channel + c)),
            How::Log(coder) => {
                let Quantizer::Log(l) = &plan.quantizer else {
                    unreachable!("prepared from a log quantizer")
                };
                layout.for_each_run(item, |_, xs| l.fake_slice(coder, xs));
            }
            How::Uniform {
                grid,
                scale,
                zero,
                migration,
                per_element: true,
                ..
            } => {
                let image = layout.channels * layout.inner;
                let own = (channels.start * layout.inner)..(channels.end * layout.inner);
                let params = Params {
                    scale: Param::Each(&scale[own.clone()]),
                    zero: Param::Each(&zero[own.clone()]),
                    migration: migration
                        .as_ref()
                        .map(|(m, h)| (Param::Each(&m[own.clone()]), Param::Each(&h[own.clone()]))),
                    // Per-element points keep no reciprocals (`uniform`): the lanes that
                    // read them take the channels' runs instead.
                    reciprocals: None,
                };
                for xs in item.chunks_exact_mut(image).take(layout.outer) {
                    fake_slice(xs, &params, grid);
                }
            }
            How::Uniform {
                grid,
                scale,
                zero,
                migration,
                inverses,
                per_element: false,
            } => {
                let params = Params {
                    scale: Param::Each(&scale[channels.clone()]),
                    zero: Param::Each(&zero[channels.clone()]),
                    migration: migration.as_ref().map(|(m, h)| {
                        (
                            Param::Each(&m[channels.clone()]),
                            Param::Each(&h[channels.clone()]),
                        )
                    }),
                    reciprocals: inverses.as_ref().map(|i| i.of(channels.clone(), None)),
                };
                if layout.inner > 1 && layout.take == (0..layout.inner) {
                    // Whole channels: one call per image's block of them.
                    let block = layout.channels * layout.inner;
                    for xs in item.chunks_exact_mut(block).take(layout.outer) {
                        fake_channels(xs, layout.inner, &params, grid);
                    }
                    return;
                }
                layout.for_each_run(item, |run, xs| {
                    let params = match run {
                        Run::Row => params,
                        Run::Channel(c) => {
                            let c = first_channel + c;
                            Params {
                                scale: Param::One(scale[c]),
                                zero: Param::One(zero[c]),
                                migration: migration
                                    .as_ref()
                                    .map(|(m, h)| (Param::One(m[c]), Param::One(h[c]))),
                                reciprocals: inverses.as_ref().map(|i| i.of(c..c + 1, Some(c))),
                            }
                        }
                    };
                    fake_slice(xs, &params, grid);
                })
            }
        }
    }
}

fn uniform(plan: &ActivationPlan, u: &Uniform) -> How {
    let (qmin, qmax) = Uniform::levels(u.bits, u.symmetric);
    let grid = Grid {
        qmin,
        qmax,
        rounding: plan.rounding,
    };
    let layout = &plan.layout;
    let channels = layout.channels;
    let (mut scale, mut zero): (Vec<f32>, Vec<f32>) =
        (0..channels).map(|c| u.parameters(c)).unzip();
    let mut migration = match (&plan.migration, &plan.shift) {
        (None, None) => None,
        (m, h) => Some((
            m.clone().unwrap_or_else(|| vec![1.0; channels]),
            h.clone().unwrap_or_else(|| vec![0.0; channels]),
        )),
    };
    let inverses = (|| {
        Some(Inverses {
            scale: reciprocals(&scale)?,
            migration: match &migration {
                Some((m, _)) => Some(reciprocals(m)?),
                None => None,
            },
            bound: code_bound(&grid, &zero)?,
        })
    })();
    // Only whole channels can be spread over an image: a partial `take` keeps its runs. The
    // lanes by reciprocals take short runs in one call ([`fake_channels`]), each
    // channel's parameters broadcast, where per-element ones stream seven arrays through the
    // cache as large as the map.
    let fast = inverses.is_some() && float_lanes() != FloatLanes::Baseline;
    let per_element =
        layout.inner > 1 && layout.inner < SHORT_RUN && layout.take == (0..layout.inner) && !fast;
    if per_element {
        let spread = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .flat_map(|&p| std::iter::repeat_n(p, layout.inner))
                .collect()
        };
        (scale, zero) = (spread(&scale), spread(&zero));
        migration = migration.map(|(m, h)| (spread(&m), spread(&h)));
    }
    // Only the lanes by reciprocals read them, and they take the channels' runs.
    let inverses = inverses.filter(|_| !per_element);
    How::Uniform {
        grid,
        scale,
        zero,
        migration,
        inverses,
        per_element,
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::quant::Rounding;
    use crate::quant::points::TensorKind;
    use crate::quant::quantizer::Log;
    use crate::rng::Rng;

    fn layout(outer: usize, channels: usize, inner: usize, take: Range<usize>) -> Layout {
        Layout {
            outer,
            channels,
            inner,
            take,
        }
    }

    fn plan(
        layout: &Layout,
        quantizer: Quantizer,
        migrated: bool,
        rng: &mut Rng,
    ) -> ActivationPlan {
        let per_channel = |rng: &mut Rng, lo, hi| -> Vec<f32> {
            (0..layout.channels).map(|_| rng.uniform(lo, hi)).collect()
        };
        ActivationPlan {
            point: "test".into(),
            node: 1,
            kind: TensorKind::Other,
            layout: layout.clone(),
            bits: 8,
            quantizer,
            migration: migrated.then(|| per_channel(rng, 0.5, 2.0)),
            shift: migrated.then(|| per_channel(rng, -0.5, 0.5)),
            rounding: Rounding::HalfEven,
            note: String::new(),
        }
    }

    /// Split over the pool, an image gets the bits of the unsplit pass: for every way a point
    /// is prepared (per-channel runs, per-element parameters, log codes, the scalar fallback)
    /// and the layouts of the real models (DeiT-T's tokens, B1's maps at 56² and 7², a
    /// linear attention's part of a matmul).
    #[test]
    fn split_images_get_the_bits_of_whole_ones() {
        let mut rng = Rng::new(5);
        let layouts = [
            layout(197, 192, 1, 0..1),
            layout(1, 64, 56 * 56, 0..56 * 56),
            layout(1, 512, 7 * 7, 0..7 * 7),
            layout(8, 48, 196, 16..32),
            layout(1, 3, 224 * 224, 0..224 * 224),
        ];
        for l in &layouts {
            let channels = l.channels;
            let uniform = |rng: &mut Rng, symmetric| {
                Quantizer::Uniform(Uniform {
                    bits: 8,
                    symmetric,
                    scale: (0..channels).map(|_| rng.uniform(0.01, 0.1)).collect(),
                    zero_point: (0..channels)
                        .map(|_| {
                            if symmetric {
                                0.0
                            } else {
                                rng.uniform(0.0, 255.0).round()
                            }
                        })
                        .collect(),
                    group: 1,
                })
            };
            let log = Quantizer::Log(Log {
                bits: 4,
                root: 2,
                scale: 1.0,
                zero_code: true,
            });
            let plans = [
                plan(l, uniform(&mut rng, false), false, &mut rng),
                plan(l, uniform(&mut rng, true), true, &mut rng),
                plan(l, log.clone(), false, &mut rng),
                plan(l, log, true, &mut rng),
            ];
            let len = l.outer * l.channels * l.inner;
            let item: Vec<f32> = (0..len).map(|_| 3.0 * rng.normal()).collect();
            assert!(l.parts(PARALLEL_VALUES).len() > 1, "{l:?} is split");
            for p in &plans {
                let prepared = PreparedPoint::new(p);
                let (mut whole, mut split) = (item.clone(), item.clone());
                prepared.apply(&mut whole);
                prepared.apply_split(&mut split);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(bits(&whole) == bits(&split), "{l:?}, {:?}", p.quantizer);
                assert_ne!(whole, item, "the point quantizes");
            }
        }
    }
}
