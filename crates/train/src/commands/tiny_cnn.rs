//! The course's first CNN, small enough to compute by hand: a 4x4 image, one 2x2 convolution
//! kernel (stride 1, bias, ReLU) to a 3x3 map, 2x2 max-pooling with stride 1 to 2x2, flatten to
//! 4, one dense node, squared-error loss, one SGD step. Every stage is computed twice: by plain
//! f64 loops written from the rules, and by Burn (autodiff and its SGD optimiser) on a device.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::{
    module::{Module, Param},
    optim::{GradientsParams, SgdConfig},
    prelude::*,
    tensor::{
        activation::relu,
        module::{conv2d, max_pool2d_with_indices},
        ops::{ConvOptions, MaxPoolOptions},
    },
};
use serde::{Deserialize, Serialize};

use crate::{BackendName, device};

/// The course's smallest CNN, forward, backward and one SGD step, by hand and by Burn.
#[derive(clap::Args)]
pub struct TinyCnnArgs {
    /// A TOML file with image, kernel, bias, weights, dense_bias, target, learning_rate;
    /// without it, the built-in example.
    values: Option<PathBuf>,
    /// Backends to run Burn on, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "flex,ndarray,wgpu"
    )]
    backends: Vec<BackendName>,
    /// Largest accepted difference between Burn (f32) and the hand computation (f64),
    /// absolute plus relative.
    #[arg(long, default_value_t = 1e-5)]
    tolerance: f64,
}

/// Runs `train tiny-cnn`: every stage side by side, then fails if a backend differs from the
/// hand computation.
pub fn run(args: TinyCnnArgs) -> Result<()> {
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        bail!(
            "--tolerance: {} is not a difference; give a finite value >= 0, e.g. 1e-5",
            args.tolerance
        );
    }
    let cnn = match &args.values {
        Some(path) => TinyCnn::load(path)?,
        None => TinyCnn::default(),
    };
    let hand = cnn.by_hand();
    // Burn computes in f32: a stage beyond its range cannot be compared, only overflow.
    for (name, values) in hand.named() {
        if let Some(v) = values
            .iter()
            .find(|v| !(v.is_finite() && v.abs() <= f32::MAX as f64))
        {
            bail!(
                "{}: the hand computation's {name} reaches {v}, beyond f32's range; give \
                 smaller values",
                source(&args.values)
            );
        }
    }
    let mut results = Vec::new();
    for backend in args.backends {
        let device = device::init(backend)?;
        results.push((backend.to_string(), cnn.by_burn(&device)));
    }
    say!("{}", side_by_side(&cnn, &hand, &results).trim_end());
    for (backend, stages) in &results {
        hand.compare(stages, args.tolerance)
            .with_context(|| format!("{backend} differs from the hand computation"))?;
    }
    say!(
        "\nevery stage agrees within {} (absolute + relative) on {}",
        args.tolerance,
        results
            .iter()
            .map(|(b, _)| b.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Where the values came from, for messages.
fn source(values: &Option<PathBuf>) -> String {
    match values {
        Some(path) => path.display().to_string(),
        None => "the built-in example".into(),
    }
}

/// The network's numbers: input, parameters, target and learning rate. The defaults make the
/// centre of the feature map the maximum of all four pooling windows (its gradient adds up four
/// times) and cut one negative pre-activation with the ReLU.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TinyCnn {
    /// The 4x4 input image.
    pub image: [[f64; 4]; 4],
    /// The 2x2 convolution kernel.
    pub kernel: [[f64; 2]; 2],
    /// The convolution's bias.
    pub bias: f64,
    /// The dense node's four weights, in flattening (row-major) order.
    pub weights: [f64; 4],
    /// The dense node's bias.
    pub dense_bias: f64,
    /// The wanted output.
    pub target: f64,
    /// SGD step size.
    pub learning_rate: f64,
}

impl Default for TinyCnn {
    fn default() -> Self {
        Self {
            image: [
                [1.0, 2.0, 0.0, 1.0],
                [0.0, 3.0, 1.0, 0.0],
                [2.0, 1.0, 4.0, 1.0],
                [0.0, 1.0, 0.0, -3.0],
            ],
            kernel: [[0.5, -0.25], [0.25, 0.5]],
            bias: 0.1,
            weights: [0.2, -0.1, 0.3, 0.1],
            dense_bias: 0.05,
            target: 1.0,
            learning_rate: 0.1,
        }
    }
}

/// Every intermediate value of one forward pass, backward pass and SGD step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stages {
    /// Convolution output before the ReLU, 3x3.
    pub pre_activation: [[f64; 3]; 3],
    /// After the ReLU.
    pub feature_map: [[f64; 3]; 3],
    /// Max-pooled, 2x2.
    pub pooled: [[f64; 2]; 2],
    /// Where each pooled value came from in the feature map (row, column).
    pub argmax: [[(usize, usize); 2]; 2],
    /// The pooled map as a vector.
    pub flattened: [f64; 4],
    /// The dense node's output.
    pub output: f64,
    /// (output - target)^2.
    pub loss: f64,
    /// dLoss/d(feature map): each pooled gradient lands on its maximum, summed where windows
    /// share one.
    pub grad_feature_map: [[f64; 3]; 3],
    /// dLoss/d(pre-activation): zero where the ReLU cut.
    pub grad_pre_activation: [[f64; 3]; 3],
    /// dLoss/d(kernel).
    pub grad_kernel: [[f64; 2]; 2],
    /// dLoss/d(bias).
    pub grad_bias: f64,
    /// dLoss/d(weights).
    pub grad_weights: [f64; 4],
    /// dLoss/d(dense bias).
    pub grad_dense_bias: f64,
    /// Parameters after one SGD step: kernel.
    pub new_kernel: [[f64; 2]; 2],
    /// Bias after the step.
    pub new_bias: f64,
    /// Weights after the step.
    pub new_weights: [f64; 4],
    /// Dense bias after the step.
    pub new_dense_bias: f64,
}

impl TinyCnn {
    /// Reads the network from a TOML file with the fields of [`TinyCnn`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let cnn: Self = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim()))?;
        let values = cnn
            .image
            .iter()
            .flatten()
            .chain(cnn.kernel.iter().flatten());
        let values = values.chain(&cnn.weights).chain([
            &cnn.bias,
            &cnn.dense_bias,
            &cnn.target,
            &cnn.learning_rate,
        ]);
        if let Some(v) = values.into_iter().find(|v| !v.is_finite()) {
            bail!(
                "{}: {v} is not a number the network can compute with; give finite values",
                path.display()
            );
        }
        Ok(cnn)
    }

    /// Every stage by plain loops over f64, from the rules of the lesson.
    // Index loops on purpose: they read like the lesson's formulas (z[i][j] = sum K[m][n] ...).
    #[allow(clippy::needless_range_loop)]
    pub fn by_hand(&self) -> Stages {
        let x = &self.image;
        let k = &self.kernel;
        let mut s = Stages::default();
        // Forward: the kernel slides over every 2x2 patch.
        for i in 0..3 {
            for j in 0..3 {
                let mut z = self.bias;
                for m in 0..2 {
                    for n in 0..2 {
                        z += k[m][n] * x[i + m][j + n];
                    }
                }
                s.pre_activation[i][j] = z;
                s.feature_map[i][j] = z.max(0.0);
            }
        }
        for i in 0..2 {
            for j in 0..2 {
                // The first maximum in row-major order wins a tie.
                let mut best = (i, j);
                for m in 0..2 {
                    for n in 0..2 {
                        if s.feature_map[i + m][j + n] > s.feature_map[best.0][best.1] {
                            best = (i + m, j + n);
                        }
                    }
                }
                s.argmax[i][j] = best;
                s.pooled[i][j] = s.feature_map[best.0][best.1];
                s.flattened[i * 2 + j] = s.pooled[i][j];
            }
        }
        s.output = self.dense_bias
            + (0..4)
                .map(|i| self.weights[i] * s.flattened[i])
                .sum::<f64>();
        s.loss = (s.output - self.target).powi(2);

        // Backward: chain rule from the loss down.
        let d_output = 2.0 * (s.output - self.target);
        s.grad_dense_bias = d_output;
        for i in 0..4 {
            s.grad_weights[i] = d_output * s.flattened[i];
        }
        for i in 0..2 {
            for j in 0..2 {
                // Flatten only reshapes; max-pooling routes the gradient to the maximum.
                let (r, c) = s.argmax[i][j];
                s.grad_feature_map[r][c] += d_output * self.weights[i * 2 + j];
            }
        }
        for i in 0..3 {
            for j in 0..3 {
                let relu_slope = if s.pre_activation[i][j] > 0.0 {
                    1.0
                } else {
                    0.0
                };
                s.grad_pre_activation[i][j] = s.grad_feature_map[i][j] * relu_slope;
                s.grad_bias += s.grad_pre_activation[i][j];
                // The kernel was applied at every position: its gradient sums over them.
                for m in 0..2 {
                    for n in 0..2 {
                        s.grad_kernel[m][n] += s.grad_pre_activation[i][j] * x[i + m][j + n];
                    }
                }
            }
        }

        // One SGD step: each parameter moves against its gradient.
        let lr = self.learning_rate;
        for m in 0..2 {
            for n in 0..2 {
                s.new_kernel[m][n] = k[m][n] - lr * s.grad_kernel[m][n];
            }
        }
        s.new_bias = self.bias - lr * s.grad_bias;
        for i in 0..4 {
            s.new_weights[i] = self.weights[i] - lr * s.grad_weights[i];
        }
        s.new_dense_bias = self.dense_bias - lr * s.grad_dense_bias;
        s
    }

    /// Every stage by Burn on `device`: tensor operations, autodiff and the SGD optimiser.
    pub fn by_burn(&self, device: &Device) -> Stages {
        let train = device.clone().autodiff();
        let net = TinyNet::new(self, &train);
        let image = tensor(self.image.as_flattened(), [1, 1, 4, 4], &train);
        let target = tensor(&[self.target], [1, 1], &train);

        // Burn keeps gradients of leaves only, so the network is cut into three graphs at z and
        // a, and each part's input gradient is fed into the part before it: the same chain
        // rule, with every local derivative computed by Burn's autodiff.
        let z = conv2d(
            image,
            net.kernel.val(),
            Some(net.bias.val()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        let z_leaf = z.clone().detach().require_grad();
        let a = relu(z_leaf.clone());
        let a_leaf = a.clone().detach().require_grad();
        let (pooled, indices) = max_pool2d_with_indices(
            a_leaf.clone(),
            MaxPoolOptions::new([2, 2]).with_stride([1, 1]),
        );
        let flattened = pooled.clone().reshape([1, 4]);
        let output = flattened.clone().matmul(net.weights.val()) + net.dense_bias.val().unsqueeze();
        let loss = (output.clone() - target).powi_scalar(2).sum();

        let head = loss.backward();
        let grad_a = a_leaf.grad(&head).expect("feature map is a leaf");
        let grad_weights = net.weights.grad(&head).expect("weights are trained");
        let grad_dense_bias = net.dense_bias.grad(&head).expect("dense bias is trained");
        let through_relu = (a.clone() * Tensor::from_inner(grad_a.clone()))
            .sum()
            .backward();
        let grad_z = z_leaf
            .grad(&through_relu)
            .expect("pre-activation is a leaf");
        let through_conv = (z.clone() * Tensor::from_inner(grad_z.clone()))
            .sum()
            .backward();
        let grad_kernel = net.kernel.grad(&through_conv).expect("kernel is trained");
        let grad_bias = net.bias.grad(&through_conv).expect("bias is trained");

        let mut grads = GradientsParams::new();
        grads.register(net.kernel.id, grad_kernel.clone());
        grads.register(net.bias.id, grad_bias.clone());
        grads.register(net.weights.id, grad_weights.clone());
        grads.register(net.dense_bias.id, grad_dense_bias.clone());
        let stepped = SgdConfig::new().init().step(self.learning_rate, net, grads);

        let argmax = values(indices.float());
        let mut s = Stages {
            pre_activation: grid(&values(z)),
            feature_map: grid(&values(a)),
            pooled: grid(&values(pooled)),
            argmax: [[(0, 0); 2]; 2],
            flattened: values(flattened).try_into().expect("4 values"),
            output: values(output)[0],
            loss: values(loss)[0],
            grad_feature_map: grid(&values(grad_a)),
            grad_pre_activation: grid(&values(grad_z)),
            grad_kernel: grid(&values(grad_kernel)),
            grad_bias: values(grad_bias)[0],
            grad_weights: values(grad_weights).try_into().expect("4 values"),
            grad_dense_bias: values(grad_dense_bias)[0],
            new_kernel: grid(&values(stepped.kernel.val())),
            new_bias: values(stepped.bias.val())[0],
            new_weights: values(stepped.weights.val()).try_into().expect("4 values"),
            new_dense_bias: values(stepped.dense_bias.val())[0],
        };
        for (k, flat) in argmax.iter().enumerate() {
            let flat = *flat as usize;
            s.argmax[k / 2][k % 2] = (flat / 3, flat % 3);
        }
        s
    }
}

/// The network's parameters as a Burn module, so that Burn's own SGD updates them.
#[derive(Module, Debug)]
struct TinyNet {
    kernel: Param<Tensor<4>>,
    bias: Param<Tensor<1>>,
    weights: Param<Tensor<2>>,
    dense_bias: Param<Tensor<1>>,
}

impl TinyNet {
    fn new(cnn: &TinyCnn, device: &Device) -> Self {
        Self {
            kernel: Param::from_tensor(tensor(cnn.kernel.as_flattened(), [1, 1, 2, 2], device)),
            bias: Param::from_tensor(tensor(&[cnn.bias], [1], device)),
            weights: Param::from_tensor(tensor(&cnn.weights, [4, 1], device)),
            dense_bias: Param::from_tensor(tensor(&[cnn.dense_bias], [1], device)),
        }
    }
}

fn tensor<const D: usize>(values: &[f64], shape: impl Into<Shape>, device: &Device) -> Tensor<D> {
    let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, shape.into()), device)
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
        .into_iter()
        .map(f64::from)
        .collect()
}

fn grid<const N: usize, const M: usize>(values: &[f64]) -> [[f64; M]; N] {
    std::array::from_fn(|i| std::array::from_fn(|j| values[i * M + j]))
}

/// A stage's name and its values, for comparison and printing.
type Named = (&'static str, Vec<f64>);

impl Stages {
    fn named(&self) -> Vec<Named> {
        let flat3 = |g: &[[f64; 3]; 3]| g.as_flattened().to_vec();
        let flat2 = |g: &[[f64; 2]; 2]| g.as_flattened().to_vec();
        let argmax = self
            .argmax
            .as_flattened()
            .iter()
            .flat_map(|&(r, c)| [r as f64, c as f64])
            .collect();
        vec![
            (
                "pre-activation z = K * x + b (3x3)",
                flat3(&self.pre_activation),
            ),
            ("feature map a = ReLU(z) (3x3)", flat3(&self.feature_map)),
            ("max-pooled p (2x2)", flat2(&self.pooled)),
            ("argmax of each window in a, (row, col)", argmax),
            ("flattened f", self.flattened.to_vec()),
            ("output y = w . f + c", vec![self.output]),
            ("loss (y - target)^2", vec![self.loss]),
            ("dL/da (3x3)", flat3(&self.grad_feature_map)),
            ("dL/dz (3x3)", flat3(&self.grad_pre_activation)),
            ("dL/dK (2x2)", flat2(&self.grad_kernel)),
            ("dL/db", vec![self.grad_bias]),
            ("dL/dw", self.grad_weights.to_vec()),
            ("dL/dc", vec![self.grad_dense_bias]),
            ("K after one SGD step", flat2(&self.new_kernel)),
            ("b after the step", vec![self.new_bias]),
            ("w after the step", self.new_weights.to_vec()),
            ("c after the step", vec![self.new_dense_bias]),
        ]
    }

    /// The first stage where `other` differs from `self` by more than `tolerance` (absolute,
    /// plus relative to the value's size), named with both values.
    pub fn compare(&self, other: &Stages, tolerance: f64) -> Result<()> {
        for ((name, ours), (_, theirs)) in self.named().iter().zip(other.named()) {
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                // Written so that NaN, on either side, is a difference.
                let agrees = (a - b).abs() <= tolerance * (1.0 + a.abs());
                if !agrees {
                    return Err(anyhow!("{name}, value {i}: {a} against {b}"));
                }
            }
        }
        Ok(())
    }
}

/// The stages side by side: the hand computation first, then each `(label, stages)`.
pub fn side_by_side(cnn: &TinyCnn, hand: &Stages, others: &[(String, Stages)]) -> String {
    let mut out = String::new();
    let row = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:>9.5}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let positions = |v: &[f64]| {
        v.chunks(2)
            .map(|p| format!("({}, {})", p[0], p[1]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(out, "input x (4x4):");
    for r in &cnn.image {
        let _ = writeln!(out, "    {}", row(r));
    }
    let _ = writeln!(
        out,
        "kernel K = {:?}, bias b = {}, weights w = {:?}, dense bias c = {}, target {}, \
         learning rate {}\n",
        cnn.kernel, cnn.bias, cnn.weights, cnn.dense_bias, cnn.target, cnn.learning_rate
    );
    let named: Vec<Vec<Named>> = others.iter().map(|(_, s)| s.named()).collect();
    for (k, (name, values)) in hand.named().into_iter().enumerate() {
        let show = if name.starts_with("argmax") {
            positions
        } else {
            row
        };
        let _ = writeln!(out, "{name}");
        let _ = writeln!(out, "    {:<12}{}", "by hand", show(&values));
        for ((label, _), stages) in others.iter().zip(&named) {
            let _ = writeln!(out, "    {:<12}{}", label, show(&stages[k].1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_case_matches_a_hand_worked_example() {
        let s = TinyCnn::default().by_hand();
        // Worked on paper: z = [[1.6, 2.35, 0.1], [0.35, 3.6, 2.1], [1.35, -0.15, 0.35]].
        let z = [[1.6, 2.35, 0.1], [0.35, 3.6, 2.1], [1.35, -0.15, 0.35]];
        for (row, want) in s.pre_activation.iter().zip(z) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-12, "{a} vs {b}");
            }
        }
        assert_eq!(s.feature_map[2][1], 0.0, "ReLU cuts -0.15");
        assert_eq!(s.argmax, [[(1, 1); 2]; 2], "3.6 is every window's maximum");
        // y = 0.05 + 3.6 * (0.2 - 0.1 + 0.3 + 0.1) = 1.85; loss 0.85^2; dL/dy = 1.7.
        assert!((s.output - 1.85).abs() < 1e-12);
        assert!((s.loss - 0.7225).abs() < 1e-12);
        // The centre collects all four windows' gradients: 1.7 * (0.2 - 0.1 + 0.3 + 0.1).
        assert!((s.grad_feature_map[1][1] - 0.85).abs() < 1e-12);
        assert_eq!(
            s.grad_feature_map
                .as_flattened()
                .iter()
                .filter(|g| **g != 0.0)
                .count(),
            1
        );
        // dL/dK[m][n] = 0.85 * x[1 + m][1 + n].
        let want = [0.85 * 3.0, 0.85 * 1.0, 0.85 * 1.0, 0.85 * 4.0];
        for (g, w) in s.grad_kernel.as_flattened().iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        assert!((s.new_kernel[1][1] - (0.5 - 0.1 * 3.4)).abs() < 1e-12);
    }

    #[test]
    fn the_relu_stops_the_gradient_where_it_cuts() {
        // A bias of -10 makes every pre-activation negative: the ReLU outputs zeros, the pooled
        // gradient still reaches the feature map, but nothing passes to the kernel or bias.
        let cnn = TinyCnn {
            bias: -10.0,
            ..TinyCnn::default()
        };
        let s = cnn.by_hand();
        assert!(s.pre_activation.as_flattened().iter().all(|&z| z < 0.0));
        assert!(s.grad_feature_map.as_flattened().iter().any(|&g| g != 0.0));
        assert!(
            s.grad_pre_activation
                .as_flattened()
                .iter()
                .all(|&g| g == 0.0)
        );
        assert_eq!((s.grad_kernel, s.grad_bias), ([[0.0; 2]; 2], 0.0));
        assert_eq!(s.new_kernel, cnn.kernel);
        assert!(s.grad_dense_bias != 0.0);
    }

    // On every backend: Burn's forward, gradients and SGD step equal the hand computation.

    fn check(cnn: &TinyCnn) {
        let hand = cnn.by_hand();
        for backend in [BackendName::Flex, BackendName::Ndarray, BackendName::Wgpu] {
            let device = device::init(backend).unwrap_or_else(|e| panic!("{backend}: {e:#}"));
            let burn = cnn.by_burn(&device);
            hand.compare(&burn, 1e-5)
                .unwrap_or_else(|e| panic!("{backend}: {e:#}"));
        }
    }

    #[test]
    fn a_shared_maximum_adds_its_gradients_on_every_backend() {
        let cnn = TinyCnn::default();
        assert_eq!(cnn.by_hand().argmax, [[(1, 1); 2]; 2]);
        check(&cnn);
    }

    #[test]
    fn a_cut_pre_activation_passes_no_gradient_on_every_backend() {
        // Only the bottom-left pre-activation is negative here, and it is the maximum of no window.
        let cnn = TinyCnn::default();
        let hand = cnn.by_hand();
        assert!(hand.pre_activation[2][1] < 0.0);
        assert_eq!(hand.grad_pre_activation[2][1], 0.0);
        // A larger image value under it: the cut position now wins its window with a positive
        // value, and the gradient flows again.
        let mut lifted = cnn.clone();
        lifted.image[3][2] = 9.0;
        let lifted_hand = lifted.by_hand();
        assert!(lifted_hand.pre_activation[2][1] > 0.0);
        assert_ne!(lifted_hand.grad_pre_activation[2][1], 0.0);
        check(&cnn);
        check(&lifted);
    }

    #[test]
    fn values_come_from_a_toml_file_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.toml");
        let text = toml::to_string(&TinyCnn::default()).unwrap();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(TinyCnn::load(&path).unwrap(), TinyCnn::default());
        std::fs::write(&path, text.replace("target", "targte")).unwrap();
        let err = format!("{:#}", TinyCnn::load(&path).unwrap_err());
        assert!(err.contains("tiny.toml") && err.contains("targte"), "{err}");
    }

    #[test]
    fn damaged_values_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.toml");
        let text = toml::to_string(&TinyCnn::default()).unwrap();
        // Three rows of the image instead of four, bytes that are not text, a file cut short.
        let image_row = text.lines().find(|l| l.starts_with("image")).unwrap();
        let three_rows =
            "image = [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]";
        let cases: [(&str, Vec<u8>); 3] = [
            ("image", text.replace(image_row, three_rows).into_bytes()),
            ("tiny.toml", vec![0xff, 0xfe, 0x00, 0x81]),
            ("tiny.toml", text.as_bytes()[..text.len() / 2].to_vec()),
        ];
        for (expected, bytes) in cases {
            std::fs::write(&path, bytes).unwrap();
            let err = format!("{:#}", TinyCnn::load(&path).unwrap_err());
            assert!(err.contains("tiny.toml") && err.contains(expected), "{err}");
        }
        let err = format!(
            "{:#}",
            TinyCnn::load(&dir.path().join("none.toml")).unwrap_err()
        );
        assert!(
            err.contains("none.toml") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn values_that_are_not_numbers_are_refused_and_nan_never_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.toml");
        let text = toml::to_string(&TinyCnn::default()).unwrap();
        assert!(text.contains("target = 1.0"), "{text}");
        for bad in ["nan", "inf", "-inf"] {
            std::fs::write(
                &path,
                text.replace("target = 1.0", &format!("target = {bad}")),
            )
            .unwrap();
            let err = format!("{:#}", TinyCnn::load(&path).unwrap_err());
            assert!(err.contains("tiny.toml") && err.contains("finite"), "{err}");
        }
        let hand = TinyCnn::default().by_hand();
        for value in [f64::NAN, f64::INFINITY] {
            let mut other = hand.clone();
            other.output = value;
            assert!(hand.compare(&other, 1e-5).is_err(), "{value} agreed");
        }
        assert!(hand.compare(&hand.clone(), 0.0).is_ok());
    }
}
