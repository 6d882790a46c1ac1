//! The dense layer (`ops::linear`) against plain f64 loops on every backend, small and wide
//! enough for flex to split the products across threads: output and the gradients of the input,
//! weight and bias.

mod common;

use burn::nn::LinearConfig;
use burn::{prelude::*, tensor::Distribution};
use common::{BACKENDS, close_all, device, values};

/// Output, input gradient, weight gradient and bias gradient of `sum(linear(x) * upstream)`.
fn dense_loops(
    x: &[f64],
    [m, k]: [usize; 2],
    weight: &[f64],
    bias: &[f64],
    upstream: &[f64],
) -> [Vec<f64>; 4] {
    let n = bias.len();
    let mut output = vec![0.0; m * n];
    let mut x_grad = vec![0.0; m * k];
    let mut weight_grad = vec![0.0; k * n];
    let mut bias_grad = vec![0.0; n];
    for i in 0..m {
        for j in 0..n {
            let g = upstream[i * n + j];
            output[i * n + j] = bias[j];
            bias_grad[j] += g;
            for l in 0..k {
                output[i * n + j] += x[i * k + l] * weight[l * n + j];
                x_grad[i * k + l] += g * weight[l * n + j];
                weight_grad[l * n + j] += g * x[i * k + l];
            }
        }
    }
    [output, x_grad, weight_grad, bias_grad]
}

#[test]
fn dense_layer_matches_plain_loops_on_every_backend() {
    // (batch, inputs, outputs): 130 outputs make several column parts on flex.
    let cases = [(3, 5, 2), (9, 300, 130)];
    for backend in BACKENDS {
        let device = device(backend).autodiff();
        for (m, k, n) in cases {
            let what = format!("{backend} dense {k}->{n}, batch {m}");
            let layer = LinearConfig::new(k, n).init(&device);
            let x =
                Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let output = ops::linear(&layer, x.clone());
            let upstream = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
            let grads = (output.clone() * upstream.clone()).sum().backward();
            let bias = layer.bias.as_ref().unwrap();
            let ours = [
                values(output),
                values(x.grad(&grads).unwrap()),
                values(layer.weight.grad(&grads).unwrap()),
                values(bias.grad(&grads).unwrap()),
            ];
            let expected = dense_loops(
                &values(x.detach()),
                [m, k],
                &values(layer.weight.val().detach()),
                &values(bias.val().detach()),
                &values(upstream),
            );
            close_all(&ours, &expected, &what);
        }
    }
}
