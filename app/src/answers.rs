//! Quantizations and accuracies the explorer has already computed for the open project, so
//! that going back to a setting shows its answer in the same frame: in memory for this run,
//! and, with a cache folder, on disk for the next (`qvit_core::cache`). Keys are digests of
//! everything an answer depends on, so a key that matches is the same answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use qvit_core::cache::{self, Store};
use qvit_core::eval::Accuracy;
use qvit_core::quant::QuantSettings;

use crate::session::{Loaded, Quantized};

/// Quantizations kept in memory (each holds a plan and per-layer SQNRs: small beside a model).
const KEEP_QUANTIZED: usize = 32;

#[derive(Debug, Default)]
pub struct Answers {
    store: Option<Store>,
    /// Most recent last.
    quantized: VecDeque<Arc<Quantized>>,
    /// Final accuracies by [`cache::accuracy_key`].
    accuracies: HashMap<u64, Accuracy>,
}

impl Answers {
    /// Answers backed by `store` on disk (memory only without one).
    pub fn new(store: Option<Store>) -> Self {
        Self {
            store,
            ..Self::default()
        }
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The quantization of `settings` on `loaded`, if this run computed it (for either
    /// executor: both run the same plan).
    pub fn quantized(&self, loaded: &Loaded, settings: &QuantSettings) -> Option<Arc<Quantized>> {
        let key = cache::plan_key(loaded.stats_digest, settings).ok()?;
        let known = self.quantized.iter().rev().find(|q| q.key == key)?;
        if known.settings == *settings {
            return Some(known.clone());
        }
        Some(Arc::new(Quantized {
            settings: settings.clone(),
            ..(**known).clone()
        }))
    }

    pub fn keep_quantized(&mut self, quantized: Arc<Quantized>) {
        self.quantized.retain(|q| q.key != quantized.key);
        self.quantized.push_back(quantized);
        while self.quantized.len() > KEEP_QUANTIZED {
            self.quantized.pop_front();
        }
    }

    /// The final accuracy stored under `key`, from memory or disk.
    pub fn accuracy(&self, key: u64) -> Option<Accuracy> {
        self.accuracies
            .get(&key)
            .cloned()
            .or_else(|| self.store.as_ref()?.accuracy(key))
    }

    pub fn keep_accuracy(&mut self, key: u64, accuracy: &Accuracy) {
        self.accuracies.insert(key, accuracy.clone());
        if let Some(Err(e)) = self.store.as_ref().map(|s| s.put_accuracy(key, accuracy)) {
            // The answer stands; only the next run's shortcut is lost.
            eprintln!("qvit: the accuracy was not cached: {e}");
        }
    }
}
