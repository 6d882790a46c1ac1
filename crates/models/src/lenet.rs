//! LeNet-5 in its two forms: LeCun et al. (1998) and Rosebrock's "modern" variant.

use burn::{
    module::Param,
    nn::{
        Initializer, Linear, LinearConfig, PaddingConfig2d, Relu,
        conv::{Conv2d, Conv2dConfig},
    },
    prelude::*,
    tensor::TensorData,
};

use ops::{conv2d, conv2d_stride1, linear, max_pool2x2, scaled_tanh, subsample2x2};

use crate::observe::{Observer, show, show_dense};

/// Rosebrock's LeNet: conv 20@5x5 same, ReLU, max-pool 2; conv 50@5x5 same, ReLU, max-pool 2;
/// dense 500, ReLU; dense to the classes. 1,256,080 parameters for 10 classes.
#[derive(Module, Debug)]
pub struct LeNet5Modern {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    activation: Relu,
}

/// Configuration of [`LeNet5Modern`].
#[derive(Config, Debug)]
pub struct LeNet5ModernConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
}

impl LeNet5Modern {
    /// MNIST digits as they come: 28x28.
    pub const INPUT_SIZE: usize = 28;

    /// Logits `[batch, classes]` for images `[batch, 1, 28, 28]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_observed(x, None)
    }

    /// [`forward`](Self::forward), each layer's output shown to `observer` if there is one.
    pub fn forward_observed(&self, x: Tensor<4>, mut observer: Option<Observer>) -> Tensor<2> {
        let o = &mut observer;
        // ReLU after the pooling: the max commutes with it (values and gradients alike), and
        // the pooled map is four times smaller.
        let x = conv2d(&self.conv1, x);
        show(o, &x);
        let x = self.activation.forward(max_pool2x2(x));
        show(o, &x);
        let x = conv2d(&self.conv2, x);
        show(o, &x);
        let x = self.activation.forward(max_pool2x2(x));
        show(o, &x);
        let x = self
            .activation
            .forward(linear(&self.fc1, x.flatten::<2>(1, 3)));
        show_dense(o, &x);
        let x = linear(&self.fc2, x);
        show_dense(o, &x);
        x
    }
}

impl LeNet5ModernConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> LeNet5Modern {
        let side = LeNet5Modern::INPUT_SIZE / 4;
        LeNet5Modern {
            conv1: Conv2dConfig::new([1, 20], [5, 5])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            conv2: Conv2dConfig::new([20, 50], [5, 5])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            fc1: LinearConfig::new(50 * side * side, 500).init(device),
            fc2: LinearConfig::new(500, self.num_classes).init(device),
            activation: Relu::new(),
        }
    }
}

/// Which S2 maps feed each C3 map (LeCun et al. 1998, Table I): 60 links in all.
pub const C3_TABLE: [&[usize]; 16] = [
    &[0, 1, 2],
    &[1, 2, 3],
    &[2, 3, 4],
    &[3, 4, 5],
    &[0, 4, 5],
    &[0, 1, 5],
    &[0, 1, 2, 3],
    &[1, 2, 3, 4],
    &[2, 3, 4, 5],
    &[0, 3, 4, 5],
    &[0, 1, 4, 5],
    &[0, 1, 2, 5],
    &[0, 1, 3, 4],
    &[1, 2, 4, 5],
    &[0, 2, 3, 5],
    &[0, 1, 2, 3, 4, 5],
];

/// LeCun's squashing function 1.7159 tanh(2a/3).
fn squash<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    scaled_tanh(x, 1.7159, 2.0 / 3.0)
}

/// Trainable subsampling (S2, S4): the sum of each 2x2 block times a per-map coefficient, plus a
/// per-map bias. Two parameters per feature map.
#[derive(Module, Debug)]
pub struct Subsampling {
    coefficient: Param<Tensor<1>>,
    bias: Param<Tensor<1>>,
}

impl Subsampling {
    fn new(maps: usize, device: &Device) -> Self {
        // fan-in of a unit is 4 inputs: the paper's uniform(-2.4/F, 2.4/F) initialisation.
        let init = Initializer::Uniform {
            min: -2.4 / 4.0,
            max: 2.4 / 4.0,
        };
        Self {
            coefficient: init.init([maps], device),
            bias: init.init([maps], device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        subsample2x2(x, self.coefficient.val(), self.bias.val())
    }
}

/// C3: a 5x5 convolution from 6 to 16 maps where each output map sees only the inputs listed in
/// [`C3_TABLE`]. Only the 60 linked kernels are parameters (1,500 weights + 16 biases = 1,516),
/// so the parameter count matches the paper, not that of a masked dense convolution.
#[derive(Module, Debug)]
pub struct PartialConv {
    /// One 5x5 kernel per link, in table order: `[links, 25]`.
    kernels: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
    /// For each (output, input) pair, the row of `kernels` it uses, or the zero row after them.
    #[module(skip)]
    rows: Vec<i64>,
}

impl PartialConv {
    const INPUTS: usize = 6;
    const KERNEL: usize = 5;

    /// The number of links, and for each (output, input) pair the row of `kernels` it uses, or
    /// `links` (a zero row).
    fn link_rows() -> (usize, Vec<i64>) {
        let links: usize = C3_TABLE.iter().map(|inputs| inputs.len()).sum();
        let mut rows = vec![links as i64; C3_TABLE.len() * Self::INPUTS];
        let mut link = 0;
        for (output, inputs) in C3_TABLE.iter().enumerate() {
            for &input in inputs.iter() {
                rows[output * Self::INPUTS + input] = link as i64;
                link += 1;
            }
        }
        (links, rows)
    }

    fn new(device: &Device) -> Self {
        let (links, rows) = Self::link_rows();
        let area = Self::KERNEL * Self::KERNEL;
        // Each C3 unit has (maps it sees) * 25 inputs; the widest case bounds the init range.
        let init = Initializer::Uniform {
            min: -2.4 / (3.0 * area as f64),
            max: 2.4 / (3.0 * area as f64),
        };
        Self {
            kernels: init.init([links, area], device),
            bias: init.init([C3_TABLE.len()], device),
            rows,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let kernels = self.kernels.val();
        let device = kernels.device();
        let [_, area] = kernels.dims();
        let rows = Tensor::<1, Int>::from_data(
            TensorData::new(self.rows.clone(), [C3_TABLE.len() * Self::INPUTS]),
            &device,
        );
        let zero = Tensor::zeros([1, area], &device);
        let weight = Tensor::cat(vec![kernels, zero], 0)
            .select(0, rows)
            .reshape([C3_TABLE.len(), Self::INPUTS, Self::KERNEL, Self::KERNEL]);
        conv2d_stride1(x, weight, self.bias.val(), [0, 0])
    }
}

/// LeNet-5 as in LeCun et al. (1998): 32x32 input, C1 6@5x5, S2, C3 (partial table), S4,
/// C5 120@5x5, F6 84, all squashed by 1.7159 tanh(2a/3).
///
/// The output layer is a linear layer to the classes trained with cross-entropy, not the paper's
/// Euclidean RBF units with fixed 7x12 glyph codes: it is the common modern reading and lets every
/// network here share one loss. It adds 850 trainable parameters for 10 classes.
#[derive(Module, Debug)]
pub struct LeNet5Classic {
    /// C1: 6 maps, 5x5 (156 parameters).
    pub c1: Conv2d,
    /// S2: trainable subsampling (12 parameters).
    pub s2: Subsampling,
    /// C3: partially connected 5x5 convolution (1,516 parameters).
    pub c3: PartialConv,
    /// S4: trainable subsampling (32 parameters).
    pub s4: Subsampling,
    /// C5: 120 maps, 5x5 over all 16 maps (48,120 parameters).
    pub c5: Conv2d,
    /// F6: 84 units (10,164 parameters).
    pub f6: Linear,
    /// Linear output layer in place of the RBF layer.
    pub output: Linear,
}

/// Configuration of [`LeNet5Classic`].
#[derive(Config, Debug)]
pub struct LeNet5ClassicConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
}

impl LeNet5Classic {
    /// The paper's 32x32 field: the 28x28 digit padded by 2 on each side.
    pub const INPUT_SIZE: usize = 32;

    /// Logits `[batch, classes]` for images `[batch, 1, 32, 32]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_observed(x, None)
    }

    /// [`forward`](Self::forward), each layer's output shown to `observer` if there is one.
    pub fn forward_observed(&self, x: Tensor<4>, mut observer: Option<Observer>) -> Tensor<2> {
        let o = &mut observer;
        let x = squash(conv2d(&self.c1, x));
        show(o, &x);
        let x = squash(self.s2.forward(x));
        show(o, &x);
        let x = squash(self.c3.forward(x));
        show(o, &x);
        let x = squash(self.s4.forward(x));
        show(o, &x);
        let x = squash(conv2d(&self.c5, x));
        show(o, &x);
        let x = squash(linear(&self.f6, x.flatten::<2>(1, 3)));
        show_dense(o, &x);
        let x = linear(&self.output, x);
        show_dense(o, &x);
        x
    }
}

impl LeNet5ClassicConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> LeNet5Classic {
        LeNet5Classic {
            c1: Conv2dConfig::new([1, 6], [5, 5]).init(device),
            s2: Subsampling::new(6, device),
            c3: PartialConv::new(device),
            s4: Subsampling::new(16, device),
            c5: Conv2dConfig::new([16, 120], [5, 5]).init(device),
            f6: LinearConfig::new(120, 84).init(device),
            output: LinearConfig::new(84, self.num_classes).init(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c3_table_has_sixty_links() {
        assert_eq!(C3_TABLE.iter().map(|i| i.len()).sum::<usize>(), 60);
    }

    #[test]
    fn modern_has_rosebrocks_parameter_count() {
        let net = LeNet5ModernConfig::new().init(&Device::flex());
        assert_eq!(net.num_params(), 1_256_080);
    }

    #[test]
    fn classic_layers_match_the_papers_table() {
        let net = LeNet5ClassicConfig::new().init(&Device::flex());
        assert_eq!(net.c1.num_params(), 156);
        assert_eq!(net.s2.num_params(), 12);
        assert_eq!(net.c3.num_params(), 1_516);
        assert_eq!(net.s4.num_params(), 32);
        assert_eq!(net.c5.num_params(), 48_120);
        assert_eq!(net.f6.num_params(), 10_164);
        assert_eq!(net.output.num_params(), 850);
    }

    /// The partial convolution must equal a dense convolution whose unlinked kernels are zero.
    #[test]
    fn partial_conv_equals_masked_dense_conv() {
        let device = Device::flex();
        let c3 = PartialConv::new(&device);
        let x = Tensor::<4>::random([2, 6, 14, 14], burn::tensor::Distribution::Default, &device);
        let kernels = c3.kernels.val().into_data().try_to_vec::<f32>().unwrap();
        let mut dense = vec![0f32; 16 * 6 * 25];
        let mut link = 0;
        for (o, inputs) in C3_TABLE.iter().enumerate() {
            for &i in inputs.iter() {
                dense[(o * 6 + i) * 25..(o * 6 + i + 1) * 25]
                    .copy_from_slice(&kernels[link * 25..(link + 1) * 25]);
                link += 1;
            }
        }
        let weight = Tensor::<4>::from_data(TensorData::new(dense, [16, 6, 5, 5]), &device);
        // Burn's own convolution as the reference.
        let expected = burn::tensor::module::conv2d(
            x.clone(),
            weight,
            Some(c3.bias.val()),
            burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        c3.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), burn::tensor::Tolerance::default());
    }
}
