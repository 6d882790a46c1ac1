//! The reference formulation from Burn's tensor operations, which the Cube backend (wgpu) runs:
//! unfold + matrix products for kernels of up to four cells, Burn's convolution elsewhere.

use std::ops::Range;

use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::Slice;
use burn::tensor::ops::PadMode;
use burn_cubecl::{CubeBackend, kernel::into_contiguous};

use super::cpu::Geometry;
use super::{Conv2dBackend, burns_backward, burns_forward, unwanted_gradient};
use crate::channel::channel_total;
use crate::leaky_relu;

/// The convolution from Burn's operations: unfold + matrix products where that pays, Burn's
/// convolution elsewhere.
pub(super) fn reference_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
) -> FloatTensor<B> {
    match unfolding_pays(&weight) {
        true => unfolded_forward::<B>(x, weight, bias, padding, UNFOLDED_VALUES),
        false => burns_forward::<B>(x, weight, bias, padding),
    }
}

/// The gradients of [`reference_forward`]: input, weight, bias.
pub(super) fn reference_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    grad: FloatTensor<B>,
    input_gradient: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let limit = UNFOLDED_VALUES;
    match unfolding_pays(&weight) {
        true => unfolded_backward::<B>(x, weight, bias, padding, grad, input_gradient, limit),
        false => burns_backward::<B>(x, weight, bias, padding, grad, input_gradient),
    }
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
fn unfolded_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    limit: usize,
) -> FloatTensor<B> {
    let Some(g) = Geometry::new(&x, &weight, padding) else {
        return burns_forward::<B>(x, weight, bias, padding);
    };
    let [oh, ow] = g.output;
    let (x, weight) = (channels_first::<B>(x, &g), weight_rows::<B>(weight, &g));
    let bias = B::float_reshape(bias, [g.out, 1].into());
    let groups = image_groups(&g, limit)
        .map(|images| {
            let count = images.len();
            let unfolded = unfold::<B>(x.clone(), &g, images);
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

/// The gradients of the input (zeros without `input_gradient`), the weight and the bias in the
/// tensor-op formulation of [`unfolded_forward`], group by group.
fn unfolded_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    grad: FloatTensor<B>,
    input_gradient: bool,
    limit: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let Some(g) = Geometry::new(&x, &weight, padding) else {
        return burns_backward::<B>(x, weight, bias, padding, grad, input_gradient);
    };
    let unwanted = (!input_gradient).then(|| unwanted_gradient::<B>(&x));
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
        let unfolded = unfold::<B>(x.clone(), &g, images);
        let part = B::float_matmul(grad_rows.clone(), B::float_transpose(unfolded));
        weight_grad = Some(add(weight_grad, part));
        if input_gradient {
            let unfolded_grad = B::float_matmul(B::float_transpose(weight.clone()), grad_rows);
            x_grads.push(fold::<B>(unfolded_grad, &g, count));
        }
    }
    let [out, c, kh, kw] = [g.out, g.input[1], g.kernel[0], g.kernel[1]];
    let weight_grad = weight_grad.expect("a batch of at least one image");
    // [out, (ky, kx, channel)] -> [out, channel, ky, kx].
    let weight_grad = B::float_permute(
        B::float_reshape(weight_grad, [out, kh, kw, c].into()),
        &[0, 3, 1, 2],
    );
    (
        unwanted.unwrap_or_else(|| B::float_cat(x_grads, 0)),
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
fn unfold<B: Backend>(x: FloatTensor<B>, g: &Geometry, images: Range<usize>) -> FloatTensor<B> {
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

/// The reverse of [`unfold`] for `count` images: each cell's block of rows shifted
/// back into place and summed, the padding cut off, as `[count, c, h, w]`.
fn fold<B: Backend>(unfolded: FloatTensor<B>, g: &Geometry, count: usize) -> FloatTensor<B> {
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

/// The trait's tensor-op formulation on the Cube backend's own kernels, each result made
/// contiguous: fusion takes a custom operation's outputs as plain buffers.
impl Conv2dBackend for CubeBackend {
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        slope: f64,
    ) -> FloatTensor<Self> {
        let output = reference_forward::<Self>(x, weight, bias, padding);
        into_contiguous(leaky_relu::reference_forward_unless_linear::<Self>(
            output, slope,
        ))
    }

    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x, weight, bias) =
            reference_backward::<Self>(x, weight, bias, padding, grad, input_gradient);
        (
            into_contiguous(x),
            into_contiguous(weight),
            into_contiguous(bias),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{backward, forward};
    use super::super::test_values::{case, close};
    use super::*;
    use crate::cpu::CpuBackend;
    use burn::backend::Flex;

    /// The tensor-op formulation (what wgpu runs) split into groups of one image, of two, and
    /// not split, against the loops (themselves tested against f64 loops) on the same values.
    #[test]
    fn tensor_op_groups_match_the_loops() {
        let [x, weight, bias, grad] = case();
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
        let output = forward(&x, &weight, &bias, &g, 1.0);
        let (x_grad, weight_grad, bias_grad) = backward(&x, &weight, &grad, &g, true);
        let image = g.rows() * g.plane();
        for (limit, groups) in [(image, 5), (2 * image + 1, 3), (usize::MAX, 1)] {
            assert_eq!(image_groups(&g, limit).count(), groups);
            let [x, weight, bias, grad] = tensors();
            let ours =
                unfolded_forward::<Flex>(x.clone(), weight.clone(), bias.clone(), [1, 1], limit);
            close(
                &Flex::f32s(&ours),
                &output,
                &format!("output, {groups} groups"),
            );
            let (xg, wg, bg) =
                unfolded_backward::<Flex>(x, weight, bias, [1, 1], grad, true, limit);
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
}
