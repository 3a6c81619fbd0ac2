//! The joint search, stage by stage:
//!
//! 1. **Sensitivity**: every layer at every width of the space, alone, by the logit KL it adds
//!    on the calibration sample ([`super::sensitivity`]).
//! 2. **Allocations**: every uniform width, the greedy path and the lowest-sensitivity-first
//!    baseline ([`super::allocation`]), each scored by the proxy — the base plan's KL plus what
//!    each unit adds.
//! 3. **Pricing**: every allocation on every accelerator design of the space; per allocation
//!    only the designs no other design of it beats on both FPS and GOPS/DSP are kept.
//! 4. **Screening**: the Pareto front of (proxy, FPS, GOPS/DSP).
//! 5. **Confirmation**: the front's allocations (at most `confirm_allocations`, spread over the
//!    proxy) and the uniform ones, run with the chosen executor on held-out training images;
//!    the front is taken again on held-out top-1, under the constraints. A uniform width runs
//!    the recipe's own plan at that width (its range search included, so it is compared at its
//!    best); a mixed allocation keeps the base plan's searched ranges wherever it leaves the
//!    base widths.
//! 6. **Report**: the final front's allocations and the best uniform designs on the test set.
//!
//! Nothing in stages 1–5 sees a test image. Every stage is deterministic: parallel work is
//! collected in order, and ties break by order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::allocation::{self, Allocation, Table, Unit};
use super::sensitivity::{self, Sensitivity, SensitivityOptions};
use super::space::SearchSpace;
use super::splice::Splicer;
use super::state::State;
use crate::accel::packing::{Packing, macs_per_dsp};
use crate::accel::{AccelConfig, Totals, Workload, totals};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{Classifier, evaluate};
use crate::explore::{Shard, pareto};
use crate::graph::{Graph, NodeId};
use crate::quant::points::output_point_node;
use crate::quant::{BitWidths, FixedWidth, LayerBits, QuantExecutor, QuantPlan, fixed_widths};

/// Images per evaluation batch.
const BATCH: usize = 100;

/// Where a candidate allocation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Uniform,
    Greedy,
    /// Lowest sensitivity first.
    Baseline,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Uniform => "uniform",
            Method::Greedy => "greedy",
            Method::Baseline => "baseline",
        }
    }
}

/// What a search is doing, for a progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Images of the calibration passes (when no statistics file is given).
    Calibrating {
        done: usize,
        total: usize,
    },
    /// The base plan's output-aware range search, when the recipe has one.
    Ranges {
        done: usize,
        total: usize,
    },
    Sensitivity {
        done: usize,
        total: usize,
    },
    Pricing {
        done: usize,
        total: usize,
    },
    Confirming {
        done: usize,
        total: usize,
    },
    Testing {
        done: usize,
        total: usize,
    },
}

impl Progress {
    /// The stage's name (with what it counts), and its counts.
    pub fn stage(&self) -> (&'static str, usize, usize) {
        match *self {
            Progress::Calibrating { done, total } => ("calibrating (images)", done, total),
            Progress::Ranges { done, total } => ("base plan's range search", done, total),
            Progress::Sensitivity { done, total } => ("sensitivity (layer × width)", done, total),
            Progress::Pricing { done, total } => ("pricing (allocations)", done, total),
            Progress::Confirming { done, total } => ("held-out top-1 (allocations)", done, total),
            Progress::Testing { done, total } => ("test top-1 (allocations)", done, total),
        }
    }
}

/// One design of the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub method: Method,
    pub allocation: Allocation,
    /// Index into [`SearchSpace::designs`].
    pub design: usize,
    pub totals: Totals,
    pub proxy_kl: f64,
    pub heldout_top1: f64,
    pub top1: f64,
    pub on_front: bool,
    /// A best uniform design, reported for comparison.
    pub reference: bool,
}

/// Seconds each stage took.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub sensitivity: f64,
    pub allocations: f64,
    pub pricing: f64,
    pub confirmation: f64,
    pub test: f64,
}

/// A finished search.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub units: Vec<Unit>,
    pub designs: Vec<AccelConfig>,
    pub sensitivity: Sensitivity,
    /// Candidate allocations by method.
    pub candidates: Vec<(Method, usize)>,
    /// (allocation, design) pairs priced and how many fit the part and constraints.
    pub priced: usize,
    pub feasible: usize,
    /// Allocations confirmed on held-out images.
    pub confirmed: usize,
    /// The front's rows (on_front) then the best uniform designs (reference).
    pub rows: Vec<Row>,
    pub timings: Timings,
}

/// Per-layer bit widths for any allocation without resolving overrides: the base settings'
/// widths, the points the recipe fixes (as the base plan quantizes them), and per unit the
/// nodes its widths land on.
struct Pricing<'a> {
    graph: &'a Graph,
    base: LayerBits,
    /// Points whose width the recipe sets whatever the settings (log2 divisors, 8-bit
    /// attention products, the image).
    fixed: Vec<FixedWidth>,
    /// Per unit: its weighted nodes and the points they write.
    nodes: Vec<Vec<(NodeId, Option<NodeId>)>>,
}

impl<'a> Pricing<'a> {
    fn new(graph: &'a Graph, splicer: &Splicer, units: &[Unit]) -> Result<Self> {
        let plan = splicer.base();
        if !plan.overrides.is_empty() {
            return Error::field(
                "search",
                "base",
                "a search starts from one width for every layer; its base plan has overrides",
            );
        }
        let settings = crate::quant::QuantSettings {
            bits: plan.bits,
            ..Default::default()
        };
        let base = LayerBits::resolve(graph, &settings)?;
        let fixed = fixed_widths(graph, splicer.recipe());
        let by_name: HashMap<&str, NodeId> = graph
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let nodes = units
            .iter()
            .map(|u| {
                u.layers
                    .iter()
                    .map(|l| {
                        let id = by_name[l.as_str()];
                        (id, output_point_node(graph, id))
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            graph,
            base,
            fixed,
            nodes,
        })
    }

    fn workload(&self, a: &Allocation) -> Workload {
        let mut bits = self.base.clone();
        if a.is_uniform() {
            // A uniform allocation is the recipe's own plan at that width (`Splicer::uniform`):
            // every point at it, not only the ones the units write.
            let b = a.0[0];
            bits.weights.fill(b.weights);
            bits.activations.fill(b.activations);
        }
        for (u, b) in a.0.iter().enumerate() {
            for &(id, point) in &self.nodes[u] {
                bits.weights[id] = b.weights;
                if let Some(p) = point {
                    bits.activations[p] = b.activations;
                }
            }
        }
        bits.fix(&self.fixed);
        Workload::with_bits(self.graph, |id| bits.operands(self.graph, id))
    }
}

/// The executor's top-1 of `plan` on the first `n` images of `data`.
fn top1(
    splicer: &Splicer,
    plan: &QuantPlan,
    executor: QuantExecutor,
    data: &Dataset,
    n: usize,
) -> Result<f64> {
    let (graph, params) = (splicer.graph(), splicer.params());
    let run = |model: &dyn Classifier| {
        evaluate(model, data, BATCH, Some(n), &mut |_| {}).map(|a| a.top1())
    };
    match executor {
        QuantExecutor::Fake => run(&crate::quant::FakeQuantExecutor::new(graph, params, plan)?),
        QuantExecutor::Int => {
            let program = crate::exec::int::compile(graph, params, plan)?;
            run(&crate::exec::int::IntExecutor::new(&program))
        }
    }
}

/// Indices of `items` spread evenly over their order: all when there are at most `k`.
fn spread(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut out: Vec<usize> = (0..k)
        .map(|i| (i * (n - 1) + (k - 1) / 2) / (k - 1).max(1))
        .collect();
    out.dedup();
    out
}

/// The sensitivity of the layers in `shard` at every width of the space but the base, on the
/// calibration sample (logit KL only).
fn scan_shard(
    space: &SearchSpace,
    splicer: &Splicer,
    shard: Shard,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Sensitivity> {
    sensitivity::scan(
        splicer,
        None,
        &SensitivityOptions {
            candidates: space
                .widths()
                .into_iter()
                .filter(|&b| b != space.base)
                .collect(),
            sample_images: space.stages.sample_images,
            heldout_images: 0,
            shard,
        },
        cancel,
        &|done, total| progress(Progress::Sensitivity { done, total }),
    )
}

/// The sensitivity stage: kept in `state` (whole, or as every shard of a split), else computed
/// (and kept). A shard of a split computes (and keeps) its own layers only, and has the table
/// once every shard is there; `None` until then.
fn sensitivity_stage(
    space: &SearchSpace,
    splicer: &Splicer,
    state: Option<&State>,
    shard: Shard,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Option<Sensitivity>> {
    let Some(state) = state else {
        return scan_shard(space, splicer, Shard::ALL, cancel, progress).map(Some);
    };
    let layers = sensitivity::layers(splicer.graph(), splicer.params());
    let candidates: Vec<BitWidths> = space
        .widths()
        .into_iter()
        .filter(|&b| b != space.base)
        .collect();
    let checked = |table: Sensitivity| -> Result<Sensitivity> {
        check_covers(
            &table,
            &layers,
            &candidates,
            &state.dir().display().to_string(),
        )?;
        Ok(table)
    };
    if let Some(kept) = state.sensitivity(Shard::ALL)? {
        return checked(kept).map(Some);
    }
    if shard != Shard::ALL && state.sensitivity(shard)?.is_none() {
        let own = scan_shard(space, splicer, shard, cancel, progress)?;
        state.keep_sensitivity(&own, shard)?;
    }
    let table = match state.merged_shards(&layers)? {
        Some(merged) => checked(merged)?,
        None if shard == Shard::ALL => scan_shard(space, splicer, Shard::ALL, cancel, progress)?,
        None => return Ok(None),
    };
    state.keep_sensitivity(&table, Shard::ALL)?;
    Ok(Some(table))
}

/// Checks a kept sensitivity table before the search relies on it: one finite row per layer of
/// the model and candidate width of the space, or an error naming the folder (a table from a
/// changed space or an edited file would leave allocations without a proxy).
fn check_covers(
    table: &Sensitivity,
    layers: &[String],
    candidates: &[BitWidths],
    origin: &str,
) -> Result<()> {
    let mut seen: HashSet<(&str, BitWidths)> = HashSet::new();
    for r in &table.rows {
        if !layers.contains(&r.layer) || !candidates.contains(&r.bits) {
            return Error::field(
                origin,
                "sensitivity",
                format!(
                    "a kept row for `{}` at {} is not a layer and width of this search; delete \
                     the folder's sensitivity files to compute them again",
                    r.layer, r.bits
                ),
            );
        }
        if !r.kl_increase.is_finite() || !seen.insert((r.layer.as_str(), r.bits)) {
            return Error::field(
                origin,
                "sensitivity",
                format!(
                    "the kept row for `{}` at {} is repeated or not a finite KL; delete the \
                     folder's sensitivity files to compute them again",
                    r.layer, r.bits
                ),
            );
        }
    }
    if seen.len() != layers.len() * candidates.len() {
        return Error::field(
            origin,
            "sensitivity",
            format!(
                "the kept table has {} of the {} (layer, width) rows; delete the folder's \
                 sensitivity files to compute them again",
                seen.len(),
                layers.len() * candidates.len()
            ),
        );
    }
    Ok(())
}

/// The top-1 of `allocation` at `stage`: kept in `state`, else measured by `measure` (and
/// kept) when it is this run's to measure (`mine`), else `None` (another shard's, not there
/// yet).
fn top1_kept(
    state: Option<&State>,
    stage: &str,
    allocation: &Allocation,
    mine: bool,
    measure: impl FnOnce() -> Result<f64>,
) -> Result<Option<f64>> {
    if let Some(t) = state.and_then(|s| s.top1(stage, allocation)) {
        return Ok(Some(t));
    }
    if !mine {
        return Ok(None);
    }
    let t = measure()?;
    if let Some(s) = state {
        s.keep_top1(stage, allocation, t)?;
    }
    Ok(Some(t))
}

/// The images a search's stages evaluate on: held-out training images to choose the front,
/// then the test set to report it.
#[derive(Debug, Clone, Copy)]
pub struct Images<'d> {
    pub heldout: &'d Dataset,
    pub test: &'d Dataset,
}

/// How far a run got: finished, or (a shard of a split search) done with its share of a stage
/// that other shards have yet to finish.
#[derive(Debug, Clone)]
pub enum Step {
    Finished(Box<Outcome>),
    Waiting { stage: &'static str },
}

/// Runs the search. `splicer` holds the model, statistics and base plan (the space's recipe at
/// its base widths); `Images` the images the stages use. With a `state`, every
/// stage's results are kept there and read back by a later run on the same inputs, which so
/// resumes an interrupted search. A `shard` other than [`Shard::ALL`] (with a state) measures
/// only its share of each stage — layers i, i+N, … of the sensitivity, allocations i, i+N, …
/// of the held-out and test top-1 — and waits at the first stage the other shards have not
/// finished: run every shard again until all are through, and the last run finishes.
pub fn run(
    space: &SearchSpace,
    splicer: &Splicer,
    Images { heldout, test }: Images,
    state: Option<&State>,
    shard: Shard,
    cancel: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Step> {
    if shard != Shard::ALL && state.is_none() {
        return Error::field(
            &space.name,
            "shard",
            "a shard keeps its share in a state folder",
        );
    }
    let mine = |i: usize| i as u64 % shard.count == shard.index;
    let graph = splicer.graph();
    let cancelled = || -> Result<()> {
        if cancel.load(Ordering::Relaxed) {
            return Error::field(&space.name, "search", "cancelled");
        }
        Ok(())
    };
    let mut timings = Timings::default();
    let base_bits = space.base;

    // 1. Sensitivity.
    let clock = Instant::now();
    let layers = sensitivity::layers(graph, splicer.params());
    let units = allocation::units(&layers, &space.groups)?;
    let widths = space.widths();
    // Fail before the long stages when no design can hold even the narrowest widths (which
    // pack densest and need the fewest DSPs and LUTs).
    let pricing = Pricing::new(graph, splicer, &units)?;
    let designs = space.designs()?;
    let max_dsps = space.constraints.max_dsps.unwrap_or(usize::MAX);
    let narrowest = Allocation::uniform(
        units.len(),
        BitWidths {
            weights: *space.weights.iter().min().unwrap_or(&8),
            activations: *space.activations.iter().min().unwrap_or(&8),
        },
    );
    let workload = pricing.workload(&narrowest);
    if !designs
        .iter()
        .any(|c| totals(&workload, c).is_ok_and(|t| t.dsps <= max_dsps))
    {
        return Error::field(
            &space.name,
            "accelerator",
            format!(
                "none of the {} designs fits the {} (its DSPs, LUTs or on-chip RAM{}) at any \
                 width; shrink the engines or the copies",
                designs.len(),
                designs.first().map_or("part", |d| d.part.as_str()),
                space
                    .constraints
                    .max_dsps
                    .map_or(String::new(), |d| format!(", or max_dsps {d}"))
            ),
        );
    }
    let Some(scan) = sensitivity_stage(space, splicer, state, shard, cancel, progress)? else {
        return Ok(Step::Waiting {
            stage: "sensitivity",
        });
    };
    let table = Table::from_rows(
        &units,
        base_bits,
        scan.rows
            .iter()
            .map(|r| (r.layer.as_str(), r.bits, r.kl_increase)),
    );
    timings.sensitivity = clock.elapsed().as_secs_f64();

    // 2. Allocations: uniform, greedy (priced on the base design, per-layer packing), baseline.
    let clock = Instant::now();
    let mut reference = space.base_accelerator()?;
    reference.packing = Packing::PerLayer;
    let start = Allocation::uniform(units.len(), base_bits);
    let bit_volume = |a: &Allocation| -> f64 {
        pricing
            .workload(a)
            .layers
            .iter()
            .map(|l| l.macs as f64 * f64::from(l.weight_bits + l.act_bits))
            .sum()
    };
    let (cycles0, volume0) = (
        totals(&pricing.workload(&start), &reference).map_or(1.0, |t| t.cycles as f64),
        bit_volume(&start).max(1.0),
    );
    // Cycles on the reference design, and a little for bits moved and stored, so that a step
    // that saves no cycles still narrows something.
    let cost = |a: &Allocation| -> f64 {
        let cycles = totals(&pricing.workload(a), &reference).map_or(f64::MAX, |t| t.cycles as f64);
        cycles / cycles0 + 0.01 * bit_volume(a) / volume0
    };
    let kind = reference.part()?.dsp;
    let densest = widths
        .iter()
        .map(|b| macs_per_dsp(kind, b.weights, b.activations))
        .max()
        .unwrap_or(1);
    let target = widths
        .iter()
        .copied()
        .filter(|b| macs_per_dsp(kind, b.weights, b.activations) == densest)
        .max_by_key(|b| (b.weights + b.activations, b.weights))
        .unwrap_or(base_bits);
    let mut seen: HashSet<Allocation> = HashSet::new();
    let mut allocations: Vec<(Method, Allocation)> = Vec::new();
    let mut add = |method: Method, a: Allocation| {
        if seen.insert(a.clone()) {
            allocations.push((method, a));
        }
    };
    for &b in &widths {
        add(Method::Uniform, Allocation::uniform(units.len(), b));
    }
    for a in allocation::greedy(&start, &table, &space.weights, &space.activations, &cost) {
        add(Method::Greedy, a);
    }
    for a in allocation::lowest_sensitivity_first(&start, &table, target) {
        add(Method::Baseline, a);
    }
    let candidates = [Method::Uniform, Method::Greedy, Method::Baseline]
        .iter()
        .map(|&m| (m, allocations.iter().filter(|(k, _)| *k == m).count()))
        .collect();
    timings.allocations = clock.elapsed().as_secs_f64();
    cancelled()?;

    // 3. Pricing: per allocation, the designs it is not beaten on in FPS and GOPS/DSP.
    let clock = Instant::now();
    let done = AtomicUsize::new(0);
    let feasible = AtomicUsize::new(0);
    let kept: Vec<Vec<(usize, Totals)>> = allocations
        .par_iter()
        .map(|(_, a)| {
            let workload = pricing.workload(a);
            let fits: Vec<(usize, Totals)> = designs
                .iter()
                .enumerate()
                .filter_map(|(d, c)| totals(&workload, c).ok().map(|t| (d, t)))
                .filter(|(_, t)| t.dsps <= max_dsps)
                .collect();
            feasible.fetch_add(fits.len(), Ordering::Relaxed);
            let points: Vec<Vec<f64>> = fits
                .iter()
                .map(|(_, t)| vec![t.fps, t.gops_per_dsp])
                .collect();
            let front = pareto::front(&points);
            progress(Progress::Pricing {
                done: done.fetch_add(1, Ordering::Relaxed) + 1,
                total: allocations.len(),
            });
            front.into_iter().map(|i| fits[i]).collect()
        })
        .collect();
    timings.pricing = clock.elapsed().as_secs_f64();
    cancelled()?;

    // 4. Screening on the proxy.
    let proxies: Vec<f64> = allocations
        .iter()
        .map(|(_, a)| table.proxy(scan.base_kl, a))
        .collect();
    let pairs: Vec<(usize, usize)> = kept
        .iter()
        .enumerate()
        .flat_map(|(a, ds)| (0..ds.len()).map(move |k| (a, k)))
        .collect();
    let screened = pareto::front(
        &pairs
            .iter()
            .map(|&(a, k)| vec![-proxies[a], kept[a][k].1.fps, kept[a][k].1.gops_per_dsp])
            .collect::<Vec<_>>(),
    );
    let mut on_screen: Vec<usize> = screened.iter().map(|&i| pairs[i].0).collect();
    on_screen.sort_by(|&x, &y| proxies[x].total_cmp(&proxies[y]).then(x.cmp(&y)));
    on_screen.dedup();
    let mut confirm: Vec<usize> = spread(on_screen.len(), space.stages.confirm_allocations)
        .into_iter()
        .map(|i| on_screen[i])
        .collect();
    // The best uniform design of each width: the most FPS (then GOPS/DSP) that fits.
    let best_uniform: Vec<(usize, usize)> = allocations
        .iter()
        .enumerate()
        .filter(|(_, (m, _))| *m == Method::Uniform)
        .filter_map(|(a, _)| {
            kept[a]
                .iter()
                .enumerate()
                .max_by(|(_, x), (_, y)| {
                    x.1.fps
                        .total_cmp(&y.1.fps)
                        .then(x.1.gops_per_dsp.total_cmp(&y.1.gops_per_dsp))
                })
                .map(|(k, _)| (a, k))
        })
        .collect();
    for &(a, _) in &best_uniform {
        if !confirm.contains(&a) {
            confirm.push(a);
        }
    }

    // 5. Confirmation on held-out images.
    let clock = Instant::now();
    // A uniform width gets the recipe's own plan at that width (its range search included);
    // a mixed allocation keeps the base plan's searched ranges where it leaves the base widths.
    let plan_of = |a: usize| {
        let allocation = &allocations[a].1;
        if allocation.is_uniform() {
            splicer.uniform(allocation.0[0])
        } else {
            splicer.with(&allocation.overrides(&units, base_bits))
        }
    };
    let executor = space.stages.executor;
    // Each allocation's top-1 on `data`'s first `n` images: kept, measured when it is this
    // run's share, or `None` (waiting) when another shard's is missing.
    let measure_all =
        |list: &[usize], stage: &str, data: &Dataset, n: usize, report: &dyn Fn(usize)| {
            let mut found: HashMap<usize, f64> = HashMap::new();
            for (i, &a) in list.iter().enumerate() {
                cancelled()?;
                let kept = top1_kept(state, stage, &allocations[a].1, mine(i), || {
                    top1(splicer, &plan_of(a)?, executor, data, n)
                })?;
                if let Some(t) = kept {
                    found.insert(a, t);
                }
                report(i + 1);
            }
            Ok::<_, Error>((found.len() == list.len()).then_some(found))
        };
    let n_heldout = space.stages.heldout_images.min(heldout.len());
    let total = confirm.len();
    let Some(heldout_top1) = measure_all(&confirm, "heldout", heldout, n_heldout, &|done| {
        progress(Progress::Confirming { done, total })
    })?
    else {
        return Ok(Step::Waiting {
            stage: "held-out top-1",
        });
    };
    timings.confirmation = clock.elapsed().as_secs_f64();

    let min_top1 = space.constraints.min_top1.unwrap_or(f64::NEG_INFINITY);
    let confirmed_pairs: Vec<(usize, usize)> = pairs
        .iter()
        .copied()
        .filter(|(a, _)| heldout_top1.get(a).is_some_and(|&t| t >= min_top1))
        .collect();
    let final_front: Vec<(usize, usize)> = pareto::front(
        &confirmed_pairs
            .iter()
            .map(|&(a, k)| {
                vec![
                    heldout_top1[&a],
                    kept[a][k].1.fps,
                    kept[a][k].1.gops_per_dsp,
                ]
            })
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|i| confirmed_pairs[i])
    .collect();

    // 6. The test set, once per allocation reported.
    let clock = Instant::now();
    let mut reported: Vec<usize> = final_front
        .iter()
        .chain(&best_uniform)
        .map(|&(a, _)| a)
        .collect();
    reported.sort_unstable();
    reported.dedup();
    let n_test = space
        .stages
        .test_images
        .unwrap_or(test.len())
        .min(test.len());
    let total = reported.len();
    let Some(test_top1) = measure_all(&reported, "test", test, n_test, &|done| {
        progress(Progress::Testing { done, total })
    })?
    else {
        return Ok(Step::Waiting {
            stage: "test top-1",
        });
    };
    timings.test = clock.elapsed().as_secs_f64();

    let row = |(a, k): (usize, usize), on_front: bool, reference: bool| Row {
        method: allocations[a].0,
        allocation: allocations[a].1.clone(),
        design: kept[a][k].0,
        totals: kept[a][k].1,
        proxy_kl: proxies[a],
        heldout_top1: heldout_top1[&a],
        top1: test_top1[&a],
        on_front,
        reference,
    };
    let mut rows: Vec<Row> = final_front.iter().map(|&p| row(p, true, false)).collect();
    rows.sort_by(|x, y| {
        y.totals
            .fps
            .total_cmp(&x.totals.fps)
            .then(y.heldout_top1.total_cmp(&x.heldout_top1))
    });
    rows.extend(
        best_uniform
            .iter()
            .map(|&p| row(p, final_front.contains(&p), true)),
    );
    let priced = allocations.len() * designs.len();
    Ok(Step::Finished(Box::new(Outcome {
        units,
        designs,
        sensitivity: scan,
        candidates,
        priced,
        feasible: feasible.into_inner(),
        confirmed: confirm.len(),
        rows,
        timings,
    })))
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_keeps_the_ends_and_spaces_the_rest() {
        assert_eq!(spread(3, 5), [0, 1, 2]);
        assert_eq!(spread(10, 4), [0, 3, 6, 9]);
        assert_eq!(spread(7, 2), [0, 6]);
    }
}
