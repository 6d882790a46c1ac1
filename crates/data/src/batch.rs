//! Burn [`Dataset`] and [`Batcher`] for image classification: bytes in, tensors out.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use burn::{
    data::{
        dataloader::batcher::Batcher,
        dataset::{Dataset, DatasetError},
    },
    prelude::*,
};
use rand::{SeedableRng, rngs::StdRng};

use crate::{
    DataError, DatasetKind, Images,
    augment::{Augmentation, Transform},
};

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

/// Turns items into tensors: images `[batch, channels, size, size]` and their classes
/// `[batch]`, delivered as any batch type built from that pair (the network's own, in the
/// trainer, so this crate needs nothing from the networks). It scales bytes to [0, 1], normalises each channel with the
/// dataset's mean and std, and zero-pads (background) each image, centred, to the model's input
/// size. With an [`Augmentation`], each image is first distorted with parameters drawn from the
/// batcher's seeded generator (shared by its clones, so one loader worker reproduces a run).
#[derive(Clone, Debug)]
pub struct ImageBatcher {
    channels: usize,
    rows: usize,
    cols: usize,
    input_size: usize,
    mean: &'static [f32],
    std: &'static [f32],
    augmentation: Option<(Augmentation, Arc<Mutex<StdRng>>)>,
}

impl ImageBatcher {
    /// A batcher for `kind`'s images of shape `(channels, rows, cols)` padded to `input_size`.
    /// Fails when the model's input is smaller than the images.
    pub fn new(
        kind: DatasetKind,
        image_shape: (usize, usize, usize),
        input_size: usize,
    ) -> Result<Self, DataError> {
        let (channels, rows, cols) = image_shape;
        let (mean, std) = kind.mean_std();
        if input_size < rows || input_size < cols || mean.len() != channels {
            return Err(DataError::Shape {
                dataset: kind.name(),
                images: [channels, rows, cols],
                channels: mean.len(),
                input_size,
            });
        }
        Ok(Self {
            channels,
            rows,
            cols,
            input_size,
            mean,
            std,
            augmentation: None,
        })
    }

    /// The same batcher distorting every image by `augmentation`, drawn from a generator seeded
    /// with `seed`. An augmentation with every part off leaves the batcher as it is.
    pub fn with_augmentation(self, augmentation: &Augmentation, seed: u64) -> Self {
        let augmentation = (!augmentation.is_off()).then(|| {
            (
                augmentation.clone(),
                Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            )
        });
        Self {
            augmentation,
            ..self
        }
    }

    /// (top, left) of an undistorted image in the input.
    fn offset(&self) -> [usize; 2] {
        let s = self.input_size;
        [(s - self.rows) / 2, (s - self.cols) / 2]
    }

    /// Writes `pixels`, normalised and padded, into `out` (`channels * input_size^2` values).
    fn write_image(&self, pixels: &[u8], out: &mut [f32]) {
        let s = self.input_size;
        let [top, left] = self.offset();
        for c in 0..self.channels {
            let (mean, std) = (self.mean[c], self.std[c]);
            let plane = &mut out[c * s * s..(c + 1) * s * s];
            plane.fill(-mean / std);
            for r in 0..self.rows {
                let src = &pixels[(c * self.rows + r) * self.cols..][..self.cols];
                let dst = &mut plane[(top + r) * s + left..][..self.cols];
                for (d, &p) in dst.iter_mut().zip(src) {
                    *d = (p as f32 / 255.0 - mean) / std;
                }
            }
        }
    }

    /// Like [`Self::write_image`], through `transform`.
    fn write_distorted(&self, pixels: &[u8], transform: &Transform, out: &mut [f32]) {
        let s = self.input_size;
        let plane_len = self.rows * self.cols;
        for c in 0..self.channels {
            let (mean, std) = (self.mean[c], self.std[c]);
            transform.render(
                c,
                &pixels[c * plane_len..(c + 1) * plane_len],
                [self.rows, self.cols],
                self.offset(),
                &mut out[c * s * s..(c + 1) * s * s],
                s,
                |v| (v / 255.0 - mean) / std,
            );
        }
    }
}

impl ImageBatcher {
    /// The images `[batch, channels, size, size]` and classes `[batch]` of `items` on `device`.
    pub fn tensors(&self, items: Vec<ImageItem>, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let n = items.len();
        let per_image = self.channels * self.input_size * self.input_size;
        let mut pixels = vec![0f32; n * per_image];
        match &self.augmentation {
            None => {
                for (item, out) in items.iter().zip(pixels.chunks_mut(per_image)) {
                    self.write_image(&item.pixels, out);
                }
            }
            Some((augmentation, rng)) => {
                // Draw under the lock, render outside it.
                let transforms: Vec<Transform> = {
                    let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
                    (0..n)
                        .map(|_| augmentation.draw(self.channels, &mut *rng))
                        .collect()
                };
                for ((item, t), out) in items
                    .iter()
                    .zip(&transforms)
                    .zip(pixels.chunks_mut(per_image))
                {
                    self.write_distorted(&item.pixels, t, out);
                }
            }
        }
        let labels: Vec<i64> = items.iter().map(|item| item.label as i64).collect();
        let shape = [n, self.channels, self.input_size, self.input_size];
        (
            Tensor::from_data(TensorData::new(pixels, shape), device),
            Tensor::from_data(TensorData::new(labels, [n]), device),
        )
    }
}

impl<Batch: From<(Tensor<4>, Tensor<1, Int>)>> Batcher<ImageItem, Batch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> Batch {
        self.tensors(items, device).into()
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
        let (images, targets) = batcher.tensors(items, &Device::flex());
        assert_eq!(images.dims(), [1, 1, 4, 4]);
        let values = images.into_data().try_to_vec::<f32>().unwrap();
        let (mean, std) = DatasetKind::Mnist.mean_std();
        let norm = |p: f32| (p / 255.0 - mean[0]) / std[0];
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
            targets
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
        let err = ImageBatcher::new(DatasetKind::Mnist, (1, 28, 28), 24)
            .unwrap_err()
            .to_string();
        assert!(err.contains("24x24") && err.contains("28x28"), "{err}");
    }

    /// 8 random-looking 3x32x32 images.
    fn colour_images() -> ImageDataset {
        let size = 3 * 32 * 32;
        let pixels = (0..8 * size).map(|i| ((i * 7919) % 256) as u8).collect();
        let images = Images {
            pixels,
            count: 8,
            channels: 3,
            rows: 32,
            cols: 32,
        };
        ImageDataset::new(images, (0..8).collect())
    }

    fn batch_values(batcher: &ImageBatcher, dataset: &ImageDataset) -> Vec<f32> {
        let items = dataset.get_many((0..dataset.len()).collect()).unwrap();
        let (images, _) = batcher.tensors(items, &Device::flex());
        images.into_data().try_to_vec::<f32>().unwrap()
    }

    fn graham() -> Augmentation {
        Augmentation {
            flip: true,
            translate: 16,
            stretch: 0.2,
            distortion: 0.2,
            colour: 0.1,
        }
    }

    #[test]
    fn augmentation_off_gives_identical_batches() {
        let dataset = colour_images();
        let plain = ImageBatcher::new(DatasetKind::Cifar10, (3, 32, 32), 94).unwrap();
        let off = plain.clone().with_augmentation(&Augmentation::default(), 1);
        let values = batch_values(&plain, &dataset);
        assert_eq!(values, batch_values(&off, &dataset));
        // The distorting path with the identity transform writes exactly the same values.
        let item = dataset.get(3).unwrap();
        let mut direct = vec![0f32; 3 * 94 * 94];
        let mut distorted = direct.clone();
        plain.write_image(&item.pixels, &mut direct);
        plain.write_distorted(&item.pixels, &Transform::identity(3), &mut distorted);
        assert_eq!(direct, distorted);
    }

    #[test]
    fn the_same_seed_gives_the_same_batches_and_another_differs() {
        let dataset = colour_images();
        let plain = ImageBatcher::new(DatasetKind::Cifar10, (3, 32, 32), 94).unwrap();
        let a = plain.clone().with_augmentation(&graham(), 5);
        let b = plain.clone().with_augmentation(&graham(), 5);
        let c = plain.clone().with_augmentation(&graham(), 6);
        let first = batch_values(&a, &dataset);
        assert_eq!(first, batch_values(&b, &dataset));
        assert_ne!(first, batch_values(&c, &dataset));
        assert_ne!(first, batch_values(&plain, &dataset));
        // Fresh draws for the next batch.
        assert_ne!(first, batch_values(&a, &dataset));
    }

    #[test]
    fn each_channel_is_normalised_with_its_own_statistics() {
        let batcher = ImageBatcher::new(DatasetKind::Cifar10, (3, 32, 32), 32).unwrap();
        let mut out = vec![0f32; 3 * 32 * 32];
        batcher.write_image(&[255; 3 * 32 * 32], &mut out);
        let (mean, std) = DatasetKind::Cifar10.mean_std();
        for c in 0..3 {
            assert!((out[c * 1024] - (1.0 - mean[c]) / std[c]).abs() < 1e-6);
        }
    }

    #[test]
    fn split_tail_holds_out_the_last_items() {
        let (train, valid) = two_images().split_tail(1);
        assert_eq!((train.len(), valid.len()), (1, 1));
        assert_eq!(valid.get(0).unwrap().label, 7);
        assert!(train.get(1).is_err());
    }
}
