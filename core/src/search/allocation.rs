//! Per-layer widths: the units a search gives widths to, an allocation of widths to them, and
//! the two ways qvit proposes allocations from a sensitivity table.
//!
//! - [`greedy`]: from the base widths, repeatedly take the one-notch step (one unit's weights or
//!   activations to the next narrower width) that adds the least sensitivity per unit of
//!   hardware cost saved, until no step saves anything. Every allocation on the way is a
//!   candidate.
//! - [`lowest_sensitivity_first`], the baseline: order the units by their sensitivity at one
//!   target width and move them there in that order, one more each time.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::quant::settings::layer_matches;
use crate::quant::{BitWidths, Override};

use super::space::Group;

/// Layers that share one width: a group of the space, or one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    pub layers: Vec<String>,
}

/// The units of `layers` (network order): each group's matching layers form one unit, placed
/// where its first layer is; every other layer is a unit of its own. A group that matches no
/// layer is an error naming it.
pub fn units(layers: &[String], groups: &[Group]) -> Result<Vec<Unit>> {
    let mut owner: Vec<Option<usize>> = vec![None; layers.len()];
    for (g, group) in groups.iter().enumerate() {
        let mut any = false;
        for (i, layer) in layers.iter().enumerate() {
            if owner[i].is_none() && layer_matches(&group.layers, layer) {
                owner[i] = Some(g);
                any = true;
            }
        }
        if !any {
            return Error::field(
                "groups",
                &group.name,
                format!(
                    "the pattern `{}` matches no layer with weights",
                    group.layers
                ),
            );
        }
    }
    let mut out: Vec<Unit> = Vec::new();
    let mut placed: HashMap<usize, usize> = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        match owner[i] {
            Some(g) => match placed.get(&g) {
                Some(&u) => out[u].layers.push(layer.clone()),
                None => {
                    placed.insert(g, out.len());
                    out.push(Unit {
                        name: groups[g].name.clone(),
                        layers: vec![layer.clone()],
                    });
                }
            },
            None => out.push(Unit {
                name: layer.clone(),
                layers: vec![layer.clone()],
            }),
        }
    }
    Ok(out)
}

/// The widths of every unit, in unit order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Allocation(pub Vec<BitWidths>);

impl Allocation {
    pub fn uniform(units: usize, bits: BitWidths) -> Self {
        Self(vec![bits; units])
    }

    /// All units at one width.
    pub fn is_uniform(&self) -> bool {
        self.0.windows(2).all(|w| w[0] == w[1])
    }

    /// The overrides that give every layer its unit's widths over `base` settings (none for a
    /// unit at the base widths), layer by exact name.
    pub fn overrides(&self, units: &[Unit], base: BitWidths) -> Vec<Override> {
        units
            .iter()
            .zip(&self.0)
            .filter(|(_, b)| **b != base)
            .flat_map(|(u, &bits)| {
                u.layers.iter().map(move |l| Override {
                    layers: l.clone(),
                    bits,
                })
            })
            .collect()
    }

    /// Run-length form in unit order, e.g. `w8a8*3 w4a4 w8a8*28`.
    pub fn compact(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.0.len() {
            let run = self.0[i..].iter().take_while(|&&b| b == self.0[i]).count();
            let w = self.0[i].to_string().to_lowercase();
            out.push(if run == 1 { w } else { format!("{w}*{run}") });
            i += run;
        }
        out.join(" ")
    }

    /// Reads [`Allocation::compact`]'s form back, for `units` units.
    pub fn parse(text: &str, units: usize) -> std::result::Result<Self, String> {
        let mut out = Vec::new();
        for part in text.split_whitespace() {
            let (w, run) = match part.split_once('*') {
                Some((w, n)) => (
                    w,
                    n.parse::<usize>()
                        .map_err(|_| format!("`{part}`: the count after * is not a number"))?,
                ),
                None => (part, 1),
            };
            let bits: BitWidths = w.parse().map_err(|e| format!("`{part}`: {e}"))?;
            out.extend(std::iter::repeat_n(bits, run));
        }
        if out.len() != units {
            return Err(format!(
                "`{text}` gives {} widths for {units} units",
                out.len()
            ));
        }
        Ok(Self(out))
    }
}

/// Sensitivity of each unit at each width: the logit KL it adds to the base plan's (0 at the
/// base widths), summed over the unit's layers.
#[derive(Debug, Clone, Default)]
pub struct Table {
    added: HashMap<(usize, BitWidths), f64>,
}

impl Table {
    /// From per-layer rows `(layer, widths, KL added)`; `units` as [`units`] made them.
    pub fn from_rows<'a>(
        units: &[Unit],
        base: BitWidths,
        rows: impl IntoIterator<Item = (&'a str, BitWidths, f64)>,
    ) -> Self {
        let mut unit_of: HashMap<&str, usize> = HashMap::new();
        for (u, unit) in units.iter().enumerate() {
            for l in &unit.layers {
                unit_of.insert(l.as_str(), u);
            }
        }
        let mut added: HashMap<(usize, BitWidths), f64> = HashMap::new();
        for u in 0..units.len() {
            added.insert((u, base), 0.0);
        }
        for (layer, bits, kl) in rows {
            if let Some(&u) = unit_of.get(layer) {
                *added.entry((u, bits)).or_insert(0.0) += kl;
            }
        }
        Self { added }
    }

    /// The KL `unit` adds at `bits` (`None` when not measured).
    pub fn added(&self, unit: usize, bits: BitWidths) -> Option<f64> {
        self.added.get(&(unit, bits)).copied()
    }

    /// The proxy of an allocation: the base plan's KL plus what every unit adds.
    pub fn proxy(&self, base_kl: f64, a: &Allocation) -> f64 {
        base_kl
            + a.0
                .iter()
                .enumerate()
                .map(|(u, &b)| self.added(u, b).unwrap_or(f64::INFINITY))
                .sum::<f64>()
    }
}

/// The next narrower width in `list` (any order) below `current`.
fn narrower(list: &[u8], current: u8) -> Option<u8> {
    list.iter().copied().filter(|&b| b < current).max()
}

/// The greedy path from `start` (see the module documentation). `cost` prices an allocation
/// (lower is cheaper); it is called for every candidate step, from several threads.
pub fn greedy(
    start: &Allocation,
    table: &Table,
    weights: &[u8],
    activations: &[u8],
    cost: &(dyn Fn(&Allocation) -> f64 + Sync),
) -> Vec<Allocation> {
    use rayon::prelude::*;
    let mut current = start.clone();
    let mut current_cost = cost(&current);
    let mut path = vec![current.clone()];
    loop {
        let steps: Vec<Allocation> = (0..current.0.len())
            .flat_map(|u| {
                let b = current.0[u];
                let w = narrower(weights, b.weights).map(|weights| BitWidths { weights, ..b });
                let a = narrower(activations, b.activations)
                    .map(|activations| BitWidths { activations, ..b });
                [w, a].into_iter().flatten().map(move |to| (u, to))
            })
            .filter(|&(u, to)| table.added(u, to).is_some())
            .map(|(u, to)| {
                let mut next = current.clone();
                next.0[u] = to;
                next
            })
            .collect();
        let priced: Vec<f64> = steps.par_iter().map(cost).collect();
        // The step with the least KL added per cost saved; ties to the earliest.
        let now = table.proxy(0.0, &current);
        let best = steps
            .iter()
            .zip(&priced)
            .filter(|(_, c)| **c < current_cost)
            .map(|(s, c)| (s, *c, (table.proxy(0.0, s) - now) / (current_cost - c)))
            .min_by(|a, b| a.2.total_cmp(&b.2));
        let Some((step, c, _)) = best else {
            return path;
        };
        current = step.clone();
        current_cost = c;
        path.push(current.clone());
    }
}

/// The baseline path: units ordered by the KL they add at `target` (least first, ties in unit
/// order), moved to `target` one more at a time, from `start`.
pub fn lowest_sensitivity_first(
    start: &Allocation,
    table: &Table,
    target: BitWidths,
) -> Vec<Allocation> {
    let mut order: Vec<usize> = (0..start.0.len())
        .filter(|&u| table.added(u, target).is_some() && start.0[u] != target)
        .collect();
    order.sort_by(|&a, &b| {
        table
            .added(a, target)
            .unwrap()
            .total_cmp(&table.added(b, target).unwrap())
    });
    let mut current = start.clone();
    let mut path = vec![current.clone()];
    for u in order {
        current.0[u] = target;
        path.push(current.clone());
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> BitWidths {
        s.parse().unwrap()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn groups_gather_their_layers_where_the_first_one_is() {
        let layers = names(&["stem", "a.qkv", "a.proj", "b.qkv", "head"]);
        let groups = [Group {
            name: "qkv".into(),
            layers: "*.qkv".into(),
        }];
        let u = units(&layers, &groups).unwrap();
        let got: Vec<(&str, usize)> = u
            .iter()
            .map(|u| (u.name.as_str(), u.layers.len()))
            .collect();
        assert_eq!(got, [("stem", 1), ("qkv", 2), ("a.proj", 1), ("head", 1)]);
        let none = [Group {
            name: "mlp".into(),
            layers: "*.fc9".into(),
        }];
        let err = units(&layers, &none).unwrap_err().to_string();
        assert!(err.contains("mlp") && err.contains("*.fc9"), "{err}");
    }

    #[test]
    fn compact_form_round_trips() {
        let a = Allocation(vec![b("w8a8"), b("w8a8"), b("w4a4"), b("w8a8")]);
        assert_eq!(a.compact(), "w8a8*2 w4a4 w8a8");
        assert_eq!(Allocation::parse(&a.compact(), 4).unwrap(), a);
        assert!(
            Allocation::parse("w8a8*2", 3)
                .unwrap_err()
                .contains("3 units")
        );
        assert!(!a.is_uniform());
        assert!(Allocation::uniform(3, b("w4a8")).is_uniform());
    }

    #[test]
    fn overrides_name_every_layer_of_a_changed_unit() {
        let u = vec![
            Unit {
                name: "g".into(),
                layers: names(&["x", "y"]),
            },
            Unit {
                name: "z".into(),
                layers: names(&["z"]),
            },
        ];
        let a = Allocation(vec![b("w4a8"), b("w8a8")]);
        let o: Vec<String> = a
            .overrides(&u, BitWidths::W8A8)
            .iter()
            .map(|o| o.to_string())
            .collect();
        assert_eq!(o, ["x=w4a8", "y=w4a8"]);
    }

    /// Two units; unit 0 is cheap to lower, unit 1 is sensitive. Cost: 10 per bit of weights.
    fn two_units() -> (Vec<Unit>, Table) {
        let u: Vec<Unit> = ["u0", "u1"]
            .iter()
            .map(|n| Unit {
                name: n.to_string(),
                layers: names(&[n]),
            })
            .collect();
        let rows = [
            ("u0", b("w4a8"), 0.01),
            ("u0", b("w2a8"), 0.05),
            ("u1", b("w4a8"), 0.30),
            ("u1", b("w2a8"), 2.00),
        ];
        let t = Table::from_rows(&u, BitWidths::W8A8, rows.iter().map(|&(l, b, k)| (l, b, k)));
        (u, t)
    }

    #[test]
    fn greedy_lowers_the_least_sensitive_unit_first_and_stops_when_nothing_is_saved() {
        let (_, t) = two_units();
        let cost = |a: &Allocation| a.0.iter().map(|b| 10.0 * b.weights as f64).sum::<f64>();
        let start = Allocation::uniform(2, BitWidths::W8A8);
        let path = greedy(&start, &t, &[8, 4, 2], &[8], &cost);
        let steps: Vec<String> = path.iter().map(Allocation::compact).collect();
        assert_eq!(
            steps,
            ["w8a8*2", "w4a8 w8a8", "w2a8 w8a8", "w2a8 w4a8", "w2a8*2"]
        );
        assert!((t.proxy(0.5, &path[2]) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn the_baseline_moves_units_in_order_of_sensitivity() {
        let (_, t) = two_units();
        let start = Allocation::uniform(2, BitWidths::W8A8);
        let path = lowest_sensitivity_first(&start, &t, b("w2a8"));
        let steps: Vec<String> = path.iter().map(Allocation::compact).collect();
        assert_eq!(steps, ["w8a8*2", "w2a8 w8a8", "w2a8*2"]);
    }
}
