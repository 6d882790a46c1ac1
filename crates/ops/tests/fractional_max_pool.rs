//! Fractional max-pooling against naive loops, on every backend (flex's loops, the GPU kernels on
//! wgpu, the tensor-op formulation on ndarray): forward values, the gradient (an argmax scatter),
//! the tensor-op reference, and a finite-difference check. LeNet's plain 2x2 max-pool is the
//! same operation over fixed windows (Burn's max-pool on ndarray) and is checked the same way.

mod common;

use std::sync::Arc;

use burn::{prelude::*, tensor::Distribution};
use common::{device, f32s};
use ops::{PoolRegions, Span, fractional_max_pool2d};

/// A small seeded generator (a 64-bit LCG), so that the regions need nothing from outside.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// `n_out` valid intervals over `n_in` cells in a random order of 1- and 2-steps: overlapping
/// 2-wide windows from 0 to the last two cells, or disjoint intervals of 1 or 2 cells that
/// cover the axis (the two kinds of reference section 1.2; how the FMP net draws them is
/// tested with the net).
fn spans(n_in: usize, n_out: usize, overlapping: bool, rng: &mut Lcg) -> Vec<Span> {
    let (count, total) = if overlapping {
        (n_out - 1, n_in - 2)
    } else {
        (n_out, n_in)
    };
    let mut steps: Vec<u32> = (0..count)
        .map(|i| 1 + u32::from(i < total - count))
        .collect();
    for i in (1..steps.len()).rev() {
        steps.swap(i, rng.next() as usize % (i + 1));
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(n_out);
    for i in 0..n_out {
        let len = if overlapping { 2 } else { steps[i] };
        out.push(Span { start, len });
        start += if overlapping {
            steps.get(i).copied().unwrap_or(0)
        } else {
            len
        };
    }
    out
}

/// Regions for `batch` images of `channels` channels, per image or per image and channel.
fn draw(
    overlapping: bool,
    per_channel: bool,
    [batch, channels]: [usize; 2],
    [n_in, n_out]: [usize; 2],
    rng: &mut Lcg,
) -> PoolRegions {
    let groups = if per_channel { channels } else { 1 };
    let mut rows = Vec::new();
    let mut cols = Vec::new();
    for _ in 0..batch * groups {
        rows.extend(spans(n_in, n_out, overlapping, rng));
        cols.extend(spans(n_in, n_out, overlapping, rng));
    }
    PoolRegions {
        groups,
        out: [n_out; 2],
        rows: Arc::from(rows),
        cols: Arc::from(cols),
    }
}

#[test]
fn generated_regions_are_valid() {
    let mut rng = Lcg(5);
    for overlapping in [true, false] {
        for (n_in, n_out) in [(9, 6), (25, 18), (35, 25)] {
            let spans = spans(n_in, n_out, overlapping, &mut rng);
            assert_eq!(spans.len(), n_out);
            assert_eq!(spans[0].start, 0);
            let last = spans[n_out - 1];
            assert_eq!((last.start + last.len) as usize, n_in);
            for pair in spans.windows(2) {
                assert!((1..=2).contains(&(pair[1].start - pair[0].start)));
            }
        }
    }
}

/// Maxima and the flat index (row * w + col) of each, by plain loops over the regions.
fn naive_pool(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    regions: &PoolRegions,
) -> (Vec<f32>, Vec<usize>) {
    let mut maxima = Vec::new();
    let mut argmax = Vec::new();
    for image in 0..n {
        for channel in 0..c {
            let plane = &x[(image * c + channel) * h * w..][..h * w];
            let (rows, cols) = regions.of(image, channel);
            for r in rows {
                for col in cols {
                    let mut best = None::<usize>;
                    for row in r.start..r.start + r.len {
                        for cc in col.start..col.start + col.len {
                            let i = row as usize * w + cc as usize;
                            if best.is_none_or(|b| plane[i] > plane[b]) {
                                best = Some(i);
                            }
                        }
                    }
                    let best = best.expect("regions are never empty");
                    maxima.push(plane[best]);
                    argmax.push(best);
                }
            }
        }
    }
    (maxima, argmax)
}

/// The input gradient by a naive scatter: each output's gradient added where its maximum was.
fn naive_grad(upstream: &[f32], argmax: &[usize], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let per_plane = upstream.len() / (n * c);
    let mut grad = vec![0f32; n * c * h * w];
    for (k, (&g, &i)) in upstream.iter().zip(argmax).enumerate() {
        grad[(k / per_plane) * h * w + i] += g;
    }
    grad
}

fn check_backend(backend: &str) {
    let train = device(backend).autodiff();
    let mut rng = Lcg(11);
    for (n_in, n_out) in [(9, 6), (25, 18)] {
        let shape = [2, 3, n_in, n_in];
        let x = Tensor::<4>::random(shape, Distribution::Default, &Device::flex()).into_data();
        let host: Vec<f32> = x.try_to_vec().unwrap();
        // Every kind of region, shared and per channel, and a plain max-pool's 2x2 windows (on
        // backends without loops of their own, Burn's max-pool).
        let mut cases = vec![(
            format!("{backend} 2x2 windows {n_in}"),
            PoolRegions::windows(2, [n_in; 2]),
        )];
        for overlapping in [true, false] {
            for per_channel in [false, true] {
                cases.push((
                    format!(
                        "{backend} overlapping={overlapping} per_channel={per_channel} \
                         {n_in}->{n_out}"
                    ),
                    draw(overlapping, per_channel, [2, 3], [n_in, n_out], &mut rng),
                ));
            }
        }
        for (label, regions) in cases {
            let (expected, argmax) = naive_pool(&host, shape, &regions);
            let input = Tensor::<4>::from_data(x.clone(), &train).require_grad();
            let pooled = fractional_max_pool2d(input.clone(), &regions);
            let [oh, ow] = regions.out;
            assert_eq!(pooled.dims(), [2, 3, oh, ow], "{label}");
            assert_eq!(f32s(pooled.clone()), expected, "{label}: forward");

            let upstream =
                Tensor::<4>::random(pooled.dims(), Distribution::Default, &Device::flex())
                    .into_data();
            let up_host: Vec<f32> = upstream.try_to_vec().unwrap();
            let loss = (pooled * Tensor::from_data(upstream, &train)).sum();
            let grads = loss.backward();
            let grad = input.grad(&grads).expect("input is tracked");
            let got = f32s(grad);
            let want = naive_grad(&up_host, &argmax, shape);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "{label}: gradient at {i}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn forward_and_backward_match_naive_loops_on_flex() {
    check_backend("flex");
}

#[test]
fn forward_and_backward_match_naive_loops_on_ndarray() {
    check_backend("ndarray");
}

#[test]
fn forward_and_backward_match_naive_loops_on_wgpu() {
    check_backend("wgpu");
}

/// Flex's and ndarray's loops and wgpu's kernels give the same maxima, bit for bit (each is
/// also checked against naive loops above, and the loops against the tensor-op formulation in
/// the crate's unit tests).
#[test]
fn every_backend_pools_to_the_same_values() {
    let x = Tensor::<4>::random([4, 5, 35, 35], Distribution::Default, &device("flex"));
    let on = |backend: &str| Tensor::<4>::from_data(x.to_data(), &device(backend));
    let (on_ndarray, on_wgpu) = (on("ndarray"), on("wgpu"));
    let mut rng = Lcg(3);
    for overlapping in [true, false] {
        let regions = draw(overlapping, true, [4, 5], [35, 25], &mut rng);
        let reference = f32s(fractional_max_pool2d(x.clone(), &regions));
        for (backend, x) in [("ndarray", &on_ndarray), ("wgpu", &on_wgpu)] {
            let pooled = fractional_max_pool2d(x.clone(), &regions);
            assert_eq!(
                f32s(pooled),
                reference,
                "{backend} overlapping={overlapping}"
            );
        }
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let device = Device::flex().autodiff();
    let shape = [1, 2, 9, 9];
    let count = shape.iter().product::<usize>();
    // A fixed pseudo-random permutation: distinct values 0.1 apart, so a step of 0.01 never
    // changes which cell holds a maximum; weights from the same generator.
    let mut rng = Lcg(12345);
    let mut next = move || rng.next();
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        order.swap(i, next() as usize % (i + 1));
    }
    let host: Vec<f32> = order.iter().map(|&v| v as f32 * 0.1 - 8.0).collect();
    let weights: Vec<f64> = (0..2 * 6 * 6)
        .map(|_| (next() % 2001) as f64 / 1000.0 - 1.0)
        .collect();
    let regions = draw(true, false, [1, 2], [9, 6], &mut Lcg(9));
    // The loss sum(weights * pool(x)), summed in f64 so that rounding cannot hide an error.
    let loss = |x: Vec<f32>| -> f64 {
        let x = Tensor::<4>::from_data(TensorData::new(x, shape), &device);
        let pooled = f32s(fractional_max_pool2d(x, &regions));
        pooled
            .iter()
            .zip(&weights)
            .map(|(&y, w)| y as f64 * w)
            .sum()
    };
    let x = Tensor::<4>::from_data(TensorData::new(host.clone(), shape), &device).require_grad();
    let w = Tensor::<4>::from_data(
        TensorData::new(weights.iter().map(|&w| w as f32).collect(), [1, 2, 6, 6]),
        &device,
    );
    let grads = (fractional_max_pool2d(x.clone(), &regions) * w)
        .sum()
        .backward();
    let analytic = f32s(x.grad(&grads).unwrap());
    let eps = 0.01f32;
    for i in 0..count {
        let mut plus = host.clone();
        plus[i] += eps;
        let mut minus = host.clone();
        minus[i] -= eps;
        let step = (plus[i] - minus[i]) as f64;
        let numeric = (loss(plus) - loss(minus)) / step;
        assert!(
            (numeric - analytic[i] as f64).abs() < 1e-4,
            "cell {i}: finite difference {numeric} vs autodiff {}",
            analytic[i]
        );
    }
    assert!(analytic.iter().any(|&g| g != 0.0) && analytic.contains(&0.0));
}
