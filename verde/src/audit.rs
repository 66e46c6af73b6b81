//! Probabilistic checkpoint audits: a verifier re-executes a random sample of a trainer's segments — the
//! steps from one state it kept to the next ([`crate::Checkpoints`]) — chosen after the trainer committed
//! to its state hashes, so that it cannot know which. A segment passes when the trainer's state at its
//! start has the committed hash and an honest re-execution from it reproduces every committed hash up to
//! its end; a failed segment names the first step that differs, where a Verde dispute opens.
//!
//! A trainer that departs from the program in `b` of `S` segments is caught by `m` audits drawn without
//! replacement with probability `1 − C(S − b, m) / C(S, m)` ([`detection_probability`]).

use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::program::{Behaviour, Checkpoint, Program, Trainer};

/// The steps `(start, end]` between two states a trainer kept (or the initial state and the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The step whose state it starts from (0: the initial state).
    pub start: u64,
    /// Its last step.
    pub end: u64,
}

/// The segments of a run of `steps` steps that keeps its state every `every` steps.
pub fn segments(steps: u64, every: u64) -> Vec<Segment> {
    let every = every.max(1);
    (0..steps.div_ceil(every)).map(|i| Segment { start: i * every, end: ((i + 1) * every).min(steps) }).collect()
}

/// The `audits` of `segments` segments a verifier re-executes: a uniform draw without replacement,
/// seeded by the run's commitment `root` and the verifier's own `nonce` (so the trainer, which commits
/// first, cannot tell which).
pub fn draw(segments: usize, audits: usize, root: &Hash, nonce: u64) -> Vec<usize> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"swarmlab verde audit draw");
    hasher.update(root);
    hasher.update(&nonce.to_le_bytes());
    let mut stream = hasher.finalize_xof();
    let mut next = || {
        let mut bytes = [0u8; 8];
        stream.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    };
    // A partial Fisher–Yates shuffle: the first `audits` places.
    let mut order: Vec<usize> = (0..segments).collect();
    let m = audits.min(segments);
    for i in 0..m {
        let j = i + (next() % (segments - i) as u64) as usize;
        order.swap(i, j);
    }
    order.truncate(m);
    order
}

/// The probability that `audits` of `segments` segments drawn without replacement include at least one
/// of `bad` failing ones: `1 − C(S − b, m) / C(S, m)`.
pub fn detection_probability(segments: u64, bad: u64, audits: u64) -> f64 {
    let (s, b, m) = (segments, bad.min(segments), audits.min(segments));
    if b == 0 || m == 0 {
        return 0.0;
    }
    // C(S − b, m) / C(S, m) = Π_{i<m} (S − b − i) / (S − i).
    let mut miss = 1.0;
    for i in 0..m {
        if s - b <= i {
            return 1.0;
        }
        miss *= (s - b - i) as f64 / (s - i) as f64;
    }
    1.0 - miss
}

/// What re-executing one segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// Every committed hash of the segment was reproduced.
    Passed,
    /// The state handed over for the segment's start is not the one committed there.
    BadStart,
    /// The re-execution first differs from the commitment after this step.
    Failed {
        /// The step.
        step: u64,
    },
}

/// Re-executes `segment` of `program` honestly from `start` (the trainer's kept state at the segment's
/// start; `None` at step 0, where the initial state is public) and compares each state hash with
/// `committed` (the trainer's state hashes, index = step).
pub fn audit_segment(
    program: &Program,
    committed: &[Hash],
    start: Option<&Checkpoint>,
    segment: Segment,
) -> Result<AuditOutcome> {
    let len = committed.len() as u64;
    if segment.end >= len || segment.start >= segment.end {
        return Err(Error::OutOfRange { index: segment.end, len });
    }
    let mut trainer = match start {
        None if segment.start == 0 => Trainer::new(program)?,
        Some(c) if c.step() == segment.start => Trainer::resume(program, c)?,
        _ => return Ok(AuditOutcome::BadStart),
    };
    if trainer.state_hash(segment.start)? != committed[segment.start as usize] {
        return Ok(AuditOutcome::BadStart);
    }
    for step in segment.start + 1..=segment.end {
        trainer.advance(step, Behaviour::Honest, None)?;
        if trainer.state_hash(step)? != committed[step as usize] {
            return Ok(AuditOutcome::Failed { step });
        }
    }
    Ok(AuditOutcome::Passed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Checkpoints, execute_with};

    #[test]
    fn segments_cover_the_run_between_kept_states() {
        assert_eq!(segments(10, 4), vec![
            Segment { start: 0, end: 4 },
            Segment { start: 4, end: 8 },
            Segment { start: 8, end: 10 }
        ]);
        assert_eq!(segments(8, 4).len(), 2);
    }

    #[test]
    fn the_draw_is_a_sample_without_replacement_fixed_by_root_and_nonce() {
        let root = [3; 32];
        let a = draw(32, 8, &root, 1);
        assert_eq!(a, draw(32, 8, &root, 1));
        assert_ne!(a, draw(32, 8, &root, 2));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "no segment twice");
        assert!(a.iter().all(|&i| i < 32));
        assert_eq!(draw(4, 9, &root, 1).len(), 4);
    }

    #[test]
    fn the_closed_form_matches_small_cases() {
        assert_eq!(detection_probability(10, 0, 5), 0.0);
        assert!((detection_probability(10, 1, 1) - 0.1).abs() < 1e-12);
        assert!((detection_probability(10, 1, 5) - 0.5).abs() < 1e-12);
        assert!((detection_probability(4, 2, 2) - (1.0 - 1.0 / 6.0)).abs() < 1e-12);
        assert_eq!(detection_probability(10, 6, 5), 1.0, "more bad than good left: certain");
    }

    #[test]
    fn honest_segments_pass_and_each_cheat_fails_in_its_own_segment() -> Result<()> {
        let program = Program::tiny(12);
        let every = 4;
        let check = |behaviour: Behaviour| -> Result<Vec<AuditOutcome>> {
            let run = execute_with(&program, behaviour, Checkpoints::Every(every))?;
            segments(program.steps, every)
                .into_iter()
                .map(|seg| audit_segment(&program, &run.hashes, run.checkpoint_at(seg.start), seg))
                .collect()
        };
        assert!(check(Behaviour::Honest)?.iter().all(|o| *o == AuditOutcome::Passed));
        let perturbed = check(Behaviour::PerturbWeight { step: 6, delta: 1e-3 })?;
        assert_eq!(perturbed, vec![AuditOutcome::Passed, AuditOutcome::Failed { step: 6 }, AuditOutcome::Passed]);
        let lazy = check(Behaviour::Lazy { from: 10 })?;
        assert_eq!(lazy, vec![AuditOutcome::Passed, AuditOutcome::Passed, AuditOutcome::Failed { step: 10 }]);
        // A lie about the state at a segment boundary: the segment before fails at it, the one after
        // starts from a state that is not the committed one.
        let lie = check(Behaviour::LieInCommitment { step: 4 })?;
        assert_eq!(lie, vec![AuditOutcome::Failed { step: 4 }, AuditOutcome::BadStart, AuditOutcome::Passed]);
        // A skipping trainer fails exactly the segments holding a skipped step.
        let skipping = Behaviour::Skipping { per_mille: 150, seed: 3 };
        let outcomes = check(skipping)?;
        assert!(outcomes.iter().any(|o| matches!(o, AuditOutcome::Failed { .. })), "the draw skips some step: {outcomes:?}");
        for (seg, outcome) in segments(program.steps, every).into_iter().zip(outcomes) {
            let first_skip = (seg.start + 1..=seg.end).find(|&s| skipping.skips(s));
            match first_skip {
                Some(step) => assert_eq!(outcome, AuditOutcome::Failed { step }, "{seg:?}"),
                None => assert_eq!(outcome, AuditOutcome::Passed, "{seg:?}"),
            }
        }
        Ok(())
    }
}
