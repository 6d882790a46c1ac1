//! The operations on Burn's remote backend (a device another machine serves): each runs its
//! reference formulation, Burn's own tensor operations, which go over the wire as ordinary
//! operations and run on the serving machine's backend.
//!
//! The remote backend is fusion over a router: a `#[fusion(meta = ..)]` operation would be
//! recorded as a closure on this machine that the serving one cannot run, and the CPU loops and
//! Cube kernels need the tensor's memory at hand. The trait bodies are the reference
//! formulations, so each implementation here is empty.

use burn::backend::Remote;

use crate::batch_norm::BatchNormTrainBackend;
use crate::conv::Conv2dBackend;
use crate::fractional_max_pool::FractionalMaxPoolBackend;
use crate::leaky_relu::LeakyReluBackend;
use crate::linear::LinearBackend;
use crate::sgd::SgdBackend;
use crate::subsample::SubsampleBackend;
use crate::tanh::ScaledTanhBackend;

impl BatchNormTrainBackend for Remote {}
impl Conv2dBackend for Remote {}
impl FractionalMaxPoolBackend for Remote {}
impl LeakyReluBackend for Remote {}
impl LinearBackend for Remote {}
impl SgdBackend for Remote {}
impl SubsampleBackend for Remote {}
impl ScaledTanhBackend for Remote {}
