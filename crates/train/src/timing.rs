//! Timing work on a device: untimed warm-up runs, then timed ones, each between two syncs so
//! that queued GPU work is neither missed nor counted twice.

use std::time::Instant;

use anyhow::{Result, anyhow};
use burn::prelude::*;

use crate::progress::Phase;

/// The optimisation level this program was compiled at (the `OPT_LEVEL` of its cargo profile).
const OPT_LEVEL: &str = env!("TRAIN_OPT_LEVEL");

/// What a run or a timing says when this program was built unoptimised (a dev profile set back
/// to opt-level 0, `cargo install --debug`): it runs many times slower, and its timings say
/// nothing of the project's speed.
pub fn unoptimised_build() -> Option<String> {
    unoptimised(OPT_LEVEL).then(|| {
        format!(
            "this is an unoptimised build (opt-level {OPT_LEVEL}): it runs many times slower \
             than an optimised one. Build with the workspace's profiles, which optimise: \
             cargo run -p train (or --release), without overriding opt-level"
        )
    })
}

fn unoptimised(level: &str) -> bool {
    matches!(level, "0" | "1")
}

/// Milliseconds of each of `steps` timed runs of `run`, after `warmup` untimed ones, shown as
/// the phase `name`. Before each run, `prepare(step)` makes its input outside the timing.
pub fn time_ms<T>(
    name: &str,
    device: &Device,
    warmup: usize,
    steps: usize,
    mut prepare: impl FnMut(usize) -> T,
    mut run: impl FnMut(T),
) -> Result<Vec<f64>> {
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow!("device sync failed: {e:?}"))
    };
    let mut times = Vec::with_capacity(steps);
    let name = match warmup {
        0 => name.to_string(),
        _ => format!("{name}, {warmup} warm-up + {steps} timed"),
    };
    let phase = Phase::start(name, warmup + steps, "runs");
    for step in 0..warmup + steps {
        let input = prepare(step);
        sync()?;
        let began = Instant::now();
        run(input);
        sync()?;
        if step >= warmup {
            times.push(began.elapsed().as_secs_f64() * 1e3);
        }
        phase.advance(1);
    }
    Ok(times)
}

/// The median and the minimum of `times` (at least one).
pub fn median_and_min(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0])
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_levels_below_two_are_unoptimised() {
        for (level, expected) in [("0", true), ("1", true), ("2", false), ("3", false)] {
            assert_eq!(super::unoptimised(level), expected, "{level}");
        }
        for level in ["s", "z"] {
            assert!(!super::unoptimised(level), "{level}");
        }
        // This build (the test profile inherits the dev profile, which optimises).
        assert_eq!(super::unoptimised_build(), None);
    }
}
