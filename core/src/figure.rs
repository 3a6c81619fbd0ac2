//! Figures for papers, drawn by `plotters`: a title, axis titles, ticks, a legend and the data,
//! written as SVG (text stays text, scalable) or PNG (text drawn with egui's Ubuntu Light, which
//! qvit embeds, so no system font is needed). `qvit plot` writes them headless from a sweep CSV;
//! the explorer's Explore tab writes the same figure of what it shows.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};
use crate::explore::scatter::{DesignScatter, Placement, extent};

/// The font family every figure's text uses.
const FONT: &str = "sans-serif";

/// A figure's file format, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Error::field(
                &path.display().to_string(),
                "file name",
                "a figure is written as .svg or .png; end the name with one of them",
            ),
        }
    }
}

/// How large a figure is: `width` × `height` in CSS pixels (1/96 inch, the SVG's own units),
/// and for PNG the pixels per inch (96 draws one pixel per unit; 300 for print).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
    pub dpi: f64,
}

/// The largest side a figure may have, in pixels (a 20,000 × 20,000 PNG is 1.2 GB of memory).
pub const MAX_PIXELS_PER_SIDE: u32 = 16_384;

impl Default for Size {
    fn default() -> Self {
        Self {
            width: 960,
            height: 640,
            dpi: 192.0,
        }
    }
}

impl Size {
    /// Checks the size and returns the PNG's pixel size and the scale from units to pixels.
    fn pixels(&self, format: Format, origin: &str) -> Result<((u32, u32), f64)> {
        if self.width < 200 || self.height < 150 {
            return Error::field(
                origin,
                "size",
                format!(
                    "{}×{} is too small for axes and a legend; give at least 200×150",
                    self.width, self.height
                ),
            );
        }
        if !(self.dpi.is_finite() && (24.0..=1200.0).contains(&self.dpi)) {
            return Error::field(
                origin,
                "dpi",
                format!("{} is not in 24–1200 pixels per inch", self.dpi),
            );
        }
        let scale = match format {
            Format::Svg => 1.0,
            Format::Png => self.dpi / 96.0,
        };
        let side = |units: u32| (f64::from(units) * scale).round();
        let (w, h) = (side(self.width), side(self.height));
        if w.max(h) > f64::from(MAX_PIXELS_PER_SIDE) {
            return Error::field(
                origin,
                "size",
                format!(
                    "{}×{} at {} dpi is {w}×{h} pixels; the largest side allowed is \
                     {MAX_PIXELS_PER_SIDE}",
                    self.width, self.height, self.dpi
                ),
            );
        }
        Ok(((w as u32, h as u32), scale))
    }
}

/// Writes `scatter` with `title` to `path` (SVG or PNG by its extension), atomically.
pub fn write_design_scatter(
    scatter: &DesignScatter,
    title: &str,
    path: &Path,
    size: Size,
) -> Result<()> {
    let origin = path.display().to_string();
    if scatter.is_empty() {
        return Error::field(
            &origin,
            "designs",
            format!(
                "no design has both a {} and a {} value to draw",
                scatter.x.name(),
                scatter.y.name()
            ),
        );
    }
    let format = Format::of(path)?;
    let (pixels, scale) = size.pixels(format, &origin)?;
    // Both backends measure text to lay the figure out; the bitmap one also draws it.
    register_font();
    let bytes = match format {
        Format::Svg => {
            let mut text = String::new();
            let root = SVGBackend::with_string(&mut text, pixels).into_drawing_area();
            draw_scatter(root, scatter, title, scale).map_err(|e| failed(&origin, e))?;
            text.into_bytes()
        }
        Format::Png => {
            let (w, h) = (pixels.0 as usize, pixels.1 as usize);
            let mut rgb = vec![255u8; w * h * 3];
            let root = BitMapBackend::with_buffer(&mut rgb, pixels).into_drawing_area();
            draw_scatter(root, scatter, title, scale).map_err(|e| failed(&origin, e))?;
            let rgba: Vec<u8> = rgb
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            return crate::export::write_png(path, w, h, &rgba);
        }
    };
    crate::ron_io::write_atomic(path, &bytes)
}

fn failed(origin: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidField {
        origin: origin.to_string(),
        field: "figure".into(),
        message: e.to_string(),
    }
}

/// Makes the embedded font the figures' `sans-serif` (once).
fn register_font() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        // The font is a known-good TTF compiled into qvit; a failure would only leave text out.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// The scatter on `root`, every length in units times `scale`.
fn draw_scatter<B: DrawingBackend>(
    root: DrawingArea<B, Shift>,
    s: &DesignScatter,
    title: &str,
    scale: f64,
) -> Drawn
where
    B::ErrorType: 'static,
{
    let px = |v: f64| (v * scale).round() as i32;
    root.fill(&WHITE)?;
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
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, px(20.0)))
        .margin(px(16.0))
        .x_label_area_size(px(44.0))
        .y_label_area_size(px(64.0))
        .build_cartesian_2d(xs.clone(), ys.clone())?;
    chart
        .configure_mesh()
        .x_desc(s.x.name())
        .y_desc(s.y.name())
        .label_style((FONT, px(14.0)))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .axis_desc_style((FONT, px(15.0)))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
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
    chart
        .draw_series(
            s.front
                .iter()
                .map(|&[x, y]| TriangleMarker::new((x, y), big, front.filled())),
        )?
        .label("Pareto front")
        .legend(move |(x, y)| TriangleMarker::new((x, y), big, front.filled()));
    // The legend goes to the corner with the fewest points and labels under it.
    let mut marks = all.clone();
    for p in &s.published {
        match p.at {
            Placement::Vertical(x) => marks.push([x, ys.end]),
            Placement::Horizontal(y) => marks.push([xs.end, y]),
            Placement::Point(_) => {}
        }
    }
    let corner = quiet_corner(&marks, &xs, &ys);
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
    chart
        .configure_series_labels()
        .position(corner)
        .label_font((FONT, px(13.0)))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The corner of the plot whose quarter-wide, fifth-high box holds the fewest of `marks`
/// (the first of lower right, upper right, lower left, upper left on a tie).
fn quiet_corner(
    marks: &[[f64; 2]],
    xs: &std::ops::Range<f64>,
    ys: &std::ops::Range<f64>,
) -> SeriesLabelPosition {
    let (w, h) = (xs.end - xs.start, ys.end - ys.start);
    let right = |x: f64| x >= xs.end - 0.3 * w;
    let left = |x: f64| x <= xs.start + 0.3 * w;
    let top = |y: f64| y >= ys.end - 0.25 * h;
    let bottom = |y: f64| y <= ys.start + 0.25 * h;
    let count = |fx: &dyn Fn(f64) -> bool, fy: &dyn Fn(f64) -> bool| {
        marks.iter().filter(|[x, y]| fx(*x) && fy(*y)).count()
    };
    [
        (SeriesLabelPosition::LowerRight, count(&right, &bottom)),
        (SeriesLabelPosition::UpperRight, count(&right, &top)),
        (SeriesLabelPosition::LowerLeft, count(&left, &bottom)),
        (SeriesLabelPosition::UpperLeft, count(&left, &top)),
    ]
    .into_iter()
    .min_by_key(|(_, n)| *n)
    .map_or(SeriesLabelPosition::LowerRight, |(c, _)| c)
}

/// A tick label: whole numbers without a decimal point, others to three significant digits
/// at most (`0.75`, not `0.7500000001`).
fn tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let text = format!("{v:.digits$}");
    let text = text.trim_end_matches('0');
    text.trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::scatter::{Axis, Published};

    fn scatter() -> DesignScatter {
        DesignScatter {
            x: Axis::Fps,
            y: Axis::Top1,
            others: vec![[100.0, 90.0], [200.0, 89.0]],
            front: vec![[300.0, 91.0]],
            published: vec![Published {
                label: "Some accelerator (deit-tiny, INT8)".into(),
                at: Placement::Vertical(250.0),
            }],
            x_range: Some((100.0, 300.0)),
            y_range: Some((89.0, 91.0)),
        }
    }

    #[test]
    fn svg_has_the_title_axes_legend_and_every_point() {
        let dir = std::env::temp_dir().join(format!("qvit-figure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.svg");
        write_design_scatter(&scatter(), "micro sweep", &path, Size::default()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "micro sweep",
            "FPS",
            "top-1 (%)",
            "designs",
            "Pareto front",
            "published accelerators",
            "Some accelerator (deit-tiny, INT8)",
        ] {
            assert!(svg.contains(text), "`{text}` missing");
        }
        // Two designs as circles (and one in the legend); the front as a polygon.
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("<polygon"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn png_is_drawn_at_the_asked_pixels_with_text() {
        let dir = std::env::temp_dir().join(format!("qvit-figure-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.png");
        let size = Size {
            width: 400,
            height: 300,
            dpi: 192.0,
        };
        write_design_scatter(&scatter(), "t", &path, size).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (800, 600));
        // Not blank: the axis titles and ticks put dark pixels into the left margin.
        let dark = img
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 500, "{dark} dark pixels");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_legend_goes_where_nothing_is_drawn() {
        let (xs, ys) = (0.0..10.0, 0.0..10.0);
        let corner = |marks: &[[f64; 2]]| format!("{:?}", quiet_corner(marks, &xs, &ys));
        assert_eq!(corner(&[]), "LowerRight");
        assert_eq!(corner(&[[9.0, 1.0]]), "UpperRight");
        assert_eq!(corner(&[[9.0, 1.0], [9.0, 9.0]]), "LowerLeft");
        assert_eq!(corner(&[[9.0, 1.0], [9.0, 9.0], [1.0, 1.0]]), "UpperLeft");
    }

    #[test]
    fn ticks_read_as_written_by_hand() {
        assert_eq!(tick(500.0), "500");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(-2.0), "-2");
        assert_eq!(tick(0.75), "0.75");
        assert_eq!(tick(0.7500000001), "0.75");
        assert_eq!(tick(91.5), "91.5");
        assert_eq!(tick(0.0123), "0.0123");
    }

    #[test]
    fn bad_names_sizes_and_empty_scatters_are_refused_by_name() {
        let s = scatter();
        let e = write_design_scatter(&s, "t", Path::new("f.pdf"), Size::default()).unwrap_err();
        assert!(e.to_string().contains(".svg or .png"), "{e}");
        let tiny = Size {
            width: 10,
            height: 10,
            dpi: 96.0,
        };
        let e = write_design_scatter(&s, "t", Path::new("f.svg"), tiny).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        let huge = Size {
            width: 20_000,
            height: 600,
            dpi: 96.0,
        };
        let e = write_design_scatter(&s, "t", Path::new("f.png"), huge).unwrap_err();
        assert!(e.to_string().contains("16384"), "{e}");
        let nan = Size {
            dpi: f64::NAN,
            ..Size::default()
        };
        let e = write_design_scatter(&s, "t", Path::new("f.png"), nan).unwrap_err();
        assert!(e.to_string().contains("dpi"), "{e}");
        let empty = DesignScatter {
            others: vec![],
            front: vec![],
            ..s
        };
        let e = write_design_scatter(&empty, "t", Path::new("f.svg"), Size::default()).unwrap_err();
        assert!(e.to_string().contains("no design"), "{e}");
    }
}
