//! A scaled hyperbolic tangent, `a * tanh(s * x)`, as one backend operation: LeCun's squashing
//! function `1.7159 tanh(2x/3)`, applied after every layer of LeNet-5.
//!
//! Burn's `tanh` calls the C library's scalar `tanhf` per value and the scaling adds two
//! whole-tensor operations each way; in LeCun's LeNet-5 that was 40% of a CPU training step. On
//! the CPU backends here one vectorisable pass computes it ([`tanh`]: `expm1` from a polynomial
//! and a power of two) and the backward pass reads only the output:
//! `d/dx a tanh(s x) = s (a^2 - y^2) / a`. The other backends run Burn's operations, which are
//! also the reference the loops are tested against.

use burn::backend::TensorMetadata;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use crate::cpu::{CpuBackend, all_f32, map};
use crate::graph::record;

/// The backend operations behind [`scaled_tanh`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait ScaledTanhBackend: Backend {
    /// `a * tanh(s * x)` for every value of `x`, with `[a, s]` = `scales`.
    #[fusion(default)]
    fn scaled_tanh_forward(x: FloatTensor<Self>, scales: [f64; 2]) -> FloatTensor<Self> {
        reference_forward::<Self>(x, scales)
    }

    /// The input's gradient from the forward pass's output `y` and the output's gradient:
    /// `grad * s (a^2 - y^2) / a`.
    #[fusion(default)]
    fn scaled_tanh_backward(
        y: FloatTensor<Self>,
        scales: [f64; 2],
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference_backward::<Self>(y, scales, grad)
    }
}

/// `a * tanh(s * x)` from Burn's operations.
fn reference_forward<B: Backend>(x: FloatTensor<B>, [a, s]: [f64; 2]) -> FloatTensor<B> {
    B::float_mul_scalar(B::float_tanh(B::float_mul_scalar(x, s.into())), a.into())
}

/// The gradient of [`reference_forward`] from Burn's operations: `grad * s (a^2 - y^2) / a`.
fn reference_backward<B: Backend>(
    y: FloatTensor<B>,
    [a, s]: [f64; 2],
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let square = B::float_mul(y.clone(), y);
    let slope = B::float_mul_scalar(
        B::float_add_scalar(B::float_neg(square), (a * a).into()),
        (s / a).into(),
    );
    B::float_mul(grad, slope)
}

/// `tanh(x)` in f32, written so that a loop over it vectorises (no calls, no branches):
/// `tanh |x| = -m / (2 + m)` with `m = expm1(-2|x|)`, the sign put back after.
///
/// `expm1(t)` for `t <= 0` is `2^k (expm1(r) + 1) - 1` with `t = k ln 2 + r`, `|r| <= ln 2 / 2`,
/// and `expm1(r)` from its Taylor series to `r^8`: for `|t| < ln 2 / 2` (`k = 0`) that is the
/// series itself, so small values keep their relative accuracy. The error is a few f32 units in
/// the last place (tested against f64 over the whole range).
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    const LN_2: f32 = std::f32::consts::LN_2;
    // Beyond 9, tanh rounds to 1 in f32; the clamp keeps 2^k a normal float.
    let t = -2.0 * x.abs().min(9.0);
    // Nearest integer to t / ln 2 (t <= 0): truncation of t / ln 2 - 0.5 toward zero.
    let k = (t * std::f32::consts::LOG2_E - 0.5) as i32;
    let r = t - k as f32 * LN_2;
    // r (1 + r/2 (1 + r/3 (1 + ... (1 + r/8)))): expm1(r) without cancellation. Multiplied by
    // the reciprocals: a division per term made the pass several times slower.
    let mut series = 1.0 + r * (1.0 / 8.0);
    for reciprocal in [
        1.0 / 7.0,
        1.0 / 6.0,
        1.0 / 5.0,
        1.0 / 4.0,
        1.0 / 3.0,
        1.0 / 2.0,
    ] {
        series = 1.0 + r * reciprocal * series;
    }
    let expm1_r = r * series;
    let power = f32::from_bits(((k + 127) as u32) << 23);
    let m = power * expm1_r + (power - 1.0);
    (-m / (2.0 + m)).copysign(x)
}

impl<B: CpuBackend> ScaledTanhBackend for B {
    fn scaled_tanh_forward(x: FloatTensor<B>, scales: [f64; 2]) -> FloatTensor<B> {
        if !all_f32(&[&x]) {
            return reference_forward::<B>(x, scales);
        }
        let [a, s] = scales.map(|v| v as f32);
        let xs = B::f32s(&x);
        let out = map(&xs, &xs, move |v, _| a * tanh(s * v));
        B::float(out, x.shape())
    }

    fn scaled_tanh_backward(
        y: FloatTensor<B>,
        scales: [f64; 2],
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        if !all_f32(&[&y, &grad]) {
            return reference_backward::<B>(y, scales, grad);
        }
        let [a, s] = scales;
        let (square, factor) = ((a * a) as f32, (s / a) as f32);
        let out = map(&B::f32s(&y), &B::f32s(&grad), move |y, g| {
            g * (factor * (square - y * y))
        });
        B::float(out, y.shape())
    }
}

impl ScaledTanhBackend for burn_cubecl::CubeBackend {}

impl<B: ScaledTanhBackend, C: CheckpointStrategy> ScaledTanhBackend for Autodiff<B, C> {
    fn scaled_tanh_forward(x: FloatTensor<Self>, scales: [f64; 2]) -> FloatTensor<Self> {
        record::<B, C, _, 1>(
            [x],
            |[x]| {
                let y = B::scaled_tanh_forward(x, scales);
                (y.clone(), (y, scales))
            },
            |(y, scales), grad| [B::scaled_tanh_backward(y, scales, grad)],
        )
    }

    fn scaled_tanh_backward(
        y: FloatTensor<Self>,
        scales: [f64; 2],
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // Only reached when differentiating a gradient: not needed for training, so the result
        // is a constant.
        Self::from_inner(B::scaled_tanh_backward(
            y.into_primitive(),
            scales,
            grad.into_primitive(),
        ))
    }
}

/// `a * tanh(s * x)`, differentiable on every backend.
pub fn scaled_tanh<const D: usize>(x: Tensor<D>, a: f64, s: f64) -> Tensor<D> {
    Tensor::from_dispatch(Dispatch::scaled_tanh_forward(x.into_dispatch(), [a, s]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorisable tanh against f64's over the whole range, zero, the clamp and the signs:
    /// within 4 f32 units in the last place (and 1e-7 absolute around zero, where the units
    /// shrink to nothing).
    #[test]
    fn tanh_matches_f64() {
        let mut worst = 0f64;
        let steps = 400_000;
        for i in 0..=steps {
            let x = -12.0 + 24.0 * i as f64 / steps as f64;
            for x in [x as f32, (x * 1e-4) as f32] {
                let exact = f64::from(x).tanh();
                let got = f64::from(tanh(x));
                let ulp = f64::from(f32::EPSILON) * exact.abs().max(f64::from(f32::MIN_POSITIVE));
                let error = (got - exact).abs();
                assert!(
                    error <= 4.0 * ulp || error < 1e-7 * exact.abs().max(1e-30),
                    "tanh({x}) = {got}, exact {exact}"
                );
                worst = worst.max(error / ulp);
            }
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(30.0), 1.0);
        assert_eq!(tanh(-30.0), -1.0);
        assert!(worst > 0.0, "some rounding is expected: {worst}");
    }
}
