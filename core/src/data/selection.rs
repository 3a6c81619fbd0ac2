//! Which images calibration reads: N of a dataset, class-balanced and seeded, as the PTQ papers
//! choose them (PTQ4ViT and RepQ-ViT take 32 random training images, Trio-ViT 128).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Images per calibration set when a folder is given and no count is (PTQ4ViT, RepQ-ViT).
pub const FOLDER_DEFAULT: usize = 32;

/// A reproducible choice of calibration images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// How many images.
    pub count: usize,
    /// The seed of the shuffle.
    pub seed: u64,
}

impl Selection {
    /// The chosen indices into a dataset with these labels: every image in file order when
    /// `count` covers them all; otherwise one image of each class in turn (classes in a
    /// shuffled order, images shuffled within their class), so that any prefix of the list is
    /// balanced too. Depends only on the labels, `count` and `seed`.
    pub fn indices(&self, labels: &[u32]) -> Vec<usize> {
        if self.count >= labels.len() {
            return (0..labels.len()).collect();
        }
        let mut rng = Rng::new(self.seed);
        let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, &l) in labels.iter().enumerate() {
            by_class.entry(l).or_default().push(i);
        }
        let mut classes: Vec<Vec<usize>> = by_class.into_values().collect();
        for images in &mut classes {
            rng.shuffle(images);
        }
        rng.shuffle(&mut classes);
        let mut chosen = Vec::with_capacity(self.count);
        for round in 0.. {
            for images in &classes {
                if let Some(&i) = images.get(round) {
                    chosen.push(i);
                    if chosen.len() == self.count {
                        return chosen;
                    }
                }
            }
        }
        unreachable!("count < labels.len(), so the rounds fill it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_seeded_and_complete() {
        // 10 classes of 50 images, class c at indices c, c+10, …
        let labels: Vec<u32> = (0..500).map(|i| i % 10).collect();
        let pick = Selection { count: 32, seed: 7 };
        let chosen = pick.indices(&labels);
        assert_eq!(chosen.len(), 32);
        let mut per_class = [0; 10];
        for &i in &chosen {
            per_class[labels[i] as usize] += 1;
        }
        // 32 = 3 rounds of 10 + 2: every class has 3 or 4.
        assert!(per_class.iter().all(|&n| n == 3 || n == 4), "{per_class:?}");
        let mut unique = chosen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 32);
        assert_eq!(pick.indices(&labels), chosen, "same seed, same choice");
        assert_ne!(Selection { count: 32, seed: 8 }.indices(&labels), chosen);
        // The first 10 are one of each class.
        let mut first: Vec<u32> = chosen[..10].iter().map(|&i| labels[i]).collect();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn uneven_classes_and_everything() {
        let labels = [0, 0, 0, 0, 0, 0, 1, 2];
        let chosen = Selection { count: 5, seed: 1 }.indices(&labels);
        assert!(chosen.contains(&6) && chosen.contains(&7), "{chosen:?}");
        assert_eq!(
            Selection { count: 8, seed: 1 }.indices(&labels),
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!(
            Selection {
                count: 100,
                seed: 1
            }
            .indices(&labels)
            .len(),
            8
        );
    }
}
