//! An activation point's fake-quant prepared once for a batch: the quantizer's per-channel
//! parameters in flat arrays (or, where a channel's runs are short, one per element of an
//! image), the log coder looked up, so each image's work is whole slices through SIMD lanes.

use super::log_codes::Coder;
use super::plan::ActivationPlan;
use super::points::Run;
use super::quantizer::{Quantizer, Uniform};
use super::uniform_lanes::{Grid, Param, Params, fake_slice};

/// Channel runs shorter than this take per-element parameters over the whole image instead,
/// so a small feature map (a 4×4 stage has runs of 16) is one slice, not a call per channel.
const SHORT_RUN: usize = 64;

/// `(m, h)` per channel or element: migration factors and shifts.
type Migration = Option<(Vec<f32>, Vec<f32>)>;

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
        let (plan, layout) = (self.plan, &self.plan.layout);
        match &self.how {
            How::Scalar => layout.map(item, |c, x| plan.fake(x, c)),
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
            } => {
                let image = layout.channels * layout.inner;
                let params = Params {
                    scale: Param::Each(scale),
                    zero: Param::Each(zero),
                    migration: migration
                        .as_ref()
                        .map(|(m, h)| (Param::Each(m), Param::Each(h))),
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
                per_element: false,
            } => layout.for_each_run(item, |run, xs| {
                let params = match run {
                    Run::Row => Params {
                        scale: Param::Each(scale),
                        zero: Param::Each(zero),
                        migration: migration
                            .as_ref()
                            .map(|(m, h)| (Param::Each(m), Param::Each(h))),
                    },
                    Run::Channel(c) => Params {
                        scale: Param::One(scale[c]),
                        zero: Param::One(zero[c]),
                        migration: migration
                            .as_ref()
                            .map(|(m, h)| (Param::One(m[c]), Param::One(h[c]))),
                    },
                };
                fake_slice(xs, &params, grid);
            }),
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
    // Only whole channels can be spread over an image: a partial `take` keeps its runs.
    let per_element =
        layout.inner > 1 && layout.inner < SHORT_RUN && layout.take == (0..layout.inner);
    if per_element {
        let spread = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .flat_map(|&p| std::iter::repeat_n(p, layout.inner))
                .collect()
        };
        (scale, zero) = (spread(&scale), spread(&zero));
        migration = migration.map(|(m, h)| (spread(&m), spread(&h)));
    }
    How::Uniform {
        grid,
        scale,
        zero,
        migration,
        per_element,
    }
}
