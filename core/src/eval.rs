//! Accuracy of a classifier on a dataset: top-1 and top-5, streamed batch by batch.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exec::float::FloatExecutor;
use crate::tensor::Tensor;

/// Anything that maps a batch of images `[B, C, H, W]` to logits `[B, classes]`.
pub trait Classifier: Sync {
    fn logits(&self, images: &Tensor) -> Result<Tensor>;
}

impl Classifier for FloatExecutor<'_> {
    fn logits(&self, images: &Tensor) -> Result<Tensor> {
        self.forward(images)
    }
}

/// Counts of correct predictions so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub images: usize,
    pub top1_correct: usize,
    pub top5_correct: usize,
}

impl Accuracy {
    /// Top-1 in percent.
    pub fn top1(&self) -> f64 {
        percent(self.top1_correct, self.images)
    }

    /// Top-5 in percent.
    pub fn top5(&self) -> f64 {
        percent(self.top5_correct, self.images)
    }

    /// A 95 % Wilson interval for top-1, in percent: how far the figure may move as more images
    /// are evaluated.
    pub fn top1_interval(&self) -> (f64, f64) {
        if self.images == 0 {
            return (0.0, 100.0);
        }
        let (n, p, z) = (
            self.images as f64,
            self.top1_correct as f64 / self.images as f64,
            1.96,
        );
        let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
        (
            100.0 * (centre - half).max(0.0),
            100.0 * (centre + half).min(1.0),
        )
    }

    /// Adds one image whose label ranks `rank` among the logits (0 = predicted).
    fn count(&mut self, rank: usize) {
        self.images += 1;
        self.top1_correct += usize::from(rank == 0);
        self.top5_correct += usize::from(rank < 5);
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Position of `label` when the logits are sorted in descending order, ties broken by class
/// index (so rank 0 is the first arg-max, as NumPy and PyTorch report it).
pub fn rank_of(logits: &[f32], label: usize) -> usize {
    let target = logits[label];
    logits
        .iter()
        .enumerate()
        .filter(|&(i, &v)| v > target || (v == target && i < label))
        .count()
}

/// Evaluates `model` on the first `limit` images of `data` (all when `None`) in batches,
/// calling `progress` after each batch with the running counts.
pub fn evaluate(
    model: &dyn Classifier,
    data: &Dataset,
    batch: usize,
    limit: Option<usize>,
    progress: &mut dyn FnMut(&Accuracy),
) -> Result<Accuracy> {
    evaluate_until(model, data, batch, limit, &AtomicBool::new(false), progress)
}

/// [`evaluate`], stopping after the batch during which `cancel` becomes true; the counts so far
/// are returned (a UI's cancel button).
pub fn evaluate_until(
    model: &dyn Classifier,
    data: &Dataset,
    batch: usize,
    limit: Option<usize>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&Accuracy),
) -> Result<Accuracy> {
    let total = limit.map_or(data.len(), |l| l.min(data.len()));
    if total == 0 || batch == 0 {
        return Err(Error::InvalidField {
            origin: data.origin.clone(),
            field: if batch == 0 { "batch" } else { "images" }.into(),
            message: if batch == 0 {
                "the batch size must be at least 1".into()
            } else {
                "there are no images to evaluate".into()
            },
        });
    }
    let mut acc = Accuracy::default();
    for start in (0..total).step_by(batch) {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let b = data.batch(start..(start + batch).min(total))?;
        let logits = model.logits(&b.images)?;
        for (i, &label) in b.labels.iter().enumerate() {
            acc.count(rank_of(logits.item(i), label as usize));
        }
        progress(&acc);
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_break_ties_by_class_index() {
        let logits = [0.1, 0.9, 0.9, 0.3];
        assert_eq!(rank_of(&logits, 1), 0);
        assert_eq!(rank_of(&logits, 2), 1);
        assert_eq!(rank_of(&logits, 3), 2);
        assert_eq!(rank_of(&logits, 0), 3);
    }

    #[test]
    fn counts_and_interval() {
        let mut a = Accuracy::default();
        for rank in [0, 0, 3, 7] {
            a.count(rank);
        }
        assert_eq!((a.top1(), a.top5()), (50.0, 75.0));
        let (lo, hi) = a.top1_interval();
        assert!(lo < 50.0 && hi > 50.0 && lo >= 0.0 && hi <= 100.0);
    }
}
