//! The scatter of designs that the Explore and Search tabs draw: every design, the Pareto front
//! (shaded by the objective neither axis shows), and the published accelerators as labelled
//! points or reference lines. The tab decides what hovering and clicking a design mean.

use egui_plot::{Corner, HLine, Legend, MarkerShape, Plot, PlotPoint, Points, Text, VLine};
use qvit_core::explore::scatter::{DesignScatter, Placement, group_colour};
use qvit_core::explore::sweep::Design;

/// What the pointer did over the scatter this frame.
#[derive(Debug)]
pub struct Picked {
    /// The design under the pointer (within 12 points), as an index into the designs drawn.
    pub hovered: Option<usize>,
    /// The design clicked.
    pub clicked: Option<usize>,
    /// The plot's response, for a tooltip at the pointer.
    pub response: egui::Response,
    pub rect: egui::Rect,
}

/// Draws `designs` as `view` lays them out, in the plot named `id`.
pub fn draw(ui: &mut egui::Ui, id: &str, designs: &[Design], view: &DesignScatter) -> Picked {
    let mut clicked = None;
    let mut hovered = None;
    let (x, y) = (view.x, view.y);
    let point = |d: &Design| Some([x.of(d)?, y.of(d)?]);
    let mut plot = Plot::new(id)
        // Bottom left holds the slow, inaccurate designs, which the legend may cover.
        .legend(Legend::default().position(Corner::LeftBottom))
        .x_axis_label(x.name())
        .y_axis_label(y.name());
    // Bounds from the designs (padded where every design has one value: egui_plot's own
    // bounds for a zero span run to ±30,000 %).
    if let Some((lo, hi)) = view.x_range {
        plot = plot.include_x(lo).include_x(hi);
    }
    if let Some((lo, hi)) = view.y_range {
        plot = plot.include_y(lo).include_y(hi);
    }
    let shown = plot.show(ui, |plot| {
        plot.points(
            Points::new("designs", view.others.clone())
                .radius(2.0)
                .color(egui::Color32::from_rgb(110, 150, 200)),
        );
        // The front in one colour, or shaded by the objective neither axis shows.
        if view.front_groups.is_empty() {
            plot.points(
                Points::new("Pareto front", view.front.clone())
                    .radius(4.0)
                    .shape(MarkerShape::Diamond)
                    .color(egui::Color32::from_rgb(230, 90, 40)),
            );
        }
        let groups = view.front_groups.len();
        for (i, group) in view.front_groups.iter().enumerate() {
            let [r, g, b] = group_colour(i, groups);
            plot.points(
                Points::new(
                    format!("Pareto front, {}", group.label),
                    group.points.clone(),
                )
                .radius(4.5)
                .shape(MarkerShape::Diamond)
                .color(egui::Color32::from_rgb(r, g, b)),
            );
        }
        for p in &view.published {
            let name = format!("  {}", p.label);
            let grey = egui::Color32::GRAY;
            // Anchored at the label's left end, so a label by the left edge is not cut.
            let label =
                |at: PlotPoint| Text::new("published", at, &name).anchor(egui::Align2::LEFT_CENTER);
            match p.at {
                Placement::Point([px, py]) => {
                    plot.points(
                        Points::new("published", vec![[px, py]])
                            .radius(4.0)
                            .shape(MarkerShape::Square)
                            .color(grey),
                    );
                    plot.text(label(PlotPoint::new(px, py)));
                }
                // A figure on one axis only is a reference line across the other, labelled at
                // the designs' edge (not the plot's, which would grow the bounds).
                Placement::Vertical(px) => {
                    plot.vline(VLine::new("published", px).color(grey));
                    if let Some((_, top)) = view.y_range {
                        plot.text(label(PlotPoint::new(px, top)));
                    }
                }
                Placement::Horizontal(py) => {
                    plot.hline(HLine::new("published", py).color(grey));
                    if let Some((left, _)) = view.x_range {
                        plot.text(label(PlotPoint::new(left, py)));
                    }
                }
            }
        }
        // The design nearest the pointer, within 12 points of it.
        let nearest = |pointer: egui::Pos2| {
            designs
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    let [px, py] = point(d)?;
                    let at = plot.screen_from_plot(PlotPoint::new(px, py));
                    Some((at.distance(pointer), i))
                })
                .filter(|(dist, _)| *dist < 12.0)
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, i)| i)
        };
        if plot.response().clicked()
            && let Some(pointer) = plot.response().interact_pointer_pos()
        {
            clicked = nearest(pointer);
        } else if let Some(pointer) = plot.response().hover_pos() {
            hovered = nearest(pointer);
        }
    });
    let rect = shown.response.rect;
    Picked {
        hovered,
        clicked,
        response: shown.response,
        rect,
    }
}
