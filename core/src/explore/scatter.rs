//! The design scatter as data: a sweep's designs on two axes, split into the Pareto front and
//! the rest, with the published accelerators of the model's family placed where they report
//! the axes (a point, or a reference line when they report one axis only). The explorer draws
//! it on screen and [`crate::figure`] draws it into SVG or PNG, so both show the same thing.

use std::fmt;
use std::str::FromStr;

use crate::accel::published::{PublishedAccelerator, PublishedPoint};
use crate::arch::Family;
use crate::error::{Error, Result};
use crate::explore::sweep::Design;

/// What a scatter axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Fps,
    Gops,
    GopsPerDsp,
    Top1,
}

impl Axis {
    pub const ALL: [Axis; 4] = [Axis::Fps, Axis::Gops, Axis::GopsPerDsp, Axis::Top1];

    /// The axis title.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Fps => "FPS",
            Axis::Gops => "GOPS",
            Axis::GopsPerDsp => "GOPS/DSP",
            Axis::Top1 => "top-1 (%)",
        }
    }

    /// The name on the command line (`--x fps`).
    pub fn key(self) -> &'static str {
        match self {
            Axis::Fps => "fps",
            Axis::Gops => "gops",
            Axis::GopsPerDsp => "gops-per-dsp",
            Axis::Top1 => "top1",
        }
    }

    pub fn of(self, d: &Design) -> Option<f64> {
        match self {
            Axis::Fps => Some(d.fps),
            Axis::Gops => Some(d.gops_per_dsp * d.dsps as f64),
            Axis::GopsPerDsp => Some(d.gops_per_dsp),
            Axis::Top1 => d.top1,
        }
    }

    pub fn of_published(self, p: &PublishedPoint) -> Option<f64> {
        match self {
            Axis::Fps => p.fps,
            Axis::Gops => p.gops,
            Axis::GopsPerDsp => p.gops_per_dsp,
            Axis::Top1 => None,
        }
    }
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for Axis {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Axis::ALL
            .into_iter()
            .find(|a| a.key() == s)
            .ok_or_else(|| Error::InvalidField {
                origin: "axis".into(),
                field: s.into(),
                message: format!(
                    "not an axis; choose one of {}",
                    Axis::ALL.map(Axis::key).join(", ")
                ),
            })
    }
}

/// True when a published figure's model (`deit-small`, `EfficientViT`, …) is of `family`.
pub fn of_family(model: &str, family: Family) -> bool {
    let model = model.to_lowercase();
    match family {
        Family::Deit => model.starts_with("deit"),
        Family::EfficientVit => model.starts_with("efficientvit"),
    }
}

/// True when a published figure for `published` (a model such as `deit-small`, or a family
/// such as `EfficientViT` when the paper names no variant) compares with designs of `model`:
/// the same model, or a figure for the family that `model` is of.
pub fn comparable(published: &str, model: &str) -> bool {
    let published = published.to_lowercase();
    if published == model.to_lowercase() {
        return true;
    }
    let family = crate::arch::ArchSpec::resolve(model).map(|s| s.family());
    matches!(
        (published.as_str(), family),
        ("efficientvit", Ok(Family::EfficientVit)) | ("deit", Ok(Family::Deit))
    )
}

/// Where a published accelerator goes on the scatter.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Point([f64; 2]),
    /// It reports the x axis only: a vertical reference line.
    Vertical(f64),
    /// It reports the y axis only: a horizontal reference line.
    Horizontal(f64),
}

/// A published accelerator on the scatter.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// `name (model, precision)`.
    pub label: String,
    pub at: Placement,
}

/// Front designs that share a range of the objective not drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontGroup {
    /// `top-1 91.60 %`, or `GOPS/DSP 0.61–0.75`.
    pub label: String,
    pub points: Vec<[f64; 2]>,
}

/// Shades for [`FrontGroup`]s, from the lowest values of the third objective to the highest
/// (ColorBrewer's OrRd, light to dark).
pub const GROUP_COLOURS: [[u8; 3]; 4] =
    [[253, 187, 132], [252, 141, 89], [227, 74, 51], [179, 0, 0]];

/// The shade of group `i` of `groups`: spread over [`GROUP_COLOURS`] so that two groups are
/// the lightest and the darkest.
pub fn group_colour(i: usize, groups: usize) -> [u8; 3] {
    let last = GROUP_COLOURS.len() - 1;
    let at = match groups {
        0 | 1 => last,
        k => (i * last + (k - 1) / 2) / (k - 1),
    };
    GROUP_COLOURS[at.min(last)]
}

/// A sweep's designs on two axes.
#[derive(Debug, Clone, PartialEq)]
pub struct DesignScatter {
    pub x: Axis,
    pub y: Axis,
    /// Designs off the Pareto front, and on it (those with a value on both axes).
    pub others: Vec<[f64; 2]>,
    pub front: Vec<[f64; 2]>,
    /// The front split by the Pareto objective that neither axis shows (FPS, GOPS/DSP or
    /// top-1), lowest first, at most [`GROUP_COLOURS`] groups: in two dimensions a front
    /// design can look dominated, and its shade says what it wins on. Empty when both axes
    /// are objectives of a front of two, or one axis is not an objective.
    pub front_groups: Vec<FrontGroup>,
    /// The objective the groups are of.
    pub third: Option<Axis>,
    pub published: Vec<Published>,
    /// The span of the designs on each axis, widened where every design has one value (top-1
    /// of one bit width) so that the axis has a readable range around it.
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
}

impl DesignScatter {
    /// `designs` on `x` and `y`, with the published figures that compare with them (see
    /// [`comparable`]).
    pub fn new(designs: &[Design], x: Axis, y: Axis, published: &[PublishedAccelerator]) -> Self {
        let mut models: Vec<&str> = designs.iter().map(|d| d.model.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        let point = |d: &Design| Some([x.of(d)?, y.of(d)?]);
        let others: Vec<[f64; 2]> = designs
            .iter()
            .filter(|d| !d.pareto)
            .filter_map(point)
            .collect();
        let front: Vec<[f64; 2]> = designs
            .iter()
            .filter(|d| d.pareto)
            .filter_map(point)
            .collect();
        let all: Vec<[f64; 2]> = others.iter().chain(&front).copied().collect();
        let third = third_objective(designs, x, y);
        let front_groups = third.map_or_else(Vec::new, |t| {
            let on_front: Vec<(&Design, [f64; 2])> = designs
                .iter()
                .filter(|d| d.pareto)
                .filter_map(|d| Some((d, point(d)?)))
                .collect();
            groups(&on_front, t)
        });
        let published = published
            .iter()
            .flat_map(|a| a.points.iter().map(move |p| (a, p)))
            .filter(|(_, p)| models.iter().any(|m| comparable(&p.model, m)))
            .filter_map(|(a, p)| {
                let at = match (x.of_published(p), y.of_published(p)) {
                    (Some(px), Some(py)) => Placement::Point([px, py]),
                    (Some(px), None) => Placement::Vertical(px),
                    (None, Some(py)) => Placement::Horizontal(py),
                    (None, None) => return None,
                };
                Some(Published {
                    label: format!("{} ({}, {})", a.name, p.model, p.precision),
                    at,
                })
            })
            .collect();
        Self {
            x_range: padded(extent(&all, 0), x),
            y_range: padded(extent(&all, 1), y),
            x,
            y,
            others,
            front,
            front_groups,
            third,
            published,
        }
    }

    /// True when no design has a value on both axes.
    pub fn is_empty(&self) -> bool {
        self.others.is_empty() && self.front.is_empty()
    }
}

/// The Pareto objective that neither axis shows, when the front is over three objectives
/// (every design has a top-1) and both axes are among them.
fn third_objective(designs: &[Design], x: Axis, y: Axis) -> Option<Axis> {
    let objectives = [Axis::Fps, Axis::GopsPerDsp, Axis::Top1];
    let three = !designs.is_empty() && designs.iter().all(|d| d.top1.is_some());
    let drawn = objectives.contains(&x) && objectives.contains(&y) && x != y;
    if !(three && drawn) {
        return None;
    }
    objectives.into_iter().find(|&a| a != x && a != y)
}

/// Front designs grouped by `third`: one group per value when there are few (a top-1 per bit
/// width), else equal-count ranges.
fn groups(front: &[(&Design, [f64; 2])], third: Axis) -> Vec<FrontGroup> {
    let mut values: Vec<f64> = front.iter().filter_map(|(d, _)| third.of(d)).collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let n = GROUP_COLOURS.len();
    // Each group's upper bound (inclusive), lowest first.
    let bounds: Vec<f64> = if values.len() <= n {
        values.clone()
    } else {
        (1..=n).map(|k| values[k * values.len() / n - 1]).collect()
    };
    let name = third.name();
    let fmt = |v: f64| match third {
        Axis::Top1 => format!("{v:.2} %"),
        Axis::GopsPerDsp => format!("{v:.3}"),
        _ => format!("{v:.0}"),
    };
    let name = name.trim_end_matches(" (%)");
    let mut lower = f64::NEG_INFINITY;
    bounds
        .iter()
        .map(|&upper| {
            let points: Vec<[f64; 2]> = front
                .iter()
                .filter(|(d, _)| third.of(d).is_some_and(|v| v > lower && v <= upper))
                .map(|(_, p)| *p)
                .collect();
            let first = values.iter().copied().find(|&v| v > lower).unwrap_or(upper);
            let label = if first == upper {
                format!("{name} {}", fmt(upper))
            } else {
                format!("{name} {}–{}", fmt(first), fmt(upper))
            };
            lower = upper;
            FrontGroup { label, points }
        })
        .collect()
}

/// A scatter's title: the designs' models, how many designs, how many on the front.
pub fn title(designs: &[Design]) -> String {
    let mut models: Vec<&str> = designs.iter().map(|d| d.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let on_front = designs.iter().filter(|d| d.pareto).count();
    format!(
        "{}: {} designs, {on_front} on the Pareto front",
        models.join(", "),
        designs.len()
    )
}

/// The smallest and largest coordinate `i` of `points`, if there are any.
pub fn extent(points: &[[f64; 2]], i: usize) -> Option<(f64, f64)> {
    let lo = points.iter().map(|p| p[i]).reduce(f64::min)?;
    let hi = points.iter().map(|p| p[i]).reduce(f64::max)?;
    Some((lo, hi))
}

/// A zero span widened to one point of top-1 or 5 % of the value either side.
fn padded(range: Option<(f64, f64)>, axis: Axis) -> Option<(f64, f64)> {
    let (lo, hi) = range?;
    if hi - lo > 1e-9 * lo.abs().max(1.0) {
        return Some((lo, hi));
    }
    let pad = if axis == Axis::Top1 {
        1.0
    } else {
        0.05 * lo.abs().max(1e-3)
    };
    Some((lo - pad, hi + pad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::published;

    fn design(fps: f64, top1: Option<f64>, pareto: bool) -> Design {
        Design {
            index: 0,
            model: "efficientvit-micro".into(),
            mat_pes: 8,
            mat_lanes: 8,
            rmac_pes: 8,
            rmac_lanes: 8,
            copies: 1,
            clock_mhz: 200.0,
            bits: "w8a8".into(),
            dsps: 100,
            fps,
            gops_per_dsp: 0.5,
            top1,
            pareto,
        }
    }

    #[test]
    fn axes_parse_by_their_keys_and_name_the_choices_otherwise() {
        for a in Axis::ALL {
            assert_eq!(a.key().parse::<Axis>().unwrap(), a);
        }
        let e = "latency".parse::<Axis>().unwrap_err().to_string();
        assert!(e.contains("latency") && e.contains("gops-per-dsp"), "{e}");
    }

    #[test]
    fn designs_split_by_the_front_and_one_top1_gets_a_readable_range() {
        let designs = [
            design(10.0, Some(90.0), false),
            design(20.0, Some(90.0), true),
            design(30.0, None, true),
        ];
        let s = DesignScatter::new(&designs, Axis::Fps, Axis::Top1, &[]);
        assert_eq!(s.others, vec![[10.0, 90.0]]);
        assert_eq!(
            s.front,
            vec![[20.0, 90.0]],
            "a design without top-1 is not drawn"
        );
        assert_eq!(s.x_range, Some((10.0, 20.0)));
        assert_eq!(s.y_range, Some((89.0, 91.0)));
        let s = DesignScatter::new(&designs[2..], Axis::Fps, Axis::Top1, &[]);
        assert!(s.is_empty() && s.x_range.is_none());
    }

    #[test]
    fn the_front_is_shaded_by_the_objective_neither_axis_shows() {
        let mut designs = vec![
            design(10.0, Some(91.0), true),
            design(20.0, Some(90.0), true),
            design(30.0, Some(91.0), true),
            design(5.0, Some(89.0), false),
        ];
        designs[1].gops_per_dsp = 0.7;
        // FPS × GOPS/DSP: top-1 is the third objective, two values, two groups.
        let s = DesignScatter::new(&designs, Axis::Fps, Axis::GopsPerDsp, &[]);
        assert_eq!(s.third, Some(Axis::Top1));
        let labels: Vec<&str> = s.front_groups.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(labels, ["top-1 90.00 %", "top-1 91.00 %"]);
        assert_eq!(s.front_groups[0].points, vec![[20.0, 0.7]]);
        assert_eq!(s.front_groups[1].points, vec![[10.0, 0.5], [30.0, 0.5]]);
        // FPS × top-1: GOPS/DSP is; GOPS is no objective, and without top-1 there are two.
        let s = DesignScatter::new(&designs, Axis::Fps, Axis::Top1, &[]);
        assert_eq!(s.third, Some(Axis::GopsPerDsp));
        assert!(
            DesignScatter::new(&designs, Axis::Gops, Axis::Top1, &[])
                .front_groups
                .is_empty()
        );
        let no_top1: Vec<Design> = designs
            .iter()
            .map(|d| Design {
                top1: None,
                ..d.clone()
            })
            .collect();
        assert!(
            DesignScatter::new(&no_top1, Axis::Fps, Axis::GopsPerDsp, &[])
                .third
                .is_none()
        );
        // Many values: four equal-count ranges that cover every front design once.
        let many: Vec<Design> = (0..10)
            .map(|i| design(i as f64, Some(80.0 + i as f64), true))
            .collect();
        let s = DesignScatter::new(&many, Axis::Fps, Axis::GopsPerDsp, &[]);
        assert_eq!(s.front_groups.len(), 4);
        assert_eq!(
            s.front_groups.iter().map(|g| g.points.len()).sum::<usize>(),
            10
        );
        assert_eq!(s.front_groups[0].label, "top-1 80.00 %–81.00 %");
        // Shades spread over the palette: two groups are its ends.
        assert_eq!(
            [group_colour(0, 2), group_colour(1, 2)],
            [GROUP_COLOURS[0], GROUP_COLOURS[3]]
        );
        assert_eq!(
            (0..4).map(|i| group_colour(i, 4)).collect::<Vec<_>>(),
            GROUP_COLOURS
        );
        assert_eq!(group_colour(0, 1), GROUP_COLOURS[3]);
    }

    #[test]
    fn published_figures_are_drawn_for_the_same_model_or_its_family() {
        assert!(of_family("deit-small", Family::Deit));
        assert!(of_family("EfficientViT", Family::EfficientVit));
        assert!(!of_family("deit-base", Family::EfficientVit));
        assert!(comparable("deit-small", "deit-small"));
        assert!(
            !comparable("deit-base", "deit-small"),
            "another model of the family"
        );
        assert!(
            comparable("EfficientViT", "efficientvit-b1"),
            "a figure for the family"
        );
        assert!(comparable("EfficientViT", "efficientvit-micro"));
        assert!(!comparable("EfficientViT", "deit-tiny"));
        assert!(!comparable("average", "deit-tiny"));
        let all = published::all().unwrap();
        let on = |model: &str, x: Axis, y: Axis| {
            let mut d = design(10.0, Some(90.0), true);
            d.model = model.into();
            DesignScatter::new(&[d], x, y, &all).published
        };
        // The one EfficientViT figure reports GOPS only: a horizontal line on FPS × GOPS,
        // nothing on FPS × top-1.
        let b1 = on("efficientvit-b1", Axis::Fps, Axis::Gops);
        assert_eq!(b1.len(), 1);
        assert_eq!(b1[0].at, Placement::Horizontal(780.2));
        assert!(
            b1[0].label.contains("(EfficientViT, W8A8)"),
            "{}",
            b1[0].label
        );
        assert!(on("efficientvit-b1", Axis::Fps, Axis::Top1).is_empty());
        // DeiT-T's INT8 figure reports FPS and GOPS/DSP: a point; DeiT-B's W1A6 FPS only.
        let tiny = on("deit-tiny", Axis::Fps, Axis::GopsPerDsp);
        assert!(
            tiny.iter()
                .any(|p| p.at == Placement::Point([245.3, 0.486]))
        );
        assert!(tiny.iter().all(|p| p.label.contains("(deit-tiny")));
        let base = on("deit-base", Axis::Fps, Axis::GopsPerDsp);
        assert!(base.iter().any(|p| p.at == Placement::Vertical(30.0)));
    }
}
