//! A project: everything one experiment needs, in one RON file that every headless subcommand
//! accepts (and that the explorer saves). Relative paths are relative to the project file.
//!
//! ```ron
//! Project(
//!     model: "efficientvit-micro",
//!     weights: Some("../assets/efficientvit-micro.safetensors"),
//!     data: Some(Idx(images: "../assets/fashion-mnist/t10k-images-idx3-ubyte.gz")),
//!     quant: Some(
//!         recipe: "trio-vit",
//!         bits: "w8a8",
//!         overrides: [(layers: "stages.3.*", bits: "w4a8")],
//!     ),
//!     calibration: Some("micro.calib.safetensors"),
//!     calibration_data: Some(data: ImageFolder(root: "imagenet/train"), images: Some(32), seed: 0),
//!     accelerator: Some(name: "trio-vit-zcu102", part: "zcu102", clock_mhz: 200.0, …),
//!     sweep: Some(name: "engines", mat_pes: [8, 16], …, bits: ["w8a8"]),
//! )
//! ```
//!
//! Fields left out take the shipped defaults: a micro model's trained weights, the
//! Fashion-MNIST test and calibration sets, full precision and the `trio-vit-zcu102`
//! accelerator. The full-size models ship no weights and no data: a project names its
//! `weights`, its `data` and its `calibration_data` (`presets/projects/` has a commented
//! example). A project's
//! `sweep` takes the project's accelerator as its base and its model when it names none, so
//! the explorer's configuration runs unchanged with `qvit eval`, `qvit cost` and `qvit sweep`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::accel::AccelConfig;
use crate::arch::{ArchSpec, Family};
use crate::assets;
use crate::data::{Dataset, EvalTransform, Normalize, Selection, selection};
use crate::error::{Error, Result};
use crate::explore::DesignSpace;
use crate::quant::QuantSettings;
use crate::ron_io;

/// The model the explorer and `qvit eval` use when nothing else is named.
pub const DEFAULT_MODEL: &str = "efficientvit-micro";

/// The accelerator preset used when a project names none.
pub const DEFAULT_ACCELERATOR: &str = "trio-vit-zcu102";

/// Where evaluation images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataSource {
    /// An IDX pair; `labels` defaults to the images file's partner (`…labels-idx1-ubyte…`).
    Idx {
        images: PathBuf,
        #[serde(default)]
        labels: Option<PathBuf>,
        #[serde(default = "Normalize::fashion_mnist")]
        normalize: Normalize,
    },
    /// An ImageNet-style folder tree `root/<class>/<image>` read with the evaluation transform
    /// (default: the official one of the model's family at its resolution, see
    /// [`EvalTransform::official`]).
    ImageFolder {
        root: PathBuf,
        #[serde(default)]
        transform: Option<EvalTransform>,
        #[serde(default = "Normalize::imagenet")]
        normalize: Normalize,
    },
}

/// The images calibration reads: a dataset, how many of its images and the seed of their
/// class-balanced choice (see [`Selection`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSet {
    pub data: DataSource,
    /// How many images (default: 32 from a folder, as PTQ4ViT and RepQ-ViT use; 1,024 from an
    /// IDX file).
    #[serde(default)]
    pub images: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

impl CalibrationSet {
    /// The shipped 1,024 Fashion-MNIST calibration images, for models that take 1×28×28 images.
    pub fn fashion_mnist() -> Self {
        let (images, labels) = assets::fashion_mnist_calibration();
        Self {
            data: DataSource::Idx {
                images,
                labels: Some(labels),
                normalize: Normalize::fashion_mnist(),
            },
            images: None,
            seed: 0,
        }
    }

    /// The shipped Fashion-MNIST calibration images for a model that takes 1×28×28 images; for
    /// any other, an error saying what to give.
    pub fn default_for(model: &str, input_shape: &[usize]) -> Result<Self> {
        if input_shape == [1, 28, 28] {
            return Ok(Self::fashion_mnist());
        }
        Error::field(
            model,
            "calibration data",
            format!(
                "the model takes {input_shape:?} images and qvit ships calibration images only \
                 for the 28×28 micro models; give an ImageNet-style folder (root/<class>/<image>, \
                 e.g. your training set) with --calibration-data DIR, or `calibration_data` in \
                 the project, or statistics from `qvit calibrate` with --calibration FILE"
            ),
        )
    }

    /// The images used: the count given, else 32 from a folder or 1,024 from an IDX file.
    pub fn selection(&self) -> Selection {
        let count = self.images.unwrap_or(match self.data {
            DataSource::ImageFolder { .. } => selection::FOLDER_DEFAULT,
            DataSource::Idx { .. } => 1024,
        });
        Selection {
            count,
            seed: self.seed,
        }
    }
}

impl DataSource {
    /// The per-channel normalisation its images are read with.
    pub fn normalize(&self) -> &Normalize {
        match self {
            DataSource::Idx { normalize, .. } | DataSource::ImageFolder { normalize, .. } => {
                normalize
            }
        }
    }

    /// The shipped Fashion-MNIST test set.
    pub fn fashion_mnist_test() -> Self {
        let (images, labels) = assets::fashion_mnist_test();
        DataSource::Idx {
            images,
            labels: Some(labels),
            normalize: Normalize::fashion_mnist(),
        }
    }

    /// The shipped held-out training images ([`assets::fashion_mnist_heldout`]).
    pub fn fashion_mnist_heldout() -> Self {
        let (images, labels) = assets::fashion_mnist_heldout();
        DataSource::Idx {
            images,
            labels: Some(labels),
            normalize: Normalize::fashion_mnist(),
        }
    }

    /// A path given on the command line: a folder is an ImageNet-style tree read with the
    /// official transform of `family` at `resolution` (`crop_ratio` overriding the family's);
    /// a file is IDX images with their labels beside them.
    pub fn from_path(
        path: &Path,
        family: Family,
        resolution: usize,
        crop_ratio: Option<f64>,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not found; give an ImageNet-style folder (root/<class>/<image>) or an IDX \
                     images file (…-images-idx3-ubyte[.gz])",
                ),
            });
        }
        if path.is_dir() {
            return Ok(DataSource::ImageFolder {
                root: path.to_path_buf(),
                transform: Some(EvalTransform::official(family, resolution, crop_ratio)),
                normalize: Normalize::imagenet(),
            });
        }
        Ok(DataSource::Idx {
            images: path.to_path_buf(),
            labels: Dataset::idx_labels_path(path),
            normalize: Normalize::fashion_mnist(),
        })
    }

    /// Reads the data (IDX) or indexes the folder (ImageFolder), whose default transform is the
    /// official one of `family` at `resolution`.
    pub fn open(&self, family: Family, resolution: usize) -> Result<Dataset> {
        match self {
            DataSource::Idx {
                images,
                labels,
                normalize,
            } => {
                let labels = match labels {
                    Some(l) => l.clone(),
                    None => Dataset::idx_labels_path(images).ok_or_else(|| Error::InvalidField {
                        origin: images.display().to_string(),
                        field: "labels".into(),
                        message: "cannot infer the labels file from this name; name it in the project (labels: Some(\"…\"))".into(),
                    })?,
                };
                Dataset::idx(images, &labels, normalize.clone())
            }
            DataSource::ImageFolder {
                root,
                transform,
                normalize,
            } => Dataset::image_folder(
                root,
                transform
                    .clone()
                    .unwrap_or_else(|| EvalTransform::official(family, resolution, None)),
                normalize.clone(),
            ),
        }
    }

    fn rebase(&mut self, base: &Path) {
        match self {
            DataSource::Idx { images, labels, .. } => {
                *images = base.join(&*images);
                if let Some(l) = labels {
                    *l = base.join(&*l);
                }
            }
            DataSource::ImageFolder { root, .. } => *root = base.join(&*root),
        }
    }
}

/// One experiment's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// A model preset name, or the path of a model RON file.
    pub model: String,
    /// Input resolution, when not the model spec's own.
    #[serde(default)]
    pub resolution: Option<usize>,
    /// A safetensors file with the model's weights (default: the shipped micro-model weights).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Evaluation data (default: the shipped Fashion-MNIST test set).
    #[serde(default)]
    pub data: Option<DataSource>,
    /// Quantization: recipe, bit widths and per-layer overrides (default: full precision).
    #[serde(default)]
    pub quant: Option<QuantSettings>,
    /// Calibration statistics written by `qvit calibrate` (default: calibrate on
    /// `calibration_data` when a quantized result is asked for).
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// The images to calibrate on when no statistics file is named (default: the shipped
    /// 1,024 Fashion-MNIST calibration images, for the micro models only).
    #[serde(default)]
    pub calibration_data: Option<CalibrationSet>,
    /// The accelerator the model is priced on (default: the `trio-vit-zcu102` preset).
    #[serde(default)]
    pub accelerator: Option<AccelConfig>,
    /// A design space to sweep around this project (`qvit sweep PROJECT`).
    #[serde(default)]
    pub sweep: Option<DesignSpace>,
}

impl Default for Project {
    fn default() -> Self {
        Self::for_model(DEFAULT_MODEL)
    }
}

impl Project {
    /// A project of a model with every other field at its default.
    pub fn for_model(model: &str) -> Self {
        Self {
            model: model.to_string(),
            resolution: None,
            weights: None,
            data: None,
            quant: None,
            calibration: None,
            calibration_data: None,
            accelerator: None,
            sweep: None,
        }
    }

    /// Reads a project file; relative paths in it are taken relative to its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let mut p: Project = ron_io::read(path)?;
        let origin = path.display().to_string();
        if let Some(a) = &p.accelerator {
            a.validate(&origin)?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        if p.model.ends_with(".ron") {
            p.model = base.join(&p.model).display().to_string();
        }
        if let Some(w) = &mut p.weights {
            *w = base.join(&*w);
        }
        if let Some(d) = &mut p.data {
            d.rebase(base);
        }
        if let Some(c) = &mut p.calibration {
            *c = base.join(&*c);
        }
        if let Some(c) = &mut p.calibration_data {
            c.data.rebase(base);
        }
        if let Some(q) = &mut p.quant
            && q.recipe.ends_with(".ron")
        {
            q.recipe = base.join(&q.recipe).display().to_string();
        }
        Ok(p)
    }

    /// The model spec at the project's resolution.
    pub fn spec(&self) -> Result<ArchSpec> {
        let spec = ArchSpec::resolve(&self.model)?;
        match self.resolution {
            Some(r) => spec.with_resolution(r),
            None => Ok(spec),
        }
    }

    /// The project's accelerator, or the default preset.
    pub fn accel_config(&self) -> Result<AccelConfig> {
        match &self.accelerator {
            Some(a) => Ok(a.clone()),
            None => AccelConfig::preset(DEFAULT_ACCELERATOR),
        }
    }

    /// The project's design space, completed: the project's accelerator as its base unless it
    /// names one, the project's model unless it names models. `origin` names the project in
    /// errors.
    pub fn design_space(&self, origin: &str) -> Result<Option<DesignSpace>> {
        let Some(mut space) = self.sweep.clone() else {
            return Ok(None);
        };
        if space.base.is_empty() {
            space.base_config = Some(self.accel_config()?);
        }
        if space.models.is_empty() {
            space.models = vec![self.model.clone()];
        }
        space.validate(&format!("{origin} (sweep)"))?;
        Ok(Some(space))
    }

    /// Writes the project as RON, atomically. Paths are written as they are held (absolute
    /// after [`Project::load`]), so the file can be moved without breaking them.
    pub fn save(&self, path: &Path) -> Result<()> {
        ron_io::write(path, self)
    }

    /// The project with every path in it absolute (taken from the current folder), so that the
    /// file can be written to any folder and still name the same files.
    pub fn with_absolute_paths(mut self) -> Result<Self> {
        let absolute = |p: &mut PathBuf| -> Result<()> {
            *p = std::path::absolute(&*p).map_err(|source| Error::Io {
                path: p.clone(),
                source,
            })?;
            Ok(())
        };
        let absolute_name = |name: &mut String| -> Result<()> {
            if name.ends_with(".ron") {
                let mut p = PathBuf::from(&*name);
                absolute(&mut p)?;
                *name = p.display().to_string();
            }
            Ok(())
        };
        let data = |d: &mut DataSource| -> Result<()> {
            match d {
                DataSource::Idx { images, labels, .. } => {
                    absolute(images)?;
                    labels.as_mut().map(absolute).transpose()?;
                }
                DataSource::ImageFolder { root, .. } => absolute(root)?,
            }
            Ok(())
        };
        absolute_name(&mut self.model)?;
        self.weights.as_mut().map(absolute).transpose()?;
        self.data.as_mut().map(data).transpose()?;
        self.calibration.as_mut().map(absolute).transpose()?;
        if let Some(c) = &mut self.calibration_data {
            data(&mut c.data)?;
        }
        if let Some(q) = &mut self.quant {
            absolute_name(&mut q.recipe)?;
        }
        Ok(self)
    }

    /// The weights file: the project's, or the shipped weights of a micro model.
    pub fn weights_path(&self) -> PathBuf {
        self.weights
            .clone()
            .unwrap_or_else(|| assets::weights(&self.model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::BitWidths;

    #[test]
    fn quant_settings_parse_with_defaults() {
        let p: Project = ron_io::parse(
            r#"Project(model: "efficientvit-micro", quant: Some(bits: "w4a8", overrides: [(layers: "head.*", bits: "w8a8")]))"#,
            "p.ron",
        )
        .unwrap();
        let q = p.quant.unwrap();
        assert_eq!(q.recipe, "trio-vit");
        assert_eq!(q.bits, BitWidths::new(4, 8).unwrap());
        assert_eq!(q.overrides[0].layers, "head.*");
        let e = ron_io::parse::<Project>(
            r#"Project(model: "efficientvit-micro", quant: Some(bits: "w4a20"))"#,
            "p.ron",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.ron") && e.contains("from 2 to 16"), "{e}");
    }

    #[test]
    fn the_commented_example_project_reads_as_documented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../presets/projects/efficientvit-b1-imagenet.ron");
        let p = Project::load(&path).unwrap();
        let base = path.parent().unwrap();
        assert_eq!(
            (p.model.as_str(), p.resolution),
            ("efficientvit-b1", Some(224))
        );
        assert_eq!(p.weights, Some(base.join("efficientvit_b1_r224.pt")));
        let Some(DataSource::ImageFolder {
            root,
            transform: Some(t),
            normalize,
        }) = &p.data
        else {
            panic!("{:?}", p.data)
        };
        assert_eq!(root, &base.join("imagenet/val"));
        assert_eq!(t, &EvalTransform::official(Family::EfficientVit, 224, None));
        assert_eq!(normalize, &Normalize::imagenet());
        let c = p.calibration_data.as_ref().unwrap();
        assert_eq!(c.selection(), Selection { count: 32, seed: 0 });
        assert!(
            matches!(&c.data, DataSource::ImageFolder { root, transform: None, .. }
            if root == &base.join("imagenet/train"))
        );
        let q = p.quant.as_ref().unwrap();
        assert_eq!(
            (q.recipe.as_str(), q.executor),
            ("trio-vit", crate::quant::QuantExecutor::Int)
        );
        assert_eq!(
            p.accelerator,
            Some(AccelConfig::preset(DEFAULT_ACCELERATOR).unwrap())
        );
    }
}
