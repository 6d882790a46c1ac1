//! The FMP network's spatial sizes, computed backwards from its 1x1 output.

/// Spatial sizes of an FMP network, computed backwards from a 1x1 output.
///
/// The network is `layers` blocks of (2x2 valid convolution, FMP by `alpha`), then a 2x2
/// convolution down to 1x1. Walking back from 1: the head convolution adds one; each FMP layer
/// has `N_in = round(alpha * N_out)`, plus one if that equals `N_out`; each block's convolution
/// adds one. The result lists every size from the input to the output, e.g. for MNIST
/// (`alpha` = sqrt 2, 6 layers): `[36, 35, 25, 24, 17, 16, 11, 10, 7, 6, 4, 3, 2, 1]`:
/// input, then (after convolution, after pooling) per block, then the head's 1.
pub fn fmp_sizes(alpha: f64, layers: usize) -> Vec<usize> {
    let mut sizes = vec![1, 2];
    let mut size = 2;
    for _ in 0..layers {
        let pooled_from = pooled_from(alpha, size);
        sizes.push(pooled_from);
        size = pooled_from + 1;
        sizes.push(size);
    }
    sizes.reverse();
    sizes
}

/// The side an FMP layer by `alpha` pools down to `size`: `round(alpha * size)`, at least one
/// more than `size`.
pub(crate) fn pooled_from(alpha: f64, size: usize) -> usize {
    let pooled_from = (alpha * size as f64).round() as usize;
    if pooled_from == size {
        pooled_from + 1
    } else {
        pooled_from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_grahams_chains() {
        assert_eq!(
            fmp_sizes(2f64.sqrt(), 6),
            [36, 35, 25, 24, 17, 16, 11, 10, 7, 6, 4, 3, 2, 1]
        );
        assert_eq!(
            fmp_sizes(2f64.cbrt(), 12),
            [
                94, 93, 74, 73, 58, 57, 45, 44, 35, 34, 27, 26, 21, 20, 16, 15, 12, 11, 9, 8, 6, 5,
                4, 3, 2, 1
            ]
        );
    }
}
