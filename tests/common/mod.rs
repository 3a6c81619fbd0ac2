//! Helpers shared by the command-line tests: full-size models need weights and images that
//! are generated, since none are shipped.

#![allow(dead_code)]

pub mod runtimes;

use std::path::Path;

use qvit_core::arch::ArchSpec;
use qvit_core::graph::Graph;
use qvit_core::weights::Weights;

/// `root/<class>/<image>`: `classes` folders of `per_class` images of odd sizes, JPEG and PNG,
/// with a gradient and a class-dependent tint so that the classes differ.
pub fn image_folder(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("n{:08}", 1000 + c));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let (w, h) = (181 + 37 * i as u32, 143 + 23 * c as u32);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((c * 60 + i * 17) % 256) as u8 ^ ((x / 9 + y / 7) % 2 * 40) as u8,
                ])
            });
            let name = if i % 2 == 0 { "a.jpg" } else { "b.png" };
            img.save(dir.join(format!("{i}{name}"))).unwrap();
        }
    }
}

pub fn random_weights(model: &str, path: &Path) {
    let graph = Graph::build(&ArchSpec::resolve(model).unwrap()).unwrap();
    Weights::random(&graph, 7).save(path).unwrap();
}

/// The trio-vit preset with its output-aware search over `images` calibration images instead of
/// 64, written to `path`: for tests about something else than the search, at a fraction of
/// its cost.
pub fn quick_trio_vit(path: &Path, images: usize) {
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/presets/quant/trio-vit.ron"
    ))
    .unwrap();
    let quick = preset.replace(
        "OutputSearch(images: 64)",
        &format!("OutputSearch(images: {images})"),
    );
    assert_ne!(
        quick, preset,
        "the trio-vit preset's search changed; update this helper"
    );
    std::fs::write(path, quick).unwrap();
}
