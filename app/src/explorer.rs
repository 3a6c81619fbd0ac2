//! The explorer's state and its reactions: what is open, which background jobs run, and what
//! follows from a change (a new accelerator is priced in the same frame; new bit widths
//! re-quantize from cached statistics and re-evaluate in the background).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qvit_core::search::job::Searched;

use qvit_core::accel::{CostReport, Workload, cost};
use qvit_core::cache::{self, Store};
use qvit_core::eval::Accuracy;
use qvit_core::explore::sweep::Design;
use qvit_core::graph::{Graph, NodeId};
use qvit_core::project::{DEFAULT_ACCELERATOR, Project};
use qvit_core::quant::{LayerBits, QuantExecutor, QuantSettings, Recipe};

use crate::answers::Answers;
use crate::instrument::Instruments;
use crate::jobs::{Counts, Job};
use crate::session::{self, LayerDistributions, Loaded, Quantized};
use crate::views::explore::ExploreState;
use crate::views::search::SearchState;

/// Recent project files kept in the File menu.
const RECENT_FILES: usize = 8;

/// The central area's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Tab {
    #[default]
    Distributions,
    Quantization,
    Accelerator,
    Explore,
    Search,
}

/// The headline figures of one configuration, to compare against a pinned baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub top1: Option<Top1>,
    pub fps: f64,
    pub gops: f64,
    pub dsps: usize,
    pub gops_per_dsp: f64,
    pub fps_per_dsp: f64,
}

/// A top-1 and what it was measured on: two are comparable only on the same images.
#[derive(Debug, Clone, PartialEq)]
pub struct Top1 {
    pub percent: f64,
    pub images: usize,
    /// Where the test images came from.
    pub data: String,
}

impl Top1 {
    /// True when `other` was measured on the same test images.
    pub fn comparable(&self, other: &Top1) -> bool {
        self.images == other.images && self.data == other.data
    }
}

/// A message shown under the menu bar until dismissed.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Error(String),
    Info(String),
}

/// What changed during a frame; acted on once at its end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Changes {
    /// Bit widths, recipe or executor: re-quantize and re-evaluate.
    pub quant: bool,
    /// Accelerator only: re-price.
    pub accel: bool,
}

/// The background jobs, at most one of each kind.
#[derive(Debug, Default)]
pub struct Jobs {
    pub load: Option<Job<Loaded>>,
    pub quantize: Option<Job<Quantized>>,
    pub evaluate: Option<Job<Accuracy, Accuracy>>,
    /// The designs on the budget, and how many were priced.
    pub sweep: Option<Job<(Vec<Design>, u64), crate::views::explore::SweepProgress>>,
    pub search: Option<Job<Arc<Searched>, crate::views::search::SearchProgress>>,
}

/// The explorer: one open project and everything derived from it.
#[derive(Debug)]
pub struct Explorer {
    pub ctx: egui::Context,
    /// The configuration being edited (always with `quant` and `accelerator` set).
    pub project: Project,
    pub project_path: Option<PathBuf>,
    pub graph: Result<Arc<Graph>, String>,
    pub loaded: Option<Arc<Loaded>>,
    pub quantized: Option<Arc<Quantized>>,
    pub quant_error: Option<String>,
    /// Streaming or final test-set accuracy of the current quantization.
    pub accuracy: Option<Accuracy>,
    /// True when `accuracy` was computed earlier and read back, not measured now.
    pub accuracy_cached: bool,
    /// The key of the accuracy being measured ([`qvit_core::cache::accuracy_key`]).
    evaluating: Option<u64>,
    pub accuracy_error: Option<String>,
    /// Evaluate on the first this many test images (all when `None`).
    pub eval_images: Option<usize>,
    pub cost: Result<CostReport, String>,
    /// Each layer's bit widths after the overrides (known without calibration).
    pub layer_bits: Option<LayerBits>,
    pub baseline: Option<Snapshot>,
    pub selected: Option<NodeId>,
    pub tab: Tab,
    pub sort_by_range: bool,
    /// The Distributions view's data for the selected layer, kept between frames.
    pub distributions: Option<Arc<LayerDistributions>>,
    pub explore: ExploreState,
    pub search: SearchState,
    pub recent: Vec<PathBuf>,
    /// Where calibration statistics are kept between runs (none: calibrate every time).
    pub calibration_cache: Option<PathBuf>,
    /// Quantizations and accuracies computed before (kept beside the calibration cache).
    pub answers: Answers,
    pub notice: Option<Notice>,
    /// qvit's file dialog, while one is open.
    pub dialog: Option<crate::views::file_dialog::FileDialog>,
    pub jobs: Jobs,
    pub changes: Changes,
    /// The plots drawn in the last frame and where (for File → Export plot).
    pub plots: Vec<(String, egui::Rect)>,
    /// Messages from exports that finish after their frame (screenshots arrive later).
    pub late_notices: Arc<Mutex<Vec<Notice>>>,
    instruments: Instruments,
    /// The screenshot tour, when asked for (`QVIT_SCREENSHOTS`).
    pub tour: Option<crate::tour::Tour>,
}

impl Explorer {
    /// Opens `project` (completed with the explorer's defaults) and starts loading it;
    /// calibration statistics are cached in `calibration_cache` when one is given.
    pub fn new(
        ctx: &egui::Context,
        project: Project,
        path: Option<PathBuf>,
        calibration_cache: Option<PathBuf>,
    ) -> Self {
        let mut explorer = Self {
            ctx: ctx.clone(),
            project: Project::default(),
            project_path: None,
            graph: Err("not loaded".into()),
            loaded: None,
            quantized: None,
            quant_error: None,
            accuracy: None,
            accuracy_cached: false,
            evaluating: None,
            accuracy_error: None,
            eval_images: None,
            cost: Err("not priced".into()),
            layer_bits: None,
            baseline: None,
            selected: None,
            tab: Tab::default(),
            sort_by_range: false,
            distributions: None,
            explore: ExploreState::default(),
            search: SearchState::default(),
            recent: Vec::new(),
            answers: Answers::new(calibration_cache.as_deref().map(Store::new)),
            calibration_cache,
            notice: None,
            dialog: None,
            jobs: Jobs::default(),
            changes: Changes::default(),
            plots: Vec::new(),
            late_notices: Arc::default(),
            instruments: Instruments::from_env(),
            tour: crate::tour::Tour::from_env(),
        };
        explorer.replace_project(project, path);
        explorer
    }

    /// The shipped default: micro EfficientViT, trio-vit W8A8 on the integer executor, the
    /// Trio-ViT accelerator on a ZCU102.
    pub fn default_project() -> Project {
        Project {
            quant: Some(QuantSettings {
                executor: QuantExecutor::Int,
                ..QuantSettings::default()
            }),
            ..Project::default()
        }
    }

    /// The quantization being edited.
    pub fn settings(&mut self) -> &mut QuantSettings {
        self.project
            .quant
            .get_or_insert_with(QuantSettings::default)
    }

    /// Reads a project file. A file that fails to load leaves the open project untouched and
    /// shows why.
    pub fn open_project(&mut self, path: &Path) {
        let checked = Project::load(path).and_then(|p| {
            let graph = check(&p, &path.display().to_string())?;
            Ok((p, graph))
        });
        match checked {
            Ok((project, graph)) => {
                self.replace_project(project, Some(path.to_path_buf()));
                self.graph = Ok(Arc::new(graph));
                self.remember(path);
                self.notice = Some(Notice::Info(format!("opened {}", path.display())));
            }
            Err(e) => {
                self.notice = Some(Notice::Error(format!(
                    "could not open the project; the current one stays open.\n{e}"
                )))
            }
        }
    }

    /// Writes the project (atomically) where it can be run headless.
    pub fn save_project(&mut self, path: &Path) {
        match self.project.save(path) {
            Ok(()) => {
                self.project_path = Some(path.to_path_buf());
                self.remember(path);
                let p = path.display();
                self.notice = Some(Notice::Info(if self.project.sweep.is_some() {
                    format!(
                        "saved {p}; run it headless with `qvit eval {p}`, `qvit cost {p}` or `qvit sweep {p}`"
                    )
                } else {
                    format!("saved {p}; run it headless with `qvit eval {p}` or `qvit cost {p}`")
                }));
            }
            Err(e) => self.notice = Some(Notice::Error(format!("could not save: {e}"))),
        }
    }

    fn remember(&mut self, path: &Path) {
        let path = path.to_path_buf();
        self.recent.retain(|p| *p != path);
        self.recent.insert(0, path);
        self.recent.truncate(RECENT_FILES);
    }

    pub(crate) fn replace_project(&mut self, mut project: Project, path: Option<PathBuf>) {
        // A project without a `quant` section gets its family's recipe (repq-vit for DeiT).
        let family = project.spec().map(|s| s.family()).ok();
        project.quant.get_or_insert_with(|| {
            family.map_or_else(QuantSettings::default, QuantSettings::for_family)
        });
        if project.accelerator.is_none() {
            project.accelerator = qvit_core::accel::AccelConfig::preset(DEFAULT_ACCELERATOR).ok();
        }
        self.project = project;
        self.project_path = path;
        self.graph = self
            .project
            .spec()
            .and_then(|s| Graph::build(&s))
            .map(Arc::new)
            .map_err(|e| e.to_string());
        self.loaded = None;
        self.quantized = None;
        self.accuracy = None;
        self.evaluating = None;
        self.accuracy_error = None;
        self.quant_error = None;
        self.selected = None;
        self.distributions = None;
        self.jobs = Jobs::default();
        self.explore.designs.clear();
        self.reprice();
        let project = self.project.clone();
        let cache = self.calibration_cache.clone();
        self.jobs.load = Some(Job::spawn(&self.ctx, "calibrating", move |r| {
            session::load(&project, cache.as_deref(), r)
        }));
    }

    /// Re-quantizes from the cached statistics, then re-evaluates (both in the background); a
    /// setting computed before is shown at once.
    pub fn requantize(&mut self) {
        self.jobs.evaluate = None;
        self.evaluating = None;
        self.accuracy = None;
        self.accuracy_error = None;
        let Some(loaded) = self.loaded.clone() else {
            return;
        };
        let settings = self.settings().clone();
        if let Some(known) = self.answers.quantized(&loaded, &settings) {
            self.jobs.quantize = None;
            self.accept(known);
            return;
        }
        let store = self.answers.store().cloned();
        self.jobs.quantize = Some(Job::spawn(&self.ctx, "quantizing", move |r| {
            session::quantize(&loaded, &settings, store.as_ref(), r)
        }));
    }

    /// Makes `quantized` the current quantization and shows its accuracy.
    fn accept(&mut self, quantized: Arc<Quantized>) {
        self.answers.keep_quantized(quantized.clone());
        self.quantized = Some(quantized.clone());
        self.quant_error = None;
        self.start_evaluation(quantized);
    }

    /// Prices the current bits on the current accelerator (fast enough for every frame).
    pub fn reprice(&mut self) {
        let graph = match &self.graph {
            Ok(g) => g.clone(),
            Err(e) => {
                self.cost = Err(e.clone());
                return;
            }
        };
        let settings = self.settings().clone();
        // The widths the plan quantizes to: the settings' and those the recipe fixes.
        let bits = match Recipe::resolve(&settings.recipe)
            .and_then(|recipe| LayerBits::for_recipe(&graph, &settings, &recipe))
        {
            Ok(b) => b,
            Err(e) => {
                self.layer_bits = None;
                self.cost = Err(e.to_string());
                return;
            }
        };
        let workload = Workload::with_bits(&graph, |id| bits.operands(&graph, id));
        self.layer_bits = Some(bits);
        self.cost = self
            .project
            .accel_config()
            .and_then(|config| cost(&workload, &config))
            .map_err(|e| e.to_string());
    }

    /// Test images an evaluation covers.
    pub fn eval_total(&self) -> usize {
        let all = self.loaded.as_ref().map_or(0, |l| l.test.len());
        self.eval_images.map_or(all, |n| n.min(all))
    }

    /// The headline figures now.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let c = self.cost.as_ref().ok()?;
        Some(Snapshot {
            top1: self
                .accuracy
                .as_ref()
                .filter(|a| a.images == self.eval_total())
                .and_then(|a| self.top1_of(a)),
            fps: c.fps,
            gops: c.gops,
            dsps: c.dsps,
            gops_per_dsp: c.gops_per_dsp,
            fps_per_dsp: c.fps_per_dsp,
        })
    }

    /// The top-1 of `accuracy` so far, with the test images it was measured on.
    pub fn top1_of(&self, accuracy: &Accuracy) -> Option<Top1> {
        let loaded = self.loaded.as_ref()?;
        Some(Top1 {
            percent: accuracy.top1(),
            images: accuracy.images,
            data: loaded.test.origin.clone(),
        })
    }

    /// True while any background job runs.
    pub fn busy(&self) -> bool {
        self.jobs.load.is_some()
            || self.jobs.quantize.is_some()
            || self.jobs.evaluate.is_some()
            || self.jobs.sweep.is_some()
            || self.jobs.search.is_some()
    }

    /// Collects finished jobs and starts the ones they enable; acts on the frame's changes.
    pub fn step(&mut self) {
        if let Some(n) = self.late_notices.lock().ok().and_then(|mut v| v.pop()) {
            self.notice = Some(n);
        }
        if let Some(result) = self.jobs.load.as_mut().and_then(Job::poll) {
            self.jobs.load = None;
            match result {
                Ok(loaded) => {
                    self.loaded = Some(Arc::new(loaded));
                    self.changes.quant = true;
                }
                Err(e) => self.notice = Some(Notice::Error(e)),
            }
        }
        if let Some(result) = self.jobs.quantize.as_mut().and_then(Job::poll) {
            self.jobs.quantize = None;
            match result {
                Ok(q) => self.accept(Arc::new(q)),
                Err(e) => self.quant_error = Some(e),
            }
        }
        if let Some(job) = &mut self.jobs.evaluate {
            let progress = job.progress();
            if progress.images > 0 {
                self.accuracy = Some(progress);
            }
            if let Some(result) = job.poll() {
                self.jobs.evaluate = None;
                let key = self.evaluating.take();
                match result {
                    Ok(acc) => {
                        if acc.images == self.eval_total() {
                            if let Some(key) = key {
                                self.answers.keep_accuracy(key, &acc);
                            }
                            self.announce(&acc);
                        }
                        self.accuracy = Some(acc);
                    }
                    Err(e) => self.accuracy_error = Some(e),
                }
            }
        }
        if let Some(result) = self.jobs.sweep.as_mut().and_then(Job::poll) {
            self.jobs.sweep = None;
            match result {
                Ok((designs, priced)) => {
                    self.explore.designs = designs;
                    self.explore.priced = priced;
                }
                Err(e) => self.notice = Some(Notice::Error(e)),
            }
        }
        if let Some(result) = self.jobs.search.as_mut().and_then(Job::poll) {
            self.jobs.search = None;
            match result {
                Ok(searched) => self.search.accept(searched),
                Err(e) => self.notice = Some(Notice::Error(e)),
            }
        }
        let changes = std::mem::take(&mut self.changes);
        if changes.quant || changes.accel {
            self.reprice();
        }
        if changes.quant {
            self.requantize();
        }
    }

    fn start_evaluation(&mut self, quantized: Arc<Quantized>) {
        let Some(loaded) = self.loaded.clone() else {
            return;
        };
        self.accuracy = None;
        self.accuracy_error = None;
        let limit = self.eval_images;
        let key = cache::accuracy_key(
            quantized.key,
            quantized.settings.executor,
            loaded.test_digest,
            self.eval_total(),
        );
        self.accuracy_cached = false;
        if let Some(known) = self.answers.accuracy(key) {
            self.announce(&known);
            self.accuracy = Some(known);
            self.accuracy_cached = true;
            return;
        }
        self.evaluating = Some(key);
        let what = match quantized.settings.executor {
            QuantExecutor::Int => "evaluating (integer executor)",
            QuantExecutor::Fake => "evaluating (fake-quant)",
        };
        self.jobs.evaluate = Some(Job::spawn(&self.ctx, what, move |r| {
            session::evaluate(&loaded, &quantized, limit, r)
        }));
    }

    /// Tells the watching scripts (`instrument`) that a full accuracy is in.
    fn announce(&mut self, accuracy: &Accuracy) {
        if let Some(png) = self.instruments.accuracy_ready(accuracy.top1())
            && let Some((_, rect)) = self.plots.first()
        {
            crate::files::export_plot(self, *rect, png);
        }
    }

    /// True when the top-1 shown covers every image asked for.
    pub fn accuracy_complete(&self) -> bool {
        self.jobs.evaluate.is_none()
            && self
                .accuracy
                .as_ref()
                .is_some_and(|a| a.images == self.eval_total())
    }

    /// The progress of the job that the results bar shows, if any runs.
    pub fn activity(&self) -> Option<(String, Counts)> {
        if let Some(j) = &self.jobs.load {
            return Some((j.what.clone(), j.progress()));
        }
        if let Some(j) = &self.jobs.quantize {
            return Some((j.what.clone(), j.progress()));
        }
        None
    }
}

/// What opening `project` would fail on, found before the open project is replaced: the model,
/// the recipe and its family, the overrides' patterns, the sweep section. Returns the graph.
fn check(project: &Project, origin: &str) -> qvit_core::Result<Graph> {
    let graph = Graph::build(&project.spec()?)?;
    if let Some(settings) = &project.quant {
        qvit_core::quant::Recipe::resolve(&settings.recipe)?
            .check_family(graph.family, &graph.model)?;
        LayerBits::resolve(&graph, settings)?;
    }
    project.design_space(origin)?;
    Ok(graph)
}

impl eframe::App for Explorer {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.instruments.frame_begin();
        self.step();
        crate::tour::step(self);
        crate::views::show(self, ui);
        self.step();
        self.instruments.frame_end(frame.info().cpu_usage);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        crate::files::save_state(self, storage);
    }
}
