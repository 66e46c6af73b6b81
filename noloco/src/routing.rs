//! NoLoCo's random pipeline routing: the activations of micro-batch `m` leaving stage `s` of replica `r`
//! go to stage `s + 1` of replica `π(r)`, with `π` a permutation drawn from a shared seed for every
//! `(step, micro-batch, stage)`; the gradient flows back along the same edge. Being a permutation, every
//! replica of the next stage still receives exactly one copy of each micro-batch index, so the load
//! stays balanced, while each replica's weights see data that passed through the others.

use pipeline::{Hop, Router};

use crate::groups::shared_permutation;

/// Routes each micro-batch to a random replica of the next stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomRouter {
    /// Seed shared by every worker.
    pub seed: u64,
}

impl RandomRouter {
    /// The replica of stage `stage + 1` that micro-batch `micro` of `step` goes to from replica
    /// `replica` of `stage`.
    pub fn next_replica(&self, step: u64, micro: u32, stage: usize, replica: usize, replicas: usize) -> usize {
        let counter = step.wrapping_mul(1 << 20) ^ (u64::from(micro) << 8) ^ stage as u64;
        shared_permutation(self.seed ^ 0x5EED_0FD1_FAC0, counter, replicas)[replica]
    }
}

impl Router for RandomRouter {
    fn path(&self, step: u64, micro: u32, origin: usize, stages: usize, replicas: usize) -> Vec<Hop> {
        let mut path = vec![(0, origin)];
        for stage in 1..stages {
            let (_, at) = path[stage - 1];
            path.push((stage, self.next_replica(step, micro, stage - 1, at, replicas)));
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_next_stage_replica_gets_one_copy_and_paths_vary() {
        let router = RandomRouter { seed: 4 };
        let mut moved = 0;
        for step in 0..20 {
            for micro in 0..3 {
                let mut targets: Vec<usize> = (0..8).map(|r| router.next_replica(step, micro, 0, r, 8)).collect();
                moved += targets.iter().enumerate().filter(|(r, t)| r != *t).count();
                targets.sort_unstable();
                assert_eq!(targets, (0..8).collect::<Vec<_>>(), "a permutation");
            }
        }
        assert!(moved > 20 * 3 * 8 / 2, "most micro-batches change replica: {moved}");
        let path = router.path(3, 1, 5, 4, 8);
        assert!(pipeline::check_path(&path, 5, 4, 8).is_ok(), "{path:?}");
    }
}
