//! The AdamW update (decoupled weight decay, as PyTorch's `AdamW`), element by element.

use rayon::prelude::*;

/// Hyper-parameters of one AdamW step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator term.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// `base^exp` by squaring in f64 (basic operations only), rounded to f32.
fn powi(base: f32, mut exp: u64) -> f32 {
    let (mut b, mut acc) = (f64::from(base), 1.0f64);
    while exp > 0 {
        if exp & 1 == 1 {
            acc *= b;
        }
        b *= b;
        exp >>= 1;
    }
    acc as f32
}

/// The scalars of step `t`: bias corrections `1 − β1^t`, `1 − β2^t`, and the decay factor `lr · wd`.
pub fn corrections(t: u64, h: AdamW) -> (f32, f32, f32) {
    (1.0 - powi(h.beta1, t), 1.0 - powi(h.beta2, t), h.lr * h.weight_decay)
}

/// The parameter half of step `t`, from moments already updated:
/// `p = p − (lr·wd)·p`, then `p = p − lr · ((m/bc1) / (√(v/bc2) + eps))`.
pub fn apply_update(params: &mut [f32], m: &[f32], v: &[f32], t: u64, h: AdamW) {
    let (bc1, bc2, decay) = corrections(t, h);
    for i in 0..params.len() {
        params[i] -= decay * params[i];
        params[i] -= h.lr * ((m[i] / bc1) / ((v[i] / bc2).sqrt() + h.eps));
    }
}

/// Step `t` (1-based) of AdamW on `params`, with moments `m`, `v` updated in place:
/// `m = β1·m + (1−β1)·g`; `v = β2·v + (1−β2)·(g·g)`; `p = p − (lr·wd)·p`;
/// `p = p − lr · ((m/bc1) / (√(v/bc2) + eps))`, with `bc = 1 − β^t`.
pub fn step(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], t: u64, h: AdamW) {
    let bc1 = 1.0 - powi(h.beta1, t);
    let bc2 = 1.0 - powi(h.beta2, t);
    let decay = h.lr * h.weight_decay;
    const CHUNK: usize = 1 << 14;
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let gi = g[i];
                m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * gi;
                v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * (gi * gi);
                p[i] -= decay * p[i];
                p[i] -= h.lr * ((m[i] / bc1) / ((v[i] / bc2).sqrt() + h.eps));
            }
        });
}
