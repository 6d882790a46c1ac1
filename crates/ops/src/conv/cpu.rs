//! The convolution on the CPU backends (flex, ndarray): each thread unfolds a few of its own
//! images at a time and runs single-threaded matrix products on them (see the module above).

use std::mem::MaybeUninit;
use std::ops::Range;

use burn::backend::{TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;

use super::{Conv2dBackend, burns_backward, options};
use crate::cpu::{CpuBackend, all_f32, sums, written, zeroed};
use crate::matmul::{View, multiply};

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
    pub(super) fn input_row(&self, ky: usize, oy: usize) -> Option<usize> {
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
pub(super) fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &Geometry) -> Vec<f32> {
    let [n, ..] = g.input;
    let (out, plane, group) = (g.out, g.plane(), g.group());
    let weight = View::rows(weight, [out, g.rows()]);
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
    };
    // SAFETY: the groups cover the batch, and each wrote every channel and cell of its images.
    unsafe { written(len, fill) }.0
}

/// The flex backward pass: the gradients of the input, the weight and the bias.
pub(super) fn backward(
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
    let fill = |x_grad: &mut [MaybeUninit<f32>]| -> Vec<(Vec<f32>, Vec<f64>)> {
        x_grad
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
            .collect()
    };
    // SAFETY: the groups cover the batch, and each group's gradient was zeroed before folding.
    let (x_grad, partial) = unsafe { written(x.len(), fill) };
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
