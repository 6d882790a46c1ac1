//! The fractional max-pooling layer: fresh regions on every pass, pooled by the backend op.

use burn::prelude::*;
use ops::{PoolRegions, fractional_max_pool2d};

use super::regions::{RegionKind, RegionSampler};

/// A fractional max-pooling layer: fresh pseudorandom or random regions on every forward pass,
/// in training and in evaluation alike, so repeated evaluations form an ensemble.
#[derive(Module, Debug)]
pub struct FractionalMaxPool2d {
    /// Output side, in cells.
    #[module(skip)]
    output_size: usize,
    /// How regions are drawn.
    #[module(skip)]
    kind: RegionKind,
    /// One draw per image and channel (PyTorch) instead of one per image (Graham).
    #[module(skip)]
    per_channel: bool,
    /// The run's seeded generator.
    #[module(skip)]
    sampler: RegionSampler,
}

impl FractionalMaxPool2d {
    /// A layer pooling to `output_size` x `output_size` with regions of `kind` from `sampler`.
    pub fn new(
        output_size: usize,
        kind: RegionKind,
        per_channel: bool,
        sampler: RegionSampler,
    ) -> Self {
        Self {
            output_size,
            kind,
            per_channel,
            sampler,
        }
    }

    /// Pools `x` `[n, c, h, w]` to `[n, c, output_size, output_size]`.
    ///
    /// # Panics
    /// If `h` or `w` cannot be pooled to the output size with steps of 1 and 2 (the network
    /// computes its sizes so that they can).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool(x).0
    }

    /// [`forward`](Self::forward), with the regions it pooled over.
    ///
    /// # Panics
    /// As `forward`.
    pub fn pool(&self, x: Tensor<4>) -> (Tensor<4>, PoolRegions) {
        let regions = self.draw(x.dims());
        (fractional_max_pool2d(x, &regions), regions)
    }

    /// Draws the regions for an input of `[n, c, h, w]`, as `forward` does.
    ///
    /// # Panics
    /// As `forward`.
    pub fn draw(&self, [n, c, h, w]: [usize; 4]) -> PoolRegions {
        for side in [h, w] {
            if let Err(e) = self.kind.check_sizes(side, self.output_size) {
                panic!("FractionalMaxPool2d: input {h}x{w}: {e}");
            }
        }
        let out = [self.output_size; 2];
        self.sampler
            .draw(self.kind, self.per_channel, n, c, [h, w], out)
    }
}
