//! Plans for other bit widths of a few layers, derived from one built plan.
//!
//! A recipe with an output-aware range search (trio-vit) takes seconds per plan at micro size
//! and minutes at full size: too slow to repeat for every layer and width a sensitivity scan or
//! an allocation search tries. The [`Splicer`] builds the recipe's plan once, with its search,
//! and the same recipe's plan without the search at the base widths. For new overrides it
//! builds the search-free plan with them, and every quantizer that differs from the search-free
//! base — exactly what the overrides change: the layers' weights, their output points, and any
//! factors a technique derives from them — replaces the searched plan's. The search-free plans
//! reuse the base's quantizers wherever a point's or a layer's widths (and a layer's input
//! factors) are unchanged ([`build_reusing`]), so each costs little more than its changed layers. Everything the
//! overrides leave alone keeps its searched range.

use crate::error::Result;
use crate::graph::Graph;
use crate::quant::BitWidths;
use crate::quant::plan::{QuantPlan, build, build_reusing};
use crate::quant::recipe::{Recipe, Technique};
use crate::quant::settings::{Override, QuantSettings};
use crate::quant::stats::CalibrationStats;
use crate::weights::FoldedWeights;

/// Plans for overrides of a base plan, without repeating its range search.
#[derive(Debug, Clone)]
pub struct Splicer<'m> {
    graph: &'m Graph,
    params: &'m FoldedWeights,
    stats: &'m CalibrationStats,
    recipe: Recipe,
    /// The recipe without its output-aware search.
    plain_recipe: Recipe,
    settings: QuantSettings,
    /// The recipe's own plan at the base settings (searched if the recipe searches).
    base: QuantPlan,
    /// The search-free plan at the base settings.
    plain_base: QuantPlan,
}

impl<'m> Splicer<'m> {
    /// `base` is `recipe`'s plan for `settings` on these statistics (as [`build`] gives it).
    pub fn new(
        graph: &'m Graph,
        params: &'m FoldedWeights,
        stats: &'m CalibrationStats,
        recipe: &Recipe,
        settings: &QuantSettings,
        base: QuantPlan,
    ) -> Result<Self> {
        base.check_model(graph)?;
        let mut plain_recipe = recipe.clone();
        plain_recipe
            .techniques
            .retain(|t| !matches!(t, Technique::OutputSearch { .. }));
        let plain_base = build(graph, params, stats, &plain_recipe, settings)?;
        Ok(Self {
            graph,
            params,
            stats,
            recipe: recipe.clone(),
            plain_recipe,
            settings: settings.clone(),
            base,
            plain_base,
        })
    }

    /// The base plan.
    pub fn base(&self) -> &QuantPlan {
        &self.base
    }

    /// The recipe, its search included.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    pub fn graph(&self) -> &'m Graph {
        self.graph
    }

    pub fn params(&self) -> &'m FoldedWeights {
        self.params
    }

    pub fn stats(&self) -> &'m CalibrationStats {
        self.stats
    }

    /// The recipe's own plan with every layer at `bits` (its search included): what a uniform
    /// width is at its best.
    pub fn uniform(&self, bits: BitWidths) -> Result<QuantPlan> {
        if bits == self.settings.bits && self.settings.overrides.is_empty() {
            return Ok(self.base.clone());
        }
        let settings = QuantSettings {
            bits,
            ..self.settings.clone()
        };
        build(self.graph, self.params, self.stats, &self.recipe, &settings)
    }

    /// The base plan with `overrides` applied after the base settings' own.
    pub fn with(&self, overrides: &[Override]) -> Result<QuantPlan> {
        let mut settings = self.settings.clone();
        settings.overrides.extend(overrides.iter().cloned());
        let plain = build_reusing(
            self.graph,
            self.params,
            self.stats,
            &self.plain_recipe,
            &settings,
            &self.plain_base,
        )?;
        let mut plan = self.base.clone();
        for (i, entry) in plain.activations.into_iter().enumerate() {
            if entry != self.plain_base.activations[i] {
                plan.activations[i] = entry;
            }
        }
        for (i, entry) in plain.weights.into_iter().enumerate() {
            if entry != self.plain_base.weights[i] {
                plan.weights[i] = entry;
            }
        }
        plan.overrides = settings.overrides;
        Ok(plan)
    }
}
