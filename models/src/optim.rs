//! AdamW with linear warm-up, cosine decay and global gradient-norm clipping.
//!
//! On the repops backend every step of the update is a repops op (so it is bitwise reproducible and
//! recorded on a tape); the learning-rate schedule uses repops' own cosine, so even the learning rate
//! is the same bits on every platform.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::llama::Params;

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Steps of the whole schedule (the cosine reaches `min_lr` here and stays).
    pub total_steps: u64,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator term.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0 disables clipping).
    pub grad_clip: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 20,
            total_steps: 1000,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
            grad_clip: 1.0,
        }
    }
}

impl OptimConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let finite_nonneg = [
            ("optim.lr", self.lr),
            ("optim.min_lr", self.min_lr),
            ("optim.weight_decay", self.weight_decay),
            ("optim.grad_clip", self.grad_clip),
        ];
        for (field, v) in finite_nonneg {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(field, format!("{v} must be a finite number >= 0")));
            }
        }
        if self.min_lr > self.lr {
            return Err(Error::config("optim.min_lr", format!("{} exceeds lr {}", self.min_lr, self.lr)));
        }
        for (field, v) in [("optim.beta1", self.beta1), ("optim.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::config(field, format!("{v} must be in [0, 1)")));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config("optim.eps", format!("{} must be positive", self.eps)));
        }
        Ok(())
    }

    /// The learning rate at (0-based) `step`: linear warm-up to `lr`, then cosine to `min_lr`.
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f32 / span as f32).min(1.0);
        let cos = repops::kernels::math::sin_cos(std::f32::consts::PI * progress).1;
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + cos)
    }

    /// The hyper-parameters of the update at (0-based) `step`, with the learning rate `lr_factor` times
    /// the schedule's ([`OptimConfig::lr_at`]): the attributes of every AdamW operator of that step, which
    /// anyone holding the config can re-derive.
    pub fn hyper_at(&self, step: u64, lr_factor: f32) -> repops::AdamW {
        repops::AdamW {
            lr: self.lr_at(step) * lr_factor,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The learning rate used.
    pub lr: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

/// AdamW over a set of named parameters, with its moments.
///
/// On the native backend on the CPU a step updates the moments and parameters in place. Clones, saved
/// states and restored states share their moment tensors with this optimizer until its next step, which
/// then first copies them (copy on write): a clone kept as a checkpoint never moves with later steps.
#[derive(Debug)]
pub struct AdamW {
    cfg: OptimConfig,
    backend: Backend,
    step: u64,
    /// Steps since the moments started (the bias correction's `t`); equals `step` unless reset.
    moment_steps: u64,
    moments: BTreeMap<String, (Tensor, Tensor)>,
    /// Factor on the scheduled learning rate (1 unless set by [`AdamW::set_lr_factor`]).
    lr_factor: f32,
    /// Whether `moments` may be held elsewhere too (by a clone, a saved or a restored state), so that
    /// an in-place step must copy them first.
    moments_shared: AtomicBool,
}

impl Clone for AdamW {
    fn clone(&self) -> Self {
        self.moments_shared.store(true, Ordering::Relaxed);
        Self {
            cfg: self.cfg.clone(),
            backend: self.backend,
            step: self.step,
            moment_steps: self.moment_steps,
            moments: self.moments.clone(),
            lr_factor: self.lr_factor,
            moments_shared: AtomicBool::new(true),
        }
    }
}

impl AdamW {
    /// A fresh optimizer (zero moments, step 0).
    pub fn new(cfg: OptimConfig, backend: Backend) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            backend,
            step: 0,
            moment_steps: 0,
            moments: BTreeMap::new(),
            lr_factor: 1.0,
            moments_shared: AtomicBool::new(false),
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// From now on the learning rate is `factor` times the configured schedule's (its peak and floor
    /// alike). Setting it again replaces the factor, it does not compound: a stage rebuilt twice runs at
    /// `factor × base`, as CheckFree's released code recreates the optimizer at `lr_scale × lr` each time.
    pub fn set_lr_factor(&mut self, factor: f32) {
        self.lr_factor = factor;
    }

    /// The learning rate of the next step.
    pub fn next_lr(&self) -> f32 {
        self.cfg.hyper_at(self.step, self.lr_factor).lr
    }

    /// Applies one update to `params` from `grads` (by name; parameters without a gradient are left
    /// alone), clipping on the norm of `grads`.
    pub fn step(&mut self, params: &Params, grads: &BTreeMap<String, Tensor>) -> Result<StepStats> {
        let grad_norm = self.squared_norm(grads)?.sqrt();
        self.step_with_norm(params, grads, grad_norm)
    }

    /// The sum of the squares of every gradient in `grads` (this optimizer's arithmetic).
    pub fn squared_norm(&self, grads: &BTreeMap<String, Tensor>) -> Result<f32> {
        let mut sq = 0f32;
        for g in grads.values() {
            sq += self.backend.sum_sq(g)?;
        }
        Ok(sq)
    }

    /// [`AdamW::step`], clipping on `grad_norm` instead of the norm of `grads`: the norm of a larger
    /// gradient of which `grads` is a part (a whole model's, when `grads` is one pipeline stage's), so
    /// that every part is scaled by the same factor.
    pub fn step_with_norm(
        &mut self,
        params: &Params,
        grads: &BTreeMap<String, Tensor>,
        grad_norm: f32,
    ) -> Result<StepStats> {
        let be = self.backend;
        let clip = if self.cfg.grad_clip > 0.0 && grad_norm > self.cfg.grad_clip {
            self.cfg.grad_clip / grad_norm
        } else {
            1.0
        };
        let h = self.cfg.hyper_at(self.step, self.lr_factor);
        let lr = h.lr;
        self.step += 1;
        self.moment_steps += 1;
        // In place on the native backend on the CPU: one pass per moment and one for the parameter,
        // nothing allocated once the moments are this optimizer's own.
        let in_place = be == Backend::Native && params.iter().next().is_some_and(|(_, v)| v.device().is_cpu());
        if in_place && self.moments_shared.load(Ordering::Relaxed) {
            let mut own = BTreeMap::new();
            for (name, (m, v)) in &self.moments {
                own.insert(name.clone(), (m.force_contiguous()?, v.force_contiguous()?));
            }
            self.moments = own;
            self.moments_shared.store(false, Ordering::Relaxed);
        }
        for (name, var) in params.iter() {
            let Some(g) = grads.get(name) else { continue };
            let (m, v) = match self.moments.get(name) {
                Some(mv) => mv.clone(),
                None => (var.zeros_like()?, var.zeros_like()?),
            };
            if in_place {
                crate::fused::adamw_in_place(var.as_tensor(), g, &m, &v, clip, self.moment_steps, h)?;
                self.moments.insert(name.clone(), (m, v));
                continue;
            }
            let g = if clip < 1.0 { be.scale(g, clip)? } else { g.clone() };
            let (p, m, v) = match be {
                Backend::RepOps => repops::tensor::adamw_step(var.as_tensor(), &g, &m, &v, self.moment_steps, h)?,
                Backend::Native => native_adamw(var.as_tensor(), &g, &m, &v, self.moment_steps, h)?,
            };
            var.set(&p)?;
            // Detached: a moment that kept its autograd graph would keep every earlier step's graph alive.
            self.moments.insert(name.clone(), (m.detach(), v.detach()));
        }
        Ok(StepStats { lr, grad_norm })
    }

    /// The optimizer state as named tensors (`<param>.m`, `<param>.v`) plus the step, for checkpoints.
    /// Later steps leave it as it is.
    pub fn state(&self) -> (u64, BTreeMap<String, Tensor>) {
        self.moments_shared.store(true, Ordering::Relaxed);
        let mut out = BTreeMap::new();
        for (n, (m, v)) in &self.moments {
            out.insert(format!("{n}.m"), m.clone());
            out.insert(format!("{n}.v"), v.clone());
        }
        (self.step, out)
    }

    /// Restores a state saved by [`AdamW::state`].
    pub fn restore(&mut self, step: u64, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut moments = BTreeMap::new();
        for (key, m) in state {
            let Some(name) = key.strip_suffix(".m") else { continue };
            let v = state
                .get(&format!("{name}.v"))
                .ok_or_else(|| Error::Input(format!("optimizer state lacks {name}.v")))?;
            moments.insert(name.to_owned(), (m.clone(), v.clone()));
        }
        self.moments = moments;
        // The caller still holds `state`.
        self.moments_shared.store(true, Ordering::Relaxed);
        self.step = step;
        self.moment_steps = step;
        Ok(())
    }

    /// Forgets the moments of the parameters whose names start with `prefix` (a fresh optimizer for them).
    pub fn reset(&mut self, prefix: &str) {
        self.moments.retain(|n, _| !n.starts_with(prefix));
    }

    /// A fresh optimizer state that keeps the learning-rate schedule's position: zero moments, and the
    /// bias correction starts again from step 1, as a newly created optimizer's would.
    pub fn restart_moments(&mut self) {
        self.moments.clear();
        self.moment_steps = 0;
    }
}

fn native_adamw(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    t: u64,
    h: repops::AdamW,
) -> Result<(Tensor, Tensor, Tensor)> {
    let m = ((m * f64::from(h.beta1))? + (g * f64::from(1.0 - h.beta1))?)?;
    let v = ((v * f64::from(h.beta2))? + (g.sqr()? * f64::from(1.0 - h.beta2))?)?;
    let bc1 = 1.0 - f64::from(h.beta1).powi(t as i32);
    let bc2 = 1.0 - f64::from(h.beta2).powi(t as i32);
    let p = (p * (1.0 - f64::from(h.lr * h.weight_decay)))?;
    let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + f64::from(h.eps))?)?;
    let p = (p - (update * f64::from(h.lr))?)?;
    Ok((p, m, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = OptimConfig { lr: 1.0, min_lr: 0.1, warmup_steps: 10, total_steps: 110, ..OptimConfig::default() };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-6);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(60) - 0.55).abs() < 1e-4);
        assert!((c.lr_at(110) - 0.1).abs() < 1e-6);
        assert!((c.lr_at(10_000) - 0.1).abs() < 1e-6);
        let lrs: Vec<f32> = (10..110).map(|s| c.lr_at(s)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = OptimConfig { beta1: 1.0, ..OptimConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("optim.beta1"));
        let e = OptimConfig { lr: -1.0, ..OptimConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("optim.lr"));
        let e = OptimConfig { min_lr: 1.0, lr: 0.1, ..OptimConfig::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("optim.min_lr"));
    }

    #[test]
    fn a_learning_rate_factor_replaces_the_last_one_instead_of_compounding() -> Result<()> {
        let cfg = OptimConfig { lr: 0.5, min_lr: 0.5, warmup_steps: 0, ..OptimConfig::default() };
        let mut opt = AdamW::new(cfg, Backend::Native)?;
        assert_eq!(opt.next_lr(), 0.5);
        opt.set_lr_factor(1.2);
        assert!((opt.next_lr() - 0.6).abs() < 1e-6);
        // A second (and third) rebuild: still 1.2 × base, not 1.2² or 1.2³.
        opt.set_lr_factor(1.2);
        opt.set_lr_factor(1.2);
        assert!((opt.next_lr() - 0.6).abs() < 1e-6, "{}", opt.next_lr());
        assert_eq!(opt.config().lr, 0.5, "the configured schedule is untouched");
        Ok(())
    }
}
