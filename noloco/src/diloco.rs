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
//!
//! The state's vectors are flat f32 tensors on the worker's device; the step is one [`Formula`], the
//! equations above in the order written (see [`crate::update`]).

use std::time::Duration;

use candle_core::Tensor;
use pipeline::sync::{Collective, OuterRound, OuterState, OuterSync};
use serde::{Deserialize, Serialize};

use crate::update::{Formula, Path, Value, apply};
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

    fn start(&self, initial: &Tensor) -> pipeline::Result<Option<Box<dyn OuterState>>> {
        Ok(Some(Box::new(DiLoCoState::new(*self, initial)?)))
    }
}

/// `v ← μ·v + Δ`, `φ ← φ − η·(Δ + μ·v)` (heavy-ball: `φ ← φ − η·v`), from `[v, Δ, φ]` to `[v, φ]`.
impl Formula<3, 2> for DiLoCo {
    #[inline(always)] // into the fused pass over the elements, which it lets the compiler vectorise
    fn eval<V: Value>(&self, [v, delta, phi]: [&V; 3]) -> Result<[V; 2], V::Error> {
        let (lr, mu) = (self.outer_lr, self.momentum);
        let v = v.times(mu)?.plus(delta)?;
        let step = if self.nesterov { delta.plus(&v.times(mu)?)?.times(lr)? } else { v.times(lr)? };
        let phi = phi.minus(&step)?;
        Ok([v, phi])
    }
}

/// One replica's DiLoCo state: the outer weights `φ` and the momentum `v`, flat f32 tensors on the
/// worker's device.
#[derive(Debug, Clone)]
pub struct DiLoCoState {
    config: DiLoCo,
    /// `φ`: the outer weights (the same on every replica).
    pub outer: Tensor,
    /// `v`: the outer momentum.
    pub velocity: Tensor,
}

impl DiLoCoState {
    /// The state of a replica starting from `initial` weights (a flat f32 tensor, which it keeps).
    pub fn new(config: DiLoCo, initial: &Tensor) -> pipeline::Result<Self> {
        Ok(Self { config, outer: initial.clone(), velocity: initial.zeros_like()? })
    }
}

impl OuterState for DiLoCoState {
    /// The pseudo-gradient `φ − θ`.
    fn contribution(&self, theta: &Tensor) -> pipeline::Result<Tensor> {
        Ok((&self.outer - theta)?)
    }

    /// The outer step with the group's mean pseudo-gradient; the weights to train on are the new `φ`.
    fn finish(&mut self, _theta: &Tensor, mean: &Tensor) -> pipeline::Result<Tensor> {
        [self.velocity, self.outer] = apply(&self.config, [&self.velocity, mean, &self.outer], Path::Auto)?;
        Ok(self.outer.clone())
    }

    fn snapshot(&self) -> Box<dyn OuterState> {
        Box::new(self.clone())
    }

    fn export(&self) -> Vec<Tensor> {
        vec![self.outer.clone(), self.velocity.clone()]
    }

    fn import(&mut self, parts: Vec<Tensor>) -> Result<(), String> {
        let n = self.outer.elem_count();
        match <[Tensor; 2]>::try_from(parts) {
            Ok([outer, velocity]) if outer.dims() == [n] && velocity.dims() == [n] => {
                let device = self.outer.device();
                let placed = |t: Tensor| t.to_dtype(candle_core::DType::F32)?.to_device(device);
                (self.outer, self.velocity) =
                    (placed(outer).map_err(|e| e.to_string())?, placed(velocity).map_err(|e| e.to_string())?);
                Ok(())
            }
            _ => Err(format!("expected the outer weights and momentum, {n} values each")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// A flat tensor on the CPU.
    pub(crate) fn t(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).expect("tensor")
    }

    /// Its values.
    pub(crate) fn v(t: &Tensor) -> Vec<f32> {
        t.to_vec1().expect("values")
    }

    /// The bit patterns of `values`, to compare exactly (−0 and +0 apart).
    pub(crate) fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|f| f.to_bits()).collect()
    }

    /// Values that exercise rounding: signs, zeros of both signs, magnitudes far apart.
    pub(crate) fn awkward(n: usize, seed: u32) -> Vec<f32> {
        let magnitudes = [1e-6f32, 1e-3, 0.1, 1.0, 30.0];
        (0..n as u32)
            .map(|i| match (i + seed) % 7 {
                0 => 0.0,
                1 => -0.0,
                k => {
                    let digits = (i.wrapping_mul(2_654_435_761).wrapping_add(seed) % 10_007) as f32 / 10_007.0;
                    let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
                    sign * digits * magnitudes[(i as usize + k as usize) % magnitudes.len()] / k as f32
                }
            })
            .collect()
    }

    #[test]
    fn the_tensor_step_is_the_host_equation_bit_for_bit() {
        for nesterov in [true, false] {
            let cfg = DiLoCo { outer_lr: 0.7, momentum: 0.9, nesterov, ..DiLoCo::default() };
            let (phi0, theta) = (awkward(500, 1), awkward(500, 2));
            let mut state = DiLoCoState::new(cfg, &t(&phi0)).expect("state");
            let (mut phi, mut vel) = (phi0.clone(), vec![0f32; 500]);
            for round in 0..3 {
                let delta = v(&state.contribution(&t(&theta)).expect("contribution"));
                let before = [state.velocity.clone(), t(&delta), state.outer.clone()];
                let next = v(&state.finish(&t(&theta), &t(&delta)).expect("finish"));
                // What a device runs: the same formula as tensor ops.
                let [ops_v, ops_phi] = apply(&cfg, before.each_ref(), Path::TensorOps).expect("ops");
                // The equation, one scalar operation at a time.
                for i in 0..500 {
                    assert_eq!(delta[i].to_bits(), (phi[i] - theta[i]).to_bits(), "round {round}, Δ[{i}]");
                    vel[i] = 0.9 * vel[i] + delta[i];
                    phi[i] -= 0.7 * if nesterov { delta[i] + 0.9 * vel[i] } else { vel[i] };
                }
                assert_eq!(bits(&next), bits(&phi), "nesterov {nesterov}, round {round}: φ");
                assert_eq!(bits(&v(&state.velocity)), bits(&vel), "nesterov {nesterov}, round {round}: v");
                assert_eq!((bits(&v(&ops_phi)), bits(&v(&ops_v))), (bits(&phi), bits(&vel)), "tensor ops");
            }
        }
    }

    #[test]
    fn a_joiner_takes_the_outer_state_a_replica_exports() {
        let cfg = DiLoCo { outer_lr: 0.5, momentum: 0.9, ..DiLoCo::default() };
        let mut donor = DiLoCoState::new(cfg, &t(&[1.0, 2.0])).expect("state");
        donor.finish(&t(&[0.5, 1.0]), &t(&[0.25, -0.5])).expect("finish");
        let mut joiner = DiLoCoState::new(cfg, &t(&[9.0, 9.0])).expect("state");
        joiner.import(donor.export()).expect("fits");
        assert_eq!((v(&joiner.outer), v(&joiner.velocity)), (v(&donor.outer), v(&donor.velocity)));
        assert!(joiner.import(vec![t(&[1.0])]).unwrap_err().contains("2 values each"));
        assert!(joiner.import(vec![t(&[1.0; 2]), t(&[1.0; 3])]).is_err());
    }

    #[test]
    fn with_lr_one_and_no_momentum_the_outer_step_is_the_average() {
        let cfg = DiLoCo { outer_lr: 1.0, momentum: 0.0, ..DiLoCo::default() };
        let phi = t(&[1.0, 2.0, 3.0]);
        let thetas = [t(&[2.0, 2.0, 5.0]), t(&[0.0, 4.0, 3.0])];
        let mut state = DiLoCoState::new(cfg, &phi).expect("state");
        let contribs: Vec<Vec<f32>> = thetas.iter().map(|th| v(&state.contribution(th).expect("c"))).collect();
        let mean: Vec<f32> = (0..3).map(|i| (contribs[0][i] + contribs[1][i]) / 2.0).collect();
        let theta = state.finish(&thetas[0], &t(&mean)).expect("finish");
        assert_eq!(v(&theta), [1.0, 3.0, 4.0]);
        assert_eq!(v(&state.outer), v(&theta));
    }

    #[test]
    fn nesterov_follows_the_pytorch_convention() {
        let cfg = DiLoCo { outer_lr: 0.5, momentum: 0.9, ..DiLoCo::default() };
        let mut state = DiLoCoState::new(cfg, &t(&[0.0])).expect("state");
        let theta = state.finish(&t(&[0.0]), &t(&[1.0])).expect("finish"); // v = 1, φ = −0.5·(1 + 0.9) = −0.95
        assert!((v(&theta)[0] + 0.95).abs() < 1e-6);
        let theta = state.finish(&theta, &t(&[1.0])).expect("finish"); // v = 1.9, φ = −0.95 − 0.5·(1 + 1.71) = −2.305
        assert!((v(&theta)[0] + 2.305).abs() < 1e-5, "{theta}");
    }

    #[test]
    fn heavy_ball_follows_the_released_pipeline_code() {
        let cfg = DiLoCo { outer_lr: 0.5, momentum: 0.5, nesterov: false, ..DiLoCo::default() };
        let mut state = DiLoCoState::new(cfg, &t(&[0.0])).expect("state");
        let theta = state.finish(&t(&[0.0]), &t(&[1.0])).expect("finish"); // v = 1, φ = −0.5
        let theta = state.finish(&theta, &t(&[1.0])).expect("finish"); // v = 1.5, φ = −0.5 − 0.75
        assert!((v(&theta)[0] + 1.25).abs() < 1e-6, "{theta}");
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
