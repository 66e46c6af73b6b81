//! The op backend switch: the same model code on candle's native kernels or on repops.
//!
//! `Native` is fastest; `RepOps` makes every op of the forward pass, the backward pass and the optimizer
//! bitwise reproducible across thread counts, SIMD levels and machines (and records them on a
//! [`repops::Tape`] when one is active). Both compute the same functions; their results agree to
//! floating-point tolerance, not bit for bit.
//!
//! On the CPU, `Native` runs its row-wise and element-wise ops as fused ops (one kernel for the forward
//! pass and one for the backward pass, see `fused`) and its linear layers as one matrix product over all
//! leading dimensions; on other devices it composes candle's ops.

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Which kernels run a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// candle's own kernels.
    #[default]
    Native,
    /// repops' bitwise-reproducible kernels.
    #[serde(rename = "repops")]
    RepOps,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::RepOps => "repops",
        })
    }
}

impl Backend {
    /// `x [.., in] · wᵀ` for `w [out, in]`.
    pub fn linear(self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 => crate::fused::linear(x, w)?,
            Self::Native => {
                // One [rows, in] · [in, out] product (its backward pass too) instead of one per leading index.
                let dims = x.dims();
                let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
                let k = x.dim(candle_core::D::Minus1)?;
                let mut out = dims.to_vec();
                if let Some(last) = out.last_mut() {
                    *last = w.dim(0)?;
                }
                x.reshape((rows, k))?.matmul(&w.t()?)?.reshape(out)?
            }
            Self::RepOps => repops::tensor::linear(x, w)?,
        })
    }

    /// Batched matrix product of equal-rank contiguous tensors.
    pub fn matmul(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native => a.contiguous()?.matmul(&b.contiguous()?)?,
            Self::RepOps => repops::tensor::matmul(a, b)?,
        })
    }

    /// `a [.., m, k] · b [.., n, k]ᵀ`, both reading `b` transposed in place (for a contiguous `b`).
    pub fn matmul_bt(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native => a.contiguous()?.matmul(&b.contiguous()?.t()?)?,
            Self::RepOps => repops::tensor::matmul_t(a, b, false, true)?,
        })
    }

    /// Element-wise sum of equal shapes.
    pub fn add(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native => (a + b)?,
            Self::RepOps => repops::tensor::add(a, b)?,
        })
    }

    /// `x + bias`, the bias `[n]` added along the last dimension `n` of `x`.
    pub fn add_bias(self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native => x.broadcast_add(bias)?,
            Self::RepOps => repops::tensor::add(x, &bias.broadcast_as(x.shape())?.contiguous()?)?,
        })
    }

    /// `x · c`.
    pub fn scale(self, x: &Tensor, c: f32) -> Result<Tensor> {
        Ok(match self {
            Self::Native => (x * f64::from(c))?,
            Self::RepOps => repops::tensor::scale(x, c)?,
        })
    }

    /// RMSNorm over the last dimension.
    pub fn rms_norm(self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(match self {
            Self::Native if x.device().is_cpu() => crate::fused::rms_norm(x, w, eps)?,
            Self::Native => {
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                x.broadcast_div(&(ms + f64::from(eps))?.sqrt()?)?.broadcast_mul(w)?
            }
            Self::RepOps => repops::tensor::rms_norm(x, w, eps)?,
        })
    }

    /// Softmax over the last dimension.
    pub fn softmax_last_dim(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native => candle_nn::ops::softmax(x, D::Minus1)?,
            Self::RepOps => repops::tensor::softmax_last_dim(x)?,
        })
    }

    /// SwiGLU gate `silu(a) · b`.
    pub fn swiglu(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native if a.device().is_cpu() => crate::fused::swiglu(a, b)?,
            Self::Native => (a.silu()? * b)?,
            Self::RepOps => repops::tensor::swiglu(a, b)?,
        })
    }

    /// Rotary embedding of `x [.., t, d]` with tables `[t, d/2]` (the "rotate half" layout).
    pub fn rope(self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native => {
                let d = x.dim(D::Minus1)?;
                let (x1, x2) = (x.narrow(D::Minus1, 0, d / 2)?, x.narrow(D::Minus1, d / 2, d / 2)?);
                let y1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
                let y2 = (x1.broadcast_mul(sin)? + x2.broadcast_mul(cos)?)?;
                Tensor::cat(&[y1, y2], D::Minus1)?
            }
            Self::RepOps => repops::tensor::rope(x, cos, sin)?,
        })
    }

    /// Whether a forward pass without a key/value cache on `device` runs attention as one fused op
    /// ([`Backend::causal_attention`]) instead of scores, mask, softmax and products.
    pub fn fuses_attention(self, device: &candle_core::Device) -> bool {
        self == Self::Native && device.is_cpu()
    }

    /// Causal self-attention with rotary positions `0..T`, as one op, over projections `q [B, T, heads ·
    /// dh]` and `k`, `v [B, T, kv_heads · dh]`, returning `[B, T, heads · dh]`; `cos`, `sin` are `[T, dh/2]`.
    /// Only where [`Backend::fuses_attention`] says so.
    #[allow(clippy::too_many_arguments)]
    pub fn causal_attention(
        self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        heads: usize,
        kv_heads: usize,
    ) -> Result<Tensor> {
        if !self.fuses_attention(q.device()) {
            return Err(crate::Error::Input(format!("{self} has no fused attention on {:?}", q.device())));
        }
        crate::fused::causal_attention(q, k, v, cos, sin, heads, kv_heads)
    }

    /// Rows of `table` for `ids` (u32).
    pub fn embedding(self, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native => {
                let dims = ids.dims().to_vec();
                let flat = table.index_select(&ids.flatten_all()?, 0)?;
                let mut shape = dims;
                shape.push(table.dim(1)?);
                flat.reshape(shape)?
            }
            Self::RepOps => repops::tensor::embedding(table, ids)?,
        })
    }

    /// Mean cross-entropy of `logits [N, V]` against `targets [N]` (u32).
    pub fn cross_entropy(self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Native if logits.device().is_cpu() => crate::fused::cross_entropy(logits, targets)?,
            Self::Native => candle_nn::loss::cross_entropy(logits, targets)?,
            Self::RepOps => repops::tensor::cross_entropy(logits, targets)?,
        })
    }

    /// Sum of squares of every element, as an f32 on the host (for gradient norms).
    pub fn sum_sq(self, x: &Tensor) -> Result<f32> {
        Ok(match self {
            Self::Native if x.device().is_cpu() => crate::fused::sum_sq(x)?,
            Self::Native => x.sqr()?.sum_all()?.to_dtype(DType::F32)?.to_vec0::<f32>()?,
            Self::RepOps => {
                let flat = x.flatten_all()?.unsqueeze(0)?;
                repops::tensor::sum_last(&repops::tensor::square(&flat)?)?.flatten_all()?.to_vec1::<f32>()?[0]
            }
        })
    }
}
