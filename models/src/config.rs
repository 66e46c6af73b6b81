//! Model configuration: sizes, validated with errors that name the field.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, Result};

/// A Llama-style decoder LM: RMSNorm, rotary positions, SwiGLU MLP, causal self-attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Vocabulary size (256 for the byte-level tokenizer).
    pub vocab: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Attention heads (must divide `d_model`, and `d_model / n_heads` must be even for rotary).
    pub n_heads: usize,
    /// Hidden width of the SwiGLU MLP.
    pub d_ff: usize,
    /// Longest sequence the rotary tables cover.
    pub max_seq: usize,
    /// Rotary base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Share the embedding matrix with the output head (single-stage models only).
    pub tie_embeddings: bool,
    /// Which kernels run the model: `native` (candle) or `repops` (bitwise reproducible).
    pub backend: Backend,
    /// Seed of the weight initialisation.
    pub init_seed: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::preset("tiny").unwrap_or_else(|_| Self::base())
    }
}

impl ModelConfig {
    fn base() -> Self {
        Self {
            vocab: 256,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_ff: 176,
            max_seq: 256,
            rope_base: 10_000.0,
            norm_eps: 1e-5,
            tie_embeddings: false,
            backend: Backend::Native,
            init_seed: 0,
        }
    }

    /// Named sizes: `tiny` (~0.1M parameters), `small` (~1M), `medium` (~10M), `large` (~50M).
    pub fn preset(name: &str) -> Result<Self> {
        let base = Self::base();
        let (d_model, n_layers, n_heads, d_ff) = match name {
            "tiny" => (64, 2, 4, 176),
            "small" => (128, 4, 4, 352),
            "medium" => (384, 6, 6, 1024),
            "large" => (640, 10, 10, 1728),
            other => {
                return Err(Error::config(
                    "model.preset",
                    format!("{other:?} is not one of tiny, small, medium, large"),
                ));
            }
        };
        Ok(Self { d_model, n_layers, n_heads, d_ff, ..base })
    }

    /// The smallest model worth training, for tests and examples: `n_layers` blocks 32 wide (2 heads,
    /// feed-forward 64) on sequences of up to 16 tokens, native kernels.
    pub fn miniature(n_layers: usize) -> Self {
        Self { d_model: 32, n_layers, n_heads: 2, d_ff: 64, max_seq: 16, ..Self::base() }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// Number of trainable parameters of the whole model.
    pub fn param_count(&self) -> usize {
        let block = 2 * self.d_model + 4 * self.d_model * self.d_model + 3 * self.d_model * self.d_ff;
        let head = if self.tie_embeddings { 0 } else { self.vocab * self.d_model };
        self.vocab * self.d_model + self.n_layers * block + self.d_model + head
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("model.vocab", self.vocab),
            ("model.d_model", self.d_model),
            ("model.n_layers", self.n_layers),
            ("model.n_heads", self.n_heads),
            ("model.d_ff", self.d_ff),
            ("model.max_seq", self.max_seq),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::config(
                "model.n_heads",
                format!("{} does not divide d_model = {}", self.n_heads, self.d_model),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::config(
                "model.n_heads",
                format!("head width {} must be even for rotary positions", self.head_dim()),
            ));
        }
        if !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            return Err(Error::config(
                "model.rope_base",
                format!("{} must be a finite number above 1", self.rope_base),
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(Error::config("model.norm_eps", format!("{} must be a small positive number", self.norm_eps)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_advertised_sizes() -> Result<()> {
        let sizes: Vec<usize> = ["tiny", "small", "medium", "large"]
            .iter()
            .map(|p| ModelConfig::preset(p).map(|c| c.param_count()))
            .collect::<Result<_>>()?;
        assert!((80_000..200_000).contains(&sizes[0]), "{sizes:?}");
        assert!((700_000..2_000_000).contains(&sizes[1]), "{sizes:?}");
        assert!((8_000_000..15_000_000).contains(&sizes[2]), "{sizes:?}");
        assert!((40_000_000..60_000_000).contains(&sizes[3]), "{sizes:?}");
        assert!(ModelConfig::preset("huge").is_err());
        Ok(())
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = ModelConfig { n_heads: 3, ..ModelConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("model.n_heads"));
        let bad = ModelConfig { vocab: 0, ..ModelConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("model.vocab"));
        let bad = ModelConfig { d_model: 60, n_heads: 4, ..ModelConfig::default() }; // head width 15
        assert!(bad.validate().unwrap_err().to_string().contains("even"));
    }
}
