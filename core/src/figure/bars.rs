//! Bars: per-layer cycles coloured by what bounds them, or a histogram with the quantizer's
//! levels and clipping range as vertical lines.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Bars, Drawn, Frame, chart, legend, tick};

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
    let half = b.width / 2.0;
    let tops: Vec<[f64; 2]> = b
        .series
        .iter()
        .flat_map(|s| s.bars.iter().copied())
        .collect();
    // The x range holds every bar and line; the y range starts at zero.
    let edges = tops
        .iter()
        .flat_map(|&[x, _]| [x - half, x + half])
        .chain(b.lines.iter().flat_map(|l| l.at.iter().copied()));
    let (x0, x1) = edges.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let top = tops.iter().map(|&[_, h]| h).fold(0.0, f64::max);
    let margin = 0.02 * (x1 - x0).max(f64::MIN_POSITIVE);
    let frame = Frame {
        title,
        x_label: &b.x_label,
        y_label: &b.y_label,
        xs: (x0 - margin)..(x1 + margin),
        ys: 0.0..(top * 1.05).max(f64::MIN_POSITIVE),
        y_area: 72.0,
    };
    let x_tick = |v: &f64| match &b.x_ticks {
        Some(names) => super::channel_tick(names, *v),
        None => tick(*v),
    };
    let mut chart = chart(&root, &frame, scale, &x_tick)?;
    // Lines first, so the bars stay in front of a dense set of levels.
    for line in &b.lines {
        let [r, g, bl] = line.colour;
        let style = RGBColor(r, g, bl).stroke_width(px(1.0).max(1) as u32);
        let mut drawn = None;
        for &x in &line.at {
            let ends = [(x, frame.ys.start), (x, frame.ys.end)];
            drawn = Some(chart.draw_series(LineSeries::new(ends, style))?);
        }
        if let Some(d) = drawn {
            let long = px(8.0);
            d.label(line.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x - long, y), (x + long, y)], style));
        }
    }
    for series in &b.series {
        let [r, g, bl] = series.colour;
        let fill = RGBColor(r, g, bl).filled();
        let swatch = px(5.0);
        let bars = series
            .bars
            .iter()
            .map(|&[x, h]| Rectangle::new([(x - half, 0.0), (x + half, h)], fill));
        chart
            .draw_series(bars)?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                Rectangle::new([(x - swatch, y - swatch), (x + swatch, y + swatch)], fill)
            });
    }
    legend(&mut chart, &tops, scale)?;
    root.present()?;
    Ok(())
}
