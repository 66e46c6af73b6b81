//! Which stages fail when: every iteration, every stage fails with a fixed probability, all its replicas
//! at once (a lost node takes its whole stage, as in the paper's simulation), from a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A failure rate: the share of nodes that fail per hour, with the per-iteration probability the
/// paper's 500M-parameter configuration derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FailureRate {
    /// Share of stages failing per hour (0.05 = 5%).
    pub hourly: f64,
    /// Probability that a given stage fails in a given iteration.
    pub per_iteration: f64,
}

impl FailureRate {
    /// The four rates of the paper — 5%, 10%, 16% and 33% per hour — with its per-iteration
    /// probabilities 0.0009, 0.002, 0.004 and 0.01.
    pub const PAPER: [Self; 4] = [
        Self { hourly: 0.05, per_iteration: 0.0009 },
        Self { hourly: 0.10, per_iteration: 0.002 },
        Self { hourly: 0.16, per_iteration: 0.004 },
        Self { hourly: 0.33, per_iteration: 0.01 },
    ];

    /// A rate of `hourly` for iterations of `iteration_s` seconds: `1 − (1 − hourly)^(iteration_s / 3600)`.
    pub fn from_hourly(hourly: f64, iteration_s: f64) -> Self {
        Self { hourly, per_iteration: 1.0 - (1.0 - hourly).powf(iteration_s / 3600.0) }
    }

    /// A label such as `10%/h`.
    pub fn label(&self) -> String {
        format!("{:.0}%/h", self.hourly * 100.0)
    }
}

/// The failures of a run: `(step, worker index)` for each replica of each failing stage, worker index
/// `stage · replicas + replica`. Steps `0..steps`; stages in `protect` never fail.
pub fn stage_failures(
    per_iteration: f64,
    stages: usize,
    replicas: usize,
    steps: u64,
    protect: &[usize],
    seed: u64,
) -> Vec<(u64, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xFA11_0E55);
    let mut out = Vec::new();
    // Any step may fail, the first one included, as in the released simulation.
    for step in 0..steps {
        for stage in 0..stages {
            let hit = rng.random::<f64>() < per_iteration;
            if hit && !protect.contains(&stage) {
                out.extend((0..replicas).map(|r| (step, stage * replicas + r)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_follow_the_rate_and_the_seed() {
        let a = stage_failures(0.01, 6, 2, 10_000, &[], 3);
        assert_eq!(a, stage_failures(0.01, 6, 2, 10_000, &[], 3), "same seed, same failures");
        assert_ne!(a, stage_failures(0.01, 6, 2, 10_000, &[], 4));
        let stage_events = a.len() / 2;
        // 6 stages x 9,999 steps x 0.01 ≈ 600, within a generous band.
        assert!((500..700).contains(&stage_events), "{stage_events}");
        assert!(a.chunks(2).all(|pair| pair[0].0 == pair[1].0 && pair[0].1 + 1 == pair[1].1), "whole stages fail");
        let protected = stage_failures(0.01, 6, 1, 10_000, &[0, 5], 3);
        assert!(protected.iter().all(|&(_, w)| w != 0 && w != 5));
        // Every step can fail, the first one too.
        let always = stage_failures(1.0, 2, 1, 3, &[], 3);
        assert_eq!(always, vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
    }

    #[test]
    fn the_hourly_formula_is_close_to_the_papers_table_at_low_rates() {
        let r = FailureRate::from_hourly(0.05, 63.0);
        assert!((r.per_iteration - 0.0009).abs() < 1e-4, "{r:?}");
        assert_eq!(FailureRate::PAPER[1].label(), "10%/h");
    }
}
