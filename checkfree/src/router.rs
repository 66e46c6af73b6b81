//! CheckFree+'s out-of-order pipelining: odd micro-batches run the first two and the last two
//! transformer stages in swapped order (`… 2 → 1 …` and `… S−2 → S−3 …` in the edge-stage layout,
//! where stage 0 is the embedding and stage `S − 1` the head), so that stages 1 and 2, and `S − 3` and
//! `S − 2`, each learn to do the other's job.

use pipeline::{Hop, Router};

/// Swaps the end transformer stages on odd micro-batches; a fixed row otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutOfOrderRouter;

impl OutOfOrderRouter {
    /// The stage order of micro-batch `micro` in a pipeline of `stages` (edge stages included).
    pub fn order(micro: u32, stages: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..stages).collect();
        // Needs two disjoint pairs among the transformer stages 1..=S−2.
        if micro % 2 == 1 && stages >= 6 {
            order.swap(1, 2);
            order.swap(stages - 3, stages - 2);
        }
        order
    }
}

impl Router for OutOfOrderRouter {
    fn path(&self, _step: u64, micro: u32, origin: usize, stages: usize, _replicas: usize) -> Vec<Hop> {
        Self::order(micro, stages).into_iter().map(|s| (s, origin)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_happen_only_on_odd_micro_batches() {
        for micro in 0..6u32 {
            let order = OutOfOrderRouter::order(micro, 7);
            if micro % 2 == 0 {
                assert_eq!(order, vec![0, 1, 2, 3, 4, 5, 6]);
            } else {
                assert_eq!(order, vec![0, 2, 1, 3, 5, 4, 6]);
            }
            let path = OutOfOrderRouter.path(1, micro, 0, 7, 1);
            assert!(pipeline::check_path(&path, 0, 7, 1).is_ok());
        }
        assert_eq!(OutOfOrderRouter::order(1, 5), vec![0, 1, 2, 3, 4], "too few stages for two swaps");
    }
}
