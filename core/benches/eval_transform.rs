//! The evaluation transform per image, as an ImageNet evaluation pays it: decode, resize the
//! shorter side (Pillow's bicubic), centre-crop. A 500×375 JPEG (ImageNet's most common size)
//! to MIT's 224 crop (via 236) and timm's (via 248), and the same image as PNG.
//!
//! cargo bench -p qvit-core --bench eval_transform

use std::path::PathBuf;

use qvit_core::data::EvalTransform;

fn main() {
    divan::main();
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/images"
    ))
    .join(name)
}

#[divan::bench]
fn jpeg_500x375_efficientvit_224(bencher: divan::Bencher) {
    let (t, path) = (
        EvalTransform::efficientvit(224, 0.95),
        fixture("landscape.jpg"),
    );
    bencher.bench(|| t.load(&path).unwrap());
}

#[divan::bench]
fn jpeg_500x375_deit_224(bencher: divan::Bencher) {
    let (t, path) = (EvalTransform::timm(224, 0.9), fixture("landscape.jpg"));
    bencher.bench(|| t.load(&path).unwrap());
}

#[divan::bench]
fn png_260x261_efficientvit_224(bencher: divan::Bencher) {
    let (t, path) = (EvalTransform::efficientvit(224, 0.95), fixture("alpha.png"));
    bencher.bench(|| t.load(&path).unwrap());
}
