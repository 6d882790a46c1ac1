//! Watching a forward pass: each layer's output, in the order of the layer table
//! ([`NetworkConfig::layers`](crate::NetworkConfig::layers), which names them), and the regions
//! each FMP layer pooled over. `train show` draws them; `forward` passes no observer.

use burn::prelude::*;
use ops::PoolRegions;

/// Receives each layer's output (a dense layer's `[batch, features]` as `[batch, features, 1,
/// 1]`) and, for an FMP layer, its regions: once per layer of the layer table, in its order.
pub type Observer<'a> = &'a mut dyn FnMut(Tensor<4>, Option<&PoolRegions>);

/// Shows `x`, the next layer's output, to `observer` if there is one.
pub(crate) fn show(observer: &mut Option<Observer>, x: &Tensor<4>) {
    if let Some(observe) = observer {
        observe(x.clone(), None);
    }
}

/// [`show`] for a dense layer's output.
pub(crate) fn show_dense(observer: &mut Option<Observer>, x: &Tensor<2>) {
    if let Some(observe) = observer {
        let [n, f] = x.dims();
        observe(x.clone().reshape([n, f, 1, 1]), None);
    }
}
