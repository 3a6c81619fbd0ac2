//! ImageNet-style folders, `root/<class>/<image>.{jpg,jpeg,png}`, with the evaluation transform
//! of the official code, reproduced to the pixel (see [`EvalTransform`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::resample::{self, Filter, Window};
use crate::arch::Family;
use crate::error::{Error, Result};

/// Largest crop side accepted (pixels); no published ViT evaluates above 1,024.
pub const MAX_SIZE: usize = 4096;

/// Largest image decoded or resized, in pixels (ImageNet's largest are about 20 megapixels): a
/// header claiming more, or an aspect ratio that would resize into more, is refused before
/// anything that size is allocated.
pub const MAX_PIXELS: usize = 1 << 27;

/// How `size / crop_ratio` becomes a whole number of pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SideRounding {
    /// Up: MIT EfficientViT's `ceil(size / crop_ratio)` (236 for 224 at 0.95).
    #[default]
    Ceil,
    /// Down: timm's `floor(size / crop_pct)` (248 for 224 at 0.9).
    Floor,
}

/// The evaluation transform of torchvision's `Resize(side, BICUBIC)`, `CenterCrop(size)` and
/// `ToTensor()` on an image opened by `ImageFolder` (converted to RGB), bit for bit: Pillow's
/// resampler ([`resample`]), the shorter side resized to `side` and the longer one to
/// `⌊side · long / short⌋`, the crop's corner at Python's `round((resized − size) / 2)`
/// (half to even). Values are scaled to `[0, 1]`; normalisation is the dataset's
/// [`super::Normalize`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalTransform {
    /// Side of the square crop fed to the model.
    pub size: usize,
    /// The shorter side is resized to `size / crop_ratio` first (1.0 resizes straight to
    /// `size`); from 0.1 to 1.
    pub crop_ratio: f64,
    /// How that side is rounded to whole pixels (default: up, as MIT's code does).
    #[serde(default)]
    pub rounding: SideRounding,
    /// Bicubic when true, bilinear otherwise.
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
            rounding: SideRounding::Ceil,
            bicubic: true,
        }
    }

    /// timm's evaluation of DeiT: bicubic resize to `floor(size / crop_pct)`, centre crop.
    pub fn timm(size: usize, crop_pct: f64) -> Self {
        Self {
            size,
            crop_ratio: crop_pct,
            rounding: SideRounding::Floor,
            bicubic: true,
        }
    }

    /// The official evaluation transform of a model family at a resolution: MIT's for
    /// EfficientViT (crop ratio 0.95 as its evaluation script's default, which B1 is published
    /// with; `crop_ratio` overrides it, B2 and B3 were published with 1.0), timm's for DeiT
    /// (crop 0.9).
    pub fn official(family: Family, size: usize, crop_ratio: Option<f64>) -> Self {
        match family {
            Family::EfficientVit => Self::efficientvit(size, crop_ratio.unwrap_or(0.95)),
            Family::Deit => Self::timm(size, crop_ratio.unwrap_or(0.9)),
        }
    }

    /// Refuses sizes and ratios that no evaluation uses and that would make absurd images.
    pub fn validate(&self, origin: &str) -> Result<()> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Error::field(
                origin,
                "transform.size",
                format!(
                    "{} pixels; give a crop side from 1 to {MAX_SIZE}",
                    self.size
                ),
            );
        }
        if !(self.crop_ratio.is_finite() && (0.1..=1.0).contains(&self.crop_ratio)) {
            return Error::field(
                origin,
                "transform.crop_ratio",
                format!(
                    "{}; give a ratio from 0.1 to 1 (EfficientViT uses 0.95 or 1.0, DeiT 0.9)",
                    self.crop_ratio
                ),
            );
        }
        Ok(())
    }

    /// The side the shorter image side is resized to.
    pub fn resize_side(&self) -> usize {
        let side = self.size as f64 / self.crop_ratio;
        // A ratio such as 224 / 1.0 must give 224, not 224 + an ulp rounded up.
        let side = match self.rounding {
            SideRounding::Ceil => (side - 1e-9).ceil(),
            SideRounding::Floor => (side + 1e-9).floor(),
        };
        (side as usize).max(self.size)
    }

    /// Decodes and transforms one file into `[3, size, size]` values in `[0, 1]`.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let bad = |message: String| Error::InvalidField {
            origin: path.display().to_string(),
            field: "image".into(),
            message,
        };
        let (rgb, w, h) = decode_rgb(path).map_err(bad)?;
        if w == 0 || h == 0 {
            return Err(bad("the image is empty".into()));
        }
        let side = self.resize_side();
        let (nw, nh) = if w <= h {
            (side, (side as f64 * h as f64 / w as f64) as usize)
        } else {
            ((side as f64 * w as f64 / h as f64) as usize, side)
        };
        if nw.saturating_mul(nh) > MAX_PIXELS {
            return Err(bad(format!(
                "a {w}×{h} image resizes to {nw}×{nh}; images beyond {MAX_PIXELS} pixels (or so \
                 elongated) are not read"
            )));
        }
        let filter = if self.bicubic {
            Filter::Bicubic
        } else {
            Filter::Bilinear
        };
        let s = self.size;
        // Only the centre crop is resampled: the same pixels, a third fewer columns.
        let crop = Window {
            x: centre_offset(nw, s),
            y: centre_offset(nh, s),
            width: s,
            height: s,
        };
        let cropped = resample::resize_window(&rgb, (w, h), 3, (nw, nh), filter, crop);
        let mut out = vec![0.0f32; 3 * s * s];
        for (i, pixel) in cropped.chunks_exact(3).enumerate() {
            for (c, &v) in pixel.iter().enumerate() {
                out[c * s * s + i] = f32::from(v) / 255.0;
            }
        }
        Ok(out)
    }
}

/// The image as interleaved RGB bytes with its width and height, converted as Pillow's
/// `convert("RGB")` does (greyscale replicated, alpha dropped). JPEG files are decoded by
/// libjpeg-turbo's code with its default (integer) IDCT and fancy upsampling, as Pillow
/// decodes them, so that the pixels are the same; other formats, and JPEGs libjpeg cannot turn
/// into RGB (CMYK), by the `image` crate.
fn decode_rgb(path: &Path) -> std::result::Result<(Vec<u8>, usize, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?
        .into_dimensions()
        .map_err(|e| format!("cannot decode: {e}"))?;
    if (w as usize).saturating_mul(h as usize) > MAX_PIXELS {
        return Err(format!(
            "the file says it is {w}×{h} pixels; images beyond {MAX_PIXELS} pixels are not read"
        ));
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        && let Ok(Ok(decoded)) = std::panic::catch_unwind(|| decode_jpeg(&bytes))
    {
        return Ok(decoded);
    }
    let img = image::load_from_memory(&bytes).map_err(|e| format!("cannot decode: {e}"))?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    Ok((rgb.into_raw(), w, h))
}

/// libjpeg's decoding (which reports a corrupt file by unwinding, caught by the caller).
fn decode_jpeg(bytes: &[u8]) -> std::io::Result<(Vec<u8>, usize, usize)> {
    let mut started = mozjpeg::Decompress::new_mem(bytes)?.rgb()?;
    let (w, h) = (started.width(), started.height());
    let pixels: Vec<u8> = started.read_scanlines()?;
    started.finish()?;
    if pixels.len() != w * h * 3 {
        return Err(std::io::Error::other("short image"));
    }
    Ok((pixels, w, h))
}

/// torchvision's crop offset `int(round((full − crop) / 2))`, Python's round halving to even.
fn centre_offset(full: usize, crop: usize) -> usize {
    let twice = full - crop;
    let (half, odd) = (twice / 2, twice % 2 == 1);
    if odd && half % 2 == 1 { half + 1 } else { half }
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
