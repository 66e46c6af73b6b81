//! The op set: what each op takes, what it returns, and [`execute`], which runs one op on host slices.
//!
//! Every kernel call in repops goes through [`execute`], whether it comes from a candle tensor, from a
//! [`Tape`](crate::Tape) replay or from a referee re-running one disputed op. So the op a referee
//! re-executes is the very code that the trainers ran.

use crate::error::{Error, Result};
use crate::kernels::adamw::AdamW;
use crate::kernels::elementwise::{self, Binary, Unary};
use crate::kernels::rows::{self, RowReduce};
use crate::kernels::{embed, matmul, rope};
use crate::simd::SimdLevel;

/// One repops operation with its attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpKind {
    /// `[.., m, k] · [.., k, n]` (or a shared `[k, n]`).
    MatMul,
    /// Swap the last two dimensions.
    Transpose,
    /// An element-wise function.
    Unary(Unary),
    /// An element-wise operation on two equal-shaped tensors.
    Binary(Binary),
    /// A reduction over the last dimension (kept as size 1).
    RowReduce(RowReduce),
    /// Softmax over the last dimension.
    Softmax,
    /// Log-softmax over the last dimension.
    LogSoftmax,
    /// Softmax backward: inputs `(y, dy)`.
    SoftmaxBackward,
    /// Log-softmax backward: inputs `(y, dy)`.
    LogSoftmaxBackward,
    /// Mean cross-entropy: inputs `(logits [N, V], targets [N] u32)`, output a scalar.
    CrossEntropy,
    /// Cross-entropy backward: inputs `(logits, targets, dloss [])`.
    CrossEntropyBackward,
    /// RMSNorm over the last dimension: inputs `(x, w)`.
    RmsNorm {
        /// Added to the mean square.
        eps: f32,
    },
    /// RMSNorm backward for `x`: inputs `(x, w, dy)`.
    RmsNormBackwardX {
        /// As in the forward op.
        eps: f32,
    },
    /// RMSNorm backward for `w`: inputs `(x, dy)`.
    RmsNormBackwardW {
        /// As in the forward op.
        eps: f32,
    },
    /// Rotary embedding: inputs `(x [.., t, d], cos [t, d/2], sin [t, d/2])`.
    Rope {
        /// Rotate by −θ (the backward pass).
        inverse: bool,
    },
    /// Embedding lookup: inputs `(table [V, d], ids [..] u32)`.
    Embedding,
    /// Embedding backward: inputs `(dy [.., d], ids [..] u32)`, output `[vocab, d]`.
    EmbeddingBackward {
        /// Rows of the table.
        vocab: usize,
    },
    /// AdamW first moment: inputs `(m, g)`: `β1·m + (1−β1)·g`.
    AdamMoment1 {
        /// β1.
        beta1: f32,
    },
    /// AdamW second moment: inputs `(v, g)`: `β2·v + (1−β2)·(g·g)`.
    AdamMoment2 {
        /// β2.
        beta2: f32,
    },
    /// AdamW parameter update: inputs `(p, m, v)` (moments already updated), for step `t`.
    AdamParam {
        /// Hyper-parameters.
        h: AdamW,
        /// 1-based step.
        t: u64,
    },
}

impl OpKind {
    /// A short name for logs and tapes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MatMul => "matmul",
            Self::Transpose => "transpose",
            Self::Unary(_) => "unary",
            Self::Binary(_) => "binary",
            Self::RowReduce(_) => "row_reduce",
            Self::Softmax => "softmax",
            Self::LogSoftmax => "log_softmax",
            Self::SoftmaxBackward => "softmax_backward",
            Self::LogSoftmaxBackward => "log_softmax_backward",
            Self::CrossEntropy => "cross_entropy",
            Self::CrossEntropyBackward => "cross_entropy_backward",
            Self::RmsNorm { .. } => "rms_norm",
            Self::RmsNormBackwardX { .. } => "rms_norm_backward_x",
            Self::RmsNormBackwardW { .. } => "rms_norm_backward_w",
            Self::Rope { .. } => "rope",
            Self::Embedding => "embedding",
            Self::EmbeddingBackward { .. } => "embedding_backward",
            Self::AdamMoment1 { .. } => "adam_moment1",
            Self::AdamMoment2 { .. } => "adam_moment2",
            Self::AdamParam { .. } => "adam_param",
        }
    }

    /// How many inputs the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Self::Transpose | Self::Unary(_) | Self::RowReduce(_) | Self::Softmax | Self::LogSoftmax => 1,
            Self::RmsNormBackwardX { .. } | Self::Rope { .. } | Self::CrossEntropyBackward | Self::AdamParam { .. } => 3,
            _ => 2,
        }
    }
}

/// Element data of a host tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 32-bit unsigned integers (token ids, targets).
    U32(Vec<u32>),
}

/// An owned tensor in host memory: shape (row-major) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: HostData,
}

/// Borrowed element data.
#[derive(Debug, Clone, Copy)]
pub enum HostSlice<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// 32-bit unsigned integers.
    U32(&'a [u32]),
}

/// A borrowed tensor: what [`execute`] reads.
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    /// The shape.
    pub shape: &'a [usize],
    /// The elements.
    pub data: HostSlice<'a>,
}

impl HostTensor {
    /// A borrowed view.
    pub fn view(&self) -> HostView<'_> {
        let data = match &self.data {
            HostData::F32(v) => HostSlice::F32(v),
            HostData::U32(v) => HostSlice::U32(v),
        };
        HostView { shape: &self.shape, data }
    }

    /// The f32 elements, if it holds f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            HostData::F32(v) => Some(v),
            HostData::U32(_) => None,
        }
    }

    fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data: HostData::F32(data) }
    }
}

impl<'a> HostView<'a> {
    fn f32(&self, op: &'static str) -> Result<&'a [f32]> {
        match self.data {
            HostSlice::F32(v) => Ok(v),
            HostSlice::U32(_) => Err(Error::DType { op, dtype: "u32".into(), expected: "f32" }),
        }
    }

    fn u32(&self, op: &'static str) -> Result<&'a [u32]> {
        match self.data {
            HostSlice::U32(v) => Ok(v),
            HostSlice::F32(_) => Err(Error::DType { op, dtype: "f32".into(), expected: "u32" }),
        }
    }

    fn last(&self, op: &'static str) -> Result<usize> {
        self.shape.last().copied().ok_or_else(|| Error::shape(op, "needs at least one dimension"))
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

fn same_shape(op: &'static str, a: &HostView<'_>, b: &HostView<'_>) -> Result<()> {
    if a.shape == b.shape {
        Ok(())
    } else {
        Err(Error::shape(op, format!("{:?} vs {:?}", a.shape, b.shape)))
    }
}

fn check_ids(op: &'static str, ids: &[u32], bound: usize) -> Result<()> {
    match ids.iter().find(|&&i| i as usize >= bound) {
        Some(&value) => Err(Error::Index { op, value, bound }),
        None => Ok(()),
    }
}

/// Runs `op` on `inputs` at SIMD `level`. Shapes, dtypes and indices are checked: bad input is an
/// [`Error`], never a panic.
pub fn execute(op: &OpKind, inputs: &[HostView<'_>], level: SimdLevel) -> Result<HostTensor> {
    let name = op.name();
    if inputs.len() != op.arity() {
        return Err(Error::Arity { op: name, expected: op.arity(), got: inputs.len() });
    }
    for input in inputs {
        let len = match input.data {
            HostSlice::F32(v) => v.len(),
            HostSlice::U32(v) => v.len(),
        };
        if len != input.numel() {
            return Err(Error::shape(name, format!("{len} elements for shape {:?}", input.shape)));
        }
    }
    let x = inputs[0];
    match *op {
        OpKind::MatMul => {
            let (a, b) = (x.f32(name)?, inputs[1].f32(name)?);
            let (sa, sb) = (x.shape, inputs[1].shape);
            if sa.len() < 2 || sb.len() < 2 {
                return Err(Error::shape(name, format!("needs matrices, got {sa:?} and {sb:?}")));
            }
            let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
            let (kb, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
            if k != kb {
                return Err(Error::shape(name, format!("{sa:?} · {sb:?}: inner dimensions differ")));
            }
            let batch: usize = sa[..sa.len() - 2].iter().product();
            let mut shape = sa[..sa.len() - 2].to_vec();
            shape.extend([m, n]);
            let mut c = vec![0f32; batch * m * n];
            if sb.len() == 2 {
                // A shared right-hand side: one product over all batch rows at once.
                matmul::matmul(a, b, &mut c, batch * m, k, n, level);
            } else if sb[..sb.len() - 2] == sa[..sa.len() - 2] {
                matmul::batched_matmul(a, b, &mut c, batch, m, k, n, k * n, level);
            } else {
                return Err(Error::shape(name, format!("batch dimensions of {sa:?} and {sb:?} differ")));
            }
            Ok(HostTensor::f32(shape, c))
        }
        OpKind::Transpose => {
            let v = x.f32(name)?;
            let s = x.shape;
            if s.len() < 2 {
                return Err(Error::shape(name, format!("needs at least 2 dimensions, got {s:?}")));
            }
            let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
            let mut out = Vec::with_capacity(v.len());
            if r * c > 0 {
                for m in v.chunks_exact(r * c) {
                    out.extend(matmul::transpose(m, r, c));
                }
            }
            let mut shape = s.to_vec();
            let l = shape.len();
            shape.swap(l - 1, l - 2);
            Ok(HostTensor::f32(shape, out))
        }
        OpKind::Unary(f) => {
            let v = x.f32(name)?;
            let mut y = vec![0f32; v.len()];
            elementwise::unary(v, &mut y, f, level);
            Ok(HostTensor::f32(x.shape.to_vec(), y))
        }
        OpKind::Binary(b) => {
            same_shape(name, &x, &inputs[1])?;
            let mut y = vec![0f32; x.numel()];
            elementwise::binary(x.f32(name)?, inputs[1].f32(name)?, &mut y, b, level);
            Ok(HostTensor::f32(x.shape.to_vec(), y))
        }
        OpKind::RowReduce(kind) => {
            let n = x.last(name)?;
            let v = x.f32(name)?;
            let rows: usize = x.shape[..x.shape.len() - 1].iter().product();
            let mut y = vec![0f32; rows];
            rows::row_reduce(v, &mut y, n, kind, level);
            let mut shape = x.shape.to_vec();
            if let Some(l) = shape.last_mut() {
                *l = 1;
            }
            Ok(HostTensor::f32(shape, y))
        }
        OpKind::Softmax | OpKind::LogSoftmax => {
            let n = x.last(name)?;
            let v = x.f32(name)?;
            let mut y = vec![0f32; v.len()];
            if *op == OpKind::Softmax {
                rows::softmax(v, &mut y, n, level);
            } else {
                rows::log_softmax(v, &mut y, n, level);
            }
            Ok(HostTensor::f32(x.shape.to_vec(), y))
        }
        OpKind::SoftmaxBackward | OpKind::LogSoftmaxBackward => {
            same_shape(name, &x, &inputs[1])?;
            let n = x.last(name)?;
            let mut dx = vec![0f32; x.numel()];
            let (y, dy) = (x.f32(name)?, inputs[1].f32(name)?);
            if *op == OpKind::SoftmaxBackward {
                rows::softmax_backward(y, dy, &mut dx, n, level);
            } else {
                rows::log_softmax_backward(y, dy, &mut dx, n, level);
            }
            Ok(HostTensor::f32(x.shape.to_vec(), dx))
        }
        OpKind::CrossEntropy | OpKind::CrossEntropyBackward => {
            let (logits, targets) = (x.f32(name)?, inputs[1].u32(name)?);
            if x.shape.len() != 2 || inputs[1].shape != [x.shape[0]] || x.shape[0] == 0 {
                return Err(Error::shape(name, format!("logits {:?} with targets {:?}", x.shape, inputs[1].shape)));
            }
            let v = x.shape[1];
            check_ids(name, targets, v)?;
            if *op == OpKind::CrossEntropy {
                Ok(HostTensor::f32(vec![], vec![rows::cross_entropy(logits, targets, v, level)]))
            } else {
                let dloss = inputs[2].f32(name)?;
                let &[g] = dloss else { return Err(Error::shape(name, "dloss must be a scalar")) };
                let mut dx = vec![0f32; logits.len()];
                rows::cross_entropy_backward(logits, targets, g, &mut dx, v, level);
                Ok(HostTensor::f32(x.shape.to_vec(), dx))
            }
        }
        OpKind::RmsNorm { eps } | OpKind::RmsNormBackwardX { eps } => {
            let n = x.last(name)?;
            let w = inputs[1].f32(name)?;
            if inputs[1].shape != [n] {
                return Err(Error::shape(name, format!("weight {:?} for rows of {n}", inputs[1].shape)));
            }
            let mut y = vec![0f32; x.numel()];
            if matches!(op, OpKind::RmsNorm { .. }) {
                rows::rms_norm(x.f32(name)?, w, &mut y, n, eps, level);
            } else {
                same_shape(name, &x, &inputs[2])?;
                rows::rms_norm_backward_x(x.f32(name)?, w, inputs[2].f32(name)?, &mut y, n, eps, level);
            }
            Ok(HostTensor::f32(x.shape.to_vec(), y))
        }
        OpKind::RmsNormBackwardW { eps } => {
            same_shape(name, &x, &inputs[1])?;
            let n = x.last(name)?;
            let mut dw = vec![0f32; n];
            rows::rms_norm_backward_w(x.f32(name)?, inputs[1].f32(name)?, &mut dw, n, eps, level);
            Ok(HostTensor::f32(vec![n], dw))
        }
        OpKind::Rope { inverse } => {
            let s = x.shape;
            if s.len() < 2 {
                return Err(Error::shape(name, format!("needs [.., t, d], got {s:?}")));
            }
            let (t, d) = (s[s.len() - 2], s[s.len() - 1]);
            if d % 2 != 0 || inputs[1].shape != [t, d / 2] || inputs[2].shape != [t, d / 2] {
                return Err(Error::shape(
                    name,
                    format!("x {s:?} with tables {:?} and {:?}", inputs[1].shape, inputs[2].shape),
                ));
            }
            let mut y = vec![0f32; x.numel()];
            rope::apply(x.f32(name)?, inputs[1].f32(name)?, inputs[2].f32(name)?, &mut y, d, t, inverse, level);
            Ok(HostTensor::f32(s.to_vec(), y))
        }
        OpKind::Embedding => {
            let (table, ids) = (x.f32(name)?, inputs[1].u32(name)?);
            if x.shape.len() != 2 {
                return Err(Error::shape(name, format!("table must be [vocab, d], got {:?}", x.shape)));
            }
            let (vocab, d) = (x.shape[0], x.shape[1]);
            check_ids(name, ids, vocab)?;
            let mut out = vec![0f32; ids.len() * d];
            embed::lookup(table, ids, &mut out, d);
            let mut shape = inputs[1].shape.to_vec();
            shape.push(d);
            Ok(HostTensor::f32(shape, out))
        }
        OpKind::EmbeddingBackward { vocab } => {
            let (dy, ids) = (x.f32(name)?, inputs[1].u32(name)?);
            let d = x.last(name)?;
            if x.shape[..x.shape.len() - 1] != *inputs[1].shape {
                return Err(Error::shape(name, format!("dy {:?} for ids {:?}", x.shape, inputs[1].shape)));
            }
            check_ids(name, ids, vocab)?;
            let mut grad = vec![0f32; vocab * d];
            embed::scatter_add(dy, ids, &mut grad, vocab, d);
            Ok(HostTensor::f32(vec![vocab, d], grad))
        }
        OpKind::AdamMoment1 { beta1 } => {
            same_shape(name, &x, &inputs[1])?;
            let (m, g) = (x.f32(name)?, inputs[1].f32(name)?);
            let out = m.iter().zip(g).map(|(&m, &g)| beta1 * m + (1.0 - beta1) * g).collect();
            Ok(HostTensor::f32(x.shape.to_vec(), out))
        }
        OpKind::AdamMoment2 { beta2 } => {
            same_shape(name, &x, &inputs[1])?;
            let (v, g) = (x.f32(name)?, inputs[1].f32(name)?);
            let out = v.iter().zip(g).map(|(&v, &g)| beta2 * v + (1.0 - beta2) * (g * g)).collect();
            Ok(HostTensor::f32(x.shape.to_vec(), out))
        }
        OpKind::AdamParam { h, t } => {
            same_shape(name, &x, &inputs[1])?;
            same_shape(name, &x, &inputs[2])?;
            let (p, m, v) = (x.f32(name)?, inputs[1].f32(name)?, inputs[2].f32(name)?);
            let mut out = p.to_vec();
            crate::kernels::adamw::apply_update(&mut out, m, v, t, h);
            Ok(HostTensor::f32(x.shape.to_vec(), out))
        }
    }
}
