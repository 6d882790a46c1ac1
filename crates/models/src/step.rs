//! Training and inference steps for Burn's Learner: one implementation for every network.

use burn::{
    nn::loss::CrossEntropyLossConfig,
    prelude::*,
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
}

/// What the data crate's batcher makes: images and their classes.
impl From<(Tensor<4>, Tensor<1, Int>)> for ImageBatch {
    fn from((images, targets): (Tensor<4>, Tensor<1, Int>)) -> Self {
        Self { images, targets }
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
        let item = self.forward_classification(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Network {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.forward_classification(batch)
    }
}
