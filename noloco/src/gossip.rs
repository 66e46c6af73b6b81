//! NoLoCo's outer step (arXiv 2506.10911; the update of the released `sparse_optimizer_c.py`). Every `H`
//! inner steps, replica `r` averages with its random group `G` (see [`crate::groups`]) — never with the
//! whole swarm — and takes a modified Nesterov step that also pulls its outer weights toward the group's:
//!
//! ```text
//! φ̄ = (1/n) Σ_{q∈G} φ_q                 mean outer weights
//! δ̄ = (1/n) Σ_{q∈G} (θ_q − φ_q)         mean local progress (minus the mean pseudo-gradient)
//! m_r ← β·m_r + α·δ̄ + α·(φ̄ − φ_r)      the last term is the pull toward the group
//! φ_r ← φ_r + m_r
//! θ_r ← φ_r                              inner AdamW state stays local
//! ```
//!
//! With `β = 0, α = 1` and one group of all replicas, `φ_r ← φ̄ + δ̄ = mean θ`: exact global averaging.
//! Each replica sends its group's root `[φ_r, θ_r − φ_r]` (two shard-sized vectors) and gets the means
//! back; with `n = 2` that is a single exchange with one random peer.

use std::time::Duration;

use pipeline::sync::{Collective, OuterRound, OuterState, OuterSync, check_finite};
use serde::{Deserialize, Serialize};

use crate::diloco::validate_outer;
use crate::groups::group_of;
use pipeline::Error;

/// The longest a group's root may be told to wait, in seconds (a million: eleven days).
pub const MAX_TIMEOUT_S: f64 = 1e6;

/// NoLoCo's outer synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoLoCo {
    /// `H`: inner steps between outer steps.
    pub every: u64,
    /// `n`: replicas per gossip group (must divide the replicas of a stage).
    pub group_size: usize,
    /// `α`: outer learning rate (also the weight of the pull term).
    pub outer_lr: f32,
    /// `β`: outer momentum.
    pub momentum: f32,
    /// Whether to pull each replica's outer weights toward its group's mean (the `α·(φ̄ − φ_r)` term).
    pub pull: bool,
    /// Seed of the group permutations, shared by every replica.
    pub seed: u64,
    /// How long a group's root waits for its members, in seconds; late members are left out.
    pub timeout_s: f64,
    /// A peer's update `θ − φ` whose norm exceeds this multiple of the root's own is rejected.
    pub max_update_ratio: f32,
}

impl Default for NoLoCo {
    /// The released C4 configuration: `n = 2`, `H = 50`, `α = 0.7`, `β = 0.5`, with the pull term.
    fn default() -> Self {
        Self {
            every: 50,
            group_size: 2,
            outer_lr: 0.7,
            momentum: 0.5,
            pull: true,
            seed: 0,
            timeout_s: 60.0,
            max_update_ratio: 10.0,
        }
    }
}

impl OuterSync for NoLoCo {
    fn name(&self) -> String {
        format!(
            "noloco(H={}, n={}, lr={}, momentum={}{})",
            self.every,
            self.group_size,
            self.outer_lr,
            self.momentum,
            if self.pull { "" } else { ", no pull" }
        )
    }

    fn validate(&self, replicas: usize) -> pipeline::Result<()> {
        validate_outer("noloco", self.every, self.outer_lr, self.momentum)?;
        if self.group_size == 0 || !replicas.is_multiple_of(self.group_size) {
            return Err(Error::config(
                "noloco.group_size",
                format!("n = {} must be at least 1 and divide the {replicas} replicas of a stage", self.group_size),
            ));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s <= MAX_TIMEOUT_S) {
            return Err(Error::config(
                "noloco.timeout_s",
                format!("{} must be positive and at most {MAX_TIMEOUT_S} seconds", self.timeout_s),
            ));
        }
        if !(self.max_update_ratio.is_finite() && self.max_update_ratio >= 1.0) {
            return Err(Error::config("noloco.max_update_ratio", "must be at least 1"));
        }
        Ok(())
    }

    fn round(&self, steps_done: u64, replica: usize, replicas: usize) -> Option<OuterRound> {
        if !steps_done.is_multiple_of(self.every) {
            return None;
        }
        let group = group_of(self.seed, steps_done / self.every, replicas, self.group_size, replica).ok()?;
        Some(OuterRound { group, collective: Collective::Gather, timeout: Duration::from_secs_f64(self.timeout_s) })
    }

    fn start(&self, initial: &[f32]) -> Option<Box<dyn OuterState>> {
        Some(Box::new(NoLoCoState::new(*self, initial)))
    }
}

/// One replica's NoLoCo state: its outer weights `φ_r` and momentum `m_r`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoLoCoState {
    config: NoLoCo,
    /// `φ_r`: this replica's outer weights (they differ between replicas).
    pub outer: Vec<f32>,
    /// `m_r`: the outer momentum.
    pub momentum: Vec<f32>,
}

impl NoLoCoState {
    /// The state of a replica starting from `initial` weights.
    pub fn new(config: NoLoCo, initial: &[f32]) -> Self {
        Self { config, outer: initial.to_vec(), momentum: vec![0.0; initial.len()] }
    }

    /// The `θ − φ` part of a contribution.
    fn update_part<'a>(&self, contribution: &'a [f32]) -> &'a [f32] {
        if self.config.pull { &contribution[self.outer.len().min(contribution.len())..] } else { contribution }
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

impl OuterState for NoLoCoState {
    /// `[φ_r, θ_r − φ_r]` (only `θ_r − φ_r` without the pull term).
    fn contribution(&self, theta: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(2 * theta.len());
        if self.config.pull {
            out.extend_from_slice(&self.outer);
        }
        out.extend(theta.iter().zip(&self.outer).map(|(t, p)| t - p));
        out
    }

    /// Finite, the right length, and an update no more than `max_update_ratio` times the size of ours.
    fn admissible(&self, own: &[f32], peer: &[f32]) -> Result<(), String> {
        check_finite(own, peer)?;
        let (mine, theirs) = (norm(self.update_part(own)), norm(self.update_part(peer)));
        let limit = f64::from(self.config.max_update_ratio) * mine.max(1e-12);
        if theirs > limit {
            return Err(format!(
                "update norm {theirs:.3e} exceeds {limit:.3e} ({}x ours)",
                self.config.max_update_ratio
            ));
        }
        Ok(())
    }

    fn finish(&mut self, theta: &mut [f32], mean: &[f32]) {
        let p = self.outer.len();
        let (alpha, beta) = (self.config.outer_lr, self.config.momentum);
        let state = self.outer.iter_mut().zip(self.momentum.iter_mut()).zip(theta.iter_mut());
        if self.config.pull {
            let (phi_bar, delta_bar) = mean.split_at(p);
            for (((phi, m), t), (&pb, &d)) in state.zip(phi_bar.iter().zip(delta_bar)) {
                *m = beta * *m + alpha * d + alpha * (pb - *phi);
                *phi += *m;
                *t = *phi;
            }
        } else {
            for (((phi, m), t), &d) in state.zip(mean) {
                *m = beta * *m + alpha * d;
                *phi += *m;
                *t = *phi;
            }
        }
    }

    fn snapshot(&self) -> Box<dyn OuterState> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(vs: &[Vec<f32>]) -> Vec<f32> {
        (0..vs[0].len()).map(|i| vs.iter().map(|v| v[i]).sum::<f32>() / vs.len() as f32).collect()
    }

    #[test]
    fn with_lr_one_no_momentum_and_everyone_in_the_group_it_is_exact_averaging() {
        let cfg = NoLoCo { outer_lr: 1.0, momentum: 0.0, ..NoLoCo::default() };
        // Replicas whose outer weights already differ (as after earlier rounds).
        let phis = [vec![1.0f32, 0.0], vec![3.0, 2.0], vec![2.0, 1.0]];
        let thetas = [vec![1.5f32, 0.5], vec![2.0, 2.0], vec![4.0, -1.0]];
        let states: Vec<NoLoCoState> = phis.iter().map(|p| NoLoCoState::new(cfg, p)).collect();
        let m = mean(&states.iter().zip(&thetas).map(|(s, t)| s.contribution(t)).collect::<Vec<_>>());
        let want = mean(&thetas);
        for (mut s, t) in states.into_iter().zip(&thetas) {
            let mut theta = t.clone();
            s.finish(&mut theta, &m);
            for (a, b) in theta.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "{theta:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn the_pull_term_draws_a_replica_toward_its_group() {
        let with = NoLoCo { outer_lr: 0.5, momentum: 0.0, ..NoLoCo::default() };
        let without = NoLoCo { pull: false, ..with };
        // No local progress; the group's outer weights average to 2, ours are 0.
        let (mut a, mut b) = (NoLoCoState::new(with, &[0.0]), NoLoCoState::new(without, &[0.0]));
        let mut theta = [0.0];
        a.finish(&mut theta, &[2.0, 0.0]);
        assert_eq!(theta, [1.0], "α·(φ̄ − φ) = 0.5·2");
        b.finish(&mut theta, &[0.0]);
        assert_eq!(b.outer, vec![0.0], "without the pull nothing moves");
    }

    #[test]
    fn absurd_or_non_finite_updates_are_rejected() {
        let state = NoLoCoState::new(NoLoCo::default(), &[1.0, 1.0]);
        let own = state.contribution(&[1.1, 0.9]);
        assert!(state.admissible(&own, &state.contribution(&[0.8, 1.2])).is_ok());
        let huge = state.contribution(&[1e6, 1.0]);
        assert!(state.admissible(&own, &huge).unwrap_err().contains("update norm"));
        let nan = state.contribution(&[f32::NAN, 1.0]);
        assert!(state.admissible(&own, &nan).unwrap_err().contains("non-finite"));
        assert!(state.admissible(&own, &own[..3]).is_err(), "wrong length");
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |n: NoLoCo, r: usize| n.validate(r).unwrap_err().to_string();
        assert!(err(NoLoCo::default(), 3).contains("noloco.group_size"));
        assert!(err(NoLoCo { every: 0, ..NoLoCo::default() }, 4).contains("noloco.every"));
        assert!(err(NoLoCo { outer_lr: -1.0, ..NoLoCo::default() }, 4).contains("noloco.outer_lr"));
        assert!(err(NoLoCo { momentum: -0.1, ..NoLoCo::default() }, 4).contains("noloco.momentum"));
        assert!(err(NoLoCo { timeout_s: 0.0, ..NoLoCo::default() }, 4).contains("noloco.timeout_s"));
        assert!(err(NoLoCo { timeout_s: 1e300, ..NoLoCo::default() }, 4).contains("noloco.timeout_s"));
        assert!(err(NoLoCo { timeout_s: f64::NAN, ..NoLoCo::default() }, 4).contains("noloco.timeout_s"));
        assert!(NoLoCo::default().validate(4).is_ok());
    }

    #[test]
    fn rounds_come_every_h_steps_in_a_shared_group() {
        let cfg = NoLoCo { every: 5, group_size: 2, ..NoLoCo::default() };
        assert!(cfg.round(3, 0, 4).is_none());
        let round = cfg.round(10, 1, 4).unwrap();
        assert!(round.group.contains(&1) && round.group.len() == 2);
        let partner = round.group.iter().copied().find(|&q| q != 1).unwrap();
        assert_eq!(cfg.round(10, partner, 4).unwrap().group, round.group, "both sides agree");
    }
}
