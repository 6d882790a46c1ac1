//! Watching a forward pass: each layer's output, named as in the layer table, and the regions
//! each FMP layer pooled over. `train show` draws them; training passes no observer.

use burn::prelude::*;
use ops::PoolRegions;

/// Receives each layer's output (a dense layer's `[batch, features]` as `[batch, features, 1,
/// 1]`) and, for an FMP layer, its regions.
pub type Observer<'a> = &'a mut dyn FnMut(&str, Tensor<4>, Option<&PoolRegions>);

/// Shows `x`, the output of `layer`, to `observer` if there is one.
pub(crate) fn show(observer: &mut Option<Observer>, layer: &str, x: &Tensor<4>) {
    if let Some(observe) = observer {
        observe(layer, x.clone(), None);
    }
}

/// [`show`] for a dense layer's output.
pub(crate) fn show_dense(observer: &mut Option<Observer>, layer: &str, x: &Tensor<2>) {
    if let Some(observe) = observer {
        let [n, f] = x.dims();
        observe(layer, x.clone().reshape([n, f, 1, 1]), None);
    }
}
