//! Box plots, one box per channel: p25–p75 with the median, whiskers p1–p99, dots at the
//! minimum and maximum; ticks name the channel drawn at each position.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Boxes, Drawn, Frame, channel_tick, chart, legend};

/// The boxes on `root`, every length in units times `scale`.
pub(super) fn draw<B: DrawingBackend>(
    root: DrawingArea<B, Shift>,
    b: &Boxes,
    title: &str,
    scale: f64,
) -> Drawn
where
    B::ErrorType: 'static,
{
    let px = |v: f64| (v * scale).round() as i32;
    let n = b.boxes.len();
    let lo = b
        .boxes
        .iter()
        .map(|s| f64::from(s.min))
        .fold(f64::INFINITY, f64::min);
    let hi = b
        .boxes
        .iter()
        .map(|s| f64::from(s.max))
        .fold(f64::NEG_INFINITY, f64::max);
    let margin = 0.05 * (hi - lo).max(1e-6);
    let frame = Frame {
        title,
        x_label: &b.x_label,
        y_label: &b.y_label,
        xs: -0.7..(n as f64 - 0.3),
        ys: (lo - margin)..(hi + margin),
        y_area: 64.0,
    };
    let mut chart = chart(&root, &frame, scale, &|v| channel_tick(&b.channels, *v))?;
    let body = RGBColor(200, 90, 70);
    let dots = RGBColor(70, 120, 190);
    let half = 0.35;
    let stroke = body.stroke_width(px(1.0).max(1) as u32);
    for (x, s) in b.boxes.iter().enumerate() {
        let x = x as f64;
        let v = |f: f32| f64::from(f);
        chart.draw_series([Rectangle::new(
            [(x - half, v(s.p25)), (x + half, v(s.p75))],
            stroke,
        )])?;
        chart.draw_series([
            PathElement::new([(x - half, v(s.median)), (x + half, v(s.median))], stroke),
            PathElement::new([(x, v(s.p1)), (x, v(s.p25))], stroke),
            PathElement::new([(x, v(s.p75)), (x, v(s.p99))], stroke),
        ])?;
        chart.draw_series([
            Circle::new((x, v(s.min)), px(1.5), dots.filled()),
            Circle::new((x, v(s.max)), px(1.5), dots.filled()),
        ])?;
    }
    // The legend says how to read a box, with an empty series for each mark.
    let swatch = px(5.0);
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("p25–p75 and median, whiskers p1–p99")
        .legend(move |(x, y)| {
            Rectangle::new([(x - swatch, y - swatch), (x + swatch, y + swatch)], stroke)
        });
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("minimum and maximum")
        .legend(move |(x, y)| Circle::new((x, y), px(1.5).max(2), dots.filled()));
    let marks: Vec<[f64; 2]> = b
        .boxes
        .iter()
        .enumerate()
        .flat_map(|(x, s)| [[x as f64, f64::from(s.min)], [x as f64, f64::from(s.max)]])
        .collect();
    legend(&mut chart, &marks, scale)?;
    root.present()?;
    Ok(())
}
