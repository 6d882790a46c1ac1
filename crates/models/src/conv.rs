//! 2-D convolution with stride 1, as one backend operation with an unfold + matrix-product
//! implementation on flex.
//!
//! Flex's own convolution runs one small matrix product per 512-pixel tile of each image, after a
//! single-threaded NCHW -> NHWC copy, and Burn computes the weight gradient as a convolution whose
//! kernel is the whole output map: a matrix product four columns wide for a 2x2 kernel. At the FMP
//! net's shapes that took most of a training step. Here flex unfolds a group of images into one
//! matrix and runs one product for the output and two for the gradients. The other backends keep
//! Burn's convolution, which is also the reference the flex version is tested against.

use std::ops::Range;

use burn::backend::TensorMetadata;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, NdArray,
    autodiff::{
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    },
    backend_extension,
    flex::FlexTensor,
    tensor::FloatTensor,
};
use burn::nn::{PaddingConfig2d, conv::Conv2d};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;

use crate::flex::{tensor, values};

/// The backend operations behind [`conv2d`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Autodiff)]
pub trait Conv2dBackend: Backend {
    /// Convolves `x` `[n, c, h, w]` with `weight` `[out, c, kh, kw]` at stride 1, zero-padded by
    /// `padding` (rows, columns) on both sides, and adds `bias` `[out]`.
    #[fusion(default)]
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options(padding))
    }

    /// The gradients of `x`, `weight` and `bias` given the output's, `grad`.
    #[fusion(default)]
    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_backward::<Self>(x, weight, bias, padding, grad)
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

/// Values of unfolded images built at once (256 MiB of f32): larger batches are processed a
/// group of images at a time, so that the FMP-CIFAR net's early layers fit in memory.
const UNFOLD_LIMIT: usize = 1 << 26;

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
    fn new(x: &FlexTensor, weight: &FlexTensor, padding: [usize; 2]) -> Self {
        let input: [usize; 4] = x.shape().dims();
        let [out, _, kh, kw] = weight.shape().dims();
        let output = [
            input[2] + 2 * padding[0] + 1 - kh,
            input[3] + 2 * padding[1] + 1 - kw,
        ];
        Self {
            input,
            out,
            kernel: [kh, kw],
            padding,
            output,
        }
    }

    /// Rows of the unfolded matrix: one per input channel and kernel cell.
    fn rows(&self) -> usize {
        self.input[1] * self.kernel[0] * self.kernel[1]
    }

    /// Output cells per image and channel.
    fn plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The batch in groups of images whose unfolded matrix stays within `limit` values.
    fn groups(&self, limit: usize) -> impl Iterator<Item = Range<usize>> {
        let n = self.input[0];
        let size = (limit / (self.rows() * self.plane()).max(1)).clamp(1, n.max(1));
        (0..n)
            .step_by(size)
            .map(move |start| start..(start + size).min(n))
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

/// Each of `count` consecutive `[rows, cols]` matrices of `source` transposed to `[cols, rows]`,
/// plus `add[col]` when `add` is not empty (the bias, when the columns are output channels).
fn transpose_blocks(
    source: &[f32],
    count: usize,
    [rows, cols]: [usize; 2],
    add: &[f32],
) -> Vec<f32> {
    let size = rows * cols;
    let mut out = vec![0f32; count * size];
    if size == 0 {
        return out;
    }
    out.par_chunks_mut(size)
        .zip(source.par_chunks(size))
        .for_each(|(target, source)| {
            // Through a 16 x 16 tile on the stack: rows are read and written whole.
            const TILE: usize = 16;
            let mut tile = [[0f32; TILE]; TILE];
            for r0 in (0..rows).step_by(TILE) {
                let height = TILE.min(rows - r0);
                for c0 in (0..cols).step_by(TILE) {
                    let width = TILE.min(cols - c0);
                    for (r, source) in source[r0 * cols..].chunks(cols).take(height).enumerate() {
                        for (column, &v) in tile.iter_mut().zip(&source[c0..c0 + width]) {
                            column[r] = v;
                        }
                    }
                    for (j, column) in tile.iter().take(width).enumerate() {
                        let shift = add.get(c0 + j).copied().unwrap_or(0.0);
                        let target = &mut target[(c0 + j) * rows + r0..][..height];
                        for (t, &v) in target.iter_mut().zip(column) {
                            *t = v + shift;
                        }
                    }
                }
            }
        });
    out
}

/// The group's images, channels last (`[image, y, x, channel]`), unfolded: row `(image, oy, ox)`,
/// column `(ky, kx, channel)` holds `x[image, channel, oy + ky - pad, ox + kx - pad]`, zero
/// outside the image. Each (ky, kx) is one copy of a pixel's channels.
fn unfold(channels_last: &[f32], g: &Geometry, images: usize) -> Vec<f32> {
    let [_, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let rows = g.rows();
    let mut out = vec![0f32; images * g.plane() * rows];
    // One task per output row of an image: `ow` pixels of `rows` values each.
    out.par_chunks_mut((ow * rows).max(1))
        .enumerate()
        .for_each(|(index, out)| {
            let (image, oy) = (index / oh, index % oh);
            for ky in 0..kh {
                let Some(iy) = g.input_row(ky, oy) else {
                    continue;
                };
                let source = &channels_last[(image * h + iy) * w * c..][..w * c];
                for kx in 0..kw {
                    let (valid, from) = g.valid_columns(kx);
                    let at = (ky * kw + kx) * c;
                    for (ox, ix) in valid.zip(from..) {
                        out[ox * rows + at..][..c].copy_from_slice(&source[ix * c..][..c]);
                    }
                }
            }
        });
    out
}

/// Images `images` of `x` (`[n, c, h, w]`, channels first) as the unfolded matrix
/// `[(image, oy, ox), (ky, kx, channel)]`.
fn unfold_images(x: &[f32], g: &Geometry, images: Range<usize>) -> FlexTensor {
    let [_, c, h, w] = g.input;
    let group = &x[images.start * c * h * w..images.end * c * h * w];
    let channels_last = transpose_blocks(group, images.len(), [c, h * w], &[]);
    let unfolded = unfold(&channels_last, g, images.len());
    tensor(unfolded, [images.len() * g.plane(), g.rows()])
}

/// The reverse of [`unfold`]: each value of `unfolded` added back to the input cell it came
/// from, channels last.
fn fold(unfolded: &[f32], g: &Geometry, images: usize) -> Vec<f32> {
    let [_, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let rows = g.rows();
    let mut out = vec![0f32; images * h * w * c];
    // One task per input row of an image, so that no two tasks add to the same cell.
    out.par_chunks_mut((w * c).max(1))
        .enumerate()
        .for_each(|(index, target)| {
            let (image, iy) = (index / h, index % h);
            for ky in 0..kh {
                let Some(oy) = (iy + g.padding[0]).checked_sub(ky).filter(|&oy| oy < oh) else {
                    continue;
                };
                let source = &unfolded[(image * oh + oy) * ow * rows..][..ow * rows];
                for kx in 0..kw {
                    let (valid, from) = g.valid_columns(kx);
                    let at = (ky * kw + kx) * c;
                    for (ox, ix) in valid.zip(from..) {
                        let cells = &mut target[ix * c..][..c];
                        for (t, s) in cells.iter_mut().zip(&source[ox * rows + at..][..c]) {
                            *t += s;
                        }
                    }
                }
            }
        });
    out
}

fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// The weight `[out, c, kh, kw]` as `[out, (ky, kx, channel)]`, the unfolded columns' order.
fn weight_rows(weight: &FlexTensor, g: &Geometry) -> Vec<f32> {
    let weight = weight.to_contiguous();
    let cells = g.kernel[0] * g.kernel[1];
    transpose_blocks(values(&weight), g.out, [g.input[1], cells], &[])
}

/// The flex forward pass, `limit` values unfolded at a time.
fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    padding: [usize; 2],
    limit: usize,
) -> FlexTensor {
    let g = Geometry::new(&x, &weight, padding);
    let [n, ..] = g.input;
    let (out, plane) = (g.out, g.plane());
    let [x, bias] = [x, bias].map(|t| t.to_contiguous());
    let (xs, bias) = (values(&x), values(&bias));
    let weight_t = Flex::float_transpose(tensor(weight_rows(&weight, &g), [out, g.rows()]));
    let mut output = Vec::with_capacity(n * out * plane);
    for images in g.groups(limit) {
        let unfolded = unfold_images(xs, &g, images.clone());
        // [(image, oy, ox), out]: back to channels first, with the bias added.
        let product = Flex::float_matmul(unfolded, weight_t.clone()).to_contiguous();
        output.extend(transpose_blocks(
            values(&product),
            images.len(),
            [plane, out],
            bias,
        ));
    }
    let [oh, ow] = g.output;
    tensor(output, [n, out, oh, ow])
}

/// The flex backward pass, `limit` values unfolded at a time: the gradients of the input, the
/// weight and the bias.
fn backward(
    x: FlexTensor,
    weight: FlexTensor,
    padding: [usize; 2],
    grad: FlexTensor,
    limit: usize,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let g = Geometry::new(&x, &weight, padding);
    let [n, c, h, w] = g.input;
    let (out, plane, cells) = (g.out, g.plane(), g.kernel[0] * g.kernel[1]);
    let weight_shape = weight.shape();
    let weight = tensor(weight_rows(&weight, &g), [out, g.rows()]);
    let [x, grad] = [x, grad].map(|t| t.to_contiguous());
    let (xs, gs) = (values(&x), values(&grad));
    let mut x_grad = Vec::with_capacity(n * c * h * w);
    // Sum over groups of [(ky, kx, channel), out].
    let mut weight_grad: Option<FlexTensor> = None;
    for images in g.groups(limit) {
        // Unfolded again rather than kept from the forward pass: a layer of the FMP-CIFAR net
        // would keep up to UNFOLD_LIMIT values per group alive until its backward pass.
        let unfolded = unfold_images(xs, &g, images.clone());
        // The output gradient as [(image, oy, ox), out].
        let group_grad = &gs[images.start * out * plane..images.end * out * plane];
        let grad_rows = transpose_blocks(group_grad, images.len(), [out, plane], &[]);
        let grad_rows = tensor(grad_rows, [images.len() * plane, out]);
        let product = Flex::float_matmul(Flex::float_transpose(unfolded), grad_rows.clone());
        weight_grad = Some(match weight_grad {
            Some(total) => Flex::float_add(total, product),
            None => product,
        });
        let unfolded_grad = Flex::float_matmul(grad_rows, weight.clone()).to_contiguous();
        let channels_last = fold(values(&unfolded_grad), &g, images.len());
        x_grad.extend(transpose_blocks(
            &channels_last,
            images.len(),
            [h * w, c],
            &[],
        ));
    }
    // [(ky, kx, channel), out] -> [out, (ky, kx, channel)] -> [out, channel, (ky, kx)].
    let weight_grad = match weight_grad {
        Some(total) => {
            let total = total.to_contiguous();
            let by_out = transpose_blocks(values(&total), 1, [g.rows(), out], &[]);
            tensor(
                transpose_blocks(&by_out, out, [cells, c], &[]),
                weight_shape,
            )
        }
        None => tensor(vec![0f32; weight_shape.num_elements()], weight_shape),
    };
    let bias_grad = (0..out)
        .into_par_iter()
        .map(|o| {
            (0..n)
                .map(|i| gs[(i * out + o) * plane..][..plane].iter().sum::<f32>() as f64)
                .sum::<f64>() as f32
        })
        .collect();
    (
        tensor(x_grad, [n, c, h, w]),
        weight_grad,
        tensor(bias_grad, [out]),
    )
}

impl Conv2dBackend for Flex {
    fn conv2d_stride1(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        padding: [usize; 2],
    ) -> FlexTensor {
        if !all_f32(&[&x, &weight, &bias]) {
            return Self::conv2d(x, weight, Some(bias), options(padding));
        }
        forward(x, weight, bias, padding, UNFOLD_LIMIT)
    }

    fn conv2d_stride1_backward(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        padding: [usize; 2],
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if !all_f32(&[&x, &weight, &bias, &grad]) {
            return burns_backward::<Self>(x, weight, bias, padding, grad);
        }
        backward(x, weight, padding, grad, UNFOLD_LIMIT)
    }
}

impl Conv2dBackend for NdArray {}

impl Conv2dBackend for burn_cubecl::CubeBackend {}

impl<B: Conv2dBackend, C: CheckpointStrategy> Conv2dBackend for Autodiff<B, C> {
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConvBackward;

        impl<B: Conv2dBackend> Backward<B, 3> for ConvBackward {
            // The input, weight and bias as the forward pass had them, and the padding.
            type State = ([FloatTensor<B>; 3], [usize; 2]);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [x_node, weight_node, bias_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let ([x, weight, bias], padding) = ops.state;
                let (x_grad, weight_grad, bias_grad) =
                    B::conv2d_stride1_backward(x, weight, bias, padding, grad);
                for (node, grad) in [
                    (x_node, x_grad),
                    (weight_node, weight_grad),
                    (bias_node, bias_grad),
                ] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let (x, x_node) = x.into_parts();
        let (weight, weight_node) = weight.into_parts();
        let (bias, bias_node) = bias.into_parts();
        let output = B::conv2d_stride1(x.clone(), weight.clone(), bias.clone(), padding);
        match ConvBackward
            .prepare::<C>([x_node, weight_node, bias_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(([x, weight, bias], padding), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
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
/// stride 1, no dilation, one group, a bias, the same padding on both sides and a kernel of at
/// most [`MAX_UNFOLDED_CELLS`] cells (the FMP net's 2x2 and 1x1) run through
/// [`Conv2dBackend`]; others through Burn's module.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match (&conv.bias, symmetric_padding(conv)) {
        (Some(bias), Some(padding))
            if conv.stride == [1, 1]
                && conv.dilation == [1, 1]
                && conv.groups == 1
                && conv.kernel_size[0] * conv.kernel_size[1] <= MAX_UNFOLDED_CELLS =>
        {
            Tensor::from_dispatch(Dispatch::conv2d_stride1(
                x.into_dispatch(),
                conv.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
                padding,
            ))
        }
        _ => conv.forward(x),
    }
}

/// Largest kernel (in cells) the unfolding pays for: the unfolded matrix is this many times
/// the input. With LeNet's 5x5 kernels (25 times) Burn's own flex convolution was 1.4-1.9 times
/// faster, forward and backward; with the FMP net's 2x2 ones this operation was 1.2-3 times
/// faster than Burn's.
pub const MAX_UNFOLDED_CELLS: usize = 4;

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

    /// A small limit splits the batch into groups of one and two images: the result must not
    /// depend on the grouping.
    #[test]
    fn grouped_unfolding_gives_the_whole_batch_result() {
        // Irregular values in [-1, 1).
        let values = |shape: [usize; 4], seed: usize| {
            let count = shape.iter().product::<usize>();
            let values = (0..count)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            tensor(values, shape)
        };
        let x = values([5, 3, 6, 7], 1);
        let weight = values([4, 3, 3, 2], 2);
        let bias = tensor(vec![0.5f32, -1.0, 0.0, 2.0], [4]);
        let grad = values([5, 4, 6, 8], 3);
        let padding = [1, 1];
        let g = Geometry::new(&x, &weight, padding);
        let one_image = g.rows() * g.plane();
        // Products over other groupings may round differently: equal up to float rounding.
        let same = |a: FlexTensor, b: FlexTensor| {
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), Default::default())
        };
        let whole = forward(x.clone(), weight.clone(), bias.clone(), padding, usize::MAX);
        same(
            whole,
            forward(x.clone(), weight.clone(), bias, padding, 2 * one_image),
        );
        let whole = backward(x.clone(), weight.clone(), padding, grad.clone(), usize::MAX);
        let grouped = backward(x, weight, padding, grad, one_image);
        same(whole.0, grouped.0);
        same(whole.1, grouped.1);
        same(whole.2, grouped.2);
    }
}
