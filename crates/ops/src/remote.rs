//! The operations on Burn's remote backend (a device another machine serves): each runs its
//! reference formulation, Burn's own tensor operations, which go over the wire as ordinary
//! operations and run on the serving machine's backend.
//!
//! The remote backend is fusion over a router: a `#[fusion(meta = ..)]` operation would be
//! recorded as a closure on this machine that the serving one cannot run, and the CPU loops and
//! Cube kernels need the tensor's memory at hand. The trait bodies are the reference
//! formulations, so each implementation here is empty but the convolution's: its unfolded
//! formulation (slices, pads and concatenations of one image group) reaches a tensor of the wrong
//! kind on the serving machine in Burn 0.22.1 (docs/remote.md), so a worker runs Burn's own
//! convolution and its gradients.

use burn::backend::{Remote, tensor::FloatTensor};

use crate::batch_norm::BatchNormTrainBackend;
use crate::conv::Conv2dBackend;
use crate::fractional_max_pool::FractionalMaxPoolBackend;
use crate::leaky_relu::LeakyReluBackend;
use crate::linear::LinearBackend;
use crate::sgd::SgdBackend;
use crate::subsample::SubsampleBackend;
use crate::tanh::ScaledTanhBackend;

impl BatchNormTrainBackend for Remote {}
impl Conv2dBackend for Remote {
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        slope: f64,
    ) -> FloatTensor<Self> {
        let output = crate::conv::burns_forward::<Self>(x, weight, bias, padding);
        crate::leaky_relu::reference_forward_unless_linear::<Self>(output, slope)
    }

    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        crate::conv::burns_backward::<Self>(x, weight, bias, padding, grad, input_gradient)
    }
}
impl FractionalMaxPoolBackend for Remote {}
impl LeakyReluBackend for Remote {}
impl LinearBackend for Remote {}
impl SgdBackend for Remote {}
impl SubsampleBackend for Remote {}
impl ScaledTanhBackend for Remote {}
