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
//!
//! The state's vectors are flat f32 tensors on the worker's device; the step is one [`Formula`], the
//! equations above in the order written (see [`crate::update`]).

use std::time::Duration;

use candle_core::Tensor;
use pipeline::sync::{Collective, OuterRound, OuterState, OuterSync, check_finite};
use serde::{Deserialize, Serialize};

use crate::diloco::validate_outer;
use crate::groups::group_of;
use crate::update::{Formula, Path, Value, apply, norm};
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

    fn start(&self, initial: &Tensor) -> pipeline::Result<Option<Box<dyn OuterState>>> {
        Ok(Some(Box::new(NoLoCoState::new(*self, initial)?)))
    }
}

/// `m_r ← β·m_r + α·δ̄ + α·(φ̄ − φ_r)` (without the pull: `β·m_r + α·δ̄`), `φ_r ← φ_r + m_r`, from
/// `[m_r, δ̄, φ̄, φ_r]` to `[m_r, φ_r]`.
impl Formula<4, 2> for NoLoCo {
    #[inline(always)] // into the fused pass over the elements, which it lets the compiler vectorise
    fn eval<V: Value>(&self, [m, delta_bar, phi_bar, phi]: [&V; 4]) -> Result<[V; 2], V::Error> {
        let (alpha, beta) = (self.outer_lr, self.momentum);
        let mut m = m.times(beta)?.plus(&delta_bar.times(alpha)?)?;
        if self.pull {
            m = m.plus(&phi_bar.minus(phi)?.times(alpha)?)?;
        }
        let phi = phi.plus(&m)?;
        Ok([m, phi])
    }
}

/// One replica's NoLoCo state: its outer weights `φ_r` and momentum `m_r`, flat f32 tensors on the
/// worker's device.
#[derive(Debug, Clone)]
pub struct NoLoCoState {
    config: NoLoCo,
    /// `φ_r`: this replica's outer weights (they differ between replicas).
    pub outer: Tensor,
    /// `m_r`: the outer momentum.
    pub momentum: Tensor,
}

impl NoLoCoState {
    /// The state of a replica starting from `initial` weights (a flat f32 tensor, which it keeps).
    pub fn new(config: NoLoCo, initial: &Tensor) -> pipeline::Result<Self> {
        Ok(Self { config, outer: initial.clone(), momentum: initial.zeros_like()? })
    }

    /// The `θ − φ` part of a contribution.
    fn update_part(&self, contribution: &Tensor) -> candle_core::Result<Tensor> {
        let len = contribution.elem_count();
        let skip = if self.config.pull { self.outer.elem_count().min(len) } else { 0 };
        contribution.flatten_all()?.narrow(0, skip, len - skip)
    }

    /// The Euclidean norm of the `θ − φ` part of a contribution.
    fn update_norm(&self, contribution: &Tensor) -> Result<f64, String> {
        let norm = self.update_part(contribution).map_err(pipeline::Error::from).and_then(|part| norm(&part));
        norm.map_err(|e| format!("its norm could not be taken: {e}"))
    }
}

impl OuterState for NoLoCoState {
    /// `[φ_r, θ_r − φ_r]` (only `θ_r − φ_r` without the pull term).
    fn contribution(&self, theta: &Tensor) -> pipeline::Result<Tensor> {
        let update = (theta - &self.outer)?;
        Ok(if self.config.pull { Tensor::cat(&[&self.outer, &update], 0)? } else { update })
    }

    /// Finite, the right length, and an update no more than `max_update_ratio` times the size of ours.
    fn admissible(&self, own: &Tensor, peer: &Tensor) -> Result<(), String> {
        check_finite(own, peer)?;
        let (mine, theirs) = (self.update_norm(own)?, self.update_norm(peer)?);
        let limit = f64::from(self.config.max_update_ratio) * mine.max(1e-12);
        if theirs > limit {
            return Err(format!(
                "update norm {theirs:.3e} exceeds {limit:.3e} ({}x ours)",
                self.config.max_update_ratio
            ));
        }
        Ok(())
    }

    /// The modified Nesterov step with the group's means; the weights to train on are the new `φ_r`.
    fn finish(&mut self, _theta: &Tensor, mean: &Tensor) -> pipeline::Result<Tensor> {
        let p = self.outer.elem_count();
        // Without the pull term the mean is `δ̄` alone, and `φ̄` is not read.
        let (phi_bar, delta_bar) = if self.config.pull {
            (mean.narrow(0, 0, p)?, mean.narrow(0, p, p)?)
        } else {
            (self.outer.clone(), mean.clone())
        };
        let inputs = [&self.momentum, &delta_bar, &phi_bar, &self.outer];
        [self.momentum, self.outer] = apply(&self.config, inputs, Path::Auto)?;
        Ok(self.outer.clone())
    }

    fn snapshot(&self) -> Box<dyn OuterState> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diloco::tests::{awkward, bits, t, v};

    fn mean(vs: &[Vec<f32>]) -> Vec<f32> {
        (0..vs[0].len()).map(|i| vs.iter().map(|v| v[i]).sum::<f32>() / vs.len() as f32).collect()
    }

    #[test]
    fn the_tensor_step_is_the_host_equation_bit_for_bit() {
        for pull in [true, false] {
            let cfg = NoLoCo { outer_lr: 0.7, momentum: 0.5, pull, ..NoLoCo::default() };
            let (phi0, theta) = (awkward(300, 3), awkward(300, 4));
            let mut state = NoLoCoState::new(cfg, &t(&phi0)).expect("state");
            let (mut phi, mut m) = (phi0.clone(), vec![0f32; 300]);
            for round in 0..3 {
                let own = v(&state.contribution(&t(&theta)).expect("contribution"));
                let want: Vec<f32> = if pull { phi.clone() } else { Vec::new() }
                    .into_iter()
                    .chain(theta.iter().zip(&phi).map(|(t, p)| t - p))
                    .collect();
                assert_eq!(bits(&own), bits(&want), "pull {pull}, round {round}: the contribution");
                // A peer's contribution, averaged with ours as the gather does.
                let peer: Vec<f32> = awkward(own.len(), 10 + round);
                let group: Vec<f32> = own.iter().zip(&peer).map(|(a, b)| (a + b) / 2.0).collect();
                let p = if pull { t(&group[..300]) } else { state.outer.clone() };
                let d = t(&group[group.len() - 300..]);
                let before = [state.momentum.clone(), d, p, state.outer.clone()];
                let next = v(&state.finish(&t(&theta), &t(&group)).expect("finish"));
                // What a device runs: the same formula as tensor ops.
                let [ops_m, ops_phi] = apply(&cfg, before.each_ref(), Path::TensorOps).expect("ops");
                for i in 0..300 {
                    let (pb, d) = if pull { (group[i], group[300 + i]) } else { (0.0, group[i]) };
                    m[i] = if pull { 0.5 * m[i] + 0.7 * d + 0.7 * (pb - phi[i]) } else { 0.5 * m[i] + 0.7 * d };
                    phi[i] += m[i];
                }
                assert_eq!(bits(&next), bits(&phi), "pull {pull}, round {round}: φ");
                assert_eq!(bits(&v(&state.momentum)), bits(&m), "pull {pull}, round {round}: m");
                assert_eq!((bits(&v(&ops_phi)), bits(&v(&ops_m))), (bits(&phi), bits(&m)), "tensor ops");
            }
        }
    }

    #[test]
    fn with_lr_one_no_momentum_and_everyone_in_the_group_it_is_exact_averaging() {
        let cfg = NoLoCo { outer_lr: 1.0, momentum: 0.0, ..NoLoCo::default() };
        // Replicas whose outer weights already differ (as after earlier rounds).
        let phis = [[1.0f32, 0.0], [3.0, 2.0], [2.0, 1.0]];
        let thetas = [vec![1.5f32, 0.5], vec![2.0, 2.0], vec![4.0, -1.0]];
        let states: Vec<NoLoCoState> = phis.iter().map(|p| NoLoCoState::new(cfg, &t(p)).expect("state")).collect();
        let contributions: Vec<Vec<f32>> =
            states.iter().zip(&thetas).map(|(s, th)| v(&s.contribution(&t(th)).expect("c"))).collect();
        let m = t(&mean(&contributions));
        let want = mean(&thetas);
        for (mut s, th) in states.into_iter().zip(&thetas) {
            let theta = v(&s.finish(&t(th), &m).expect("finish"));
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
        let mut a = NoLoCoState::new(with, &t(&[0.0])).expect("state");
        let mut b = NoLoCoState::new(without, &t(&[0.0])).expect("state");
        let theta = a.finish(&t(&[0.0]), &t(&[2.0, 0.0])).expect("finish");
        assert_eq!(v(&theta), [1.0], "α·(φ̄ − φ) = 0.5·2");
        b.finish(&theta, &t(&[0.0])).expect("finish");
        assert_eq!(v(&b.outer), [0.0], "without the pull nothing moves");
    }

    #[test]
    fn absurd_or_non_finite_updates_are_rejected() {
        let state = NoLoCoState::new(NoLoCo::default(), &t(&[1.0, 1.0])).expect("state");
        let contribution = |theta: &[f32]| state.contribution(&t(theta)).expect("contribution");
        let own = contribution(&[1.1, 0.9]);
        assert!(state.admissible(&own, &contribution(&[0.8, 1.2])).is_ok());
        let huge = contribution(&[1e6, 1.0]);
        assert!(state.admissible(&own, &huge).unwrap_err().contains("update norm"));
        let nan = contribution(&[f32::NAN, 1.0]);
        assert!(state.admissible(&own, &nan).unwrap_err().contains("non-finite"));
        assert!(state.admissible(&own, &own.narrow(0, 0, 3).expect("part")).is_err(), "wrong length");
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
