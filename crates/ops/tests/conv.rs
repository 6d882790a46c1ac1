//! The stride-1 convolution (`ops::conv2d`, and with a leaky ReLU, `ops::conv2d_leaky_relu`)
//! against plain f64 loops on every backend: output and the gradients of the input, weight and
//! bias. Valid and explicit padding, square and oblong
//! kernels, 1x1 maps, and LeNet's 5x5 `Same` kernel; and the FMP net's head on wgpu against flex.

mod common;

use burn::nn::BatchNormConfig;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::{prelude::*, tensor::Distribution};
use common::{BACKENDS, close, close_all, device, values};

/// Output, input gradient, weight gradient and bias gradient of `sum(leaky(conv(x)) *
/// upstream)`, `leaky` the leaky ReLU of `slope`, by direct summation over every (output cell,
/// kernel cell) pair.
#[allow(clippy::too_many_arguments)]
fn loops(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    weight: &[f64],
    [out, kh, kw]: [usize; 3],
    bias: &[f64],
    [ph, pw]: [usize; 2],
    slope: f64,
    upstream: &[f64],
) -> [Vec<f64>; 4] {
    let (oh, ow) = (h + 2 * ph + 1 - kh, w + 2 * pw + 1 - kw);
    let mut output = vec![0.0; n * out * oh * ow];
    let mut x_grad = vec![0.0; x.len()];
    let mut weight_grad = vec![0.0; weight.len()];
    let mut bias_grad = vec![0.0; out];
    // Each output cell's (input index, weight index) pairs inside the image.
    let pairs = |i: usize, o: usize, oy: usize, ox: usize| {
        let cells = (0..c).flat_map(move |ch| {
            (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ch, oy + ky, ox + kx, ky, kx)))
        });
        cells
            .filter(move |&(_, iy, ix, ..)| iy >= ph && ix >= pw && iy - ph < h && ix - pw < w)
            .map(move |(ch, iy, ix, ky, kx)| {
                let xi = ((i * c + ch) * h + iy - ph) * w + ix - pw;
                (xi, ((o * c + ch) * kh + ky) * kw + kx)
            })
    };
    for i in 0..n {
        for o in 0..out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = ((i * out + o) * oh + oy) * ow + ox;
                    let z = bias[o]
                        + pairs(i, o, oy, ox)
                            .map(|(xi, wi)| x[xi] * weight[wi])
                            .sum::<f64>();
                    output[at] = if z > 0.0 { z } else { slope * z };
                    let g = upstream[at] * if z > 0.0 { 1.0 } else { slope };
                    bias_grad[o] += g;
                    for (xi, wi) in pairs(i, o, oy, ox) {
                        x_grad[xi] += g * weight[wi];
                        weight_grad[wi] += g * x[xi];
                    }
                }
            }
        }
    }
    [output, x_grad, weight_grad, bias_grad]
}

#[test]
fn convolution_matches_plain_loops_on_every_backend() {
    // (batch, channels in, out, input side h x w, kernel, padding)
    let cases = [
        (3, 3, 5, [7, 6], [2, 2], PaddingConfig2d::Valid),
        (
            2,
            2,
            4,
            [5, 4],
            [2, 2],
            PaddingConfig2d::Explicit(1, 1, 1, 1),
        ),
        (
            2,
            3,
            2,
            [5, 4],
            [1, 3],
            PaddingConfig2d::Explicit(0, 1, 0, 1),
        ),
        (4, 6, 3, [1, 1], [1, 1], PaddingConfig2d::Valid),
        // Maps of over 256 cells: one image per matrix product on the CPU backends.
        (3, 2, 3, [18, 17], [2, 2], PaddingConfig2d::Valid),
        (2, 2, 4, [9, 9], [5, 5], PaddingConfig2d::Same),
        // Kernels of over four cells, whose products read the unfolded matrix at an offset
        // per kernel row on the CPU backends: several images per product, unequal padding,
        // and kernel columns that see only padding.
        (
            6,
            3,
            4,
            [7, 6],
            [5, 3],
            PaddingConfig2d::Explicit(2, 1, 2, 1),
        ),
        (4, 2, 3, [3, 1], [5, 5], PaddingConfig2d::Same),
        (3, 2, 2, [20, 19], [3, 3], PaddingConfig2d::Valid),
    ];
    // Without an activation, and with the leaky ReLU applied as the output is written.
    let slopes = [1.0, 0.3];
    for backend in BACKENDS {
        let device = device(backend).autodiff();
        for ((n, c, out, [h, w], [kh, kw], padding), slope) in cases
            .iter()
            .cloned()
            .flat_map(|case| slopes.map(|s| (case.clone(), s)))
        {
            let what =
                format!("{backend} {c}->{out} {h}x{w} kernel {kh}x{kw} {padding:?} slope {slope}");
            let conv = Conv2dConfig::new([c, out], [kh, kw])
                .with_padding(padding.clone())
                .init(&device);
            let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let output = ops::conv2d_leaky_relu(&conv, x.clone(), slope);
            let [_, _, oh, ow] = output.dims();
            let upstream =
                Tensor::<4>::random([n, out, oh, ow], Distribution::Normal(0.0, 1.0), &device);
            let grads = (output.clone() * upstream.clone()).sum().backward();
            let bias = conv.bias.as_ref().unwrap();
            let ours = [
                values(output),
                values(x.grad(&grads).unwrap()),
                values(conv.weight.grad(&grads).unwrap()),
                values(bias.grad(&grads).unwrap()),
            ];
            let pad = match padding {
                PaddingConfig2d::Valid => [0, 0],
                PaddingConfig2d::Same => [kh / 2, kw / 2],
                PaddingConfig2d::Explicit(top, left, ..) => [top, left],
            };
            let expected = loops(
                &values(x.clone().detach()),
                [n, c, h, w],
                &values(conv.weight.val().detach()),
                [out, kh, kw],
                &values(bias.val().detach()),
                pad,
                slope,
                &values(upstream.clone()),
            );
            close_all(&ours, &expected, &what);

            // Images need no gradient, and the operation then computes none: the weight's and
            // the bias's are the same without it.
            let images = x.detach();
            let output = ops::conv2d_leaky_relu(&conv, images.clone(), slope);
            let grads = (output * upstream).sum().backward();
            let what = format!("{what}, input without a gradient");
            let weight_grad = values(conv.weight.grad(&grads).unwrap());
            close(&weight_grad, &expected[2], &format!("{what}: weight grad"));
            close(&values(bias.grad(&grads).unwrap()), &expected[3], &what);
        }
    }
}

#[test]
fn strided_convolutions_keep_burns_module() {
    // Stride 2 is outside the operation: the module's own result comes back.
    let device = device("flex");
    let conv = Conv2dConfig::new([2, 3], [3, 3])
        .with_stride([2, 2])
        .init(&device);
    let x = Tensor::<4>::random([2, 2, 9, 9], Distribution::Default, &device);
    assert_eq!(
        values(ops::conv2d(&conv, x.clone())),
        values(conv.forward(x))
    );
}

/// The FMP net's head (2x2 convolution to 1x1, batch norm + leaky ReLU, 1x1 convolution to
/// the classes) on wgpu, with fusion as a training run uses it, against flex. Each operation
/// alone agreed; fused with the operations around it (Burn 0.22.1), the convolution's
/// tensor-op formulation gave a weight gradient that differed from flex's by more than its
/// norm.
#[test]
fn the_fmp_head_has_the_same_gradients_on_wgpu_as_on_flex() {
    let flex = Device::flex().autodiff();
    flex.seed(5);
    let head = Conv2dConfig::new([24, 28], [2, 2]).init(&flex);
    let norm = BatchNormConfig::new(28).init(&flex);
    let classifier = Conv2dConfig::new([28, 10], [1, 1]).init(&flex);
    let x = Tensor::<4>::random([4, 24, 2, 2], Distribution::Normal(0.0, 1.0), &flex);
    let upstream = Tensor::<4>::random([4, 10, 1, 1], Distribution::Normal(0.0, 1.0), &flex);
    let gradients = |backend: &str| {
        let device = device(backend).autodiff();
        let (head, norm) = (head.clone().fork(&device), norm.clone().fork(&device));
        let classifier = classifier.clone().fork(&device);
        let x = x.clone().inner().to_device(&device).autodiff();
        let h = ops::batch_norm_leaky_relu(&norm, ops::conv2d(&head, x), 1.0 / 3.0);
        let logits = ops::conv2d(&classifier, h);
        let upstream = upstream.clone().inner().to_device(&device);
        let grads = (logits * upstream).sum().backward();
        [
            values(head.weight.grad(&grads).unwrap()),
            values(norm.gamma.grad(&grads).unwrap()),
            values(norm.beta.grad(&grads).unwrap()),
            values(classifier.weight.grad(&grads).unwrap()),
        ]
    };
    let expected = gradients("flex");
    let names = ["head weight", "gamma", "beta", "classifier weight"];
    for ((ours, theirs), name) in gradients("wgpu").iter().zip(&expected).zip(names) {
        let diff = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>();
        let norm = theirs.iter().map(|b| b * b).sum::<f64>();
        let relative = (diff / norm).sqrt();
        assert!(
            relative <= 1e-4,
            "{name}: differs from flex's by {relative:.2e} of its norm"
        );
    }
}
