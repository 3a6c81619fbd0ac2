//! Figures for papers, drawn by `plotters`: a title, axis titles, ticks, a legend and the data,
//! written as SVG (text stays text, scalable) or PNG (text drawn with egui's Ubuntu Light, which
//! qvit embeds, so no system font is needed). A [`Figure`] is the data of one plot; `qvit plot`
//! writes a sweep's scatter headless, and the explorer writes any plot it shows.

mod bars;
mod boxes;
mod scatter;

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::explore::scatter::{DesignScatter, Placement};
use crate::quant::stats::BoxStats;

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

/// One plot as data, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    /// A sweep's designs on two axes.
    Scatter(DesignScatter),
    Bars(Bars),
    Boxes(Boxes),
}

/// Bars of one width in named, coloured series, and vertical lines (a quantizer's levels).
#[derive(Debug, Clone, PartialEq)]
pub struct Bars {
    pub x_label: String,
    pub y_label: String,
    /// Every bar's width, in x units.
    pub width: f64,
    pub series: Vec<BarSeries>,
    pub lines: Vec<Lines>,
    /// What the tick at position `i` names (a layer, a channel), when bars stand at 0, 1, …
    pub x_ticks: Option<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BarSeries {
    pub name: String,
    pub colour: [u8; 3],
    /// `[centre, height]` of each bar.
    pub bars: Vec<[f64; 2]>,
}

/// Vertical lines at `at`, one legend entry for all.
#[derive(Debug, Clone, PartialEq)]
pub struct Lines {
    pub name: String,
    pub colour: [u8; 3],
    pub at: Vec<f64>,
}

/// One box per channel, drawn at 0, 1, … in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Boxes {
    pub x_label: String,
    pub y_label: String,
    pub boxes: Vec<BoxStats>,
    /// The channel drawn at each position (sorted by range, position and channel differ).
    pub channels: Vec<usize>,
}

impl Figure {
    /// Why there is nothing to draw, if so.
    fn emptiness(&self) -> Option<String> {
        match self {
            Figure::Scatter(s) if s.is_empty() => Some(format!(
                "no design has both a {} and a {} value to draw",
                s.x.name(),
                s.y.name()
            )),
            Figure::Bars(b) if b.series.iter().all(|s| s.bars.is_empty()) => {
                Some("no bars to draw".into())
            }
            Figure::Bars(b) if !(b.width.is_finite() && b.width > 0.0) => {
                Some(format!("a bar width of {} cannot be drawn", b.width))
            }
            Figure::Boxes(b) if b.boxes.is_empty() || b.channels.len() != b.boxes.len() => {
                Some("no boxes to draw".into())
            }
            _ if !self.values().all(f64::is_finite) => {
                Some("a value to draw is not a finite number (NaN or infinite)".into())
            }
            _ => None,
        }
    }

    /// Every number the figure places.
    fn values(&self) -> Box<dyn Iterator<Item = f64> + '_> {
        match self {
            Figure::Scatter(s) => {
                Box::new(s.others.iter().chain(&s.front).flatten().copied().chain(
                    s.published.iter().flat_map(|p| match p.at {
                        Placement::Point([x, y]) => vec![x, y],
                        Placement::Vertical(v) | Placement::Horizontal(v) => vec![v],
                    }),
                ))
            }
            Figure::Bars(b) => Box::new(
                b.series
                    .iter()
                    .flat_map(|s| s.bars.iter().flatten().copied())
                    .chain(b.lines.iter().flat_map(|l| l.at.iter().copied())),
            ),
            Figure::Boxes(b) => {
                Box::new(b.boxes.iter().flat_map(|s| {
                    [s.min, s.p1, s.p25, s.median, s.p75, s.p99, s.max].map(f64::from)
                }))
            }
        }
    }
}

/// Writes `figure` with `title` to `path` (SVG or PNG by its extension), atomically.
pub fn write(figure: &Figure, title: &str, path: &Path, size: Size) -> Result<()> {
    let origin = path.display().to_string();
    if let Some(why) = figure.emptiness() {
        return Error::field(&origin, "figure", why);
    }
    let format = Format::of(path)?;
    let (pixels, scale) = size.pixels(format, &origin)?;
    // Both backends measure text to lay the figure out; the bitmap one also draws it.
    register_font();
    let bytes = match format {
        Format::Svg => {
            let mut text = String::new();
            let root = SVGBackend::with_string(&mut text, pixels).into_drawing_area();
            draw(root, figure, title, scale).map_err(|e| failed(&origin, e))?;
            text.into_bytes()
        }
        Format::Png => {
            let (w, h) = (pixels.0 as usize, pixels.1 as usize);
            let mut rgb = vec![255u8; w * h * 3];
            let root = BitMapBackend::with_buffer(&mut rgb, pixels).into_drawing_area();
            draw(root, figure, title, scale).map_err(|e| failed(&origin, e))?;
            let rgba: Vec<u8> = rgb
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            return crate::export::write_png(path, w, h, &rgba);
        }
    };
    crate::ron_io::write_atomic(path, &bytes)
}

fn draw<B: DrawingBackend>(
    root: DrawingArea<B, Shift>,
    figure: &Figure,
    title: &str,
    scale: f64,
) -> Drawn
where
    B::ErrorType: 'static,
{
    match figure {
        Figure::Scatter(s) => scatter::draw(root, s, title, scale),
        Figure::Bars(b) => bars::draw(root, b, title, scale),
        Figure::Boxes(b) => boxes::draw(root, b, title, scale),
    }
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

/// A figure's plotting area in data coordinates, as every kind draws on it.
type Chart<'a, B> = ChartContext<'a, B, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// What every figure's frame has: a title, axis titles, the data ranges and how ticks read.
struct Frame<'t> {
    title: &'t str,
    x_label: &'t str,
    y_label: &'t str,
    xs: std::ops::Range<f64>,
    ys: std::ops::Range<f64>,
    /// Pixels (before scaling) for the y tick labels and title.
    y_area: f64,
}

/// Fills `root` white and draws the frame: title, light grid, ticks by `x_tick` and `tick`,
/// axis titles. Lengths are units times `scale`.
fn chart<'a, B: DrawingBackend>(
    root: &'a DrawingArea<B, Shift>,
    frame: &Frame,
    scale: f64,
    x_tick: &dyn Fn(&f64) -> String,
) -> std::result::Result<Chart<'a, B>, Box<dyn std::error::Error>>
where
    B::ErrorType: 'static,
{
    let px = |v: f64| (v * scale).round() as i32;
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(frame.title, (FONT, px(20.0)))
        .margin(px(16.0))
        .x_label_area_size(px(44.0))
        .y_label_area_size(px(frame.y_area))
        .build_cartesian_2d(frame.xs.clone(), frame.ys.clone())?;
    chart
        .configure_mesh()
        .x_desc(frame.x_label)
        .y_desc(frame.y_label)
        .label_style((FONT, px(14.0)))
        .axis_desc_style((FONT, px(15.0)))
        .x_label_formatter(x_tick)
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    Ok(chart)
}

/// The legend of every labelled series, in the corner with the fewest of `marks` under it.
fn legend<'a, B: DrawingBackend + 'a>(
    chart: &mut Chart<'a, B>,
    marks: &[[f64; 2]],
    scale: f64,
) -> Drawn
where
    B::ErrorType: 'static,
{
    let (xs, ys) = (chart.x_range(), chart.y_range());
    chart
        .configure_series_labels()
        .position(quiet_corner(marks, &xs, &ys))
        .label_font((FONT, (13.0 * scale).round() as i32))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

/// The corner of the plot whose quarter-wide, fifth-high box holds the fewest of `marks`
/// (the first of lower right, upper right, lower left, upper left on a tie).
pub(crate) fn quiet_corner(
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
pub(crate) fn tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let text = format!("{v:.digits$}");
    let text = text.trim_end_matches('0');
    text.trim_end_matches('.').to_string()
}

/// The tick label at `x` of a plot drawn in `order` (position `i` shows item `order[i]`): the
/// item's number at whole positions, nothing between items or beyond them.
pub fn channel_tick(order: &[usize], x: f64) -> String {
    let rank = x.round();
    if (x - rank).abs() > 1e-6 || rank < 0.0 {
        return String::new();
    }
    order
        .get(rank as usize)
        .map_or(String::new(), |c| c.to_string())
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
            front_groups: Vec::new(),
            third: None,
        }
    }

    #[test]
    fn svg_has_the_title_axes_legend_and_every_point() {
        let dir = std::env::temp_dir().join(format!("qvit-figure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.svg");
        write(
            &Figure::Scatter(scatter()),
            "micro sweep",
            &path,
            Size::default(),
        )
        .unwrap();
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
        // A front shaded by the objective not drawn says each shade in the legend.
        let shaded = DesignScatter {
            third: Some(Axis::GopsPerDsp),
            front_groups: vec![
                crate::explore::scatter::FrontGroup {
                    label: "GOPS/DSP 0.500".into(),
                    points: vec![[300.0, 91.0]],
                },
                crate::explore::scatter::FrontGroup {
                    label: "GOPS/DSP 0.700".into(),
                    points: vec![[250.0, 90.0]],
                },
            ],
            ..scatter()
        };
        write(&Figure::Scatter(shaded), "shaded", &path, Size::default()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.contains("Pareto front, GOPS/DSP 0.500")
                && svg.contains("Pareto front, GOPS/DSP 0.700")
        );
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
        write(&Figure::Scatter(scatter()), "t", &path, size).unwrap();
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
    fn bars_and_boxes_draw_their_data_with_axes_and_legends() {
        let dir = std::env::temp_dir().join(format!("qvit-figure-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bars = Figure::Bars(Bars {
            x_label: "layer".into(),
            y_label: "cycles".into(),
            width: 0.8,
            series: vec![
                BarSeries {
                    name: "compute-bound".into(),
                    colour: [70, 130, 200],
                    bars: vec![[0.0, 10.0], [2.0, 30.0]],
                },
                BarSeries {
                    name: "memory-bound".into(),
                    colour: [220, 120, 50],
                    bars: vec![[1.0, 20.0]],
                },
            ],
            lines: vec![Lines {
                name: "clipping range".into(),
                colour: [200, 0, 0],
                at: vec![0.5, 1.5],
            }],
            x_ticks: None,
        });
        let path = dir.join("bars.svg");
        write(&bars, "cycles", &path, Size::default()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "\nlayer\n",
            "\ncycles\n",
            "compute-bound",
            "memory-bound",
            "clipping range",
        ] {
            assert!(svg.contains(text), "`{text}` missing");
        }
        // Each series' bars and its legend swatch, in its colour.
        assert_eq!(svg.matches("fill=\"#4682C8\"").count(), 2 + 1);
        assert_eq!(svg.matches("fill=\"#DC7832\"").count(), 1 + 1);
        let b = |lo: f32, hi: f32| BoxStats {
            min: lo,
            p1: lo,
            p25: lo + 1.0,
            median: lo + 2.0,
            p75: lo + 3.0,
            p99: hi,
            max: hi,
        };
        let boxes = Figure::Boxes(Boxes {
            x_label: "channel".into(),
            y_label: "value".into(),
            boxes: vec![b(0.0, 5.0), b(-1.0, 9.0)],
            channels: vec![7, 3],
        });
        let path = dir.join("boxes.svg");
        write(&boxes, "boxes", &path, Size::default()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        // Ticks name the channels drawn there, in the order given.
        assert!(
            svg.contains("\n7\n") && svg.contains("\n3\n"),
            "channel ticks"
        );
        // Two dots per box, and one in the legend.
        assert_eq!(svg.matches("<circle").count(), 2 * 2 + 1);
        assert!(svg.contains("whiskers p1–p99") && svg.contains("minimum and maximum"));
        let mismatched = Figure::Boxes(Boxes {
            channels: vec![0],
            ..match boxes {
                Figure::Boxes(b) => b,
                _ => unreachable!(),
            }
        });
        assert!(write(&mismatched, "x", &path, Size::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ticks_name_the_item_drawn_at_each_position() {
        let order = [2, 0, 1];
        assert_eq!(channel_tick(&order, 0.0), "2");
        assert_eq!(channel_tick(&order, 2.0), "1");
        assert_eq!(channel_tick(&order, 0.5), "");
        assert_eq!(channel_tick(&order, 3.0), "");
        assert_eq!(channel_tick(&order, -1.0), "");
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
        let e = write(
            &Figure::Scatter(s.clone()),
            "t",
            Path::new("f.pdf"),
            Size::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains(".svg or .png"), "{e}");
        let tiny = Size {
            width: 10,
            height: 10,
            dpi: 96.0,
        };
        let e = write(&Figure::Scatter(s.clone()), "t", Path::new("f.svg"), tiny).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        let huge = Size {
            width: 20_000,
            height: 600,
            dpi: 96.0,
        };
        let e = write(&Figure::Scatter(s.clone()), "t", Path::new("f.png"), huge).unwrap_err();
        assert!(e.to_string().contains("16384"), "{e}");
        let nan = Size {
            dpi: f64::NAN,
            ..Size::default()
        };
        let e = write(&Figure::Scatter(s.clone()), "t", Path::new("f.png"), nan).unwrap_err();
        assert!(e.to_string().contains("dpi"), "{e}");
        let mut nan = s.clone();
        nan.front[0][0] = f64::NAN;
        let e = write(
            &Figure::Scatter(nan),
            "t",
            Path::new("f.svg"),
            Size::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a finite number"), "{e}");
        let empty = DesignScatter {
            others: vec![],
            front: vec![],
            ..s
        };
        let e = write(
            &Figure::Scatter(empty),
            "t",
            Path::new("f.svg"),
            Size::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no design"), "{e}");
    }
}
