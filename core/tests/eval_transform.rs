//! The evaluation transform against torchvision's on Pillow images: the crops that
//! `tools/fixtures/make_fixtures.py` saved (resize of the shorter side, bicubic, centre crop,
//! before ToTensor's division) for JPEG and PNG images of odd sizes, greyscale and RGBA among
//! them. The largest difference over all pixels is printed; it is zero (JPEGs are decoded by
//! libjpeg-turbo's code, as Pillow decodes them; Pillow's resampler is reproduced).

use std::path::{Path, PathBuf};

use image::ImageEncoder;
use qvit_core::data::EvalTransform;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images")
}

/// The crop torchvision made, `[3, size, size]` in `[0, 1]`.
fn expected(image: &str, transform: &str) -> Vec<f32> {
    let png = image::open(fixtures().join(format!("{image}.{transform}.png")))
        .unwrap()
        .to_rgb8();
    let (w, h) = png.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, p) in png.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(p[c]) / 255.0;
        }
    }
    out
}

#[test]
fn equals_torchvision_on_pillow_images() {
    let transforms = [
        ("efficientvit-224", EvalTransform::efficientvit(224, 0.95)),
        ("efficientvit-256", EvalTransform::efficientvit(256, 1.0)),
        ("deit-224", EvalTransform::timm(224, 0.9)),
    ];
    let mut worst_png: f32 = 0.0;
    let mut worst_jpeg: f32 = 0.0;
    for (image, file) in [
        ("landscape", "landscape.jpg"),
        ("portrait", "portrait.jpg"),
        ("grey", "grey.jpg"),
        ("small", "small.png"),
        ("alpha", "alpha.png"),
    ] {
        for (name, t) in &transforms {
            let ours = t.load(&fixtures().join(file)).unwrap();
            let theirs = expected(image, name);
            assert_eq!(ours.len(), theirs.len(), "{file} {name}");
            let diff = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            eprintln!("{file} {name}: largest difference {:.1}/255", diff * 255.0);
            if file.ends_with(".png") {
                worst_png = worst_png.max(diff);
            } else {
                worst_jpeg = worst_jpeg.max(diff);
            }
        }
    }
    eprintln!(
        "largest difference: PNG {:.1}/255, JPEG {:.1}/255",
        worst_png * 255.0,
        worst_jpeg * 255.0
    );
    assert_eq!(worst_png, 0.0, "PNG crops are exact");
    assert_eq!(worst_jpeg, 0.0, "JPEG crops are exact");
}

#[test]
fn corrupt_and_empty_files_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("qvit-transform-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = EvalTransform::efficientvit(224, 0.95);
    let jpeg = std::fs::read(fixtures().join("landscape.jpg")).unwrap();
    for (name, bytes) in [
        ("garbage.jpg", [&jpeg[..4], &[0x55; 400][..]].concat()),
        ("empty.png", Vec::new()),
        ("header-only.jpg", jpeg[..20].to_vec()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = t.load(&path).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("decode"), "{err}");
    }
    // Sizes that would allocate gigabytes: a PNG header claiming 60,000 × 60,000 pixels, and a
    // 1 × 4,000 strip whose short side would be resized to 236.
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&[0; 3], 1, 1, image::ExtendedColorType::Rgb8)
        .unwrap();
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]); // the IHDR chunk's type and data
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let huge = dir.join("huge.png");
    std::fs::write(&huge, &png).unwrap();
    let err = t.load(&huge).unwrap_err().to_string();
    assert!(err.contains("60000×60000"), "{err}");
    let strip = dir.join("strip.png");
    image::RgbImage::new(1, 4000).save(&strip).unwrap();
    let err = t.load(&strip).unwrap_err().to_string();
    assert!(err.contains("resizes to"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sides_round_as_the_official_code_does() {
    assert_eq!(EvalTransform::efficientvit(224, 0.95).resize_side(), 236);
    assert_eq!(EvalTransform::efficientvit(256, 1.0).resize_side(), 256);
    assert_eq!(EvalTransform::efficientvit(288, 0.95).resize_side(), 304);
    assert_eq!(EvalTransform::timm(224, 0.9).resize_side(), 248);
    assert_eq!(EvalTransform::timm(384, 1.0).resize_side(), 384);
}
