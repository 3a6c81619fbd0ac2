//! The CLI's side of [`qvit_core::pipeline`]: the same steps, with progress bars.

use std::path::Path;

use qvit_core::pipeline::{self, Model};
use qvit_core::project::CalibrationSet;
use qvit_core::quant::CalibrationStats;

use super::format::thousands;

pub fn model(project: &qvit_core::project::Project) -> qvit_core::Result<Model> {
    Model::load(project)
}

pub fn progress_bar(total: usize, what: &str) -> anyhow::Result<indicatif::ProgressBar> {
    Ok(
        indicatif::ProgressBar::new(total as u64).with_style(style(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{rate}}  eta {{eta}}  {{msg}}"
        ))?),
    )
}

/// A progress bar's style from `template`, in which `{rate}` is items per second, whole above
/// ten (indicatif's own `{per_sec}` prints four decimals, "983,502.9518/s").
pub fn style(template: &str) -> anyhow::Result<indicatif::ProgressStyle> {
    let rate = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let r = state.per_sec();
        let _ = if r >= 10.0 {
            write!(w, "{}/s", thousands(r.round() as u64))
        } else {
            write!(w, "{r:.1}/s")
        };
    };
    Ok(indicatif::ProgressStyle::with_template(template)?
        .with_key("rate", rate)
        .progress_chars("=> "))
}

/// The quant plan of `settings`, with a progress bar over an output-aware range search (the
/// quantized model run on the calibration sample) when the recipe has one.
pub fn plan(
    model: &Model,
    stats: &CalibrationStats,
    settings: &qvit_core::quant::QuantSettings,
) -> anyhow::Result<qvit_core::quant::QuantPlan> {
    let mut bar = None;
    let never = std::sync::atomic::AtomicBool::new(false);
    let plan = pipeline::plan(model, stats, settings, &never, &mut |done, total| {
        bar.get_or_insert_with(|| {
            progress_bar(total, "searching activation ranges")
                .unwrap_or_else(|_| indicatif::ProgressBar::hidden())
        })
        .set_position(done as u64);
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(plan?)
}

/// The plan of `settings` on the project's calibration: its statistics file, or a fresh
/// calibration on its calibration images (what `eval`, `vectors` and `export` quantize with).
/// With `integer`, the plan is for the integer executor, and a recipe it cannot run is refused
/// before calibrating.
pub fn project_plan(
    model: &Model,
    project: &qvit_core::project::Project,
    settings: &qvit_core::quant::QuantSettings,
    integer: bool,
) -> anyhow::Result<qvit_core::quant::QuantPlan> {
    if integer {
        qvit_core::quant::Recipe::resolve(&settings.recipe)?.check_integer(settings.rounding)?;
    }
    let stats = stats(
        model,
        project.calibration.as_deref(),
        project.calibration_data.as_ref(),
    )?;
    plan(model, &stats, settings)
}

/// Statistics for a model: the file named (checked against the model), or a fresh calibration
/// on the chosen images of `set` (see [`pipeline::calibration_set`]) with a progress bar.
pub fn stats(
    model: &Model,
    file: Option<&Path>,
    set: Option<&CalibrationSet>,
) -> anyhow::Result<CalibrationStats> {
    let mut bar = None;
    let never = std::sync::atomic::AtomicBool::new(false);
    let stats = pipeline::statistics(model, file, set, &never, &mut |done, total| {
        bar.get_or_insert_with(|| {
            progress_bar(total, "calibrating").unwrap_or_else(|_| indicatif::ProgressBar::hidden())
        })
        .set_position(done as u64);
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(stats?)
}

/// What a sensitivity scan splices its plans from: the statistics, the recipe and
/// its plan at `settings` (with its range search, run once here).
pub fn splice_base(
    model: &Model,
    file: Option<&Path>,
    set: Option<&CalibrationSet>,
    settings: &qvit_core::quant::QuantSettings,
) -> anyhow::Result<(
    CalibrationStats,
    qvit_core::quant::Recipe,
    qvit_core::quant::QuantPlan,
)> {
    let recipe = qvit_core::quant::Recipe::resolve(&settings.recipe)?;
    let stats = stats(model, file, set)?;
    let base = plan(model, &stats, settings)?;
    Ok((stats, recipe, base))
}
