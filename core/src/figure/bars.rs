//! Bars: per-layer cycles coloured by what bounds them, or a histogram with the quantizer's
//! levels and clipping range as vertical lines.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Bars, Drawn, FONT, quiet_corner, tick};

/// The bars on `root`, every length in units times `scale`.
pub(super) fn draw<B: DrawingBackend>(
    root: DrawingArea<B, Shift>,
    b: &Bars,
    title: &str,
    scale: f64,
) -> Drawn
where
    B::ErrorType: 'static,
{
    let px = |v: f64| (v * scale).round() as i32;
    root.fill(&WHITE)?;
    let half = b.width / 2.0;
    let bars = b.series.iter().flat_map(|s| &s.bars);
    let (mut x0, mut x1, mut top) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &[x, h] in bars.clone() {
        (x0, x1, top) = (x0.min(x - half), x1.max(x + half), top.max(h));
    }
    for line in &b.lines {
        for &x in &line.at {
            (x0, x1) = (x0.min(x), x1.max(x));
        }
    }
    let margin = 0.02 * (x1 - x0).max(f64::MIN_POSITIVE);
    let xs = (x0 - margin)..(x1 + margin);
    let ys = 0.0..(top * 1.05).max(f64::MIN_POSITIVE);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, px(20.0)))
        .margin(px(16.0))
        .x_label_area_size(px(44.0))
        .y_label_area_size(px(72.0))
        .build_cartesian_2d(xs.clone(), ys.clone())?;
    let ticks = b.x_ticks.clone();
    let x_tick = move |v: &f64| match &ticks {
        Some(names) => super::channel_tick(names, *v),
        None => tick(*v),
    };
    chart
        .configure_mesh()
        .x_desc(b.x_label.as_str())
        .y_desc(b.y_label.as_str())
        .label_style((FONT, px(14.0)))
        .axis_desc_style((FONT, px(15.0)))
        .x_label_formatter(&x_tick)
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    // Lines first, so the bars stay in front of a dense set of levels.
    for line in &b.lines {
        for &x in &line.at {
            (x0, x1) = (x0.min(x), x1.max(x));
        }
    }
    let margin = 0.02 * (x1 - x0).max(f64::MIN_POSITIVE);
    let xs = (x0 - margin)..(x1 + margin);
    let ys = 0.0..(top * 1.05).max(f64::MIN_POSITIVE);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, px(20.0)))
        .margin(px(16.0))
        .x_label_area_size(px(44.0))
        .y_label_area_size(px(72.0))
        .build_cartesian_2d(xs.clone(), ys.clone())?;
    let ticks = b.x_ticks.clone();
    let x_tick = move |v: &f64| match &ticks {
        Some(names) => super::channel_tick(names, *v),
        None => tick(*v),
    };
    chart
        .configure_mesh()
        .x_desc(b.x_label.as_str())
        .y_desc(b.y_label.as_str())
        .label_style((FONT, px(14.0)))
        .axis_desc_style((FONT, px(15.0)))
        .x_label_formatter(&x_tick)
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    for series in &b.series {
        let [r, g, bl] = series.colour;
        let colour = RGBColor(r, g, bl);
        let swatch = px(5.0);
        chart
            .draw_series(
                series.bars.iter().map(|&[x, h]| {
                    Rectangle::new([(x - half, 0.0), (x + half, h)], colour.filled())
                }),
            )?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                Rectangle::new(
                    [(x - swatch, y - swatch), (x + swatch, y + swatch)],
                    colour.filled(),
                )
            });
    }
    for line in &b.lines {
        let [r, g, bl] = line.colour;
        let colour = RGBColor(r, g, bl);
        let style = colour.stroke_width(px(1.0).max(1) as u32);
        let mut drawn = None;
        for &x in &line.at {
            drawn = Some(chart.draw_series(LineSeries::new([(x, ys.start), (x, ys.end)], style))?);
        }
        if let Some(d) = drawn {
            let long = px(8.0);
            d.label(line.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x - long, y), (x + long, y)], style));
        }
    }
    let marks: Vec<[f64; 2]> = b
        .series
        .iter()
        .flat_map(|s| &s.bars)
        .map(|&[x, h]| [x, h])
        .collect();
    chart
        .configure_series_labels()
        .position(quiet_corner(&marks, &xs, &ys))
        .label_font((FONT, px(13.0)))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    root.present()?;
    Ok(())
}
