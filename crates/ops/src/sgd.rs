//! SGD with momentum as one pass over each parameter on the CPU backends.
//!
//! Burn's `Sgd` updates a parameter with seven whole-tensor operations (weight decay, momentum,
//! Nesterov, the learning rate), each reading and writing a tensor of the parameter's size: 1-2 ms
//! of a modern-LeNet step on flex. [`Sgd`] computes the same update, in the same order of f32
//! operations; on flex and ndarray one loop reads the parameter, its gradient and velocity once and writes the
//! new parameter and velocity. wgpu runs Burn's tensor operations, recorded by fusion as one
//! operation. Its state has the
//! names of Burn's (`momentum.velocity`), so a checkpoint of either resumes with the other.

use std::mem::MaybeUninit;

use burn::backend::TensorMetadata;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource, join_path};
use burn::prelude::*;
use burn_cubecl::{CubeBackend, kernel::into_contiguous};
use rayon::prelude::*;

use crate::cpu::{CpuBackend, all_f32, written, zeroed};

/// The constants of one step.
#[derive(Clone, Copy, Debug)]
pub struct SgdStep {
    /// Learning rate.
    pub learning_rate: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Share of the gradient taken into the velocity is `1 - dampening`.
    pub dampening: f64,
    /// Nesterov's variant: the update is `momentum * velocity + gradient`.
    pub nesterov: bool,
    /// L2 penalty added to the gradient as `weight_decay * parameter`.
    pub weight_decay: f64,
    /// The first step of a parameter: the velocity starts as the gradient.
    pub first: bool,
}

impl SgdStep {
    /// The factors of the gradient and of the old velocity in the new velocity (on the first
    /// step 1 and 0: the velocity is the gradient, as in Burn).
    fn velocity_factors(&self) -> (f64, f64) {
        if self.first {
            (1.0, 0.0)
        } else {
            (1.0 - self.dampening, self.momentum)
        }
    }
}

/// The backend operation behind [`Sgd`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait SgdBackend: Backend {
    /// The parameter and velocity after one step, given the gradient and the velocity before it
    /// (ignored on the first step).
    ///
    /// Fusion records the step whole and runs the Cube backend's when the stream executes:
    /// fused with the operations around it, Burn's tensor operations gave wrong parameters on
    /// wgpu (Burn 0.22.1).
    #[fusion(meta = step_specs)]
    fn sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        step: SgdStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        burns_step::<Self>(param, grad, velocity, step)
    }
}

/// The outputs of [`SgdBackend::sgd_step`] as fusion records them: shaped as the parameter.
fn step_specs(
    param: &TensorSpec,
    _grad: &TensorSpec,
    _velocity: &TensorSpec,
    _step: &SgdStep,
) -> (TensorSpec, TensorSpec) {
    (param.clone(), param.clone())
}

/// Burn's `Sgd` with momentum, operation for operation.
fn burns_step<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    velocity: FloatTensor<B>,
    step: SgdStep,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let grad = if step.weight_decay > 0.0 {
        B::float_add(
            B::float_mul_scalar(param.clone(), step.weight_decay.into()),
            grad,
        )
    } else {
        grad
    };
    let (a, b) = step.velocity_factors();
    let velocity = B::float_add(
        B::float_mul_scalar(grad.clone(), a.into()),
        B::float_mul_scalar(velocity, b.into()),
    );
    let update = if step.nesterov {
        B::float_add(
            B::float_mul_scalar(velocity.clone(), step.momentum.into()),
            grad,
        )
    } else {
        velocity.clone()
    };
    let delta = B::float_mul_scalar(update, step.learning_rate.into());
    (B::float_sub(param, delta), velocity)
}

impl<B: CpuBackend> SgdBackend for B {
    fn sgd_step(
        param: FloatTensor<B>,
        grad: FloatTensor<B>,
        velocity: FloatTensor<B>,
        step: SgdStep,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        if !all_f32(&[&param, &grad, &velocity]) {
            return burns_step::<B>(param, grad, velocity, step);
        }
        let shape = param.shape();
        let [param, grad, velocity] = [&param, &grad, &velocity].map(B::f32s);
        let (a, b) = step.velocity_factors();
        let (a, b, momentum) = (a as f32, b as f32, step.momentum as f32);
        let (decay, rate, nesterov) = (
            step.weight_decay as f32,
            step.learning_rate as f32,
            step.nesterov,
        );
        // New buffers written in one pass (copying the old ones first cost as much as the
        // update itself).
        let len = param.len();
        const CHUNK: usize = 1 << 14;
        let fill = |new_param: &mut [MaybeUninit<f32>], new_velocity: &mut [MaybeUninit<f32>]| {
            new_param
                .par_chunks_mut(CHUNK)
                .zip(new_velocity.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(index, (new_param, new_velocity))| {
                    let at = index * CHUNK..;
                    let (new_param, new_velocity) = (zeroed(new_param), zeroed(new_velocity));
                    let old = param[at.clone()]
                        .iter()
                        .zip(&velocity[at.clone()])
                        .zip(&grad[at]);
                    for ((new_p, new_v), ((&p, &v), &g)) in
                        new_param.iter_mut().zip(new_velocity).zip(old)
                    {
                        // Burn's operations in Burn's order, so the results are the same floats.
                        let g = if decay > 0.0 { p * decay + g } else { g };
                        let v = g * a + v * b;
                        let update = if nesterov { v * momentum + g } else { v };
                        *new_v = v;
                        *new_p = p - update * rate;
                    }
                });
        };
        // SAFETY: the chunks cover both buffers, and `zeroed` initialised each.
        let (new_param, (new_velocity, ())) =
            unsafe { written(len, |param| written(len, |velocity| fill(param, velocity))) };
        (
            B::float(new_param, shape.clone()),
            B::float(new_velocity, shape),
        )
    }
}

/// Burn's operations on the Cube backend's own kernels, the results made contiguous: fusion
/// takes a custom operation's outputs as plain buffers.
impl SgdBackend for CubeBackend {
    fn sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        step: SgdStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (param, velocity) = burns_step::<Self>(param, grad, velocity, step);
        (into_contiguous(param), into_contiguous(velocity))
    }
}

impl<B: SgdBackend, C: CheckpointStrategy> SgdBackend for Autodiff<B, C> {
    fn sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        step: SgdStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Optimisers step plain tensors; on the autodiff backend the step is not differentiated.
        let (param, velocity) = B::sgd_step(
            param.into_primitive(),
            grad.into_primitive(),
            velocity.into_primitive(),
            step,
        );
        (Self::from_inner(param), Self::from_inner(velocity))
    }
}

/// Stochastic gradient descent with optional momentum (Nesterov's or not) and weight decay: the
/// update of Burn's `Sgd`, with momentum as one backend operation.
#[derive(Clone, Debug)]
pub struct Sgd {
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Sgd {
    /// SGD with `momentum` (0 for none; no dampening), Nesterov's variant if `nesterov`, and an
    /// L2 `weight_decay` (0 for none).
    pub fn new(momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        Self {
            momentum,
            nesterov,
            weight_decay,
        }
    }
}

/// State of [`Sgd`] for one parameter, recorded under the names of Burn's `SgdState`.
#[derive(Clone)]
pub struct SgdState<const D: usize> {
    /// The velocity, when the optimiser has momentum.
    pub momentum: Option<MomentumState<D>>,
}

/// The velocity of one parameter, recorded under the names of Burn's `MomentumState`.
#[derive(Clone)]
pub struct MomentumState<const D: usize> {
    /// The running, momentum-weighted gradient.
    pub velocity: Tensor<D>,
}

// Written out as Burn's `RecordState` derive writes them (it only works inside burn-optim):
// `{prefix}.momentum.velocity`, the momentum absent when nothing is recorded under it.
impl<const D: usize> RecordState for SgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(momentum) = &self.momentum {
            momentum.state_flatten(&join_path(prefix, "momentum"), out);
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let path = join_path(prefix, "momentum");
        let momentum = if src.has_under(&path) {
            MomentumState::state_unflatten(&path, src, device)
        } else {
            None
        };
        Some(Self { momentum })
    }
}

impl<const D: usize> RecordState for MomentumState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "velocity", self.velocity.clone().into_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let velocity = Tensor::from_data(src.take_tensor(prefix, "velocity")?, device);
        Some(Self { velocity })
    }
}

impl Optimizer for Sgd {
    type State<const D: usize> = SgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if self.momentum <= 0.0 {
            let grad = if self.weight_decay > 0.0 {
                tensor.clone().mul_scalar(self.weight_decay).add(grad)
            } else {
                grad
            };
            let state = SgdState { momentum: None };
            return (tensor - grad.mul_scalar(lr), Some(state));
        }
        let velocity = state.and_then(|state| state.momentum);
        let step = SgdStep {
            learning_rate: lr,
            momentum: self.momentum,
            dampening: 0.0,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            first: velocity.is_none(),
        };
        // The first step has no velocity yet: the gradient stands in (its factor is 0).
        let velocity = velocity.map_or_else(|| grad.clone(), |state| state.velocity);
        let (param, velocity) = Dispatch::sgd_step(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            velocity.into_dispatch(),
            step,
        );
        let state = SgdState {
            momentum: Some(MomentumState {
                velocity: Tensor::from_dispatch(velocity),
            }),
        };
        (Tensor::from_dispatch(param), Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        SgdState {
            momentum: state.momentum.map(|state| MomentumState {
                velocity: state.velocity.to_device(device),
            }),
        }
    }
}
