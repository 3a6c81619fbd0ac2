//! A search from its space to its outcome, with everything it reads loaded on the way: the
//! project the space describes (model, weights, data), the calibration statistics, the base
//! plan with its range search, the held-out and test images, then the stages of
//! [`super::run`]. `qvit search` and the explorer's Search tab both run this.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::run::{self, Outcome, Progress};
use super::space::SearchSpace;
use super::splice::Splicer;
use super::state::{self, State};
use crate::data::Dataset;
use crate::error::Result;
use crate::explore::Shard;
use crate::pipeline::{self, Model};
use crate::project::{CalibrationSet, DataSource, Project};
use crate::quant::{
    CalibrationStats, QuantExecutor, QuantPlan, QuantSettings, Recipe, family_recipe,
};

/// A finished search and the project it ran on.
#[derive(Debug, Clone)]
pub struct Searched {
    pub outcome: Outcome,
    /// The space's model, weights, test and calibration data, the statistics file when one was
    /// given, and the base quantization: each row's project is this one with the row's widths
    /// and design.
    pub project: Project,
    /// The space searched.
    pub space: SearchSpace,
}

impl Searched {
    /// Row `i` of the outcome as a project that `qvit eval` and `qvit cost` reproduce: the
    /// search's project with the row's widths and design. A mixed row keeps the base plan's
    /// searched ranges wherever its widths are the base's (`search_at_base`), as the search
    /// built it; a uniform row is the recipe's own plan at its width.
    pub fn row_project(&self, i: usize) -> Project {
        let row = &self.outcome.rows[i];
        let settings = self.project.quant.clone().unwrap_or_default();
        let uniform = row.allocation.is_uniform();
        let mut project = self.project.clone();
        project.quant = Some(QuantSettings {
            bits: if uniform {
                row.allocation.0[0]
            } else {
                settings.bits
            },
            overrides: if uniform {
                Vec::new()
            } else {
                row.allocation.overrides(&self.outcome.units, settings.bits)
            },
            executor: self.space.stages.executor,
            search_at_base: !uniform,
            ..settings
        });
        project.accelerator = Some(self.outcome.designs[row.design].clone());
        project
    }
}

/// The project a space describes: its model with the `data` section's weights, test and
/// calibration images, quantized with its recipe (the family's when it names none) at its base
/// widths.
pub fn project(space: &SearchSpace, calibration: Option<&Path>) -> Result<Project> {
    let mut project = Project::for_model(&space.model);
    let spec = project.spec()?;
    let source = |p: &Path| DataSource::from_path(p, spec.family(), spec.resolution(), None);
    project.weights = space.data.weights.clone();
    if let Some(t) = &space.data.test {
        project.data = Some(source(t)?);
    }
    if let Some(c) = &space.data.calibration {
        project.calibration_data = Some(CalibrationSet {
            data: source(c)?,
            images: None,
            seed: 0,
        });
    }
    project.calibration = calibration.map(Path::to_path_buf);
    project.quant = Some(QuantSettings {
        recipe: space
            .recipe
            .clone()
            .unwrap_or_else(|| family_recipe(spec.family()).to_string()),
        bits: space.base,
        ..Default::default()
    });
    Ok(project)
}

/// Everything a search reads, loaded: the project, model, statistics, base plan and images.
struct Inputs {
    project: Project,
    settings: QuantSettings,
    recipe: Recipe,
    model: Model,
    stats: CalibrationStats,
    base: QuantPlan,
    heldout: Dataset,
    test: Dataset,
}

impl Inputs {
    fn load(
        space: &SearchSpace,
        calibration: Option<&Path>,
        cancel: &AtomicBool,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Self> {
        let project = project(space, calibration)?;
        let settings = project.quant.clone().unwrap_or_default();
        let recipe = Recipe::resolve(&settings.recipe)?;
        if space.stages.executor == QuantExecutor::Int {
            recipe.check_integer(None)?;
        }
        let model = Model::load(&project)?;
        let heldout = space
            .data
            .heldout
            .as_deref()
            .map(|p| {
                let spec = project.spec()?;
                DataSource::from_path(p, spec.family(), spec.resolution(), None)
            })
            .transpose()?;
        let heldout = pipeline::heldout_data(heldout.as_ref(), &model.graph)?;
        let test = pipeline::test_data(&project, &model.graph)?;
        let stats = pipeline::statistics(
            &model,
            calibration,
            project.calibration_data.as_ref(),
            cancel,
            &mut |done, total| progress(Progress::Calibrating { done, total }),
        )?;
        let base = pipeline::plan(&model, &stats, &settings, cancel, &mut |done, total| {
            progress(Progress::Ranges { done, total })
        })?;
        Ok(Self {
            project,
            settings,
            recipe,
            model,
            stats,
            base,
            heldout,
            test,
        })
    }

    fn splicer(&self) -> Result<Splicer<'_>> {
        Splicer::new(
            &self.model.graph,
            &self.model.folded,
            &self.stats,
            &self.recipe,
            &self.settings,
            self.base.clone(),
        )
    }

    /// The folder of kept results for these inputs.
    fn state(&self, space: &SearchSpace, splicer: &Splicer, dir: &Path) -> Result<State> {
        State::open(dir, state::key(space, splicer, &self.heldout, &self.test)?)
    }
}

/// Runs the search of `space` (statistics from `calibration`, else a fresh calibration), until
/// done or `cancel`; with a `state` folder, resuming from what an earlier run kept there and
/// merging a sensitivity stage split into shards ([`sensitivity_shard`]). `progress` hears
/// every step, calibration and the base plan's range search included.
pub fn search(
    space: &SearchSpace,
    calibration: Option<&Path>,
    state: Option<&Path>,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Searched> {
    let inputs = Inputs::load(space, calibration, cancel, progress)?;
    let splicer = inputs.splicer()?;
    let state = state
        .map(|dir| inputs.state(space, &splicer, dir))
        .transpose()?;
    let outcome = run::run(
        space,
        &splicer,
        &inputs.heldout,
        &inputs.test,
        state.as_ref(),
        cancel,
        progress,
    )?;
    Ok(Searched {
        outcome,
        project: inputs.project,
        space: space.clone(),
    })
}

/// Computes one shard of the sensitivity stage into the `state` folder (see
/// [`run::sensitivity_shard`]). Returns the rows kept and the key of the inputs.
pub fn sensitivity_shard(
    space: &SearchSpace,
    calibration: Option<&Path>,
    state: &Path,
    shard: Shard,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(usize, u64)> {
    let inputs = Inputs::load(space, calibration, cancel, progress)?;
    let splicer = inputs.splicer()?;
    let state = inputs.state(space, &splicer, state)?;
    let rows = run::sensitivity_shard(space, &splicer, &state, shard, cancel, progress)?;
    Ok((rows, state.key()))
}
