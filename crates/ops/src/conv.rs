//! 2-D convolution with stride 1, as one backend operation: unfold + matrix products, as loops
//! on the CPU backends (flex, ndarray) and as Burn tensor operations on wgpu.
//!
//! Flex's own convolution runs one small matrix product per 512-pixel tile of each image, after a
//! single-threaded NCHW -> NHWC copy, and Burn computes the weight gradient as a convolution whose
//! kernel is the whole output map: a matrix product four columns wide for a 2x2 kernel. At the FMP
//! net's and LeNet's shapes that took most of a training step. Here each thread takes its own
//! images: it unfolds a few of them at a time (channels first, so each copy is a run of input
//! pixels and the weight is used as stored), runs a single-threaded matrix product into a buffer
//! it reuses, and for the backward pass adds its share of the weight gradient into its own sum.
//! Everything a thread touches stays small enough for its caches.
//!
//! On wgpu the same unfold + matrix products run as Burn tensor operations, a group of images at
//! a time, for kernels of up to four cells: Burn's own convolution there has only a direct kernel
//! for a dense convolution on WGSL, and its weight gradient is a convolution whose kernel is the
//! whole output map, both far slower than Burn's matrix kernels at the CIFAR net's widths. Larger
//! kernels and empty shapes keep Burn's convolution. Fusion records the convolution as one
//! operation and runs it on the Cube backend's kernels, its results contiguous: left to fusion,
//! the formulation's slices, transposes and reshapes were fused with the operations around the
//! convolution, and in a network the weight gradients came out wrong (docs/gpu.md).

use std::ops::Range;

use burn::backend::TensorMetadata;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::nn::{PaddingConfig2d, conv::Conv2d};
use burn::prelude::*;
use burn::tensor::Slice;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn_cubecl::{CubeBackend, kernel::into_contiguous};
use rayon::prelude::*;

use crate::channel::channel_total;
use crate::cpu::{CpuBackend, all_f32, sums, zeroed};
use crate::graph::record;
use crate::matmul::{View, multiply};

/// The backend operations behind [`conv2d`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Autodiff)]
pub trait Conv2dBackend: Backend {
    /// Convolves `x` `[n, c, h, w]` with `weight` `[out, c, kh, kw]` at stride 1, zero-padded by
    /// `padding` (rows, columns) on both sides, and adds `bias` `[out]`.
    ///
    /// Fusion records the operation whole (its output shape is known) and runs the Cube
    /// backend's when the stream executes: fused into the surrounding elementwise kernels, the
    /// tensor-op formulation's views gave wrong values on wgpu (Burn 0.22.1).
    #[fusion(meta = forward_spec)]
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        tensor_ops_forward::<Self>(x, weight, bias, padding)
    }

    /// The gradients of `x`, `weight` and `bias` given the output's, `grad`.
    #[fusion(meta = backward_specs)]
    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tensor_ops_backward::<Self>(x, weight, bias, padding, grad)
    }
}

/// The output of [`Conv2dBackend::conv2d_stride1`] as fusion records it: `[n, out, oh, ow]`.
fn forward_spec(
    x: &TensorSpec,
    weight: &TensorSpec,
    _bias: &TensorSpec,
    padding: &[usize; 2],
) -> TensorSpec {
    let [n, _, h, w] = x.shape.dims::<4>();
    let [out, _, kh, kw] = weight.shape.dims::<4>();
    // Impossible shapes are left to the backend, which reports them; any shape will do here.
    let side = |size: usize, pad: usize, kernel: usize| (size + 2 * pad + 1).saturating_sub(kernel);
    let shape = Shape::new([n, out, side(h, padding[0], kh), side(w, padding[1], kw)]);
    TensorSpec::new(shape, x.dtype)
}

/// The outputs of [`Conv2dBackend::conv2d_stride1_backward`] as fusion records them: shaped as
/// the input, the weight and the bias.
fn backward_specs(
    x: &TensorSpec,
    weight: &TensorSpec,
    bias: &TensorSpec,
    _padding: &[usize; 2],
    _grad: &TensorSpec,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (x.clone(), weight.clone(), bias.clone())
}

/// The convolution from Burn's operations: unfold + matrix products where that pays, Burn's
/// convolution elsewhere.
fn tensor_ops_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
) -> FloatTensor<B> {
    match unfolding_pays(&weight) {
        true => forward_tensor_ops::<B>(x, weight, bias, padding, UNFOLDED_VALUES),
        false => B::conv2d(x, weight, Some(bias), options(padding)),
    }
}

/// The gradients of [`tensor_ops_forward`]: input, weight, bias.
fn tensor_ops_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    match unfolding_pays(&weight) {
        true => backward_tensor_ops::<B>(x, weight, bias, padding, grad, UNFOLDED_VALUES),
        false => burns_backward::<B>(x, weight, bias, padding, grad),
    }
}

fn options(padding: [usize; 2]) -> ConvOptions<2> {
    ConvOptions::new([1, 1], padding, [1, 1], 1)
}

/// Burn's own gradients of the convolution: input, weight, bias.
fn burns_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let x_grad = B::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options(padding));
    let weight_grad = B::conv2d_weight_backward(x.clone(), weight, grad.clone(), options(padding));
    (x_grad, weight_grad, B::conv2d_bias_backward(x, bias, grad))
}

/// Largest kernel (in cells) the tensor-op formulation takes: the unfolded matrix is this many
/// times the input, and with LeNet's 5x5 kernels (25 times) Burn's direct kernel was faster on
/// wgpu. The FMP nets' 2x2 and 1x1 kernels unfold.
const MAX_UNFOLDED_CELLS: usize = 4;

/// Whether the tensor-op formulation pays for a convolution by `weight` `[out, c, kh, kw]`.
fn unfolding_pays(weight: &impl TensorMetadata) -> bool {
    let [_, _, kh, kw] = weight.shape().dims();
    kh * kw <= MAX_UNFOLDED_CELLS
}

/// Most values of the unfolded matrix in one matrix product of the tensor-op formulation (64 MiB
/// of f32): under the largest buffer any WebGPU device offers, and wide enough to keep a GPU's
/// matrix kernels busy. Larger batches are split into groups of images.
const UNFOLDED_VALUES: usize = 1 << 24;

/// The convolution from Burn tensor operations, which the Cube backend (wgpu) runs: the input
/// unfolded into a matrix by slicing (one slice per kernel cell) and one matrix product per group
/// of images of at most `limit` unfolded values.
fn forward_tensor_ops<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    limit: usize,
) -> FloatTensor<B> {
    let Some(g) = Geometry::new(&x, &weight, padding) else {
        return B::conv2d(x, weight, Some(bias), options(padding));
    };
    let [oh, ow] = g.output;
    let (x, weight) = (channels_first::<B>(x, &g), weight_rows::<B>(weight, &g));
    let bias = B::float_reshape(bias, [g.out, 1].into());
    let groups = image_groups(&g, limit)
        .map(|images| {
            let count = images.len();
            let unfolded = unfold_tensor_ops::<B>(x.clone(), &g, images);
            let product = B::float_add(B::float_matmul(weight.clone(), unfolded), bias.clone());
            // [out, (image, cell)] -> [image, out, cell].
            B::float_swap_dims(
                B::float_reshape(product, [g.out, count, oh, ow].into()),
                0,
                1,
            )
        })
        .collect();
    B::float_cat(groups, 0)
}

/// The gradients of the input, the weight and the bias in the tensor-op formulation of
/// [`forward_tensor_ops`], group by group.
fn backward_tensor_ops<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    grad: FloatTensor<B>,
    limit: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let Some(g) = Geometry::new(&x, &weight, padding) else {
        return burns_backward::<B>(x, weight, bias, padding, grad);
    };
    let (x, weight) = (channels_first::<B>(x, &g), weight_rows::<B>(weight, &g));
    // [image, out, oy, ox] -> [out, image, oy, ox], sliced by images below.
    let bias_grad = channel_total::<B>(grad.clone());
    let grad = B::float_swap_dims(grad, 0, 1);
    let add = |sum: Option<FloatTensor<B>>, part| match sum {
        Some(sum) => B::float_add(sum, part),
        None => part,
    };
    let (mut weight_grad, mut x_grads) = (None, Vec::new());
    for images in image_groups(&g, limit) {
        let count = images.len();
        let grad_rows = B::float_slice(grad.clone(), &[Slice::full(), images.clone().into()]);
        let grad_rows = B::float_reshape(grad_rows, [g.out, count * g.plane()].into());
        let unfolded = unfold_tensor_ops::<B>(x.clone(), &g, images);
        let part = B::float_matmul(grad_rows.clone(), B::float_transpose(unfolded));
        weight_grad = Some(add(weight_grad, part));
        let unfolded_grad = B::float_matmul(B::float_transpose(weight.clone()), grad_rows);
        x_grads.push(fold_tensor_ops::<B>(unfolded_grad, &g, count));
    }
    let [out, c, kh, kw] = [g.out, g.input[1], g.kernel[0], g.kernel[1]];
    let weight_grad = weight_grad.expect("a batch of at least one image");
    // [out, (ky, kx, channel)] -> [out, channel, ky, kx].
    let weight_grad = B::float_permute(
        B::float_reshape(weight_grad, [out, kh, kw, c].into()),
        &[0, 3, 1, 2],
    );
    (
        B::float_cat(x_grads, 0),
        weight_grad,
        B::float_reshape(bias_grad, bias.shape()),
    )
}

/// The images of each matrix product: consecutive groups of at most `limit` unfolded values
/// (at least one image each).
fn image_groups(g: &Geometry, limit: usize) -> impl Iterator<Item = Range<usize>> {
    let n = g.input[0];
    let per_group = (limit / (g.rows() * g.plane())).clamp(1, n);
    (0..n)
        .step_by(per_group)
        .map(move |start| start..(start + per_group).min(n))
}

/// `x` `[n, c, h, w]` zero-padded and as `[c, n, h + 2 pad, w + 2 pad]` (a view where no padding
/// is needed), so that a slice per kernel cell is a block of rows of the unfolded matrix.
fn channels_first<B: Backend>(x: FloatTensor<B>, g: &Geometry) -> FloatTensor<B> {
    let [ph, pw] = g.padding;
    let x = match ph + pw {
        0 => x,
        _ => B::float_pad(
            x,
            &[(0, 0), (0, 0), (ph, ph), (pw, pw)],
            PadMode::Constant(0.0),
        ),
    };
    B::float_swap_dims(x, 0, 1)
}

/// `weight` `[out, c, kh, kw]` as the matrix `[out, (ky, kx, channel)]`, the unfolded rows' order.
fn weight_rows<B: Backend>(weight: FloatTensor<B>, g: &Geometry) -> FloatTensor<B> {
    let weight = B::float_permute(weight, &[0, 2, 3, 1]);
    B::float_reshape(weight, [g.out, g.rows()].into())
}

/// The kernel cells `(ky, kx)` in the unfolded rows' order.
fn kernel_cells(g: &Geometry) -> impl Iterator<Item = (usize, usize)> {
    let [kh, kw] = g.kernel;
    (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ky, kx)))
}

/// `images` of `x` (`[c, n, h + 2 pad, w + 2 pad]`, from [`channels_first`]) unfolded as
/// `[(ky, kx, channel), (image, oy, ox)]`: the block of rows of cell `(ky, kx)` is the input
/// shifted by the cell.
fn unfold_tensor_ops<B: Backend>(
    x: FloatTensor<B>,
    g: &Geometry,
    images: Range<usize>,
) -> FloatTensor<B> {
    let [oh, ow] = g.output;
    let columns = images.len() * g.plane();
    let cells = kernel_cells(g)
        .map(|(ky, kx)| {
            let window = [
                Slice::full(),
                images.clone().into(),
                (ky..ky + oh).into(),
                (kx..kx + ow).into(),
            ];
            B::float_slice(x.clone(), &window)
        })
        .collect();
    B::float_reshape(B::float_cat(cells, 0), [g.rows(), columns].into())
}

/// The reverse of [`unfold_tensor_ops`] for `count` images: each cell's block of rows shifted
/// back into place and summed, the padding cut off, as `[count, c, h, w]`.
fn fold_tensor_ops<B: Backend>(
    unfolded: FloatTensor<B>,
    g: &Geometry,
    count: usize,
) -> FloatTensor<B> {
    let [_, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let [ph, pw] = g.padding;
    let blocks = B::float_reshape(unfolded, [kh * kw, c, count, oh, ow].into());
    let padded = kernel_cells(g)
        .enumerate()
        .map(|(cell, (ky, kx))| {
            let block = B::float_slice(blocks.clone(), &[(cell..cell + 1).into()]);
            let shift = [(0, 0), (0, 0), (0, 0), (ky, kh - 1 - ky), (kx, kw - 1 - kx)];
            B::float_pad(block, &shift, PadMode::Constant(0.0))
        })
        .reduce(B::float_add)
        .expect("a kernel of at least one cell");
    let inside = [
        Slice::full(),
        Slice::full(),
        Slice::full(),
        (ph..ph + h).into(),
        (pw..pw + w).into(),
    ];
    let images = B::float_reshape(B::float_slice(padded, &inside), [c, count, h, w].into());
    B::float_swap_dims(images, 0, 1)
}

/// Output columns a group of images aims at in one matrix product: maps smaller than this are
/// batched (the FMP net's last layers have 1 to 16 cells per map), so that the products stay wide
/// enough for the matrix kernels.
const GROUP_COLUMNS: usize = 256;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// Input `[n, c, h, w]`.
    input: [usize; 4],
    /// Output channels.
    out: usize,
    /// Kernel rows and columns.
    kernel: [usize; 2],
    /// Zero rows and columns added on each side.
    padding: [usize; 2],
    /// Output rows and columns.
    output: [usize; 2],
}

impl Geometry {
    /// The geometry of convolving `x` with `weight`, if nothing in it is empty (those cases are
    /// left to Burn's convolution, which reports impossible shapes).
    fn new(
        x: &impl TensorMetadata,
        weight: &impl TensorMetadata,
        padding: [usize; 2],
    ) -> Option<Self> {
        let input: [usize; 4] = x.shape().dims();
        let [out, _, kh, kw] = weight.shape().dims();
        let output = [
            (input[2] + 2 * padding[0] + 1).checked_sub(kh)?,
            (input[3] + 2 * padding[1] + 1).checked_sub(kw)?,
        ];
        let g = Self {
            input,
            out,
            kernel: [kh, kw],
            padding,
            output,
        };
        let sizes = [g.image(), g.plane(), g.rows(), out, input[0]];
        sizes.iter().all(|&size| size > 0).then_some(g)
    }

    /// Rows of the unfolded matrix, columns of the weight as `[out, rows]`: one per input
    /// channel and kernel cell, in the weight's `(channel, ky, kx)` order.
    fn rows(&self) -> usize {
        self.input[1] * self.kernel[0] * self.kernel[1]
    }

    /// Output cells per image and channel.
    fn plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Values of one input image.
    fn image(&self) -> usize {
        self.input[1] * self.input[2] * self.input[3]
    }

    /// Images unfolded into one matrix: enough for [`GROUP_COLUMNS`] columns, but not so many
    /// that the batch makes fewer groups than there are threads.
    fn group(&self) -> usize {
        let n = self.input[0].max(1);
        let per_thread = n.div_ceil(rayon::current_num_threads());
        GROUP_COLUMNS.div_ceil(self.plane().max(1)).min(per_thread)
    }

    /// For kernel column `kx`: the output columns whose input column lies inside the image, and
    /// the input column of the first of them.
    fn valid_columns(&self, kx: usize) -> (Range<usize>, usize) {
        let [_, _, _, w] = self.input;
        let pad = self.padding[1];
        let first = pad.saturating_sub(kx);
        let end = (w + pad).saturating_sub(kx).min(self.output[1]);
        (first..end.max(first), first + kx - pad)
    }

    /// For kernel row `ky` and output row `oy`: the input row, if inside the image.
    fn input_row(&self, ky: usize, oy: usize) -> Option<usize> {
        (oy + ky)
            .checked_sub(self.padding[0])
            .filter(|&row| row < self.input[2])
    }
}

/// `images` (`[count, c, h, w]`) unfolded into `unfolded` as `[(channel, ky, kx), (image, oy,
/// ox)]`: row `(channel, ky, kx)` holds `x[image, channel, oy + ky - pad, ox + kx - pad]`, zero
/// outside the image. Each output row is one copy of a run of input pixels.
fn unfold(images: &[f32], g: &Geometry, unfolded: &mut Vec<f32>) {
    let [_, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let count = images.len() / g.image().max(1);
    let columns = count * g.plane();
    unfolded.resize(g.rows() * columns, 0.0);
    let mut rows = unfolded.chunks_mut(columns.max(1));
    for channel in 0..c {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = rows.next().expect("one row per channel and kernel cell");
                let (valid, from) = g.valid_columns(kx);
                for (image, row) in row.chunks_mut(g.plane().max(1)).enumerate() {
                    let plane = &images[(image * c + channel) * h * w..][..h * w];
                    for (oy, out) in row.chunks_mut(ow.max(1)).take(oh).enumerate() {
                        match g.input_row(ky, oy) {
                            Some(iy) => {
                                let source = &plane[iy * w + from..][..valid.len()];
                                out[..valid.start].fill(0.0);
                                out[valid.clone()].copy_from_slice(source);
                                out[valid.end..].fill(0.0);
                            }
                            None => out.fill(0.0),
                        }
                    }
                }
            }
        }
    }
}

/// The reverse of [`unfold`]: each value of `unfolded` added to the input cell it came from, in
/// `images_grad` (`[count, c, h, w]`, zero beforehand).
fn fold(unfolded: &[f32], g: &Geometry, images_grad: &mut [f32]) {
    let [_, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let columns = images_grad.len() / g.image().max(1) * g.plane();
    let mut rows = unfolded.chunks(columns.max(1));
    for channel in 0..c {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = rows.next().expect("one row per channel and kernel cell");
                let (valid, from) = g.valid_columns(kx);
                for (image, row) in row.chunks(g.plane().max(1)).enumerate() {
                    let plane = &mut images_grad[(image * c + channel) * h * w..][..h * w];
                    for (oy, source) in row.chunks(ow.max(1)).take(oh).enumerate() {
                        if let Some(iy) = g.input_row(ky, oy) {
                            let target = &mut plane[iy * w + from..][..valid.len()];
                            for (t, s) in target.iter_mut().zip(&source[valid.clone()]) {
                                *t += s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The flex forward pass.
fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &Geometry) -> Vec<f32> {
    let [n, ..] = g.input;
    let (out, plane, group) = (g.out, g.plane(), g.group());
    let weight = View::rows(weight, [out, g.rows()]);
    let parallel = n.div_ceil(group) < rayon::current_num_threads();
    // Every value is written below: no zero fill first.
    let len = n * out * plane;
    let mut output = Vec::with_capacity(len);
    output.spare_capacity_mut()[..len]
        .par_chunks_mut(group * out * plane)
        .zip(x.par_chunks(group * g.image()))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(unfolded, product), (output, images)| {
                unfold(images, g, unfolded);
                let columns = images.len() / g.image() * plane;
                let unfolded = View::rows(unfolded, [g.rows(), columns]);
                if columns == plane {
                    // One image: its output `[out, cell]` is the product's layout, so the
                    // product adds straight onto the bias there.
                    let output = zeroed(output);
                    for (row, &b) in output.chunks_mut(plane).zip(bias) {
                        row.fill(b);
                    }
                    multiply(output, weight, unfolded, true, parallel);
                    return;
                }
                product.resize(out * columns, 0.0);
                multiply(product, weight, unfolded, false, parallel);
                // [out, (image, cell)] -> [image, out, cell], plus the bias.
                for (o, (row, &b)) in product.chunks(columns).zip(bias).enumerate() {
                    for (image, source) in row.chunks(plane).enumerate() {
                        let target = &mut output[(image * out + o) * plane..][..plane];
                        for (t, s) in target.iter_mut().zip(source) {
                            t.write(s + b);
                        }
                    }
                }
            },
        );
    // SAFETY: the groups cover the batch, and each wrote every channel and cell of its images.
    unsafe { output.set_len(len) };
    output
}

/// The flex backward pass: the gradients of the input, the weight and the bias.
fn backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    g: &Geometry,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [n, ..] = g.input;
    let (out, plane, rows, group) = (g.out, g.plane(), g.rows(), g.group());
    let weight = View::rows(weight, [out, rows]);
    // The batch in one run of groups per thread, each summing its own weight and bias
    // gradients: the sums are then added in a fixed order, so results do not depend on
    // scheduling.
    let groups = n.div_ceil(group);
    let threads = rayon::current_num_threads();
    let part = groups.div_ceil(groups.min(threads).max(1)) * group;
    let parallel = groups < threads;
    // Zeroed group by group below, just before each is folded into.
    let mut x_grad = Vec::with_capacity(x.len());
    let partial: Vec<(Vec<f32>, Vec<f64>)> = x_grad.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(part * g.image())
        .zip(x.par_chunks(part * g.image()))
        .zip(grad.par_chunks(part * out * plane))
        .map(|((x_grad, x), grad)| {
            let mut weight_grad = vec![0f32; out * rows];
            let mut bias_grad = vec![0f64; out];
            let (mut unfolded, mut grad_rows, mut unfolded_grad) =
                (Vec::new(), Vec::new(), Vec::new());
            let groups = x_grad
                .chunks_mut(group * g.image())
                .zip(x.chunks(group * g.image()))
                .zip(grad.chunks(group * out * plane));
            for ((x_grad, images), grad) in groups {
                let columns = images.len() / g.image() * plane;
                unfold(images, g, &mut unfolded);
                // The output gradient as [out, (image, cell)]: as it lies for one image, copied
                // into that order for several.
                let grad_rows = if columns == plane {
                    grad
                } else {
                    grad_rows.resize(out * columns, 0.0);
                    for (o, row) in grad_rows.chunks_mut(columns).enumerate() {
                        for (image, target) in row.chunks_mut(plane).enumerate() {
                            target.copy_from_slice(&grad[(image * out + o) * plane..][..plane]);
                        }
                    }
                    &grad_rows
                };
                for (total, row) in bias_grad.iter_mut().zip(grad_rows.chunks(columns)) {
                    let [sum] = sums(row, row, |v, _| [v]);
                    *total += sum;
                }
                let grad_rows = View::rows(grad_rows, [out, columns]);
                let unfolded = View::rows(&unfolded, [rows, columns]);
                multiply(
                    &mut weight_grad,
                    grad_rows,
                    unfolded.transposed(),
                    true,
                    parallel,
                );
                unfolded_grad.resize(rows * columns, 0.0);
                multiply(
                    &mut unfolded_grad,
                    weight.transposed(),
                    grad_rows,
                    false,
                    parallel,
                );
                fold(&unfolded_grad, g, zeroed(x_grad));
            }
            (weight_grad, bias_grad)
        })
        .collect();
    // SAFETY: the groups cover the batch, and each group's gradient was zeroed before folding.
    unsafe { x_grad.set_len(x.len()) };
    let mut weight_grad = vec![0f32; out * rows];
    let mut bias_grad = vec![0f64; out];
    for (weights, biases) in partial {
        for (total, v) in weight_grad.iter_mut().zip(weights) {
            *total += v;
        }
        for (total, v) in bias_grad.iter_mut().zip(biases) {
            *total += v;
        }
    }
    (
        x_grad,
        weight_grad,
        bias_grad.into_iter().map(|v| v as f32).collect(),
    )
}

impl<B: CpuBackend> Conv2dBackend for B {
    fn conv2d_stride1(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: FloatTensor<B>,
        padding: [usize; 2],
    ) -> FloatTensor<B> {
        match Geometry::new(&x, &weight, padding) {
            Some(g) if all_f32(&[&x, &weight, &bias]) => {
                let [x, weight, bias] = [&x, &weight, &bias].map(B::f32s);
                let output = forward(&x, &weight, &bias, &g);
                B::float(output, [g.input[0], g.out, g.output[0], g.output[1]])
            }
            _ => Self::conv2d(x, weight, Some(bias), options(padding)),
        }
    }

    fn conv2d_stride1_backward(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: FloatTensor<B>,
        padding: [usize; 2],
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        match Geometry::new(&x, &weight, padding) {
            Some(g) if all_f32(&[&x, &weight, &bias, &grad]) => {
                let (x_grad, weight_grad, bias_grad) =
                    backward(&B::f32s(&x), &B::f32s(&weight), &B::f32s(&grad), &g);
                (
                    B::float(x_grad, x.shape()),
                    B::float(weight_grad, weight.shape()),
                    B::float(bias_grad, [g.out]),
                )
            }
            _ => burns_backward::<B>(x, weight, bias, padding, grad),
        }
    }
}

/// The trait's tensor-op formulation on the Cube backend's own kernels, each result made
/// contiguous: fusion takes a custom operation's outputs as plain buffers.
impl Conv2dBackend for CubeBackend {
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        into_contiguous(tensor_ops_forward::<Self>(x, weight, bias, padding))
    }

    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x, weight, bias) = tensor_ops_backward::<Self>(x, weight, bias, padding, grad);
        (
            into_contiguous(x),
            into_contiguous(weight),
            into_contiguous(bias),
        )
    }
}

impl<B: Conv2dBackend, C: CheckpointStrategy> Conv2dBackend for Autodiff<B, C> {
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        record::<B, C, _, 3>(
            [x, weight, bias],
            |[x, weight, bias]| {
                let output = B::conv2d_stride1(x.clone(), weight.clone(), bias.clone(), padding);
                (output, ([x, weight, bias], padding))
            },
            |([x, weight, bias], padding), grad| {
                let (x, weight, bias) = B::conv2d_stride1_backward(x, weight, bias, padding, grad);
                [x, weight, bias]
            },
        )
    }

    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Only reached when differentiating a gradient: not needed for training, so the results
        // are constants.
        let (x_grad, weight_grad, bias_grad) = B::conv2d_stride1_backward(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            padding,
            grad.into_primitive(),
        );
        (
            Self::from_inner(x_grad),
            Self::from_inner(weight_grad),
            Self::from_inner(bias_grad),
        )
    }
}

/// `conv` applied to `x` `[n, c, h, w]`, as `Conv2d::forward` computes it. Convolutions with
/// stride 1, no dilation, one group, a bias and the same padding on both sides (every one in
/// this project's networks) run through [`conv2d_stride1`]; others through Burn's module.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match (&conv.bias, symmetric_padding(conv)) {
        (Some(bias), Some(padding))
            if conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1 =>
        {
            conv2d_stride1(x, conv.weight.val(), bias.val(), padding)
        }
        _ => conv.forward(x),
    }
}

/// `x` `[n, c, h, w]` convolved at stride 1 with `weight` `[out, c, kh, kw]`, zero-padded by
/// `padding` (rows, columns) on both sides, plus `bias` `[out]`: [`Conv2dBackend`]'s operation.
pub fn conv2d_stride1(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    padding: [usize; 2],
) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::conv2d_stride1(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        padding,
    ))
}

/// The rows and columns of zeros `conv` adds on each side at stride 1, if both sides get the
/// same (`Same` does for odd kernels).
fn symmetric_padding(conv: &Conv2d) -> Option<[usize; 2]> {
    let [kh, kw] = conv.kernel_size;
    match conv.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Same if kh % 2 == 1 && kw % 2 == 1 => Some([kh / 2, kw / 2]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Irregular values in [-1, 1).
    fn values(count: usize, seed: usize) -> Vec<f32> {
        (0..count)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (a, b) in a.iter().zip(b) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what}: {a} vs {b}"
            );
        }
    }

    /// The tensor-op formulation (what wgpu runs) split into groups of one image, of two, and
    /// not split, against the loops (themselves tested against f64 loops) on the same values.
    #[test]
    fn tensor_op_groups_match_the_loops() {
        let (x, weight) = (values(5 * 3 * 6 * 7, 1), values(4 * 3 * 3 * 2, 2));
        let (bias, grad) = (vec![0.5f32, -1.0, 0.0, 2.0], values(5 * 4 * 6 * 8, 3));
        let tensors = || {
            [
                Flex::float(x.clone(), [5, 3, 6, 7]),
                Flex::float(weight.clone(), [4, 3, 3, 2]),
                Flex::float(bias.clone(), [4]),
                Flex::float(grad.clone(), [5, 4, 6, 8]),
            ]
        };
        let [xt, wt, ..] = tensors();
        let g = Geometry::new(&xt, &wt, [1, 1]).expect("a non-empty convolution");
        let output = forward(&x, &weight, &bias, &g);
        let (x_grad, weight_grad, bias_grad) = backward(&x, &weight, &grad, &g);
        let image = g.rows() * g.plane();
        for (limit, groups) in [(image, 5), (2 * image + 1, 3), (usize::MAX, 1)] {
            assert_eq!(image_groups(&g, limit).count(), groups);
            let [x, weight, bias, grad] = tensors();
            let ours =
                forward_tensor_ops::<Flex>(x.clone(), weight.clone(), bias.clone(), [1, 1], limit);
            close(
                &Flex::f32s(&ours),
                &output,
                &format!("output, {groups} groups"),
            );
            let (xg, wg, bg) = backward_tensor_ops::<Flex>(x, weight, bias, [1, 1], grad, limit);
            close(
                &Flex::f32s(&xg),
                &x_grad,
                &format!("input gradient, {groups} groups"),
            );
            close(
                &Flex::f32s(&wg),
                &weight_grad,
                &format!("weight gradient, {groups} groups"),
            );
            close(
                &Flex::f32s(&bg),
                &bias_grad,
                &format!("bias gradient, {groups} groups"),
            );
        }
    }

    /// The batch is split into groups of images and runs of groups by the number of threads:
    /// the results must not depend on it beyond float rounding.
    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let (x, weight) = (values(5 * 3 * 6 * 7, 1), values(4 * 3 * 3 * 2, 2));
        let (bias, grad) = (vec![0.5f32, -1.0, 0.0, 2.0], values(5 * 4 * 6 * 8, 3));
        let g = Geometry::new(
            &Flex::float(x.clone(), [5, 3, 6, 7]),
            &Flex::float(weight.clone(), [4, 3, 3, 2]),
            [1, 1],
        )
        .expect("a non-empty convolution");
        // The number of groups, the output and the three gradients on `threads` threads.
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                let (x_grad, weight_grad, bias_grad) = backward(&x, &weight, &grad, &g);
                let output = forward(&x, &weight, &bias, &g);
                (
                    g.input[0].div_ceil(g.group()),
                    [output, x_grad, weight_grad, bias_grad],
                )
            })
        };
        let (one, three) = (run(1), run(3));
        assert_eq!(
            (one.0, three.0),
            (1, 3),
            "groups on one and on three threads"
        );
        for (a, b) in one.1.iter().zip(&three.1) {
            close(a, b, "one thread vs three");
        }
    }
}
