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

/// Counts of correct predictions so far, overall and per class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub images: usize,
    pub top1_correct: usize,
    pub top5_correct: usize,
    /// Images of each class seen (indexed by label; as long as the largest label seen + 1).
    #[serde(default)]
    pub class_images: Vec<usize>,
    /// Top-1 correct images of each class.
    #[serde(default)]
    pub class_top1_correct: Vec<usize>,
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

    /// Adds one image of class `label` that ranks `rank` among the logits (0 = predicted).
    fn count(&mut self, label: usize, rank: usize) {
        self.images += 1;
        self.top1_correct += usize::from(rank == 0);
        self.top5_correct += usize::from(rank < 5);
        if self.class_images.len() <= label {
            self.class_images.resize(label + 1, 0);
            self.class_top1_correct.resize(label + 1, 0);
        }
        self.class_images[label] += 1;
        self.class_top1_correct[label] += usize::from(rank == 0);
    }

    /// The counts of two disjoint sets of images together (shards of one evaluation).
    pub fn merged(&self, other: &Accuracy) -> Accuracy {
        let add = |a: &[usize], b: &[usize]| -> Vec<usize> {
            (0..a.len().max(b.len()))
                .map(|i| a.get(i).unwrap_or(&0) + b.get(i).unwrap_or(&0))
                .collect()
        };
        Accuracy {
            images: self.images + other.images,
            top1_correct: self.top1_correct + other.top1_correct,
            top5_correct: self.top5_correct + other.top5_correct,
            class_images: add(&self.class_images, &other.class_images),
            class_top1_correct: add(&self.class_top1_correct, &other.class_top1_correct),
        }
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
/// index (so rank 0 is the first arg-max, as NumPy and PyTorch report it). Logits holding a
/// NaN rank the label last: a prediction that is not a number is never correct.
pub fn rank_of(logits: &[f32], label: usize) -> usize {
    if logits.iter().any(|v| v.is_nan()) {
        return logits.len();
    }
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
            let row = logits.item(i);
            if label as usize >= row.len() {
                return Error::field(
                    &data.origin,
                    "labels",
                    format!(
                        "image {} has label {label}, but the model has {} classes (labels 0 to \
                         {}); is this data for another model?",
                        start + i,
                        row.len(),
                        row.len() - 1
                    ),
                );
            }
            acc.count(label as usize, rank_of(row, label as usize));
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
        assert_eq!(rank_of(&[f32::NAN, 0.0], 0), 2);
        assert_eq!(rank_of(&[0.0, f32::NAN], 0), 2);
    }

    #[test]
    fn merged_counts_add_up() {
        let mut a = Accuracy::default();
        a.count(1, 0);
        let mut b = Accuracy::default();
        b.count(3, 2);
        b.count(1, 0);
        let m = a.merged(&b);
        assert_eq!((m.images, m.top1_correct, m.top5_correct), (3, 2, 3));
        assert_eq!(m.class_images, vec![0, 2, 0, 1]);
        assert_eq!(m.class_top1_correct, vec![0, 2, 0, 0]);
    }

    #[test]
    fn counts_and_interval() {
        let mut a = Accuracy::default();
        for (label, rank) in [(0, 0), (2, 0), (2, 3), (0, 7)] {
            a.count(label, rank);
        }
        assert_eq!((a.top1(), a.top5()), (50.0, 75.0));
        assert_eq!(a.class_images, [2, 0, 2]);
        assert_eq!(a.class_top1_correct, [1, 0, 1]);
        // Wilson's 95 % interval by hand: p = 1/2, n = 4, z = 1.96 gives centre 1/2 and half
        // width 1.96·√(1/16 + 0.9604/64)/1.9604 = 0.349964.
        let (lo, hi) = a.top1_interval();
        assert!(
            (lo - 15.003571).abs() < 1e-5 && (hi - 84.996429).abs() < 1e-5,
            "{lo} {hi}"
        );
        // All wrong or all right: the interval touches 0 or 100 and has the same width.
        let none = Accuracy {
            images: 5,
            ..Default::default()
        };
        let all = Accuracy {
            images: 5,
            top1_correct: 5,
            ..Default::default()
        };
        let (l0, h0) = none.top1_interval();
        let (l1, h1) = all.top1_interval();
        assert_eq!((l0, h1), (0.0, 100.0));
        assert!(
            (h0 - 43.4491).abs() < 1e-4 && (l1 - 56.5509).abs() < 1e-4,
            "{h0} {l1}"
        );
    }
}
