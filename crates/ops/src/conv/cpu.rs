//! The convolution on the CPU backends (flex, ndarray): each thread unfolds a few of its own
//! images at a time along the kernel's columns and runs one single-threaded matrix product per
//! kernel row on them (see the module above).

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use burn::backend::{TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;

use super::{Conv2dBackend, burns_backward, options};
use crate::cpu::{CpuBackend, all_f32, sums, written, zeroed};
use crate::leaky_relu::{self, leaky};
use crate::matmul::{View, multiply, multiply_strided};

/// Output columns a group of images aims at in one matrix product: maps smaller than this are
/// batched (the FMP net's last layers have 1 to 16 cells per map), so that the products stay wide
/// enough for the matrix kernels.
const GROUP_COLUMNS: usize = 256;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    /// Input `[n, c, h, w]`.
    pub(super) input: [usize; 4],
    /// Output channels.
    pub(super) out: usize,
    /// Kernel rows and columns.
    pub(super) kernel: [usize; 2],
    /// Zero rows and columns added on each side.
    pub(super) padding: [usize; 2],
    /// Output rows and columns.
    pub(super) output: [usize; 2],
}

impl Geometry {
    /// The geometry of convolving `x` with `weight`, if nothing in it is empty (those cases are
    /// left to Burn's convolution, which reports impossible shapes).
    pub(super) fn new(
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
    pub(super) fn rows(&self) -> usize {
        self.input[1] * self.kernel[0] * self.kernel[1]
    }

    /// Kernel rows unfolded into the CPU loops' matrix: all of them for kernels of up to four
    /// cells (one matrix product), only one for larger ones, whose products then read the
    /// matrix once per kernel row at an offset, so that each input value is copied once per
    /// kernel column instead of once per kernel cell (docs/performance.md measures both).
    fn unfolded_kernel_rows(&self) -> usize {
        let [kh, kw] = self.kernel;
        if kh * kw <= 4 { kh } else { 1 }
    }

    /// Rows of the CPU loops' unfolded matrix, columns of each product's weight: one per input
    /// channel, unfolded kernel row and kernel column.
    fn strips(&self) -> usize {
        self.input[1] * self.unfolded_kernel_rows() * self.kernel[1]
    }

    /// Columns of that matrix per image: the output's width for every padded input row from
    /// which an unfolded kernel window starts.
    fn span(&self) -> usize {
        (self.input[2] + 2 * self.padding[0] + 1 - self.unfolded_kernel_rows()) * self.output[1]
    }

    /// Columns of each product over `count` images: image `i`'s output cells are columns `i *
    /// span..i * span + plane`; rows between two images are computed and not used.
    fn columns(&self, count: usize) -> usize {
        (count.max(1) - 1) * self.span() + self.plane()
    }

    /// The products' first columns in the unfolded matrix: one product per step of unfolded
    /// kernel rows.
    fn product_offsets(&self) -> impl Iterator<Item = usize> + use<> {
        let (rows, step) = (self.unfolded_kernel_rows(), self.output[1]);
        (0..self.kernel[0] / rows).map(move |product| product * rows * step)
    }

    /// Output cells per image and channel.
    pub(super) fn plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Values of one input image.
    pub(super) fn image(&self) -> usize {
        self.input[1] * self.input[2] * self.input[3]
    }

    /// Images unfolded into one matrix: enough for [`GROUP_COLUMNS`] columns, but not so many
    /// that the batch makes fewer groups than there are threads.
    pub(super) fn group(&self) -> usize {
        let n = self.input[0].max(1);
        let per_thread = n.div_ceil(rayon::current_num_threads());
        GROUP_COLUMNS.div_ceil(self.plane().max(1)).min(per_thread)
    }

    /// For kernel column `kx`: the output columns whose input column lies inside the image, and
    /// the input column of the first of them.
    pub(super) fn valid_columns(&self, kx: usize) -> (Range<usize>, usize) {
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

/// The weight `[out, c, kh, kw]` as one `[out, (channel, unfolded kernel row, kx)]` matrix per
/// product (see [`Geometry::product_offsets`]): as stored where the whole kernel is unfolded.
fn weight_by_product<'a>(weight: &'a [f32], g: &Geometry) -> Cow<'a, [f32]> {
    let [_, c, ..] = g.input;
    let [kh, kw] = g.kernel;
    let rows = g.unfolded_kernel_rows();
    if rows == kh {
        return Cow::Borrowed(weight);
    }
    let mut by_product = Vec::with_capacity(weight.len());
    for product in 0..kh / rows {
        for filter in weight.chunks(c * kh * kw) {
            for channel in filter.chunks(kh * kw) {
                by_product.extend_from_slice(&channel[product * rows * kw..][..rows * kw]);
            }
        }
    }
    Cow::Owned(by_product)
}

/// The reverse of [`weight_by_product`]: `[out, c, kh, kw]` again.
fn weight_from_products(by_product: Vec<f32>, g: &Geometry) -> Vec<f32> {
    let [_, c, ..] = g.input;
    let [kh, kw] = g.kernel;
    let rows = g.unfolded_kernel_rows();
    if rows == kh {
        return by_product;
    }
    let mut weight = vec![0.0; by_product.len()];
    for (index, values) in by_product.chunks(rows * kw).enumerate() {
        let (product, filter, channel) = (index / (g.out * c), index / c % g.out, index % c);
        let start = ((filter * c + channel) * kh + product * rows) * kw;
        weight[start..][..rows * kw].copy_from_slice(values);
    }
    weight
}

/// `images` (`[count, c, h, w]`) unfolded into `unfolded` as `[(channel, ky, kx), (image, oy,
/// ox)]` for `ky` below [`Geometry::unfolded_kernel_rows`] and `oy` over the span's rows: row
/// `(channel, ky, kx)` holds `x[image, channel, oy + ky - pad, ox + kx - pad]`, zero outside the
/// image. Each copy is a run of input pixels.
fn unfold(images: &[f32], g: &Geometry, unfolded: &mut Vec<f32>) {
    let [_, c, h, w] = g.input;
    let [_, kw] = g.kernel;
    let (ow, span, rows) = (g.output[1], g.span(), g.unfolded_kernel_rows());
    let count = images.len() / g.image();
    unfolded.resize(g.strips() * count * span, 0.0);
    for (strip, row) in unfolded.chunks_mut(count * span).enumerate() {
        let (channel, ky, kx) = (strip / (rows * kw), strip / kw % rows, strip % kw);
        let (valid, from) = g.valid_columns(kx);
        for (image, block) in row.chunks_mut(span).enumerate() {
            let plane = &images[(image * c + channel) * h * w..][..h * w];
            for (oy, out) in block.chunks_mut(ow).enumerate() {
                match g.input_row(ky, oy) {
                    Some(iy) if !valid.is_empty() => {
                        out[..valid.start].fill(0.0);
                        out[valid.clone()].copy_from_slice(&plane[iy * w + from..][..valid.len()]);
                        out[valid.end..].fill(0.0);
                    }
                    _ => out.fill(0.0),
                }
            }
        }
    }
}

/// The reverse of [`unfold`]: each value of `unfolded` added to the input cell it came from, in
/// `images_grad` (`[count, c, h, w]`, zero beforehand).
fn fold(unfolded: &[f32], g: &Geometry, images_grad: &mut [f32]) {
    let [_, c, h, w] = g.input;
    let [_, kw] = g.kernel;
    let (ow, span, rows) = (g.output[1], g.span(), g.unfolded_kernel_rows());
    let count = images_grad.len() / g.image();
    for (strip, row) in unfolded.chunks(count * span).enumerate() {
        let (channel, ky, kx) = (strip / (rows * kw), strip / kw % rows, strip % kw);
        let (valid, from) = g.valid_columns(kx);
        if valid.is_empty() {
            continue;
        }
        for (image, block) in row.chunks(span).enumerate() {
            let plane = &mut images_grad[(image * c + channel) * h * w..][..h * w];
            for (oy, source) in block.chunks(ow).enumerate() {
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

/// Each product's `[out, strips]` weight matrix.
fn product_weights<'a>(by_product: &'a [f32], g: &Geometry) -> Vec<View<'a>> {
    by_product
        .chunks(g.out * g.strips())
        .map(|weight| View::rows(weight, [g.out, g.strips()]))
        .collect()
}

/// The flex forward pass, with the leaky ReLU of `slope` applied to each image's output while
/// it is in cache.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: &Geometry,
    slope: f32,
) -> Vec<f32> {
    let [n, ..] = g.input;
    let (out, plane, group, span) = (g.out, g.plane(), g.group(), g.span());
    let by_product = weight_by_product(weight, g);
    let weights = product_weights(&by_product, g);
    let parallel = n.div_ceil(group) < rayon::current_num_threads();
    // Every value is written below: no zero fill first.
    let len = n * out * plane;
    let fill = |output: &mut [MaybeUninit<f32>]| {
        output
            .par_chunks_mut(group * out * plane)
            .zip(x.par_chunks(group * g.image()))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(unfolded, product), (output, images)| {
                    unfold(images, g, unfolded);
                    let count = images.len() / g.image();
                    let columns = g.columns(count);
                    // The products, summed into `product` `[out, columns]`.
                    let products = |product: &mut [f32], accumulate: bool| {
                        for (index, (&weight, offset)) in
                            weights.iter().zip(g.product_offsets()).enumerate()
                        {
                            let strips = View::strided(
                                unfolded,
                                offset,
                                [g.strips(), columns],
                                count * span,
                            );
                            multiply(product, weight, strips, accumulate || index > 0, parallel);
                        }
                    };
                    if count == 1 {
                        // One image: its output `[out, cell]` is the product's layout, so the
                        // products add straight onto the bias there.
                        let output = zeroed(output);
                        for (row, &b) in output.chunks_mut(plane).zip(bias) {
                            row.fill(b);
                        }
                        products(output, true);
                        if slope != 1.0 {
                            for v in output.iter_mut() {
                                *v = leaky(*v, slope);
                            }
                        }
                        return;
                    }
                    product.resize(out * columns, 0.0);
                    products(product, false);
                    // [out, (image, cell)] -> [image, out, cell], plus the bias, activated.
                    for (o, (row, &b)) in product.chunks(columns).zip(bias).enumerate() {
                        for image in 0..count {
                            let source = &row[image * span..][..plane];
                            let target = &mut output[(image * out + o) * plane..][..plane];
                            for (t, s) in target.iter_mut().zip(source) {
                                t.write(leaky(s + b, slope));
                            }
                        }
                    }
                },
            );
    };
    // SAFETY: the groups cover the batch, and each wrote every channel and cell of its images.
    unsafe { written(len, fill) }.0
}

/// The flex backward pass: the gradients of the input (zeros without `input_gradient`), the
/// weight and the bias.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    g: &Geometry,
    input_gradient: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [n, ..] = g.input;
    let (out, plane, strips, group, span) = (g.out, g.plane(), g.strips(), g.group(), g.span());
    let by_product = weight_by_product(weight, g);
    let weights = product_weights(&by_product, g);
    // The batch in one run of groups per thread, each summing its own weight and bias
    // gradients: the sums are then added in a fixed order, so results do not depend on
    // scheduling.
    let groups = n.div_ceil(group);
    let threads = rayon::current_num_threads();
    let part = groups.div_ceil(groups.min(threads).max(1)) * group;
    let parallel = groups < threads;
    // Zeroed group by group below, just before each is folded into.
    let fill = |x_grad: &mut [MaybeUninit<f32>]| -> Vec<(Vec<f32>, Vec<f64>)> {
        x_grad
            .par_chunks_mut(part * g.image())
            .zip(x.par_chunks(part * g.image()))
            .zip(grad.par_chunks(part * out * plane))
            .map(|((x_grad, x), grad)| {
                // By product, as `weights`.
                let mut weight_grad = vec![0f32; weight.len()];
                let mut bias_grad = vec![0f64; out];
                let (mut unfolded, mut spread, mut unfolded_grad) =
                    (Vec::new(), Vec::new(), Vec::new());
                let groups = x_grad
                    .chunks_mut(group * g.image())
                    .zip(x.chunks(group * g.image()))
                    .zip(grad.chunks(group * out * plane));
                for ((x_grad, images), grad) in groups {
                    let count = images.len() / g.image();
                    let (columns, row_stride) = (g.columns(count), count * span);
                    unfold(images, g, &mut unfolded);
                    // The output gradient as [out, columns]: as it lies for one image; for
                    // several, each image at its columns and zeros between.
                    let grad_rows = if count == 1 {
                        grad
                    } else {
                        spread.clear();
                        spread.resize(out * columns, 0.0);
                        for (o, row) in spread.chunks_mut(columns).enumerate() {
                            for image in 0..count {
                                row[image * span..][..plane]
                                    .copy_from_slice(&grad[(image * out + o) * plane..][..plane]);
                            }
                        }
                        &spread
                    };
                    for (total, row) in bias_grad.iter_mut().zip(grad_rows.chunks(columns)) {
                        let [sum] = sums(row, row, |v, _| [v]);
                        *total += sum;
                    }
                    let grad_rows = View::rows(grad_rows, [out, columns]);
                    let products = weight_grad
                        .chunks_mut(out * strips)
                        .zip(g.product_offsets());
                    for (weight_grad, offset) in products {
                        let strips =
                            View::strided(&unfolded, offset, [strips, columns], row_stride);
                        multiply(weight_grad, grad_rows, strips.transposed(), true, parallel);
                    }
                    let x_grad = zeroed(x_grad);
                    if !input_gradient {
                        continue;
                    }
                    // The first product writes each strip's first `columns` values and the
                    // others add from their offsets on: the rest of each strip starts at zero.
                    unfolded_grad.resize(strips * row_stride, 0.0);
                    for row in unfolded_grad.chunks_mut(row_stride) {
                        row[columns..].fill(0.0);
                    }
                    for (index, (&weight, offset)) in
                        weights.iter().zip(g.product_offsets()).enumerate()
                    {
                        multiply_strided(
                            &mut unfolded_grad[offset..],
                            row_stride,
                            weight.transposed(),
                            grad_rows,
                            index > 0,
                            parallel,
                        );
                    }
                    fold(&unfolded_grad, g, x_grad);
                }
                (weight_grad, bias_grad)
            })
            .collect()
    };
    // SAFETY: the groups cover the batch, and each group's gradient was zeroed before folding.
    let (x_grad, partial) = unsafe { written(x.len(), fill) };
    let mut weight_grad = vec![0f32; weight.len()];
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
        weight_from_products(weight_grad, g),
        bias_grad.into_iter().map(|v| v as f32).collect(),
    )
}

impl<B: CpuBackend> Conv2dBackend for B {
    fn conv2d_stride1(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: FloatTensor<B>,
        padding: [usize; 2],
        slope: f64,
    ) -> FloatTensor<B> {
        match Geometry::new(&x, &weight, padding) {
            Some(g) if all_f32(&[&x, &weight, &bias]) => {
                let [x, weight, bias] = [&x, &weight, &bias].map(B::f32s);
                let output = forward(&x, &weight, &bias, &g, slope as f32);
                B::float(output, [g.input[0], g.out, g.output[0], g.output[1]])
            }
            _ => {
                let output = Self::conv2d(x, weight, Some(bias), options(padding));
                leaky_relu::reference_forward_unless_linear::<B>(output, slope)
            }
        }
    }

    fn conv2d_stride1_backward(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: FloatTensor<B>,
        padding: [usize; 2],
        grad: FloatTensor<B>,
        input_gradient: bool,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        match Geometry::new(&x, &weight, padding) {
            Some(g) if all_f32(&[&x, &weight, &bias, &grad]) => {
                let [xs, ws, gs] = [&x, &weight, &grad].map(B::f32s);
                let (x_grad, weight_grad, bias_grad) = backward(&xs, &ws, &gs, &g, input_gradient);
                (
                    B::float(x_grad, x.shape()),
                    B::float(weight_grad, weight.shape()),
                    B::float(bias_grad, [g.out]),
                )
            }
            _ => burns_backward::<B>(x, weight, bias, padding, grad, input_gradient),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values::{case, close};
    use super::*;
    use burn::backend::Flex;

    /// The batch is split into groups of images and runs of groups by the number of threads:
    /// the results must not depend on it beyond float rounding.
    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let [x, weight, bias, grad] = case();
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
                let (x_grad, weight_grad, bias_grad) = backward(&x, &weight, &grad, &g, true);
                let output = forward(&x, &weight, &bias, &g, 1.0);
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
