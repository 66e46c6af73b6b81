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
    /// Key/value heads, for grouped-query attention: each serves `n_heads / kv_heads` query heads
    /// (Llama 3, Qwen2). `None`: one per query head.
    pub kv_heads: Option<usize>,
    /// Width of one head when it is not `d_model / n_heads` (Qwen3). `None`: `d_model / n_heads`.
    pub head_width: Option<usize>,
    /// Biases on the query, key and value projections (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm over each query and key head before the rotary positions (Qwen3).
    pub qk_norm: bool,
    /// Hidden width of the SwiGLU MLP.
    pub d_ff: usize,
    /// Longest sequence the rotary tables cover.
    pub max_seq: usize,
    /// Rotary base.
    pub rope_base: f32,
    /// Llama 3.1's rescaling of the rotary frequencies for a longer window; `None`: plain.
    pub rope_scaling: Option<RopeScaling>,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Share the embedding matrix with the output head (single-stage models only).
    pub tie_embeddings: bool,
    /// Which kernels run the model: `native` (candle) or `repops` (bitwise reproducible).
    pub backend: Backend,
    /// The precision of the matrix products: `f32`, or `bf16` mixed precision (native backend only).
    pub precision: Precision,
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
            kv_heads: None,
            head_width: None,
            qkv_bias: false,
            qk_norm: false,
            d_ff: 176,
            max_seq: 256,
            rope_base: 10_000.0,
            rope_scaling: None,
            norm_eps: 1e-5,
            tie_embeddings: false,
            backend: Backend::Native,
            precision: Precision::F32,
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
        self.head_width.unwrap_or(self.d_model / self.n_heads.max(1))
    }

    /// Key/value heads.
    pub fn n_kv_heads(&self) -> usize {
        self.kv_heads.unwrap_or(self.n_heads)
    }

    /// Width of all query heads together (`d_model` unless the head width is set).
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim()
    }

    /// Width of all key (or value) heads together.
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads() * self.head_dim()
    }

    /// Scalars of the matrices of one block: the four attention projections and the three of the MLP.
    pub fn block_matrix_params(&self) -> usize {
        let d = self.d_model;
        2 * d * self.q_width() + 2 * d * self.kv_width() + 3 * d * self.d_ff
    }

    /// Number of trainable parameters of the whole model.
    pub fn param_count(&self) -> usize {
        let bias = if self.qkv_bias { self.q_width() + 2 * self.kv_width() } else { 0 };
        let qk_norm = if self.qk_norm { 2 * self.head_dim() } else { 0 };
        let block = 2 * self.d_model + self.block_matrix_params() + bias + qk_norm;
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
        if self.kv_heads == Some(0) || !self.n_heads.is_multiple_of(self.n_kv_heads()) {
            return Err(Error::config(
                "model.kv_heads",
                format!("{} key/value heads do not divide n_heads = {}", self.n_kv_heads(), self.n_heads),
            ));
        }
        if self.head_width == Some(0) {
            return Err(Error::config("model.head_width", "must be at least 1"));
        }
        if self.head_width.is_none() && !self.d_model.is_multiple_of(self.n_heads) {
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
        if let Some(scaling) = &self.rope_scaling {
            scaling.validate()?;
        }
        if self.precision == Precision::Bf16 && self.backend != Backend::Native {
            return Err(Error::config(
                "model.precision",
                format!("bf16 is for the native backend; {} computes in f32 to stay bit-defined", self.backend),
            ));
        }
        Ok(())
    }

    /// The rotary frequencies of a head, rescaled by [`Self::rope_scaling`] if set.
    pub fn rope_frequencies(&self) -> Vec<f32> {
        let plain = repops::kernels::rope::inv_freq(self.head_dim(), self.rope_base);
        match &self.rope_scaling {
            None => plain,
            Some(scaling) => plain.into_iter().map(|f| scaling.rescale(f)).collect(),
        }
    }
}

/// The precision a model's matrix products run at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every op in f32.
    #[default]
    F32,
    /// Mixed precision as PyTorch's bf16 autocast trains: the matrix products (the linear layers, and
    /// attention's two products where they are separate ops) read bf16 copies of their operands and
    /// round their result to bf16, which is widened back to f32; the weights, their gradients, the
    /// residual stream, norms, softmax, the loss and the optimizer's state stay f32. On the CPU the
    /// fused attention kernel keeps its products in f32. Native backend only.
    Bf16,
}

impl Precision {
    /// The product `f(a, b)` at this precision: as it is in f32; with bf16, on bf16 copies of `a` and `b`,
    /// its result widened back to f32. The gradients reaching `a` and `b` are f32 either way.
    pub fn product(
        self,
        a: &candle_core::Tensor,
        b: &candle_core::Tensor,
        f: impl FnOnce(&candle_core::Tensor, &candle_core::Tensor) -> Result<candle_core::Tensor>,
    ) -> Result<candle_core::Tensor> {
        use candle_core::DType;
        match self {
            Self::F32 => f(a, b),
            Self::Bf16 => Ok(f(&a.to_dtype(DType::BF16)?, &b.to_dtype(DType::BF16)?)?.to_dtype(DType::F32)?),
        }
    }
}

/// Llama 3.1's rotary frequency rescaling (`rope_type = "llama3"`): frequencies whose wavelength is
/// shorter than `original_max_seq / high_freq_factor` are kept, those longer than `original_max_seq /
/// low_freq_factor` are divided by `factor`, and those between are interpolated smoothly, so a model
/// trained on `original_max_seq` positions reads longer sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    /// How much longer the window is than the original.
    pub factor: f32,
    /// Wavelengths above `original_max_seq / low_freq_factor` are scaled fully.
    pub low_freq_factor: f32,
    /// Wavelengths below `original_max_seq / high_freq_factor` are kept.
    pub high_freq_factor: f32,
    /// The window the model was first trained on.
    pub original_max_seq: usize,
}

impl RopeScaling {
    /// The rescaled frequency of `freq`.
    pub fn rescale(&self, freq: f32) -> f32 {
        let original = self.original_max_seq as f32;
        let wavelength = 2.0 * std::f32::consts::PI / freq;
        if wavelength < original / self.high_freq_factor {
            freq
        } else if wavelength > original / self.low_freq_factor {
            freq / self.factor
        } else {
            let smooth =
                (original / wavelength - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * freq / self.factor + smooth * freq
        }
    }

    /// Checks the factors: finite, positive, `low_freq_factor < high_freq_factor`.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("model.rope_scaling.factor", self.factor),
            ("model.rope_scaling.low_freq_factor", self.low_freq_factor),
            ("model.rope_scaling.high_freq_factor", self.high_freq_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::config(field, format!("{v} must be a finite positive number")));
            }
        }
        if self.low_freq_factor >= self.high_freq_factor {
            return Err(Error::config(
                "model.rope_scaling.low_freq_factor",
                format!("{} must be below high_freq_factor {}", self.low_freq_factor, self.high_freq_factor),
            ));
        }
        if self.original_max_seq == 0 {
            return Err(Error::config("model.rope_scaling.original_max_seq", "must be at least 1"));
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
        let bad = ModelConfig { kv_heads: Some(3), ..ModelConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("model.kv_heads"));
        let bad = ModelConfig { head_width: Some(0), ..ModelConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("model.head_width"));
        // An explicit head width need not divide the residual width.
        let qwen3 =
            ModelConfig { d_model: 60, n_heads: 4, kv_heads: Some(2), head_width: Some(16), ..ModelConfig::default() };
        assert!(qwen3.validate().is_ok());
        assert_eq!((qwen3.q_width(), qwen3.kv_width()), (64, 32));
    }
}
