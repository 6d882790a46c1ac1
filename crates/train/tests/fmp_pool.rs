//! Fractional max-pooling against naive loops, on every backend: forward values, the gradient
//! (an argmax scatter), the tensor-op reference, and a finite-difference check. LeNet's plain
//! 2x2 max-pool is the same operation over fixed windows (Burn's max-pool on backends without
//! loops of their own) and is checked the same way.

use burn::backend::Dispatch;
use burn::{prelude::*, tensor::Distribution};
use models::{
    PoolRegions, RegionKind, RegionSampler, fmp_forward_tensor_ops, fractional_max_pool2d,
};
use train::{BackendName, device};

const KINDS: [(bool, bool); 4] = [(true, true), (true, false), (false, true), (false, false)];

fn kind((overlapping, pseudorandom): (bool, bool)) -> RegionKind {
    RegionKind {
        overlapping,
        pseudorandom,
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

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

fn check_backend(backend: BackendName) {
    let device = device::init(backend).unwrap_or_else(|e| panic!("{backend}: {e}"));
    let train = device.clone().autodiff();
    let sampler = RegionSampler::new(11);
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
        for k in KINDS {
            for per_channel in [false, true] {
                cases.push((
                    format!("{backend} {k:?} per_channel={per_channel} {n_in}->{n_out}"),
                    sampler.draw(kind(k), per_channel, 2, 3, [n_in; 2], [n_out; 2]),
                ));
            }
        }
        for (label, regions) in cases {
            let (expected, argmax) = naive_pool(&host, shape, &regions);
            let input = Tensor::<4>::from_data(x.clone(), &train).require_grad();
            let pooled = fractional_max_pool2d(input.clone(), &regions);
            let [oh, ow] = regions.out;
            assert_eq!(pooled.dims(), [2, 3, oh, ow], "{label}");
            assert_eq!(values(pooled.clone()), expected, "{label}: forward");

            let upstream =
                Tensor::<4>::random(pooled.dims(), Distribution::Default, &Device::flex())
                    .into_data();
            let up_host: Vec<f32> = upstream.try_to_vec().unwrap();
            let loss = (pooled * Tensor::from_data(upstream, &train)).sum();
            let grads = loss.backward();
            let grad = input.grad(&grads).expect("input is tracked");
            let got = values(grad);
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
    check_backend(BackendName::Flex);
}

#[test]
fn forward_and_backward_match_naive_loops_on_ndarray() {
    check_backend(BackendName::Ndarray);
}

#[test]
fn forward_and_backward_match_naive_loops_on_wgpu() {
    check_backend(BackendName::Wgpu);
}

#[test]
fn dedicated_op_matches_the_tensor_op_reference() {
    // Flex runs its own loops; the reference is the tensor-op formulation on the same backend.
    let device = Device::flex();
    let sampler = RegionSampler::new(3);
    let x = Tensor::<4>::random([4, 5, 35, 35], Distribution::Default, &device);
    for k in KINDS {
        let regions = sampler.draw(kind(k), true, 4, 5, [35; 2], [25; 2]);
        let dedicated = fractional_max_pool2d(x.clone(), &regions);
        let (reference, _) =
            fmp_forward_tensor_ops::<Dispatch>(x.clone().into_dispatch(), &regions);
        assert_eq!(
            values(dedicated),
            values(Tensor::from_dispatch(reference)),
            "{k:?}"
        );
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let device = Device::flex().autodiff();
    let shape = [1, 2, 9, 9];
    let count = shape.iter().product::<usize>();
    // A fixed pseudo-random permutation: distinct values 0.1 apart, so a step of 0.01 never
    // changes which cell holds a maximum; weights from the same generator.
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        order.swap(i, next() as usize % (i + 1));
    }
    let host: Vec<f32> = order.iter().map(|&v| v as f32 * 0.1 - 8.0).collect();
    let weights: Vec<f64> = (0..2 * 6 * 6)
        .map(|_| (next() % 2001) as f64 / 1000.0 - 1.0)
        .collect();
    let regions = RegionSampler::new(9).draw(kind(KINDS[1]), false, 1, 2, [9; 2], [6; 2]);
    // The loss sum(weights * pool(x)), summed in f64 so that rounding cannot hide an error.
    let loss = |x: Vec<f32>| -> f64 {
        let x = Tensor::<4>::from_data(TensorData::new(x, shape), &device);
        let pooled = values(fractional_max_pool2d(x, &regions));
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
    let analytic = values(x.grad(&grads).unwrap());
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
