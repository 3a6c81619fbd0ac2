//! PNG images (the explorer's plot exports).

use std::path::Path;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;

use crate::error::{Error, Result};

/// Writes `rgba` (`width × height` pixels, 4 bytes each, row by row) as a PNG, atomically.
pub fn write_png(path: &Path, width: usize, height: usize, rgba: &[u8]) -> Result<()> {
    let origin = path.display().to_string();
    if width == 0 || height == 0 || rgba.len() != width * height * 4 {
        return Error::field(
            &origin,
            "image",
            format!(
                "{} bytes do not make a {width}×{height} RGBA image (need {})",
                rgba.len(),
                width * height * 4
            ),
        );
    }
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(
            rgba,
            width as u32,
            height as u32,
            image::ExtendedColorType::Rgba8,
        )
        .map_err(|e| Error::InvalidField {
            origin: origin.clone(),
            field: "image".into(),
            message: e.to_string(),
        })?;
    crate::ron_io::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_that_reads_back_and_refuses_wrong_sizes() {
        let dir = std::env::temp_dir().join(format!("qvit-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("two.png");
        let pixels = [255, 0, 0, 255, 0, 0, 255, 128];
        write_png(&path, 2, 1, &pixels).unwrap();
        let back = image::open(&path).unwrap().to_rgba8();
        assert_eq!((back.width(), back.height()), (2, 1));
        assert_eq!(back.into_raw(), pixels);
        let e = write_png(&path, 3, 1, &pixels).unwrap_err().to_string();
        assert!(e.contains("two.png") && e.contains("3×1"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
