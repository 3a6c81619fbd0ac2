//! ImageNet-style folders, `root/<class>/<image>.{jpg,jpeg,png}`, with the evaluation transform.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The standard evaluation transform: resize the shorter side, centre-crop, scale to `[0, 1]`.
/// (Normalisation is the dataset's [`super::Normalize`].)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalTransform {
    /// Side of the square crop fed to the model.
    pub size: usize,
    /// The shorter side is resized to `ceil(size / crop_ratio)` first (EfficientViT's convention;
    /// 1.0 resizes straight to `size`).
    pub crop_ratio: f64,
    /// Bicubic (Catmull–Rom) when true, bilinear otherwise.
    #[serde(default = "yes")]
    pub bicubic: bool,
}

fn yes() -> bool {
    true
}

impl EvalTransform {
    /// EfficientViT's evaluation: bicubic resize to `ceil(size / crop_ratio)`, centre crop.
    pub fn efficientvit(size: usize, crop_ratio: f64) -> Self {
        Self {
            size,
            crop_ratio,
            bicubic: true,
        }
    }

    /// The side the shorter image side is resized to.
    pub fn resize_side(&self) -> usize {
        (self.size as f64 / self.crop_ratio).ceil() as usize
    }

    /// Decodes and transforms one file into `[3, size, size]` values in `[0, 1]`.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let img = image::open(path).map_err(|e| Error::InvalidField {
            origin: path.display().to_string(),
            field: "image".into(),
            message: format!("cannot decode: {e}"),
        })?;
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        let short = w.min(h).max(1) as f64;
        let scale = self.resize_side() as f64 / short;
        let (nw, nh) = (
            ((w as f64 * scale).round() as u32).max(self.size as u32),
            ((h as f64 * scale).round() as u32).max(self.size as u32),
        );
        let filter = if self.bicubic {
            FilterType::CatmullRom
        } else {
            FilterType::Triangle
        };
        let resized = image::imageops::resize(&rgb, nw, nh, filter);
        let (x0, y0) = ((nw - self.size as u32) / 2, (nh - self.size as u32) / 2);
        let s = self.size;
        let mut out = vec![0.0f32; 3 * s * s];
        for y in 0..s {
            for x in 0..s {
                let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
                for c in 0..3 {
                    out[c * s * s + y * s + x] = p[c] as f32 / 255.0;
                }
            }
        }
        Ok(out)
    }
}

/// Image files and their class indices under `root`, classes in sorted order of folder name.
pub fn scan(root: &Path) -> Result<(Vec<PathBuf>, Vec<u32>, Vec<String>)> {
    let io = |source| Error::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut classes: Vec<String> = std::fs::read_dir(root)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    classes.sort();
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut in_class: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png")
                })
            })
            .collect();
        in_class.sort();
        labels.extend(std::iter::repeat_n(label as u32, in_class.len()));
        files.extend(in_class);
    }
    if files.is_empty() {
        return Err(Error::InvalidField {
            origin: root.display().to_string(),
            field: "images".into(),
            message: "no .jpg/.jpeg/.png files in class folders (expected root/<class>/<image>)"
                .into(),
        });
    }
    Ok((files, labels, classes))
}
