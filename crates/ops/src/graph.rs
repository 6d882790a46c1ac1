//! Recording this project's backend operations on Burn's autodiff graph.
//!
//! Each operation (convolution, batch norm, leaky ReLU, pooling, linear) has a forward and a
//! backward function per backend; on `Autodiff` the forward pass runs the inner backend's and
//! records a step that calls the backward one. [`record`] is that recording, written once.

use std::fmt;

use burn::backend::{
    Autodiff, Backend,
    autodiff::{
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    },
    tensor::FloatTensor,
};

/// The gradients of an operation's `N` inputs, from the state its forward pass saved and the
/// gradient of its output.
pub(crate) type InputGradients<B, S, const N: usize> = fn(S, FloatTensor<B>) -> [FloatTensor<B>; N];

/// The recorded step: the backward function.
struct Step<B: Backend, S, const N: usize>(InputGradients<B, S, N>);

impl<B: Backend, S, const N: usize> fmt::Debug for Step<B, S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Step")
    }
}

impl<B, S, const N: usize> Backward<B, N> for Step<B, S, N>
where
    B: Backend,
    S: Clone + Send + fmt::Debug + 'static,
{
    type State = S;

    fn backward(self, ops: Ops<S, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        for (parent, grad) in ops.parents.into_iter().zip((self.0)(ops.state, grad)) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// `forward` run on the inner tensors of `inputs`; it returns the output and the state that
/// `backward` needs. When an input is tracked, the output's gradient flows back to the inputs
/// through `backward`.
pub(crate) fn record<B, C, S, const N: usize>(
    inputs: [FloatTensor<Autodiff<B, C>>; N],
    forward: impl FnOnce([FloatTensor<B>; N]) -> (FloatTensor<B>, S),
    backward: InputGradients<B, S, N>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    S: Clone + Send + fmt::Debug + 'static,
{
    let (inner, nodes): (Vec<_>, Vec<_>) = inputs.into_iter().map(|t| t.into_parts()).unzip();
    let (Ok(inner), Ok(nodes)) = (inner.try_into(), nodes.try_into()) else {
        unreachable!("N inputs give N tensors and N nodes");
    };
    let (output, state) = forward(inner);
    match Step(backward)
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
