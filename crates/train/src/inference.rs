//! The inference pass the commands share: probabilities after one pass and averaged over
//! several (an FMP net's ensemble), the predicted class, and tensors read back from a device.

use anyhow::Result;
use burn::{prelude::*, tensor::activation::softmax};
use models::Network;

/// `99.12% (error 0.88%)`.
pub fn percent_and_error(accuracy: f64) -> String {
    format!("{accuracy:.2}% (error {:.2}%)", 100.0 - accuracy)
}

/// `, 12-pass 99.40% (error 0.60%)` after several passes, nothing after one.
pub fn averaged_note(passes: usize, accuracy: f64) -> String {
    if passes > 1 {
        format!(", {passes}-pass {}", percent_and_error(accuracy))
    } else {
        String::new()
    }
}

/// The index of the largest of `values`, the first of equals (0 when empty): the predicted
/// class of a row of probabilities.
pub fn argmax(values: &[f32]) -> usize {
    (0..values.len())
        .max_by(|&a, &b| values[a].total_cmp(&values[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

/// A tensor's values, read back from its device.
pub fn host_values<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>> {
    x.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read values back from the device: {e:?}"))
}

/// Softmax probabilities of `images` after the first forward pass and averaged over `passes`
/// passes (at least one): an FMP net pools over new regions on each, so the passes form an
/// ensemble. The regions are drawn from `seed`, so that an image's answer depends on the
/// image, the batch it is given in and the seed, not on what was classified before.
pub fn pass_probabilities(
    model: &Network,
    images: Tensor<4>,
    passes: usize,
    seed: u64,
) -> [Tensor<2>; 2] {
    model.reseed(seed);
    let first = softmax(model.forward(images.clone()), 1);
    let mut sum = first.clone();
    for _ in 1..passes.max(1) {
        sum = sum + softmax(model.forward(images.clone()), 1);
    }
    [first, sum.div_scalar(passes.max(1) as f64)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn argmax_takes_the_first_of_equal_largest_values() {
        assert_eq!(super::argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(super::argmax(&[]), 0);
    }
}
