//! A search from its space to its outcome, with everything it reads loaded on the way: the
//! project the space describes (model, weights, data), the calibration statistics, the base
//! plan with its range search, the held-out and test images, then the stages of
//! [`super::run`]. `qvit search` and the explorer's Search tab both run this.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::run::{self, Images, Outcome, Progress, Step};
use super::space::SearchSpace;
use super::splice::Splicer;
use super::state::{self, State};
use crate::data::Dataset;
use crate::error::{Error, Result};
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
fn project(space: &SearchSpace, calibration: Option<&Path>) -> Result<Project> {
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

/// How far a run of [`search_shard`] got.
#[derive(Debug, Clone)]
pub enum ShardStep {
    Done(Box<Searched>),
    /// This shard's share of `stage` is kept; other shards have not finished theirs. `key`
    /// names the state folder's files of these inputs.
    Waiting {
        stage: &'static str,
        key: u64,
    },
}

/// Runs the search of `space` (statistics from `calibration`, else a fresh calibration), until
/// done or `cancel`; with a `state` folder, resuming from what an earlier run kept there
/// (including every shard's share of a split search, see [`search_shard`]). `progress` hears
/// every step, calibration and the base plan's range search included.
pub fn search(
    space: &SearchSpace,
    calibration: Option<&Path>,
    state: Option<&Path>,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Searched> {
    match search_shard(space, calibration, state, Shard::ALL, cancel, progress)? {
        ShardStep::Done(searched) => Ok(*searched),
        // A whole search measures whatever is missing, so it never waits.
        ShardStep::Waiting { stage, .. } => {
            Error::field(&space.name, stage, "a whole search waited")
        }
    }
}

/// Runs `shard` of the search of `space` with its state in `state` (see [`run::run`]).
pub fn search_shard(
    space: &SearchSpace,
    calibration: Option<&Path>,
    state: Option<&Path>,
    shard: Shard,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<ShardStep> {
    let inputs = Inputs::load(space, calibration, cancel, progress)?;
    let splicer = inputs.splicer()?;
    let state = state
        .map(|dir| inputs.state(space, &splicer, dir))
        .transpose()?;
    let step = run::run(
        space,
        &splicer,
        Images {
            heldout: &inputs.heldout,
            test: &inputs.test,
        },
        state.as_ref(),
        shard,
        cancel,
        progress,
    )?;
    Ok(match step {
        Step::Finished(outcome) => ShardStep::Done(Box::new(Searched {
            outcome: *outcome,
            project: inputs.project.clone(),
            space: space.clone(),
        })),
        Step::Waiting { stage } => ShardStep::Waiting {
            stage,
            key: state.map_or(0, |s| s.key()),
        },
    })
}
