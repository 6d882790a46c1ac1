//! `train predict`: classifies image files (PNG, JPEG) with a trained network.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::data::dataloader::batcher::Batcher;
use data::{DatasetKind, ImageItem};
use image::imageops::FilterType;
use models::ImageBatch;
use serde::Serialize;

use crate::{
    Overrides,
    evaluate::{host_values, pass_probabilities},
    files::write_json,
    trained::{ModelArgs, Trained},
};

/// Classify image files (PNG, JPEG) with a trained network.
#[derive(clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Forward passes averaged per image; default: the config's test_passes (12 for FMP nets).
    #[arg(long)]
    passes: Option<usize>,
    /// Invert grey levels first (dark digits on white paper; MNIST has light on black).
    #[arg(long)]
    invert: bool,
    /// Classes listed per image, most probable first.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Also write the predictions as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One image file's class probabilities.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// The image file.
    pub file: PathBuf,
    /// The most probable class's name.
    pub class: String,
    /// Probability of each class, in label order, averaged over the passes.
    pub probabilities: Vec<f32>,
}

/// Runs `train predict`: one line per image with its most probable classes by name.
pub fn run(args: PredictArgs) -> Result<()> {
    crate::files::check_output_file("--json", args.json.as_deref())?;
    let trained = args.model.load(Overrides::default())?;
    let passes = trained.passes(args.passes)?;
    let predictions = predict(&trained, &args.images, passes, args.invert)?;
    let names = trained.dataset().class_names();
    for prediction in &predictions {
        let mut ranked: Vec<usize> = (0..prediction.probabilities.len()).collect();
        ranked
            .sort_by(|&a, &b| prediction.probabilities[b].total_cmp(&prediction.probabilities[a]));
        let listed: Vec<String> = ranked
            .iter()
            .take(args.top.max(1))
            .map(|&c| format!("{} {:.1}%", names[c], 100.0 * prediction.probabilities[c]))
            .collect();
        say!("{}: {}", prediction.file.display(), listed.join(", "));
    }
    write_json(args.json.as_deref(), &predictions)
}

/// Classifies image files (PNG or JPEG): each is converted to the dataset's channels (grey or
/// RGB) and image size, optionally inverted (dark strokes on white paper, where MNIST has light
/// on black), padded and normalised as in training. The probabilities are averaged over
/// `passes` forward passes (an FMP net pools over new regions on each).
pub fn predict(
    trained: &Trained,
    files: &[PathBuf],
    passes: usize,
    invert: bool,
) -> Result<Vec<Prediction>> {
    let kind = trained.dataset();
    let items = files
        .iter()
        .map(|file| read_image(file, kind, invert))
        .collect::<Result<Vec<_>>>()?;
    let batch: ImageBatch = trained.batcher()?.batch(items, &trained.device);
    let [_, probabilities] = pass_probabilities(&trained.network, batch.images, passes);
    let [count, classes] = probabilities.dims();
    let values = host_values(probabilities)?;
    let names = kind.class_names();
    Ok((0..count)
        .map(|i| {
            let row = values[i * classes..(i + 1) * classes].to_vec();
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            Prediction {
                file: files[i].clone(),
                class: names[best].to_string(),
                probabilities: row,
            }
        })
        .collect())
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
            crate::summary::grouped(MAX_IMAGE_PIXELS)
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
