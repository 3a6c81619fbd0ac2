//! Where the shipped data and models live.

use std::path::PathBuf;

/// The `assets/` folder: `$QVIT_ASSETS` if set, else `./assets` when it exists, else the folder
/// of the source tree this binary was built from.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QVIT_ASSETS") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("assets");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
}

/// The shipped weights of a micro model, `assets/<model>.safetensors`.
pub fn weights(model: &str) -> PathBuf {
    dir().join(format!("{model}.safetensors"))
}

/// The shipped Fashion-MNIST test images (10,000), IDX.
pub fn fashion_mnist_test() -> (PathBuf, PathBuf) {
    let d = dir().join("fashion-mnist");
    (
        d.join("t10k-images-idx3-ubyte.gz"),
        d.join("t10k-labels-idx1-ubyte.gz"),
    )
}

/// The shipped calibration subset: 1,024 Fashion-MNIST training images, IDX.
pub fn fashion_mnist_calibration() -> (PathBuf, PathBuf) {
    let d = dir().join("fashion-mnist");
    (
        d.join("calib-1024-images-idx3-ubyte.gz"),
        d.join("calib-1024-labels-idx1-ubyte.gz"),
    )
}

/// The shipped held-out slice: 2,000 Fashion-MNIST training images (200 per class), none of them
/// in the calibration subset, written by `tools/data/heldout.py`. Sensitivity scans and searches
/// measure accuracy on it, so the test set only reports what they chose.
pub fn fashion_mnist_heldout() -> (PathBuf, PathBuf) {
    let d = dir().join("fashion-mnist");
    (
        d.join("heldout-2000-images-idx3-ubyte.gz"),
        d.join("heldout-2000-labels-idx1-ubyte.gz"),
    )
}

/// The shipped search spaces (`presets/searches/*.ron`, beside `assets/`), sorted by name;
/// none when the folder is not there.
pub fn search_spaces() -> Vec<PathBuf> {
    let local = PathBuf::from("presets/searches");
    let dir = if local.is_dir() {
        local
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../presets/searches"))
    };
    let mut spaces: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    spaces.sort();
    spaces
}
