//! Burn [`Dataset`] and [`Batcher`] for image classification: bytes in, tensors out.

use std::ops::Range;
use std::sync::Arc;

use burn::{
    data::{
        dataloader::batcher::Batcher,
        dataset::{Dataset, DatasetError},
    },
    prelude::*,
};
use models::ImageBatch;

use crate::{DatasetKind, Images};

/// One image (bytes, channels x rows x cols) and its label.
#[derive(Clone, Debug)]
pub struct ImageItem {
    /// The pixels as stored in the dataset.
    pub pixels: Vec<u8>,
    /// The class.
    pub label: u8,
}

/// A view of a contiguous range of images and labels, shared without copying.
#[derive(Clone, Debug)]
pub struct ImageDataset {
    images: Arc<Images>,
    labels: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl ImageDataset {
    /// All of `images` with their `labels` (the counts must agree, as [`Splits::load`]
    /// checks).
    ///
    /// [`Splits::load`]: crate::Splits::load
    pub fn new(images: Images, labels: Vec<u8>) -> Self {
        let range = 0..images.count;
        Self {
            images: Arc::new(images),
            labels: Arc::new(labels),
            range,
        }
    }

    /// Splits off the last `count` items (a validation set held out of the training set).
    pub fn split_tail(self, count: usize) -> (Self, Self) {
        let cut = self.range.end - count.min(self.range.len());
        let head = Self {
            range: self.range.start..cut,
            ..self.clone()
        };
        let tail = Self {
            range: cut..self.range.end,
            ..self
        };
        (head, tail)
    }

    /// The shape of one image: (channels, rows, cols).
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.images.channels, self.images.rows, self.images.cols)
    }
}

impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        if index >= self.range.len() {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "index {index} out of range for a dataset of {} images",
                self.range.len()
            ))));
        }
        let i = self.range.start + index;
        let size = self.images.channels * self.images.rows * self.images.cols;
        Ok(ImageItem {
            pixels: self.images.pixels[i * size..(i + 1) * size].to_vec(),
            label: self.labels[i],
        })
    }

    fn len(&self) -> usize {
        self.range.len()
    }
}

/// Turns items into an [`ImageBatch`]: scales bytes to [0, 1], normalises with the dataset's
/// mean and std, and zero-pads (background) each image, centred, to the model's input size.
#[derive(Clone, Debug)]
pub struct ImageBatcher {
    channels: usize,
    rows: usize,
    cols: usize,
    input_size: usize,
    mean: f32,
    std: f32,
}

impl ImageBatcher {
    /// A batcher for `kind`'s images of shape `(channels, rows, cols)` padded to `input_size`.
    /// Fails when the model's input is smaller than the images.
    pub fn new(
        kind: DatasetKind,
        image_shape: (usize, usize, usize),
        input_size: usize,
    ) -> Result<Self, String> {
        let (channels, rows, cols) = image_shape;
        if input_size < rows || input_size < cols {
            return Err(format!(
                "the model's input is {input_size}x{input_size} but {} images are {rows}x{cols}; \
                 expected an input at least as large as the images",
                kind.name()
            ));
        }
        let (mean, std) = kind.mean_std();
        Ok(Self {
            channels,
            rows,
            cols,
            input_size,
            mean,
            std,
        })
    }

    /// Writes `pixels`, normalised and padded, into `out` (`channels * input_size^2` values).
    fn write_image(&self, pixels: &[u8], out: &mut [f32]) {
        let s = self.input_size;
        let (top, left) = ((s - self.rows) / 2, (s - self.cols) / 2);
        out.fill(-self.mean / self.std);
        for c in 0..self.channels {
            for r in 0..self.rows {
                let src = &pixels[(c * self.rows + r) * self.cols..][..self.cols];
                let dst = &mut out[(c * s + top + r) * s + left..][..self.cols];
                for (d, &p) in dst.iter_mut().zip(src) {
                    *d = (p as f32 / 255.0 - self.mean) / self.std;
                }
            }
        }
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let n = items.len();
        let per_image = self.channels * self.input_size * self.input_size;
        let mut pixels = vec![0f32; n * per_image];
        for (item, out) in items.iter().zip(pixels.chunks_mut(per_image)) {
            self.write_image(&item.pixels, out);
        }
        let labels: Vec<i64> = items.iter().map(|item| item.label as i64).collect();
        let shape = [n, self.channels, self.input_size, self.input_size];
        ImageBatch {
            images: Tensor::from_data(TensorData::new(pixels, shape), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_images() -> ImageDataset {
        let images = Images {
            pixels: (0..8).map(|v| v * 30).collect(),
            count: 2,
            channels: 1,
            rows: 2,
            cols: 2,
        };
        ImageDataset::new(images, vec![3, 7])
    }

    #[test]
    fn pads_centred_with_background_and_normalises() {
        let batcher = ImageBatcher::new(DatasetKind::Mnist, (1, 2, 2), 4).unwrap();
        let dataset = two_images();
        let items = vec![dataset.get(1).unwrap()];
        let batch = batcher.batch(items, &Device::flex());
        assert_eq!(batch.images.dims(), [1, 1, 4, 4]);
        let values = batch.images.into_data().try_to_vec::<f32>().unwrap();
        let (mean, std) = DatasetKind::Mnist.mean_std();
        let norm = |p: f32| (p / 255.0 - mean) / std;
        let bg = norm(0.0);
        #[rustfmt::skip]
        let expected = [
            bg, bg, bg, bg,
            bg, norm(120.0), norm(150.0), bg,
            bg, norm(180.0), norm(210.0), bg,
            bg, bg, bg, bg,
        ];
        for (v, e) in values.iter().zip(expected) {
            assert!((v - e).abs() < 1e-6, "{values:?}");
        }
        assert_eq!(
            batch
                .targets
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap(),
            vec![7]
        );
    }

    #[test]
    fn odd_padding_puts_the_extra_row_after() {
        let batcher = ImageBatcher::new(DatasetKind::Mnist, (1, 2, 2), 3).unwrap();
        let mut out = vec![0f32; 9];
        batcher.write_image(&[255, 255, 255, 255], &mut out);
        let ink = (1.0 - 0.1307) / 0.3081;
        assert!((out[0] - ink).abs() < 1e-5 && (out[8] - ink).abs() > 1.0);
    }

    #[test]
    fn rejects_a_model_input_smaller_than_the_images() {
        let err = ImageBatcher::new(DatasetKind::Mnist, (1, 28, 28), 24).unwrap_err();
        assert!(err.contains("24x24") && err.contains("28x28"), "{err}");
    }

    #[test]
    fn split_tail_holds_out_the_last_items() {
        let (train, valid) = two_images().split_tail(1);
        assert_eq!((train.len(), valid.len()), (1, 1));
        assert_eq!(valid.get(0).unwrap().label, 7);
        assert!(train.get(1).is_err());
    }
}
