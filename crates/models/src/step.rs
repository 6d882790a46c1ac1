//! Training and inference steps for Burn's Learner: one implementation for every network.

use burn::{
    module::{ModuleVisitor, Param},
    nn::loss::CrossEntropyLossConfig,
    prelude::*,
    tensor::Gradients,
    train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep},
};

use crate::Network;

/// A batch of images `[batch, channels, size, size]` with their classes `[batch]`.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// Normalised, padded images.
    pub images: Tensor<4>,
    /// Class indices.
    pub targets: Tensor<1, Int>,
    /// The share of its optimiser step's images this batch holds: 1, or less when a batch runs
    /// as micro-batches whose gradients are summed before one step (gradient accumulation).
    /// The training loss is scaled by it, so the summed gradient is the whole batch's mean.
    pub share: f32,
}

/// What the data crate's batcher makes: images and their classes, a whole step's batch.
impl From<(Tensor<4>, Tensor<1, Int>)> for ImageBatch {
    fn from((images, targets): (Tensor<4>, Tensor<1, Int>)) -> Self {
        Self {
            images,
            targets,
            share: 1.0,
        }
    }
}

impl Network {
    /// Logits and cross-entropy loss for a batch.
    pub fn forward_classification(&self, batch: ImageBatch) -> ClassificationOutput {
        let output = self.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, output, batch.targets)
    }
}

impl TrainStep for Network {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        let share = batch.share;
        let mut item = self.forward_classification(batch);
        // The metrics see the batch's own mean loss; the gradient is scaled by its share.
        let loss = if share == 1.0 {
            item.loss.clone()
        } else {
            item.loss.clone() * share
        };
        let grads = loss.backward();
        // The loss the metrics read also carries the gradients' health: plus zero times the sum
        // of every gradient, it is unchanged when they are finite and NaN when one is NaN or
        // infinite. The run's guard reads that one value, which the loss metric syncs anyway.
        item.loss = item.loss.inner() + gradient_sum(self, &grads).mul_scalar(0.0);
        TrainOutput::new(self, grads, item)
    }
}

/// The sum of every value of every parameter's gradient in `grads`, as a one-value tensor on
/// the gradients' device: finite exactly when no gradient holds a NaN or an infinity (or sums
/// past the largest f32).
fn gradient_sum(model: &Network, grads: &Gradients) -> Tensor<1> {
    struct Sum<'a>(&'a Gradients, Option<Tensor<1>>);
    impl ModuleVisitor for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = param.val().grad(self.0) {
                // One dimension at a time: on wgpu a reduction over a whole large tensor at
                // once came out wrong (docs/gpu.md), and could miss a NaN.
                let sum = (0..D)
                    .rev()
                    .fold(grad, |total, dim| total.sum_dim(dim))
                    .reshape([1]);
                self.1 = Some(match self.1.take() {
                    Some(total) => total + sum,
                    None => sum,
                });
            }
        }
    }
    let mut sum = Sum(grads, None);
    model.visit(&mut sum);
    sum.1.expect("a network has parameters")
}

impl InferenceStep for Network {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.forward_classification(batch)
    }
}

#[cfg(test)]
mod tests {
    use burn::{
        module::{Module, Param},
        optim::{GradientsAccumulator, GradientsParams},
        tensor::Distribution,
    };

    use super::*;
    use crate::{LeNet5ModernConfig, NetworkConfig};

    /// Every parameter's gradient in `grads`, in the module's order, as host values.
    fn gradient_values(model: &Network, grads: &GradientsParams) -> Vec<Vec<f32>> {
        struct Collect<'a>(&'a GradientsParams, Vec<Vec<f32>>);
        impl burn::module::ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let grad = self
                    .0
                    .get::<D>(param.id)
                    .expect("every parameter has a gradient");
                self.1
                    .push(grad.into_data().convert::<f32>().try_to_vec().unwrap());
            }
        }
        let mut collect = Collect(grads, Vec::new());
        model.visit(&mut collect);
        collect.1
    }

    #[test]
    fn micro_batches_weighted_by_their_share_sum_to_the_whole_batch_gradient() {
        // LeNet has no batch norm, so the split changes nothing but the summation order.
        let device = Device::flex().autodiff();
        device.seed(3);
        let model = NetworkConfig::LeNet5Modern(LeNet5ModernConfig::new()).init(&device);
        let images = Tensor::<4>::random([8, 1, 28, 28], Distribution::Default, &device);
        let targets = Tensor::<1, Int>::from_data([0, 1, 2, 3, 4, 5, 6, 7], &device);
        let whole = TrainStep::step(&model, ImageBatch::from((images.clone(), targets.clone())));
        let whole = gradient_values(&model, &whole.grads);

        let mut accumulator = GradientsAccumulator::new();
        for half in 0..2 {
            let batch = ImageBatch {
                images: images.clone().narrow(0, half * 4, 4),
                targets: targets.clone().narrow(0, half * 4, 4),
                share: 0.5,
            };
            accumulator.accumulate(&model, TrainStep::step(&model, batch).grads);
        }
        let accumulated = gradient_values(&model, &accumulator.grads());
        assert_eq!(whole.len(), accumulated.len());
        for (a, b) in whole.iter().flatten().zip(accumulated.iter().flatten()) {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{a} vs {b}");
        }
        // Unscaled micro-batch losses would give twice the gradient.
        let largest = whole.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        assert!(largest > 1e-3, "the gradients are not all zero");
    }
}
