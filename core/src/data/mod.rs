//! Datasets: labelled images as normalised f32 batches.
//!
//! Two layouts are read: IDX pairs (MNIST / Fashion-MNIST, gzip or raw) and ImageFolder trees
//! (ImageNet layout `root/<class>/<image>`), the latter with the standard evaluation transform.

pub mod idx;
mod image_folder;
pub mod resample;
pub mod selection;

pub use image_folder::{EvalTransform, SideRounding};
pub use selection::Selection;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Per-channel normalisation of pixels scaled to `[0, 1]`: `(x − mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// Fashion-MNIST's training-set pixel statistics, used by the shipped micro models.
    pub fn fashion_mnist() -> Self {
        Self {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// ImageNet's statistics, used by EfficientViT and DeiT.
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    fn check(&self, channels: usize, origin: &str) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(Error::InvalidField {
                origin: origin.to_string(),
                field: "normalize".to_string(),
                message: format!(
                    "{} mean and {} std values for {channels}-channel images",
                    self.mean.len(),
                    self.std.len()
                ),
            });
        }
        // Pixels are in [0, 1]: a std below 1e-3 would blow them up past any activation range.
        if let Some(s) = self
            .std
            .iter()
            .find(|s| !(s.is_finite() && (1e-3..=1e3).contains(*s)))
        {
            return Err(Error::InvalidField {
                origin: origin.to_string(),
                field: "normalize.std".to_string(),
                message: format!("{s} is not a standard deviation from 0.001 to 1000"),
            });
        }
        if let Some(m) = self
            .mean
            .iter()
            .find(|m| !(m.is_finite() && m.abs() <= 1e3))
        {
            return Err(Error::InvalidField {
                origin: origin.to_string(),
                field: "normalize.mean".to_string(),
                message: format!("{m} is not a finite mean within ±1000"),
            });
        }
        Ok(())
    }
}

/// Where a dataset's pixels come from.
#[derive(Debug, Clone)]
enum Pixels {
    /// Images held in memory as bytes, `[N, C, H, W]`.
    Bytes(Vec<u8>),
    /// Image files, decoded and transformed when a batch is asked for.
    Files {
        files: Vec<PathBuf>,
        transform: EvalTransform,
    },
}

/// Labelled images of one shape.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it came from, for messages.
    pub origin: String,
    /// `[C, H, W]` of every image.
    pub image_shape: [usize; 3],
    pub labels: Vec<u32>,
    pub num_classes: usize,
    pub normalize: Normalize,
    pixels: Pixels,
}

/// A batch: images `[B, C, H, W]` and their labels.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<u32>,
}

impl Dataset {
    /// An IDX pair of images `[N, H, W]` (or `[N, C, H, W]`) and labels `[N]`.
    pub fn idx(images: &Path, labels: &Path, normalize: Normalize) -> Result<Self> {
        let origin = images.display().to_string();
        let img = idx::read(images)?;
        let lab = idx::read(labels)?;
        let image_shape = match img.dims.as_slice() {
            [_, h, w] => [1, *h, *w],
            [_, c, h, w] => [*c, *h, *w],
            other => {
                return Err(Error::InvalidField {
                    origin,
                    field: "IDX dimensions".into(),
                    message: format!(
                        "expected images as [N, H, W] or [N, C, H, W], found {} dimensions",
                        other.len()
                    ),
                });
            }
        };
        let n = img.dims[0];
        if lab.dims != [n] {
            return Err(Error::InvalidField {
                origin: labels.display().to_string(),
                field: "IDX dimensions".into(),
                message: format!(
                    "expected {n} labels to match {origin}, found {:?}",
                    lab.dims
                ),
            });
        }
        if n == 0 {
            return Err(Error::InvalidField {
                origin,
                field: "images".into(),
                message: "the dataset is empty".into(),
            });
        }
        normalize.check(image_shape[0], &origin)?;
        let labels: Vec<u32> = lab.data.iter().map(|&l| l as u32).collect();
        let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        Ok(Self {
            origin,
            image_shape,
            labels,
            num_classes,
            normalize,
            pixels: Pixels::Bytes(img.data),
        })
    }

    /// Images already in memory as bytes `[N, C, H, W]` with their labels (synthetic data for
    /// benchmarks and tests). An empty set is allowed here; the consumers refuse it.
    pub fn from_bytes(
        origin: &str,
        image_shape: [usize; 3],
        bytes: Vec<u8>,
        labels: Vec<u32>,
        normalize: Normalize,
    ) -> Result<Self> {
        let per: usize = image_shape.iter().product();
        if per == 0 || bytes.len() != labels.len() * per {
            return Error::field(
                origin,
                "images",
                format!(
                    "{} bytes for {} images of {image_shape:?}",
                    bytes.len(),
                    labels.len()
                ),
            );
        }
        normalize.check(image_shape[0], origin)?;
        let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        Ok(Self {
            origin: origin.to_string(),
            image_shape,
            labels,
            num_classes,
            normalize,
            pixels: Pixels::Bytes(bytes),
        })
    }

    /// An ImageNet-style folder tree `root/<class>/<image>` read with `transform`; classes are
    /// numbered in sorted order of their folder names.
    pub fn image_folder(
        root: &Path,
        transform: EvalTransform,
        normalize: Normalize,
    ) -> Result<Self> {
        let origin = root.display().to_string();
        transform.validate(&origin)?;
        let (files, labels, classes) = image_folder::scan(root)?;
        normalize.check(3, &origin)?;
        Ok(Self {
            origin,
            image_shape: [3, transform.size, transform.size],
            labels,
            num_classes: classes.len(),
            normalize,
            pixels: Pixels::Files { files, transform },
        })
    }

    /// The images file's partner: `…-images-idx3-ubyte[.gz]` → `…-labels-idx1-ubyte[.gz]`.
    pub fn idx_labels_path(images: &Path) -> Option<PathBuf> {
        let name = images.file_name()?.to_str()?;
        name.contains("images-idx3")
            .then(|| images.with_file_name(name.replace("images-idx3", "labels-idx1")))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A digest of what an evaluation on this set depends on: where it came from, the labels,
    /// the normalisation, and the pixels (in-memory sets) or the files and their transform
    /// (folders, whose files are not read for it).
    pub fn digest(&self) -> u64 {
        let mut d = crate::digest::Digest::new();
        d.str(&self.origin)
            .str(&format!("{:?} {:?}", self.image_shape, self.normalize))
            .u64(self.num_classes as u64);
        for &l in &self.labels {
            d.u64(u64::from(l));
        }
        match &self.pixels {
            Pixels::Bytes(b) => {
                d.bytes(b);
            }
            Pixels::Files { files, transform } => {
                d.str(&format!("{transform:?}"));
                for f in files {
                    d.str(&f.display().to_string());
                }
            }
        }
        d.finish()
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        let per = self.image_shape.iter().product::<usize>();
        self.labels.truncate(n);
        match &mut self.pixels {
            Pixels::Bytes(b) => b.truncate(n * per),
            Pixels::Files { files, .. } => files.truncate(n),
        }
        self
    }

    /// The images at `indices`, in that order (indices must be in range; callers choose them
    /// from [`Dataset::len`]).
    pub fn subset(&self, indices: &[usize]) -> Self {
        let per = self.image_shape.iter().product::<usize>();
        let pixels = match &self.pixels {
            Pixels::Bytes(b) => Pixels::Bytes(
                indices
                    .iter()
                    .flat_map(|&i| &b[i * per..(i + 1) * per])
                    .copied()
                    .collect(),
            ),
            Pixels::Files { files, transform } => Pixels::Files {
                files: indices.iter().map(|&i| files[i].clone()).collect(),
                transform: transform.clone(),
            },
        };
        Self {
            origin: self.origin.clone(),
            image_shape: self.image_shape,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            num_classes: self.num_classes,
            normalize: self.normalize.clone(),
            pixels,
        }
    }

    /// A name for image `i` that finds it again: its path below the folder's root, or its
    /// index in an IDX file.
    pub fn image_name(&self, i: usize) -> String {
        match &self.pixels {
            Pixels::Files { files, .. } => {
                let root = Path::new(&self.origin);
                let f = &files[i];
                f.strip_prefix(root).unwrap_or(f).display().to_string()
            }
            Pixels::Bytes(_) => i.to_string(),
        }
    }

    /// Raw bytes of image `i` (`C·H·W` values) of an in-memory (IDX) dataset.
    pub fn image_bytes(&self, i: usize) -> Option<&[u8]> {
        let per = self.image_shape.iter().product::<usize>();
        match &self.pixels {
            Pixels::Bytes(b) => b.get(i * per..(i + 1) * per),
            Pixels::Files { .. } => None,
        }
    }

    /// Normalised images and labels for a range of indices (files decoded in parallel).
    pub fn batch(&self, range: Range<usize>) -> Result<Batch> {
        use rayon::prelude::*;
        let [c, h, w] = self.image_shape;
        let plane = h * w;
        let mut data = vec![0.0f32; range.len() * c * plane];
        let normalize = |image: &mut [f32], pixel: &dyn Fn(usize) -> f32| {
            for ch in 0..c {
                let (mean, std) = (self.normalize.mean[ch], self.normalize.std[ch]);
                for (i, v) in image[ch * plane..(ch + 1) * plane].iter_mut().enumerate() {
                    *v = (pixel(ch * plane + i) - mean) / std;
                }
            }
        };
        match &self.pixels {
            Pixels::Bytes(bytes) => {
                let per = c * plane;
                for (image, i) in data.chunks_mut(per).zip(range.clone()) {
                    let b = &bytes[i * per..(i + 1) * per];
                    normalize(image, &|k| b[k] as f32 / 255.0);
                }
            }
            Pixels::Files { files, transform } => {
                data.par_chunks_mut(c * plane)
                    .zip(&files[range.clone()])
                    .try_for_each(|(image, file)| {
                        let pixels = transform.load(file)?;
                        normalize(image, &|k| pixels[k]);
                        Ok::<(), Error>(())
                    })?;
            }
        }
        Ok(Batch {
            images: Tensor::new(vec![range.len(), c, h, w], data),
            labels: self.labels[range].to_vec(),
        })
    }
}
