//! The flags that choose a model's data, quantization and calibration, shared by `eval`,
//! `vectors` and `calibrate` so that each reads them the same way and over a project's own
//! sections.

use std::path::PathBuf;

use clap::Args;
use qvit_core::arch::ArchSpec;
use qvit_core::project::{CalibrationSet, DataSource, Project};
use qvit_core::quant::{BitWidths, Override, QuantExecutor, QuantSettings, Rounding};

/// The project of `target` (see [`super::target::project`]) with the data and calibration
/// flags over its own sections, and its model spec: where `eval`, `vectors` and `export` start.
pub fn project_with(
    target: Option<&str>,
    data: &DataArgs,
    quant: &QuantArgs,
) -> qvit_core::Result<(Project, ArchSpec)> {
    let mut project = super::target::project(target)?;
    let spec = project.spec()?;
    data.apply(&mut project, &spec)?;
    quant
        .calibration
        .apply(&mut project, &spec, data.crop_ratio)?;
    Ok((project, spec))
}

/// Where the weights and evaluation images come from.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Weights: safetensors, or a torch.save checkpoint as published (.pt/.pth/.bin, zip or
    /// legacy; `state_dict`/`model` wrappers and timm's EfficientViT names are understood).
    /// Default: the project's, or the shipped weights of a micro model.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Images: an ImageNet-style folder `root/<class>/<image>.{jpg,png}` (classes numbered in
    /// sorted order of their folder names, as torchvision's ImageFolder does) or an IDX file
    /// (`…-images-idx3-ubyte[.gz]`, labels found beside it). Default: the project's, or the
    /// shipped Fashion-MNIST test set for the micro models.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// For folders: the shorter side is resized to resolution / crop-ratio before the centre
    /// crop. Default by family, as the official evaluations: EfficientViT ceil(r / 0.95) (B1;
    /// MIT evaluates B2 and B3 with 1.0), DeiT floor(r / 0.9) (timm).
    #[arg(long)]
    pub crop_ratio: Option<f64>,
}

impl DataArgs {
    /// Applies the flags over the project's `weights` and `data`.
    pub fn apply(&self, project: &mut Project, spec: &ArchSpec) -> qvit_core::Result<()> {
        if let Some(w) = &self.weights {
            project.weights = Some(w.clone());
        }
        if let Some(d) = &self.data {
            project.data = Some(DataSource::from_path(
                d,
                spec.family(),
                spec.resolution(),
                self.crop_ratio,
            )?);
        }
        Ok(())
    }
}

/// How the model is quantized and calibrated.
#[derive(Debug, Args)]
pub struct QuantArgs {
    /// Quantize with this recipe: minmax, percentile, omse, ptq4vit, fq-vit, repq-vit,
    /// trio-vit, or a recipe RON file. Default: the project's, else the family's (trio-vit for
    /// EfficientViT, repq-vit for DeiT).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Weight and activation bits of every layer, e.g. `w8a8`, `w4a8` (default: w8a8).
    #[arg(long)]
    pub bits: Option<BitWidths>,
    /// Bits for some layers, `PATTERN=wNaM` (`*` and `?` wildcards; a pattern may match a
    /// name from any `.`): `--override 'stages.3.*=w4a8'`. Repeatable; later ones win.
    #[arg(long = "override", value_name = "PATTERN=wNaM")]
    pub overrides: Vec<Override>,
    /// How activations round ties (default: the recipe's, half-up, as integer hardware
    /// computes). `half-even` is what ONNX's QuantizeLinear computes: use it with the
    /// fake-quant executor to compare with a `qvit export --format qdq` in its runtime.
    #[arg(long, value_enum)]
    pub rounding: Option<RoundingArg>,
    #[command(flatten)]
    pub calibration: CalibrationArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoundingArg {
    HalfUp,
    HalfEven,
}

impl From<RoundingArg> for Rounding {
    fn from(r: RoundingArg) -> Self {
        match r {
            RoundingArg::HalfUp => Rounding::HalfUp,
            RoundingArg::HalfEven => Rounding::HalfEven,
        }
    }
}

/// Where calibration statistics come from.
#[derive(Debug, Args)]
pub struct CalibrationArgs {
    /// Calibration statistics from `qvit calibrate` (default: calibrate now).
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
    /// Images to calibrate on: an ImageNet-style folder (e.g. your training set) or an IDX file.
    /// Default: the project's `calibration_data`, else the shipped 1,024 Fashion-MNIST images
    /// for the micro models (full-size models need one).
    #[arg(long, value_name = "DIR|IDX")]
    pub calibration_data: Option<PathBuf>,
    /// How many calibration images, chosen class-balanced with --calibration-seed (default:
    /// 32 from a folder, as PTQ4ViT and RepQ-ViT; 1,024 from an IDX file).
    #[arg(long, value_name = "N")]
    pub calibration_images: Option<usize>,
    /// Seed of the calibration images' choice (recorded in the statistics).
    #[arg(long, value_name = "SEED")]
    pub calibration_seed: Option<u64>,
}

impl CalibrationArgs {
    /// Applies the flags over the project's `calibration` and `calibration_data`.
    pub fn apply(
        &self,
        project: &mut Project,
        spec: &ArchSpec,
        crop_ratio: Option<f64>,
    ) -> qvit_core::Result<()> {
        if let Some(f) = &self.calibration {
            project.calibration = Some(f.clone());
        }
        if let Some(d) = &self.calibration_data {
            let data = DataSource::from_path(d, spec.family(), spec.resolution(), crop_ratio)?;
            project.calibration_data = Some(CalibrationSet {
                data,
                images: None,
                seed: 0,
            });
        }
        if self.calibration_images.is_some() || self.calibration_seed.is_some() {
            let set = match project.calibration_data.take() {
                Some(set) => set,
                None => CalibrationSet::default_for(spec.name(), &spec.input_shape())?,
            };
            project.calibration_data = Some(CalibrationSet {
                images: self.calibration_images.or(set.images),
                seed: self.calibration_seed.unwrap_or(set.seed),
                ..set
            });
        }
        Ok(())
    }
}

impl QuantArgs {
    /// Whether quantization is asked for: by a flag, by `executor`, or by the project.
    pub fn asked(&self, project: &Project, executor: Option<QuantExecutor>) -> bool {
        self.recipe.is_some()
            || self.bits.is_some()
            || !self.overrides.is_empty()
            || self.rounding.is_some()
            || executor.is_some()
            || project.quant.is_some()
    }

    /// The project's `quant` section (or the family's default recipe at W8A8) with the flags
    /// and `executor` over it.
    pub fn settings(
        &self,
        project: &Project,
        spec: &ArchSpec,
        executor: Option<QuantExecutor>,
    ) -> QuantSettings {
        let mut s = project
            .quant
            .clone()
            .unwrap_or_else(|| QuantSettings::for_family(spec.family()));
        if let Some(r) = &self.recipe {
            s.recipe = r.clone();
        }
        if let Some(b) = self.bits {
            s.bits = b;
        }
        s.overrides.extend(self.overrides.iter().cloned());
        if let Some(r) = self.rounding {
            s.rounding = Some(r.into());
        }
        if let Some(e) = executor {
            s.executor = e;
        }
        s
    }
}
