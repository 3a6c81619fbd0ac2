//! Quant plans and accuracies kept on disk by what they depend on, so that a setting computed
//! once is read back instead of searched or evaluated again: the explorer returns to a bit
//! width or an override it has seen in a frame, on this run or the next.
//!
//! A plan's key digests the calibration statistics ([`crate::quant::CalibrationStats::digest`]),
//! the resolved recipe (a recipe file by its contents), the widths, the overrides, the rounding
//! and the build of qvit (its version and executable); an accuracy's key adds the executor, the test set
//! ([`crate::data::Dataset::digest`]) and the number of images. A cache file is qvit's own: it
//! is read back only when the key it records and the digest of its contents match, and is
//! otherwise computed again and replaced (written atomically).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::eval::Accuracy;
use crate::graph::Graph;
use crate::quant::{QuantExecutor, QuantPlan, QuantSettings, Recipe};

/// The key of the plan that `settings` give on statistics of digest `stats`. The executor is
/// not part of it: both executors run the same plan.
pub fn plan_key(stats: u64, settings: &QuantSettings) -> Result<u64> {
    let recipe = Recipe::resolve(&settings.recipe)?;
    let inputs = (
        &recipe,
        &settings.bits,
        &settings.overrides,
        &settings.rounding,
        settings.search_at_base,
    );
    let text = ron::to_string(&inputs).map_err(|e| Error::InvalidField {
        origin: settings.recipe.clone(),
        field: "quant".into(),
        message: e.to_string(),
    })?;
    Ok(Digest::new().u64(build()).u64(stats).str(&text).finish())
}

/// The build of qvit computing the answers: its version, and the size and time of the running
/// executable, so that a rebuilt qvit (whose numerics may have changed) computes afresh.
fn build() -> u64 {
    static BUILD: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BUILD.get_or_init(|| {
        let mut d = Digest::new();
        d.str(env!("CARGO_PKG_VERSION"));
        if let Some(meta) = std::env::current_exe()
            .ok()
            .and_then(|exe| std::fs::metadata(exe).ok())
        {
            d.u64(meta.len());
            if let Ok(since) = meta
                .modified()
                .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
            {
                d.u64(since.as_nanos() as u64);
            }
        }
        d.finish()
    })
}

/// The key of the accuracy of plan `plan` on the executor, over the first `images` images of
/// the test set of digest `test`.
pub fn accuracy_key(plan: u64, executor: QuantExecutor, test: u64, images: usize) -> u64 {
    Digest::new()
        .u64(plan)
        .str(&format!("{executor:?}"))
        .u64(test)
        .u64(images as u64)
        .finish()
}

/// What a cache file holds: the value, the key it was stored under and the digest of the
/// value's text.
#[derive(Serialize, Deserialize)]
struct Entry<T> {
    key: u64,
    digest: u64,
    value: T,
}

/// A folder of cached plans (`plans/`) and accuracies (`accuracy/`).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plan stored under `key` for this graph's model, if there is a sound one.
    pub fn plan(&self, key: u64, graph: &Graph) -> Option<QuantPlan> {
        self.read::<QuantPlan>("plans", key)
            .filter(|p| p.check_model(graph).is_ok())
    }

    pub fn put_plan(&self, key: u64, plan: &QuantPlan) -> Result<()> {
        self.write("plans", key, plan)
    }

    /// The accuracy stored under `key`, if there is a sound one.
    pub fn accuracy(&self, key: u64) -> Option<Accuracy> {
        self.read("accuracy", key)
    }

    pub fn put_accuracy(&self, key: u64, accuracy: &Accuracy) -> Result<()> {
        self.write("accuracy", key, accuracy)
    }

    fn path(&self, kind: &str, key: u64) -> PathBuf {
        self.dir.join(kind).join(format!("{key:016x}.ron"))
    }

    fn read<T: Serialize + DeserializeOwned>(&self, kind: &str, key: u64) -> Option<T> {
        let text = std::fs::read_to_string(self.path(kind, key)).ok()?;
        let entry: Entry<T> = crate::ron_io::parse(&text, "cache").ok()?;
        let sound = entry.key == key && digest_of(&entry.value)? == entry.digest;
        sound.then_some(entry.value)
    }

    fn write<T: Serialize>(&self, kind: &str, key: u64, value: &T) -> Result<()> {
        let path = self.path(kind, key);
        let folder = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(folder).map_err(|source| Error::Io {
            path: folder.to_path_buf(),
            source,
        })?;
        let digest = digest_of(value).ok_or_else(|| Error::InvalidField {
            origin: path.display().to_string(),
            field: kind.into(),
            message: "the value cannot be written as RON".into(),
        })?;
        crate::ron_io::write(&path, &Entry { key, digest, value })
    }
}

fn digest_of<T: Serialize>(value: &T) -> Option<u64> {
    ron::to_string(value)
        .ok()
        .map(|text| crate::digest::of(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::BitWidths;

    fn settings(bits: &str) -> QuantSettings {
        QuantSettings {
            bits: bits.parse::<BitWidths>().unwrap(),
            ..QuantSettings::default()
        }
    }

    #[test]
    fn keys_change_with_what_a_plan_depends_on_and_not_the_executor() {
        let w8 = plan_key(1, &settings("w8a8")).unwrap();
        assert_eq!(w8, plan_key(1, &settings("w8a8")).unwrap());
        assert_ne!(w8, plan_key(2, &settings("w8a8")).unwrap(), "statistics");
        assert_ne!(w8, plan_key(1, &settings("w4a8")).unwrap(), "bits");
        let minmax = QuantSettings {
            recipe: "minmax".into(),
            ..settings("w8a8")
        };
        assert_ne!(w8, plan_key(1, &minmax).unwrap(), "recipe");
        let int = QuantSettings {
            executor: QuantExecutor::Int,
            ..settings("w8a8")
        };
        assert_eq!(w8, plan_key(1, &int).unwrap(), "executor");
        let a = accuracy_key(w8, QuantExecutor::Int, 7, 1000);
        assert_ne!(a, accuracy_key(w8, QuantExecutor::Fake, 7, 1000));
        assert_ne!(a, accuracy_key(w8, QuantExecutor::Int, 8, 1000));
        assert_ne!(a, accuracy_key(w8, QuantExecutor::Int, 7, 999));
        assert!(
            plan_key(
                1,
                &QuantSettings {
                    recipe: "gptq".into(),
                    ..settings("w8a8")
                }
            )
            .is_err()
        );
    }

    #[test]
    fn a_stored_value_reads_back_and_a_damaged_one_does_not() {
        let dir = std::env::temp_dir().join(format!("qvit-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir);
        let acc = Accuracy {
            images: 10,
            top1_correct: 9,
            top5_correct: 10,
            class_images: vec![5, 5],
            class_top1_correct: vec![4, 5],
        };
        assert_eq!(store.accuracy(3), None);
        store.put_accuracy(3, &acc).unwrap();
        assert_eq!(store.accuracy(3), Some(acc.clone()));
        // Another key's name, or an edited value, is not read back.
        let path = store.path("accuracy", 3);
        std::fs::copy(&path, store.path("accuracy", 4)).unwrap();
        assert_eq!(store.accuracy(4), None);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("top1_correct: 9", "top1_correct: 8")).unwrap();
        assert_ne!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "the edit took"
        );
        assert_eq!(store.accuracy(3), None);
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert_eq!(store.accuracy(3), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
