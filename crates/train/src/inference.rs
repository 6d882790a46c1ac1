//! The inference pass the commands share: probabilities after one pass and averaged over
//! several (an FMP net's ensemble), accuracy on a dataset, tensors read back from a device, and
//! image files read as dataset items.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::{
    data::{dataloader::batcher::Batcher, dataset::Dataset},
    prelude::*,
    tensor::activation::softmax,
};
use data::{DatasetKind, ImageBatcher, ImageDataset, ImageItem};
use image::imageops::FilterType;
use models::{ImageBatch, Network};

/// `99.12% (error 0.88%)`.
pub fn percent_and_error(accuracy: f64) -> String {
    format!("{accuracy:.2}% (error {:.2}%)", 100.0 - accuracy)
}

/// `, 12-pass 99.40% (error 0.60%)` after several passes, nothing after one.
pub fn averaged_note(passes: usize, accuracy: f64) -> String {
    if passes > 1 {
        format!(", {passes}-pass {}", percent_and_error(accuracy))
    } else {
        String::new()
    }
}

/// A tensor's values, read back from its device.
pub fn host_values<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>> {
    x.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read values back from the device: {e:?}"))
}

/// Softmax probabilities of `images` after the first forward pass and averaged over `passes`
/// passes (at least one): an FMP net pools over new regions on each, so the passes form an
/// ensemble.
pub fn pass_probabilities(model: &Network, images: Tensor<4>, passes: usize) -> [Tensor<2>; 2] {
    let first = softmax(model.forward(images.clone()), 1);
    let mut sum = first.clone();
    for _ in 1..passes.max(1) {
        sum = sum + softmax(model.forward(images.clone()), 1);
    }
    [first, sum.div_scalar(passes.max(1) as f64)]
}

/// Percentage of `dataset` that `model` classifies correctly, evaluated on `device`: after one
/// forward pass, and from the softmax probabilities averaged over `passes` passes.
pub fn accuracy(
    model: &Network,
    dataset: &ImageDataset,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
    passes: usize,
) -> [f64; 2] {
    let model = model.valid().to_device(device);
    let mut correct = [0usize; 2];
    let indices: Vec<usize> = (0..dataset.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let items = dataset
            .get_many(chunk.to_vec())
            .expect("indices are in range");
        let batch: ImageBatch = batcher.batch(items, device);
        let probabilities = pass_probabilities(&model, batch.images, passes);
        for (hits, probabilities) in correct.iter_mut().zip(probabilities) {
            let predicted = probabilities.argmax(1).flatten::<1>(0, 1);
            let agree: i64 = predicted
                .equal(batch.targets.clone())
                .int()
                .sum()
                .into_scalar();
            *hits += agree as usize;
        }
    }
    correct.map(|hits| 100.0 * hits as f64 / dataset.len().max(1) as f64)
}

/// The most pixels an image may declare: Pillow's `MAX_IMAGE_PIXELS`, a quarter of a gigabyte
/// of RGB. An image is checked against it before it is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Decodes `file` into an item of `kind`'s layout: channels x side x side bytes.
pub fn read_image(file: &Path, kind: DatasetKind, invert: bool) -> Result<ImageItem> {
    let open = || {
        image::ImageReader::open(file)
            .and_then(|reader| reader.with_guessed_format())
            .with_context(|| format!("cannot read {}", file.display()))
    };
    let cannot_decode = || {
        format!(
            "{}: cannot decode the image (PNG or JPEG expected)",
            file.display()
        )
    };
    // The header alone says the size: a small file may declare a huge image.
    let (width, height) = open()?.into_dimensions().with_context(cannot_decode)?;
    if width as u64 * height as u64 > MAX_IMAGE_PIXELS {
        bail!(
            "{}: the image declares {width} x {height} pixels, more than the {} this reads; \
             scale it down first",
            file.display(),
            crate::output::grouped(MAX_IMAGE_PIXELS)
        );
    }
    let decoded = open()?.decode().with_context(cannot_decode)?;
    let side = kind.image_side() as u32;
    let resized = decoded.resize_exact(side, side, FilterType::Triangle);
    // Datasets store images channel by channel (CIFAR's planes); MNIST has one.
    let mut pixels = match kind.channels() {
        1 => resized.to_luma8().into_raw(),
        _ => {
            let rgb = resized.to_rgb8();
            (0..3)
                .flat_map(|c| rgb.pixels().map(move |p| p.0[c]))
                .collect()
        }
    };
    if invert {
        pixels.iter_mut().for_each(|p| *p = 255 - *p);
    }
    Ok(ImageItem { pixels, label: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_become_dataset_items_channel_by_channel() {
        let dir = tempfile::tempdir().unwrap();
        // Colour, at CIFAR's size: planes of R, then G, then B.
        let rgb = dir.path().join("rgb.png");
        image::RgbImage::from_pixel(32, 32, image::Rgb([10, 20, 30]))
            .save(&rgb)
            .unwrap();
        let item = read_image(&rgb, DatasetKind::Cifar10, false).unwrap();
        assert_eq!(item.pixels.len(), 3 * 32 * 32);
        for (plane, value) in item.pixels.chunks(32 * 32).zip([10, 20, 30]) {
            assert!(plane.iter().all(|&p| p == value), "{value}");
        }
        // Grey, at MNIST's size, as stored; inverted on request; colour input made grey.
        let grey = dir.path().join("grey.png");
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 256) as u8).collect();
        image::GrayImage::from_raw(28, 28, pixels.clone())
            .unwrap()
            .save(&grey)
            .unwrap();
        assert_eq!(
            read_image(&grey, DatasetKind::Mnist, false).unwrap().pixels,
            pixels
        );
        let inverted = read_image(&grey, DatasetKind::Mnist, true).unwrap().pixels;
        assert!(inverted.iter().zip(&pixels).all(|(a, b)| *a == 255 - b));
        let from_colour = read_image(&rgb, DatasetKind::Mnist, false).unwrap();
        assert_eq!(from_colour.pixels.len(), 28 * 28);
        // Another size is resampled to the dataset's.
        let big = dir.path().join("big.jpg");
        image::GrayImage::from_pixel(100, 60, image::Luma([200]))
            .save(&big)
            .unwrap();
        let item = read_image(&big, DatasetKind::FashionMnist, false).unwrap();
        assert_eq!(item.pixels.len(), 28 * 28);
        assert!(item.pixels.iter().all(|&p| p.abs_diff(200) <= 2));
    }

    /// A PNG of `width` x `height` grey pixels that holds its header and no pixels: what a
    /// hostile file declares.
    fn declared_png(width: u32, height: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &byte in bytes {
                crc ^= byte as u32;
                for _ in 0..8 {
                    crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
                }
            }
            !crc
        }
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(13u32.to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc32(&ihdr).to_be_bytes());
        // The decoder reads up to the first image data: an empty zlib stream.
        let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
        png.extend(8u32.to_be_bytes());
        png.extend(idat);
        png.extend(crc32(idat).to_be_bytes());
        png.extend(0u32.to_be_bytes());
        png.extend(b"IEND");
        png.extend(crc32(b"IEND").to_be_bytes());
        png
    }

    #[test]
    fn an_image_declaring_too_many_pixels_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.png");
        std::fs::write(&huge, declared_png(20_000, 20_000)).unwrap();
        let err = format!(
            "{:#}",
            read_image(&huge, DatasetKind::Mnist, false).unwrap_err()
        );
        assert!(
            err.contains("huge.png") && err.contains("20000 x 20000"),
            "{err}"
        );
        // Within the limit, the same header reaches the decoder, which finds no pixel data.
        std::fs::write(&huge, declared_png(28, 28)).unwrap();
        let err = format!(
            "{:#}",
            read_image(&huge, DatasetKind::Mnist, false).unwrap_err()
        );
        assert!(err.contains("cannot decode"), "{err}");
    }
}
