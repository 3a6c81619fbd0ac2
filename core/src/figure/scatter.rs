//! The design scatter: designs, the Pareto front and the published figures.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Drawn, FONT, Frame, chart, legend, tick};
use crate::explore::scatter::{DesignScatter, Placement, extent, group_colour};

/// The scatter on `root`, every length in units times `scale`.
pub(super) fn draw<B: DrawingBackend>(
    root: DrawingArea<B, Shift>,
    s: &DesignScatter,
    title: &str,
    scale: f64,
) -> Drawn
where
    B::ErrorType: 'static,
{
    let px = |v: f64| (v * scale).round() as i32;
    let designs = RGBColor(70, 120, 190);
    let front = RGBColor(220, 80, 30);
    let grey = RGBColor(110, 110, 110);
    // The axes span the designs and every published figure drawn, with a margin.
    let mut all: Vec<[f64; 2]> = s.others.iter().chain(&s.front).copied().collect();
    for p in &s.published {
        if let Placement::Point(at) = p.at {
            all.push(at);
        }
    }
    let span = |i: usize, designs: Option<(f64, f64)>| {
        let lines = s.published.iter().filter_map(|p| match (p.at.clone(), i) {
            (Placement::Vertical(v), 0) | (Placement::Horizontal(v), 1) => Some(v),
            _ => None,
        });
        let (mut lo, mut hi) = extent(&all, i).unwrap_or((0.0, 1.0));
        if let Some((dlo, dhi)) = designs {
            (lo, hi) = (lo.min(dlo), hi.max(dhi));
        }
        for v in lines {
            (lo, hi) = (lo.min(v), hi.max(v));
        }
        let margin = 0.05 * (hi - lo);
        (lo - margin)..(hi + margin)
    };
    let (xs, ys) = (span(0, s.x_range), span(1, s.y_range));
    let frame = Frame {
        title,
        x_label: s.x.name(),
        y_label: s.y.name(),
        xs: xs.clone(),
        ys: ys.clone(),
        y_area: 64.0,
    };
    let mut chart = chart(&root, &frame, scale, &|v| tick(*v))?;
    let r = px(2.5);
    chart
        .draw_series(
            s.others
                .iter()
                .map(|&[x, y]| Circle::new((x, y), r, designs.filled())),
        )?
        .label("designs")
        .legend(move |(x, y)| Circle::new((x, y), r, designs.filled()));
    let big = px(5.0);
    // The front in one colour, or shaded by the objective neither axis shows.
    let plain = [(String::from("Pareto front"), s.front.clone(), front)];
    let shaded: Vec<(String, Vec<[f64; 2]>, RGBColor)> = s
        .front_groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let [r, gr, b] = group_colour(i, s.front_groups.len());
            (
                format!("Pareto front, {}", g.label),
                g.points.clone(),
                RGBColor(r, gr, b),
            )
        })
        .collect();
    let series = if shaded.is_empty() {
        plain.to_vec()
    } else {
        shaded
    };
    for (label, points, colour) in series {
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&[x, y]| TriangleMarker::new((x, y), big, colour.filled())),
            )?
            .label(label)
            .legend(move |(x, y)| TriangleMarker::new((x, y), big, colour.filled()));
    }
    // The legend goes to the corner with the fewest points and labels under it.
    let mut marks = all.clone();
    for p in &s.published {
        match p.at {
            Placement::Vertical(x) => marks.push([x, ys.end]),
            Placement::Horizontal(y) => marks.push([xs.end, y]),
            Placement::Point(_) => {}
        }
    }
    let ink = RGBColor(60, 60, 60);
    let text = (FONT, px(12.0)).into_font().color(&ink);
    // Labels sit where designs are sparse: a point's beside it, a vertical line's at its top,
    // a horizontal line's above its right end.
    let anchored = |h, v| text.pos(Pos::new(h, v));
    let mut published_drawn = false;
    for p in &s.published {
        let label = |at: (f64, f64), style: TextStyle<'static>| {
            Text::new(format!(" {} ", p.label), at, style)
        };
        match p.at {
            Placement::Point([x, y]) => {
                let half = px(4.0);
                chart.draw_series(std::iter::once(
                    EmptyElement::at((x, y))
                        + Rectangle::new([(-half, -half), (half, half)], grey.filled()),
                ))?;
                // To the point's left near the right edge, where the text would be cut.
                let side = if x > xs.start + 0.6 * (xs.end - xs.start) {
                    HPos::Right
                } else {
                    HPos::Left
                };
                chart.draw_series(std::iter::once(label((x, y), anchored(side, VPos::Center))))?;
            }
            Placement::Vertical(x) => {
                chart.draw_series(LineSeries::new([(x, ys.start), (x, ys.end)], grey))?;
                chart.draw_series(std::iter::once(label(
                    (x, ys.end),
                    anchored(HPos::Left, VPos::Top),
                )))?;
            }
            Placement::Horizontal(y) => {
                chart.draw_series(LineSeries::new([(xs.start, y), (xs.end, y)], grey))?;
                chart.draw_series(std::iter::once(label(
                    (xs.end, y),
                    anchored(HPos::Right, VPos::Bottom),
                )))?;
            }
        }
        published_drawn = true;
    }
    if published_drawn {
        // One legend entry for every published figure, drawn as an empty series.
        let side = px(4.0);
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label("published accelerators")
            .legend(move |(x, y)| {
                Rectangle::new([(x - side, y - side), (x + side, y + side)], grey.filled())
            });
    }
    legend(&mut chart, &marks, scale)?;
    root.present()?;
    Ok(())
}
