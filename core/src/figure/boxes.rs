//! Box plots, one box per channel: p25–p75 with the median, whiskers p1–p99, dots at the
//! minimum and maximum; ticks name the channel drawn at each position.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Boxes, Drawn, FONT, channel_tick, tick};

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
    root.fill(&WHITE)?;
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
    let xs = -0.7..(n as f64 - 0.3);
    let ys = (lo - margin)..(hi + margin);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, px(20.0)))
        .margin(px(16.0))
        .x_label_area_size(px(44.0))
        .y_label_area_size(px(64.0))
        .build_cartesian_2d(xs.clone(), ys.clone())?;
    let order = b.channels.clone();
    chart
        .configure_mesh()
        .x_desc(b.x_label.as_str())
        .y_desc(b.y_label.as_str())
        .label_style((FONT, px(14.0)))
        .axis_desc_style((FONT, px(15.0)))
        .x_label_formatter(&|v| channel_tick(&order, *v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
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
    chart
        .configure_series_labels()
        .position(super::quiet_corner(&marks, &xs, &ys))
        .label_font((FONT, px(13.0)))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    root.present()?;
    Ok(())
}
