//! A synthetic language whose entropy rate is known exactly: the default corpus.
//!
//! Symbols are the letters `a`, `b`, … (one byte each). The next symbol depends on the previous `order`
//! symbols: `P(b | context) = (1−ε) Σ_j w_j [b = s_j(context)] + ε / A`, a few (`mixture`) randomly chosen
//! likely successors per context with random weights, plus a little uniform noise. The noise makes the
//! chain over contexts irreducible and aperiodic, so it has one stationary law `π`, found by power
//! iteration to machine precision, and the entropy rate is exactly `H = Σ_ctx π(ctx) · H(P(· | ctx))`:
//! a long sample has that entropy rate. A model's validation loss can approach this floor, never beat it.
//! Shorter contexts are informative too (the marginals are not uniform), so loss falls steadily as a model
//! learns to use more of the context.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Corpus;
use crate::error::{Error, Result};

/// Parameters of the synthetic language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Alphabet size (2..=26).
    pub alphabet: usize,
    /// Context length (1..=4).
    pub order: usize,
    /// Permutations mixed per context (1..=8).
    pub mixture: usize,
    /// Weight of the uniform noise, in (0, 1).
    pub noise: f64,
    /// Seed of the language itself (its transition table).
    pub seed: u64,
    /// Training tokens to generate.
    pub train_tokens: usize,
    /// Validation tokens to generate.
    pub val_tokens: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { alphabet: 16, order: 2, mixture: 3, noise: 0.02, seed: 1, train_tokens: 1 << 20, val_tokens: 1 << 16 }
    }
}

impl SyntheticConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let range = |field: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(field, format!("{v} is outside {lo}..={hi}")))
            }
        };
        range("corpus.alphabet", self.alphabet, 2, 26)?;
        range("corpus.order", self.order, 1, 4)?;
        range("corpus.mixture", self.mixture, 1, 8)?;
        if !(self.noise > 0.0 && self.noise < 1.0) {
            return Err(Error::config("corpus.noise", format!("{} is outside (0, 1)", self.noise)));
        }
        if self.train_tokens < 1024 || self.val_tokens < 256 {
            return Err(Error::config("corpus.train_tokens", "need at least 1024 training and 256 validation tokens"));
        }
        Ok(())
    }
}

/// The stationary law of the chain over contexts (`ctx → (ctx·A + b) mod A^k` with probability
/// `P(b | ctx)`), by power iteration until it moves less than 1e-15 (in L1).
fn stationary(probs: &[f64], a: usize, contexts: usize) -> Vec<f64> {
    let mut pi = vec![1.0 / contexts as f64; contexts];
    for _ in 0..1_000_000 {
        let mut next = vec![0f64; contexts];
        for (ctx, &p) in pi.iter().enumerate() {
            for b in 0..a {
                next[(ctx * a + b) % contexts] += p * probs[ctx * a + b];
            }
        }
        let total: f64 = next.iter().sum();
        let delta: f64 = next.iter().zip(&pi).map(|(n, p)| (n / total - p).abs()).sum();
        pi = next.into_iter().map(|n| n / total).collect();
        if delta < 1e-15 {
            break;
        }
    }
    pi
}

/// The language: its transition table and exact entropy rate.
#[derive(Debug, Clone)]
pub struct SyntheticLanguage {
    cfg: SyntheticConfig,
    /// `probs[ctx * A + b]`, contexts numbered base-A with the oldest symbol most significant.
    probs: Vec<f64>,
    cumulative: Vec<f64>,
    entropy_rate: f64,
}

impl SyntheticLanguage {
    /// Builds the transition table of `cfg`.
    pub fn new(cfg: &SyntheticConfig) -> Result<Self> {
        cfg.validate()?;
        let a = cfg.alphabet;
        let contexts = a.pow(cfg.order as u32);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut probs = vec![cfg.noise / a as f64; contexts * a];
        for row in probs.chunks_mut(a) {
            let raw: Vec<f64> = (0..cfg.mixture).map(|_| rng.random_range(0.2..1.0)).collect();
            let total: f64 = raw.iter().sum();
            for w in raw {
                row[rng.random_range(0..a)] += (1.0 - cfg.noise) * w / total;
            }
        }
        let stationary = stationary(&probs, a, contexts);
        let entropy_rate = probs
            .chunks(a)
            .zip(&stationary)
            .map(|(row, &pi)| -pi * row.iter().filter(|&&p| p > 0.0).map(|&p| p * p.ln()).sum::<f64>())
            .sum::<f64>();
        let cumulative = probs
            .chunks(a)
            .flat_map(|row| {
                let mut acc = 0.0;
                row.iter().map(move |&p| {
                    acc += p;
                    acc
                })
            })
            .collect();
        Ok(Self { cfg: cfg.clone(), probs, cumulative, entropy_rate })
    }

    /// The exact entropy rate in nats per symbol (= per byte token).
    pub fn entropy_rate(&self) -> f64 {
        self.entropy_rate
    }

    /// `P(b | context)` for a context given oldest-first.
    pub fn prob(&self, context: &[usize], b: usize) -> f64 {
        let ctx = context.iter().fold(0, |c, &s| c * self.cfg.alphabet + s);
        self.probs[ctx * self.cfg.alphabet + b]
    }

    /// `n` symbols sampled with `seed`, as byte tokens (`b'a' + symbol`).
    pub fn sample(&self, n: usize, seed: u64) -> Vec<u32> {
        let (a, k) = (self.cfg.alphabet, self.cfg.order);
        let contexts = a.pow(k as u32);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut ctx = rng.random_range(0..contexts);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let u: f64 = rng.random();
            let row = &self.cumulative[ctx * a..(ctx + 1) * a];
            let b = row.iter().position(|&c| u < c).unwrap_or(a - 1);
            out.push(u32::from(b'a') + b as u32);
            ctx = (ctx * a + b) % contexts;
        }
        out
    }

    /// The default corpus: training and validation samples from independent seeds.
    pub fn corpus(&self) -> Corpus {
        Corpus {
            name: format!(
                "synthetic(alphabet={}, order={}, mixture={}, noise={}, seed={})",
                self.cfg.alphabet, self.cfg.order, self.cfg.mixture, self.cfg.noise, self.cfg.seed
            ),
            train: self.sample(self.cfg.train_tokens, self.cfg.seed.wrapping_add(1000)),
            val: self.sample(self.cfg.val_tokens, self.cfg.seed.wrapping_add(2000)),
            entropy_floor: Some(self.entropy_rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_distributions_and_the_law_is_stationary() -> Result<()> {
        let lang = SyntheticLanguage::new(&SyntheticConfig { alphabet: 5, order: 2, ..SyntheticConfig::default() })?;
        for c0 in 0..5 {
            for c1 in 0..5 {
                let row: f64 = (0..5).map(|b| lang.prob(&[c0, c1], b)).sum();
                assert!((row - 1.0).abs() < 1e-12);
            }
        }
        let pi = stationary(&lang.probs, 5, 25);
        let mut next = [0f64; 25];
        for ctx in 0..25 {
            for b in 0..5 {
                next[(ctx * 5 + b) % 25] += pi[ctx] * lang.probs[ctx * 5 + b];
            }
        }
        assert!(next.iter().zip(&pi).all(|(a, b)| (a - b).abs() < 1e-13));
        Ok(())
    }

    #[test]
    fn empirical_cross_entropy_of_the_true_model_matches_the_entropy_rate() -> Result<()> {
        let cfg = SyntheticConfig::default();
        let lang = SyntheticLanguage::new(&cfg)?;
        let sample = lang.sample(400_000, 9);
        let syms: Vec<usize> = sample.iter().map(|&t| (t - u32::from(b'a')) as usize).collect();
        let nll: f64 = syms.windows(cfg.order + 1).map(|w| -lang.prob(&w[..cfg.order], w[cfg.order]).ln()).sum::<f64>()
            / (syms.len() - cfg.order) as f64;
        let h = lang.entropy_rate();
        assert!((nll - h).abs() < 0.01 * h, "sample {nll} vs exact {h}");
        assert!(h > 0.3 && h < (cfg.alphabet as f64).ln());
        Ok(())
    }

    #[test]
    fn bad_settings_are_named() {
        let e = SyntheticLanguage::new(&SyntheticConfig { alphabet: 40, ..SyntheticConfig::default() }).unwrap_err();
        assert!(e.to_string().contains("corpus.alphabet"));
        let e = SyntheticLanguage::new(&SyntheticConfig { noise: 0.0, ..SyntheticConfig::default() }).unwrap_err();
        assert!(e.to_string().contains("corpus.noise"));
    }
}
