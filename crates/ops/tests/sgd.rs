//! The SGD step (`ops::Sgd`) on every backend against Burn's `Sgd`.

mod common;

use burn::optim::{
    Optimizer, RecordState, SgdConfig, StateSink, StateSource, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};
use burn::prelude::*;
use burn::tensor::{Distribution, Tolerance};
use common::{BACKENDS, device};

/// Three steps of this optimiser and of Burn's `Sgd` from the same parameter with the same
/// gradients, on every backend (the loop on flex and ndarray, the step's kernels on wgpu):
/// the same parameters, and states recorded under the same names with the same values.
#[test]
fn steps_and_records_equal_burns_sgd() {
    for backend in BACKENDS {
        let device = device(backend);
        for (momentum, nesterov, decay) in
            [(0.9, true, 0.0), (0.8, false, 5e-3), (0.0, false, 1e-2)]
        {
            let what = format!("{backend} momentum {momentum} nesterov {nesterov} decay {decay}");
            let ours = ops::Sgd::new(momentum, nesterov, decay);
            let burns = SgdConfig::new()
                .with_momentum((momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0)
                        .with_nesterov(nesterov)
                }))
                .with_weight_decay((decay > 0.0).then(|| WeightDecayConfig::new(decay as f32)))
                .build();
            let start = Tensor::<2>::random([37, 29], Distribution::Normal(0.0, 1.0), &device);
            let (mut a, mut b) = (start.clone(), start);
            let (mut state_a, mut state_b) = (None, None);
            for _ in 0..3 {
                let grad = Tensor::<2>::random([37, 29], Distribution::Normal(0.0, 1.0), &device);
                (a, state_a) = ours.step(0.05, a, grad.clone(), state_a);
                (b, state_b) = burns.step(0.05, b, grad, state_b);
            }
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-6));
            let (mut sink_a, mut sink_b) = (StateSink::default(), StateSink::default());
            state_a.expect("a state").state_flatten("p", &mut sink_a);
            state_b.expect("a state").state_flatten("p", &mut sink_b);
            let names = |sink: &StateSink| -> Vec<String> {
                sink.tensors.iter().map(|(name, _)| name.clone()).collect()
            };
            assert_eq!(names(&sink_a), names(&sink_b), "{what}");
            assert_eq!(names(&sink_a).is_empty(), momentum == 0.0, "{what}");
            for ((_, x), (_, y)) in sink_a.tensors.iter().zip(&sink_b.tensors) {
                x.assert_approx_eq::<f32>(y, Tolerance::absolute(1e-6));
            }
            // Burn's record loads into this optimiser's state.
            let mut source = StateSource::new(Default::default());
            for (name, data) in sink_b.tensors {
                source.insert_tensor(name, data);
            }
            let loaded =
                <ops::Sgd as Optimizer>::State::<2>::state_unflatten("p", &mut source, &device)
                    .expect("a state");
            assert_eq!(loaded.momentum.is_some(), momentum > 0.0, "{what}");
        }
    }
}
