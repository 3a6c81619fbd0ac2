//! What a search keeps between runs in a folder (`qvit search --state DIR`): the sensitivity
//! table, whole or in shards, and every top-1 it measured. An interrupted search resumes where
//! it stopped, and the sensitivity stage — one independent piece of work per layer — can be
//! split over machines (`--shard i/N`), each writing its share into the shared folder.
//!
//! Every file is named by a key over everything its results depend on: the space, the base
//! plan (its ranges, so the statistics and the recipe), the weights, the held-out and test
//! images and qvit's version. A changed input reads nothing stale; the same inputs on another
//! machine find the same files. Files are written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::allocation::Allocation;
use super::sensitivity::Sensitivity;
use super::space::SearchSpace;
use super::splice::Splicer;
use crate::data::Dataset;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::explore::Shard;
use crate::ron_io::{self, write_atomic};

/// A search's folder of kept results, for one key.
#[derive(Debug)]
pub struct State {
    dir: PathBuf,
    key: u64,
    /// `stage:allocation` → top-1 (%), as kept in `top1-<key>.ron`.
    top1: Mutex<BTreeMap<String, f64>>,
}

impl State {
    /// Opens (making it if missing) the folder `dir` for results of inputs with digest `key`.
    pub fn open(dir: &Path, key: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let state = Self {
            dir: dir.to_path_buf(),
            key,
            top1: Mutex::new(BTreeMap::new()),
        };
        let file = state.top1_file();
        let kept = state
            .read::<BTreeMap<String, f64>>(&file)?
            .unwrap_or_default();
        // A top-1 is reported as read: an edited or damaged value is refused, not shown.
        if let Some((what, t)) = kept.iter().find(|(_, t)| !(0.0..=100.0).contains(*t)) {
            return Error::field(
                &file.display().to_string(),
                what,
                format!("{t} is not a top-1 in percent (0–100); delete the file to measure again"),
            );
        }
        *state.top1.lock().unwrap_or_else(|e| e.into_inner()) = kept;
        Ok(state)
    }

    /// The folder, for messages.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of the inputs, for names and messages.
    pub fn key(&self) -> u64 {
        self.key
    }

    fn top1_file(&self) -> PathBuf {
        self.dir.join(format!("top1-{:016x}.ron", self.key))
    }

    fn sensitivity_file(&self, shard: Shard) -> PathBuf {
        let name = if shard == Shard::ALL {
            format!("sensitivity-{:016x}.ron", self.key)
        } else {
            format!(
                "sensitivity-{:016x}-shard-{}-of-{}.ron",
                self.key, shard.index, shard.count
            )
        };
        self.dir.join(name)
    }

    /// A kept file, `None` when there is none; one that does not parse is an error that names
    /// it (delete it to compute it again). RON, which keeps infinite SQNRs.
    fn read<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        ron_io::parse(&text, &path.display().to_string())
            .map(Some)
            .map_err(|e| Error::InvalidField {
                origin: path.display().to_string(),
                field: "search state".into(),
                message: format!("{e}; delete the file to compute it again"),
            })
    }

    fn write<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        write_atomic(path, ron_io::to_string(value)?.as_bytes())
    }

    /// The kept sensitivity of `shard` (the whole table for [`Shard::ALL`]).
    pub fn sensitivity(&self, shard: Shard) -> Result<Option<Sensitivity>> {
        self.read(&self.sensitivity_file(shard))
    }

    pub fn keep_sensitivity(&self, table: &Sensitivity, shard: Shard) -> Result<()> {
        self.write(&self.sensitivity_file(shard), table)
    }

    /// The whole table from the shards of one split that are all there (their rows in the
    /// order of `layers`), or `None` while any is missing.
    pub fn merged_shards(&self, layers: &[String]) -> Result<Option<Sensitivity>> {
        let prefix = format!("sensitivity-{:016x}-shard-", self.key);
        let mut counts: Vec<u64> = std::fs::read_dir(&self.dir)
            .map_err(|source| Error::Io {
                path: self.dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| {
                let rest = name.strip_prefix(&prefix)?.strip_suffix(".ron")?;
                rest.split_once("-of-")?.1.parse().ok()
            })
            .collect();
        counts.sort_unstable();
        counts.dedup();
        for count in counts {
            let shards: Option<Vec<Sensitivity>> = (0..count)
                .map(|index| self.sensitivity(Shard { index, count }))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .collect();
            let Some(shards) = shards else {
                continue;
            };
            let order = |layer: &str| layers.iter().position(|l| l == layer);
            let mut merged = shards[0].clone();
            merged.rows = shards.into_iter().flat_map(|s| s.rows).collect();
            // Stable: each layer's candidates keep their order.
            merged.rows.sort_by_key(|r| order(&r.layer));
            return Ok(Some(merged));
        }
        Ok(None)
    }

    fn top1_key(stage: &str, allocation: &Allocation) -> String {
        format!("{stage}:{}", allocation.compact())
    }

    /// The top-1 kept for `allocation` at `stage` (`heldout` or `test`).
    pub fn top1(&self, stage: &str, allocation: &Allocation) -> Option<f64> {
        let kept = self.top1.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(&Self::top1_key(stage, allocation)).copied()
    }

    /// Keeps a top-1, writing the whole file again.
    pub fn keep_top1(&self, stage: &str, allocation: &Allocation, top1: f64) -> Result<()> {
        let mut kept = self.top1.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(Self::top1_key(stage, allocation), top1);
        self.write(&self.top1_file(), &*kept)
    }
}

/// The key of a search's results: its space (without the paths of its `data` section, which
/// differ between machines; the data themselves are in the rest), the base plan, the weights,
/// the held-out and test images, and qvit's version.
pub fn key(
    space: &SearchSpace,
    splicer: &Splicer,
    heldout: &Dataset,
    test: &Dataset,
) -> Result<u64> {
    let mut space = space.clone();
    space.data = Default::default();
    Ok(Digest::new()
        .str(env!("CARGO_PKG_VERSION"))
        .str(&ron_io::to_string(&space)?)
        .str(&ron_io::to_string(splicer.base())?)
        .u64(crate::quant::stats::fingerprint(splicer.params()))
        .u64(heldout.digest())
        .u64(test.digest())
        .finish())
}
