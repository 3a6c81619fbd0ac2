//! The ImageFolder reader: class folders in sorted order, the evaluation transform, and errors.

use qvit_core::data::{Dataset, EvalTransform, Normalize};

#[test]
fn reads_classes_in_sorted_order_with_the_transform() {
    let root = std::env::temp_dir().join(format!("qvit-imagefolder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (class, value) in [("zebra", 200u8), ("apple", 50u8)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        // A flat 40×20 image: any resize and crop keeps the value.
        image::RgbImage::from_pixel(40, 20, image::Rgb([value, value, value]))
            .save(root.join(class).join("a.png"))
            .unwrap();
    }
    std::fs::write(root.join("apple").join("notes.txt"), "not an image").unwrap();
    let normalize = Normalize {
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    let data =
        Dataset::image_folder(&root, EvalTransform::efficientvit(16, 0.95), normalize).unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.num_classes, 2);
    assert_eq!(data.image_shape, [3, 16, 16]);
    assert_eq!(data.labels, [0, 1], "apple before zebra");
    let batch = data.batch(0..2).unwrap();
    assert_eq!(batch.images.shape, [2, 3, 16, 16]);
    assert!(
        batch
            .images
            .item(0)
            .iter()
            .all(|&v| (v - 50.0 / 255.0).abs() < 1e-6)
    );
    assert!(
        batch
            .images
            .item(1)
            .iter()
            .all(|&v| (v - 200.0 / 255.0).abs() < 1e-6)
    );
    assert_eq!(EvalTransform::efficientvit(224, 0.95).resize_side(), 236);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_folder_without_images_is_an_error_that_says_what_is_expected() {
    let root = std::env::temp_dir().join(format!("qvit-imagefolder-empty-{}", std::process::id()));
    std::fs::create_dir_all(root.join("cls")).unwrap();
    let err = Dataset::image_folder(
        &root,
        EvalTransform::efficientvit(16, 1.0),
        Normalize::imagenet(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("root/<class>/<image>"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A two-tone image shows where the resize and the centre crop put things: 40×20, dark left
/// half, light right half. EfficientViT's transform at 16 px resizes the short side to
/// ⌈16/0.95⌉ = 17 (so 34×17, the edge at column 17) and crops columns 9..25: the edge lands
/// at crop column 8. A crop from the left, or no resize, would put it elsewhere.
#[test]
fn the_resize_and_centre_crop_put_an_edge_where_they_should() {
    let root = std::env::temp_dir().join(format!("qvit-imagefolder-edge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("edge")).unwrap();
    image::RgbImage::from_fn(40, 20, |x, _| {
        let v = if x < 20 { 20 } else { 230 };
        image::Rgb([v, v, v])
    })
    .save(root.join("edge").join("a.png"))
    .unwrap();
    let normalize = Normalize {
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    let data =
        Dataset::image_folder(&root, EvalTransform::efficientvit(16, 0.95), normalize).unwrap();
    let image = data.batch(0..1).unwrap().images;
    let row = &image.item(0)[..16]; // channel 0, row 0
    let (dark, light) = (20.0 / 255.0, 230.0 / 255.0);
    // Bicubic rings for a pixel or two beside the edge; further away the tones are exact.
    for (x, &v) in row.iter().enumerate() {
        match x {
            0..=5 => assert!((v - dark).abs() < 0.02, "column {x}: {v}"),
            10..=15 => assert!((v - light).abs() < 0.02, "column {x}: {v}"),
            _ => {}
        }
    }
    assert!(
        row[7] < 0.5 && row[8] > 0.5,
        "the edge between crop columns 7 and 8: {row:?}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
