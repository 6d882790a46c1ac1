//! Where fractional max-pooling pools: the pooling regions (Graham, arXiv 1412.6071, and
//! reference section 1.2), drawn on the host; the pooling itself is `ops::fractional_max_pool2d`.

use std::sync::{Arc, Mutex};

use ops::{PoolRegions, Span};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

/// How pooling regions are drawn along one axis (reference section 1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionKind {
    /// Fixed 2x2 windows at the region starts (neighbours overlap), else disjoint rectangles.
    pub overlapping: bool,
    /// Starts from `floor((j + u) * alpha)` with one random `u`, else a shuffle of 1- and 2-steps.
    pub pseudorandom: bool,
}

impl RegionKind {
    /// The `n_out` intervals that pool an axis of `n_in` cells, drawn with `rng`.
    ///
    /// The sizes must pass [`RegionKind::check_sizes`]; those from [`fmp_sizes`] with
    /// `1 < alpha <= 2` always do.
    pub fn draw(self, n_in: usize, n_out: usize, rng: &mut impl Rng) -> Vec<Span> {
        match (self.overlapping, self.pseudorandom) {
            (true, true) => overlapping_pseudorandom(n_in, n_out, rng.random()),
            (true, false) => {
                let starts = shuffled_steps(n_out - 1, n_in - 2, rng);
                let mut spans = Vec::with_capacity(n_out);
                let mut start = 0;
                spans.push(Span { start, len: 2 });
                for step in starts {
                    start += step;
                    spans.push(Span { start, len: 2 });
                }
                spans
            }
            (false, true) => disjoint_pseudorandom(n_in, n_out, rng.random()),
            (false, false) => {
                let mut start = 0;
                shuffled_steps(n_out, n_in, rng)
                    .into_iter()
                    .map(|len| {
                        let span = Span { start, len };
                        start += len;
                        span
                    })
                    .collect()
            }
        }
    }

    /// Whether `n_in -> n_out` can be pooled with steps of 1 and 2 by this kind.
    pub fn check_sizes(self, n_in: usize, n_out: usize) -> Result<(), String> {
        // Overlapping windows are 2 wide: their n_out - 1 steps cover n_in - 2 cells.
        let (span, steps) = if self.overlapping {
            (n_in as i64 - 2, n_out as i64 - 1)
        } else {
            (n_in as i64, n_out as i64)
        };
        if n_out == 0 || span < 0 || span < steps || span > 2 * steps {
            return Err(format!(
                "cannot pool {n_in} cells into {n_out} regions with steps of 1 and 2"
            ));
        }
        Ok(())
    }
}

/// Graham's and PyTorch's pseudorandom overlapping starts: with `alpha = (n_in - 2) / (n_out - 1)`,
/// `s_j = floor((j + u) alpha) - floor(u alpha)`, the last one pinned to `n_in - 2`.
pub fn overlapping_pseudorandom(n_in: usize, n_out: usize, u: f64) -> Vec<Span> {
    let last = (n_in - 2) as u32;
    if n_out == 1 {
        return vec![Span {
            start: last,
            len: 2,
        }];
    }
    let alpha = (n_in - 2) as f64 / (n_out - 1) as f64;
    let offset = (u * alpha).floor();
    (0..n_out)
        .map(|j| {
            let start = if j + 1 == n_out {
                last
            } else {
                (((j as f64 + u) * alpha).floor() - offset) as u32
            };
            Span { start, len: 2 }
        })
        .collect()
}

/// Pseudorandom disjoint boundaries `b_j = floor((j + u) alpha) - floor(u alpha)`,
/// `alpha = n_in / n_out`, so `b_0 = 0` and `b_{n_out} = n_in`.
fn disjoint_pseudorandom(n_in: usize, n_out: usize, u: f64) -> Vec<Span> {
    let alpha = n_in as f64 / n_out as f64;
    let offset = (u * alpha).floor();
    let boundary = |j: usize| (((j as f64 + u) * alpha).floor() - offset) as u32;
    (0..n_out)
        .map(|j| {
            let start = boundary(j);
            let end = if j + 1 == n_out {
                n_in as u32
            } else {
                boundary(j + 1)
            };
            Span {
                start,
                len: end - start,
            }
        })
        .collect()
}

/// `count` steps of 1 and 2 summing to `total`, in random order.
fn shuffled_steps(count: usize, total: usize, rng: &mut impl Rng) -> Vec<u32> {
    let twos = total - count;
    let mut steps: Vec<u32> = (0..count).map(|i| if i < twos { 2 } else { 1 }).collect();
    steps.shuffle(rng);
    steps
}

/// The seeded source of pooling regions, shared by the FMP layers of a network.
///
/// Clones share the generator, so the training and validation copies of a model continue one
/// stream and a seed reproduces every draw of a run.
#[derive(Clone, Debug)]
pub struct RegionSampler {
    rng: Arc<Mutex<StdRng>>,
}

impl RegionSampler {
    /// A sampler seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
        }
    }

    /// Restarts the generator at `seed`, for every clone.
    pub fn reseed(&self, seed: u64) {
        *self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = StdRng::seed_from_u64(seed);
    }

    /// Fresh regions for `batch` images of `channels` channels, `input` (height, width) to
    /// `out`, rows and columns drawn independently.
    pub fn draw(
        &self,
        kind: RegionKind,
        per_channel: bool,
        batch: usize,
        channels: usize,
        input: [usize; 2],
        out: [usize; 2],
    ) -> PoolRegions {
        let groups = if per_channel { channels } else { 1 };
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut rows = Vec::with_capacity(batch * groups * out[0]);
        let mut cols = Vec::with_capacity(batch * groups * out[1]);
        for _ in 0..batch * groups {
            rows.extend(kind.draw(input[0], out[0], &mut *rng));
            cols.extend(kind.draw(input[1], out[1], &mut *rng));
        }
        PoolRegions {
            groups,
            out,
            rows: rows.into(),
            cols: cols.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp::fmp_sizes;

    const KINDS: [RegionKind; 4] = [
        RegionKind {
            overlapping: true,
            pseudorandom: true,
        },
        RegionKind {
            overlapping: true,
            pseudorandom: false,
        },
        RegionKind {
            overlapping: false,
            pseudorandom: true,
        },
        RegionKind {
            overlapping: false,
            pseudorandom: false,
        },
    ];

    /// Every (n_in, n_out) pair that the MNIST and CIFAR networks pool.
    fn pooled_pairs() -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for (alpha, layers) in [(2f64.sqrt(), 6), (2f64.cbrt(), 12)] {
            let sizes = fmp_sizes(alpha, layers);
            pairs.extend((0..layers).map(|b| (sizes[1 + 2 * b], sizes[2 + 2 * b])));
        }
        pairs.extend([(25, 18), (3, 2), (2, 1)]);
        pairs
    }

    #[test]
    fn pytorch_test_vectors() {
        // aten FractionalMaxPool2d, in = 25, out = 18, k = 2 (reference section 2).
        let starts = |u| -> Vec<u32> {
            overlapping_pseudorandom(25, 18, u)
                .iter()
                .map(|s| s.start)
                .collect()
        };
        assert_eq!(
            starts(0.5),
            [
                0, 2, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19, 20, 22, 23
            ]
        );
        assert_eq!(
            starts(0.0),
            [
                0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18, 20, 21, 23
            ]
        );
    }

    #[test]
    fn steps_are_one_or_two_and_ends_are_pinned() {
        let mut rng = StdRng::seed_from_u64(7);
        for (n_in, n_out) in pooled_pairs() {
            for kind in KINDS {
                kind.check_sizes(n_in, n_out).unwrap();
                for _ in 0..50 {
                    let spans = kind.draw(n_in, n_out, &mut rng);
                    assert_eq!(spans.len(), n_out, "{kind:?} {n_in}->{n_out}");
                    assert_eq!(spans[0].start, 0, "{kind:?} {n_in}->{n_out}");
                    let last = spans[n_out - 1];
                    assert_eq!(
                        last.start + last.len,
                        n_in as u32,
                        "{kind:?} {n_in}->{n_out}"
                    );
                    for pair in spans.windows(2) {
                        let step = pair[1].start - pair[0].start;
                        assert!(
                            step == 1 || step == 2,
                            "{kind:?} {n_in}->{n_out}: {spans:?}"
                        );
                    }
                    for span in &spans {
                        let expected = if kind.overlapping { 2 } else { span.len };
                        assert!(span.len == expected && (1..=2).contains(&span.len));
                        if !kind.overlapping {
                            // Disjoint regions tile the axis: each starts where the last ended.
                            assert!(
                                spans
                                    .windows(2)
                                    .all(|p| p[0].start + p[0].len == p[1].start)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn random_kinds_use_the_right_number_of_ones_and_twos_in_varying_order() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n_in, n_out) = (25, 18);
        let steps = |spans: &[Span]| -> Vec<u32> {
            spans.windows(2).map(|p| p[1].start - p[0].start).collect()
        };
        let overlapping = RegionKind {
            overlapping: true,
            pseudorandom: false,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let s = steps(&overlapping.draw(n_in, n_out, &mut rng));
            assert_eq!(s.iter().filter(|&&x| x == 1).count(), 2 * n_out - n_in);
            assert_eq!(s.iter().filter(|&&x| x == 2).count(), n_in - n_out - 1);
            seen.insert(s);
        }
        assert!(seen.len() > 10, "shuffles should differ");
        let disjoint = RegionKind {
            overlapping: false,
            pseudorandom: false,
        };
        let lens: Vec<u32> = disjoint
            .draw(n_in, n_out, &mut rng)
            .iter()
            .map(|s| s.len)
            .collect();
        assert_eq!(lens.iter().filter(|&&x| x == 1).count(), 2 * n_out - n_in);
        assert_eq!(lens.iter().filter(|&&x| x == 2).count(), n_in - n_out);
    }

    #[test]
    fn sampler_is_reproducible_and_draws_fresh_regions() {
        let kind = KINDS[0];
        let a = RegionSampler::new(5);
        let b = RegionSampler::new(5);
        let first = a.draw(kind, false, 4, 3, [25; 2], [18; 2]);
        assert_eq!(first.rows, b.draw(kind, false, 4, 3, [25; 2], [18; 2]).rows);
        assert_eq!(first.rows.len(), 4 * 18);
        let second = a.draw(kind, false, 4, 3, [25; 2], [18; 2]);
        assert_ne!(first.rows, second.rows, "each forward pass draws anew");
        assert_ne!(first.rows, first.cols, "x and y are independent");
        let per_channel = a.draw(kind, true, 4, 3, [25; 2], [18; 2]);
        assert_eq!(per_channel.rows.len(), 4 * 3 * 18);
        assert_ne!(per_channel.of(0, 0), per_channel.of(0, 1));
        a.reseed(5);
        assert_eq!(a.draw(kind, false, 4, 3, [25; 2], [18; 2]).rows, first.rows);
    }
}
