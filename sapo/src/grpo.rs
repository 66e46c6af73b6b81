//! GRPO: group-relative advantages and the clipped policy-gradient loss, as GenRL's trainer computes
//! them (PROTOCOLS.md, Appendix A).
//!
//! For a group of `G` completions of one question with rewards `r`, the advantage of completion `i` is
//! `A_i = (r_i − mean(r)) / (std(r) + 1e-8)` (unbiased std; 0 when `G = 1`). Each completion token `t`
//! contributes `−min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A)` with `ρ_t = exp(log π(t) − log π_old(t))`
//! (DAPO's clip-higher), plus `β · KL_k3` against a reference policy when `β > 0`; the loss is averaged
//! over every completion token of the batch.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// GRPO hyper-parameters (GenRL's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// Lower clip: ratios below `1 − eps_low` stop pulling.
    pub eps_low: f64,
    /// Upper clip (clip-higher): ratios above `1 + eps_high` stop pushing.
    pub eps_high: f64,
    /// Weight of the k3 KL estimate against the warm-start policy (0: no KL, no reference model).
    pub beta: f64,
    /// Optimizer steps per batch of rollouts (1: the ratio is 1 and the loss is the plain policy gradient).
    pub epochs: usize,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self { eps_low: 0.2, eps_high: 0.28, beta: 0.0, epochs: 1 }
    }
}

impl GrpoConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.eps_low) {
            return Err(Error::config("grpo.eps_low", format!("{} is not in [0, 1)", self.eps_low)));
        }
        if !(self.eps_high >= 0.0 && self.eps_high.is_finite()) {
            return Err(Error::config("grpo.eps_high", format!("{} is not a finite value >= 0", self.eps_high)));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::config("grpo.beta", format!("{} is not a finite value >= 0", self.beta)));
        }
        if self.epochs == 0 {
            return Err(Error::config("grpo.epochs", "at least one step per batch"));
        }
        Ok(())
    }
}

/// Group-relative advantages of one group's rewards.
pub fn advantages(rewards: &[f64]) -> Vec<f64> {
    let n = rewards.len();
    if n == 0 {
        return Vec::new();
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return vec![0.0];
    }
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    rewards.iter().map(|r| (r - mean) / (std + 1e-8)).collect()
}

/// Whether a group carries any learning signal (its rewards are not all equal).
pub fn informative(rewards: &[f64]) -> bool {
    rewards.iter().any(|r| r != &rewards[0])
}

/// The clipped GRPO loss over a batch: `logp` and `old_logp` are per-token log-probabilities `[N, T]`,
/// `advantages` one per sequence `[N]`, `mask` 1 on completion tokens `[N, T]`; `kl` the per-token k3
/// estimate `[N, T]` when `beta > 0`. Returns the scalar loss and the fraction of tokens clipped.
pub fn clipped_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    kl: Option<&Tensor>,
    cfg: &GrpoConfig,
) -> Result<(Tensor, f64)> {
    let ratio = (logp - old_logp)?.exp()?;
    let clipped = ratio.clamp(1.0 - cfg.eps_low, 1.0 + cfg.eps_high)?;
    let a = advantages.unsqueeze(1)?.broadcast_as(logp.shape())?;
    let objective = ratio.broadcast_mul(&a)?.minimum(&clipped.broadcast_mul(&a)?)?;
    let mut per_token = objective.neg()?;
    if let (Some(kl), true) = (kl, cfg.beta > 0.0) {
        per_token = (per_token + (kl * cfg.beta)?)?;
    }
    let tokens = mask.sum_all()?.to_scalar::<f32>()?;
    if tokens <= 0.0 {
        return Err(Error::config("grpo batch", "no completion tokens to learn from"));
    }
    let loss = ((per_token * mask)?.sum_all()? / f64::from(tokens))?;
    let outside = ratio.ne(&clipped)?.to_dtype(candle_core::DType::F32)?;
    let clip_fraction = f64::from((outside * mask)?.sum_all()?.to_scalar::<f32>()? / tokens);
    Ok((loss, clip_fraction))
}

/// The k3 estimate of KL(π ‖ π_ref) per token: `exp(ref − logp) − (ref − logp) − 1`.
pub fn kl_k3(logp: &Tensor, ref_logp: &Tensor) -> Result<Tensor> {
    let d = (ref_logp - logp)?;
    Ok(((d.exp()? - &d)? - 1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn advantages_match_hand_computed_values() {
        // rewards 1, 0, 0, 1: mean 0.5, unbiased std sqrt(1/3) = 0.57735.
        let a = advantages(&[1.0, 0.0, 0.0, 1.0]);
        for (got, want) in a.iter().zip([0.866_025, -0.866_025, -0.866_025, 0.866_025]) {
            assert!((got - want).abs() < 1e-5, "{a:?}");
        }
        // rewards 1, 0, 0: mean 1/3, std sqrt(1/3).
        let a = advantages(&[1.0, 0.0, 0.0]);
        assert!((a[0] - 1.154_700).abs() < 1e-5 && (a[1] + 0.577_350).abs() < 1e-5, "{a:?}");
        assert_eq!(advantages(&[1.0, 1.0, 1.0]), vec![0.0; 3]);
        assert_eq!(advantages(&[1.0]), vec![0.0]);
        assert!(informative(&[0.0, 1.0]) && !informative(&[0.0, 0.0]));
    }

    #[test]
    fn the_clipped_loss_matches_a_hand_computed_case() -> Result<()> {
        let dev = Device::Cpu;
        // Two sequences of two tokens; the second token of sequence 1 is padding.
        // ratios: exp(0.5) = 1.6487 (above 1.28), exp(-0.5) = 0.6065 (below 0.8), 1, –.
        let logp = Tensor::new(&[[0.5f32, -0.5], [0.0, 9.0]], &dev)?;
        let old = Tensor::new(&[[0.0f32, 0.0], [0.0, 0.0]], &dev)?;
        let adv = Tensor::new(&[1.0f32, -2.0], &dev)?;
        let mask = Tensor::new(&[[1.0f32, 1.0], [1.0, 0.0]], &dev)?;
        let (loss, clipped) = clipped_loss(&logp, &old, &adv, &mask, None, &GrpoConfig::default())?;
        // Token 1: min(1.6487·1, 1.28·1) = 1.28. Token 2: min(0.6065·1, 0.8·1) = 0.6065.
        // Token 3: min(1·−2, 1·−2) = −2. Loss = −(1.28 + 0.6065 − 2) / 3 = 0.037823.
        let loss = f64::from(loss.to_scalar::<f32>()?);
        assert!((loss - 0.037_823).abs() < 1e-5, "{loss}");
        assert!((clipped - 2.0 / 3.0).abs() < 1e-6, "{clipped}");
        // A negative advantage with a ratio below the clip is not clipped away: min picks ratio·A.
        let (loss, _) = clipped_loss(
            &Tensor::new(&[[-0.5f32]], &dev)?,
            &Tensor::new(&[[0.0f32]], &dev)?,
            &Tensor::new(&[-1.0f32], &dev)?,
            &Tensor::new(&[[1.0f32]], &dev)?,
            None,
            &GrpoConfig::default(),
        )?;
        // min(0.6065·−1, 0.8·−1) = −0.8 → loss 0.8.
        assert!((f64::from(loss.to_scalar::<f32>()?) - 0.8).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn with_one_epoch_the_gradient_is_the_policy_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let var = candle_core::Var::new(&[[0.3f32, -0.2]], &dev)?;
        let adv = Tensor::new(&[2.0f32], &dev)?;
        let mask = Tensor::new(&[[1.0f32, 1.0]], &dev)?;
        let logp = var.as_tensor();
        let (loss, clipped) = clipped_loss(logp, &logp.detach(), &adv, &mask, None, &GrpoConfig::default())?;
        assert_eq!(clipped, 0.0);
        let grads = loss.backward()?;
        let g = grads.get(&var).expect("gradient").to_vec2::<f32>()?;
        // d/dlogp of −ratio·A / tokens = −A / 2 = −1 for each token.
        assert_eq!(g, vec![vec![-1.0, -1.0]]);
        Ok(())
    }

    #[test]
    fn kl_k3_is_zero_at_the_reference_and_positive_elsewhere() -> Result<()> {
        let dev = Device::Cpu;
        let p = Tensor::new(&[-1.0f32, -2.0], &dev)?;
        assert_eq!(kl_k3(&p, &p)?.to_vec1::<f32>()?, vec![0.0, 0.0]);
        let k = kl_k3(&p, &Tensor::new(&[-1.5f32, -1.0], &dev)?)?.to_vec1::<f32>()?;
        // exp(−0.5) + 0.5 − 1 = 0.10653; exp(1) − 1 − 1 = 0.71828.
        assert!((k[0] - 0.106_531).abs() < 1e-5 && (k[1] - 0.718_282).abs() < 1e-5, "{k:?}");
        Ok(())
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = GrpoConfig { eps_low: 1.5, ..GrpoConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("grpo.eps_low"));
        assert!(GrpoConfig { epochs: 0, ..GrpoConfig::default() }.validate().is_err());
        assert!(GrpoConfig { beta: f64::NAN, ..GrpoConfig::default() }.validate().is_err());
    }
}
