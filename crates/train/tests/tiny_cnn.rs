//! The smallest CNN: Burn's forward, gradients and SGD step equal the hand computation on every
//! backend.

use train::{BackendName, device, tiny::TinyCnn};

fn check(cnn: &TinyCnn) {
    let hand = cnn.by_hand();
    for backend in [BackendName::Flex, BackendName::Ndarray, BackendName::Wgpu] {
        let device = device::init(backend).unwrap_or_else(|e| panic!("{backend}: {e}"));
        let burn = cnn.by_burn(&device);
        hand.compare(&burn, 1e-5)
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
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
    let err = TinyCnn::load(&path).unwrap_err();
    assert!(err.contains("tiny.toml") && err.contains("targte"), "{err}");
}
