//! DiLoCo (Douillard et al., arXiv 2311.08105, Algorithm 1): every `H` inner steps the replicas of a
//! stage all-reduce the pseudo-gradient `Δ = (1/R) Σ_i (φ − θ_i)` (old outer weights minus new inner
//! weights) and take an outer Nesterov step, PyTorch's `SGD(nesterov=True)` convention:
//!
//! ```text
//! v ← μ·v + Δ
//! φ ← φ − η·(Δ + μ·v)
//! θ_i ← φ            (every replica restarts from the same outer weights; inner AdamW state stays local)
//! ```
//!
//! With `nesterov = false` the step is the heavy-ball form of Gensyn's pipeline DiLoCo
//! (`pipeline_diloco_optimizer.py`), the baseline of the NoLoCo paper: `v ← μ·v + Δ`, `φ ← φ − η·v`.
//! Either way, `μ = 0, η = 1` is exact averaging of the replicas' weights (FedAvg).

use std::time::Duration;

use pipeline::sync::{Collective, OuterRound, OuterState, OuterSync};
use serde::{Deserialize, Serialize};

use pipeline::Error;

/// DiLoCo's outer synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiLoCo {
    /// `H`: inner steps between outer steps.
    pub every: u64,
    /// `η`: outer learning rate.
    pub outer_lr: f32,
    /// `μ`: outer momentum.
    pub momentum: f32,
    /// Nesterov momentum (the DiLoCo paper) or heavy-ball momentum (the NoLoCo paper's baseline).
    pub nesterov: bool,
    /// The all-reduce: [`Collective::Ring`] or [`Collective::Tree`].
    pub collective: Collective,
    /// Elastic outer rounds: each round's group is formed from the replicas that are there, the leader
    /// waiting this many seconds for a member ([`pipeline::DataParallel`] explains the group); `None`:
    /// every replica is needed every round.
    pub quorum_timeout_s: Option<f64>,
}

impl Default for DiLoCo {
    /// The paper's outer optimizer (η = 0.7, μ = 0.9) with `H = 100` and a ring all-reduce.
    fn default() -> Self {
        Self {
            every: 100,
            outer_lr: 0.7,
            momentum: 0.9,
            nesterov: true,
            collective: Collective::Ring,
            quorum_timeout_s: None,
        }
    }
}

/// Checks `H`, the outer learning rate and the momentum; `field` prefixes the names in errors.
pub(crate) fn validate_outer(field: &str, every: u64, lr: f32, momentum: f32) -> Result<(), Error> {
    if every == 0 {
        return Err(Error::config(format!("{field}.every"), "H must be at least 1 inner step"));
    }
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::config(format!("{field}.outer_lr"), format!("{lr} must be a positive number")));
    }
    if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
        return Err(Error::config(format!("{field}.momentum"), format!("{momentum} must be in [0, 1)")));
    }
    Ok(())
}

impl OuterSync for DiLoCo {
    fn name(&self) -> String {
        let kind = if self.nesterov { "nesterov" } else { "heavy-ball" };
        format!("diloco(H={}, lr={}, {kind} momentum={})", self.every, self.outer_lr, self.momentum)
    }

    fn validate(&self, _replicas: usize) -> pipeline::Result<()> {
        validate_outer("diloco", self.every, self.outer_lr, self.momentum)?;
        if self.collective == Collective::Gather {
            return Err(Error::config("diloco.collective", "DiLoCo all-reduces: use ring or tree"));
        }
        if let Some(wait) = self.quorum_timeout_s {
            pipeline::sync::quorum_wait("diloco.quorum_timeout_s", wait)?;
        }
        Ok(())
    }

    fn elastic_wait(&self) -> Option<Duration> {
        self.quorum_timeout_s.and_then(|wait| pipeline::sync::quorum_wait("diloco.quorum_timeout_s", wait).ok())
    }

    fn round(&self, steps_done: u64, _replica: usize, replicas: usize) -> Option<OuterRound> {
        steps_done.is_multiple_of(self.every).then(|| OuterRound {
            group: (0..replicas).collect(),
            collective: self.collective,
            timeout: Duration::ZERO,
        })
    }

    fn start(&self, initial: &[f32]) -> Option<Box<dyn OuterState>> {
        Some(Box::new(DiLoCoState::new(*self, initial)))
    }
}

/// One replica's DiLoCo state: the outer weights `φ` and the momentum `v`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiLoCoState {
    config: DiLoCo,
    /// `φ`: the outer weights (the same on every replica).
    pub outer: Vec<f32>,
    /// `v`: the outer momentum.
    pub velocity: Vec<f32>,
}

impl DiLoCoState {
    /// The state of a replica starting from `initial` weights.
    pub fn new(config: DiLoCo, initial: &[f32]) -> Self {
        Self { config, outer: initial.to_vec(), velocity: vec![0.0; initial.len()] }
    }
}

impl OuterState for DiLoCoState {
    /// The pseudo-gradient `φ − θ`.
    fn contribution(&self, theta: &[f32]) -> Vec<f32> {
        self.outer.iter().zip(theta).map(|(p, t)| p - t).collect()
    }

    fn finish(&mut self, theta: &mut [f32], mean: &[f32]) {
        let (lr, mu, nesterov) = (self.config.outer_lr, self.config.momentum, self.config.nesterov);
        for (((phi, v), t), &delta) in self.outer.iter_mut().zip(&mut self.velocity).zip(theta.iter_mut()).zip(mean) {
            *v = mu * *v + delta;
            *phi -= lr * if nesterov { delta + mu * *v } else { *v };
            *t = *phi;
        }
    }

    fn snapshot(&self) -> Box<dyn OuterState> {
        Box::new(self.clone())
    }

    fn export(&self) -> Vec<Vec<f32>> {
        vec![self.outer.clone(), self.velocity.clone()]
    }

    fn import(&mut self, parts: Vec<Vec<f32>>) -> Result<(), String> {
        match <[Vec<f32>; 2]>::try_from(parts) {
            Ok([outer, velocity]) if outer.len() == self.outer.len() && velocity.len() == self.outer.len() => {
                (self.outer, self.velocity) = (outer, velocity);
                Ok(())
            }
            _ => Err(format!("expected the outer weights and momentum, {} values each", self.outer.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_takes_the_outer_state_a_replica_exports() {
        let cfg = DiLoCo { outer_lr: 0.5, momentum: 0.9, ..DiLoCo::default() };
        let mut donor = DiLoCoState::new(cfg, &[1.0, 2.0]);
        let mut theta = vec![0.5, 1.0];
        donor.finish(&mut theta, &[0.25, -0.5]);
        let mut joiner = DiLoCoState::new(cfg, &[9.0, 9.0]);
        joiner.import(donor.export()).expect("fits");
        assert_eq!(joiner, donor);
        assert!(joiner.import(vec![vec![1.0]]).unwrap_err().contains("2 values each"));
        assert!(joiner.import(vec![vec![1.0; 2], vec![1.0; 3]]).is_err());
    }

    #[test]
    fn with_lr_one_and_no_momentum_the_outer_step_is_the_average() {
        let cfg = DiLoCo { outer_lr: 1.0, momentum: 0.0, ..DiLoCo::default() };
        let phi = [1.0f32, 2.0, 3.0];
        let thetas = [[2.0f32, 2.0, 5.0], [0.0, 4.0, 3.0]];
        let mut state = DiLoCoState::new(cfg, &phi);
        let contribs: Vec<Vec<f32>> = thetas.iter().map(|t| state.contribution(t)).collect();
        let mean: Vec<f32> = (0..3).map(|i| (contribs[0][i] + contribs[1][i]) / 2.0).collect();
        let mut theta = thetas[0];
        state.finish(&mut theta, &mean);
        assert_eq!(theta, [1.0, 3.0, 4.0]);
        assert_eq!(state.outer, theta.to_vec());
    }

    #[test]
    fn nesterov_follows_the_pytorch_convention() {
        let cfg = DiLoCo { outer_lr: 0.5, momentum: 0.9, ..DiLoCo::default() };
        let mut state = DiLoCoState::new(cfg, &[0.0]);
        let mut theta = [0.0];
        state.finish(&mut theta, &[1.0]); // v = 1, φ = −0.5·(1 + 0.9) = −0.95
        assert!((theta[0] + 0.95).abs() < 1e-6);
        state.finish(&mut theta, &[1.0]); // v = 1.9, φ = −0.95 − 0.5·(1 + 1.71) = −2.305
        assert!((theta[0] + 2.305).abs() < 1e-5, "{}", theta[0]);
    }

    #[test]
    fn heavy_ball_follows_the_released_pipeline_code() {
        let cfg = DiLoCo { outer_lr: 0.5, momentum: 0.5, nesterov: false, ..DiLoCo::default() };
        let mut state = DiLoCoState::new(cfg, &[0.0]);
        let mut theta = [0.0];
        state.finish(&mut theta, &[1.0]); // v = 1, φ = −0.5
        state.finish(&mut theta, &[1.0]); // v = 1.5, φ = −0.5 − 0.75
        assert!((theta[0] + 1.25).abs() < 1e-6, "{}", theta[0]);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |d: DiLoCo| d.validate(4).unwrap_err().to_string();
        assert!(err(DiLoCo { every: 0, ..DiLoCo::default() }).contains("diloco.every"));
        assert!(err(DiLoCo { outer_lr: -0.7, ..DiLoCo::default() }).contains("diloco.outer_lr"));
        assert!(err(DiLoCo { momentum: 1.0, ..DiLoCo::default() }).contains("diloco.momentum"));
        assert!(err(DiLoCo { quorum_timeout_s: Some(-1.0), ..DiLoCo::default() }).contains("diloco.quorum_timeout_s"));
        assert_eq!(DiLoCo { quorum_timeout_s: Some(f64::NAN), ..DiLoCo::default() }.elastic_wait(), None);
        assert!(err(DiLoCo { collective: Collective::Gather, ..DiLoCo::default() }).contains("diloco.collective"));
    }
}
