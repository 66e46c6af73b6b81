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
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OpKind {
    /// `op(A) · op(B)` over the last two dimensions, where `op` swaps them when its flag is set: `A` is
    /// `[.., m, k]` (`[.., k, m]` with `transpose_a`), `B` is `[.., k, n]` (`[.., n, k]` with
    /// `transpose_b`) or one matrix shared by the whole batch. A transpose here is index arithmetic, not a
    /// copy on the tape: the result is bit for bit the product of the explicitly transposed matrices
    /// (every element is the same fused multiply-add chain in increasing `k`).
    MatMul {
        /// Read `A` transposed.
        transpose_a: bool,
        /// Read `B` transposed.
        transpose_b: bool,
    },
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
    /// The plain product `A · B`.
    pub const MATMUL: Self = Self::MatMul { transpose_a: false, transpose_b: false };

    /// A short name for logs and tapes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MatMul { .. } => "matmul",
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
            Self::RmsNormBackwardX { .. } | Self::Rope { .. } | Self::CrossEntropyBackward | Self::AdamParam { .. } => {
                3
            }
            _ => 2,
        }
    }
}

/// Element data of a host tensor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum HostData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 32-bit unsigned integers (token ids, targets).
    U32(Vec<u32>),
}

/// An owned tensor in host memory: shape (row-major) and data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Element type of an op input, as far as shapes and dtypes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float.
    F32,
    /// 32-bit unsigned integer (ids, targets).
    U32,
}

/// The sizes an op works with, derived from its input shapes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dims {
    /// `batch` products of `m×k` by `k×n`; `shared_b`: one right-hand side for the whole batch.
    MatMul {
        /// Leading dimensions, multiplied.
        batch: usize,
        /// Rows.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns.
        n: usize,
        /// One `k×n` right-hand side for every batch entry.
        shared_b: bool,
    },
    /// `batch` matrices of `r×c`.
    Transpose {
        /// Leading dimensions, multiplied.
        batch: usize,
        /// Rows.
        r: usize,
        /// Columns.
        c: usize,
    },
    /// `len` independent elements.
    Elementwise {
        /// Elements.
        len: usize,
    },
    /// `rows` rows of `n` (reductions, softmax, norms, cross-entropy with `n` classes).
    Rows {
        /// Rows.
        rows: usize,
        /// Row length.
        n: usize,
    },
    /// Rotary embedding of `rows` rows of `d` at `positions` positions.
    Rope {
        /// Rows (all leading dimensions).
        rows: usize,
        /// Positions (the second-to-last dimension).
        positions: usize,
        /// Row width.
        d: usize,
    },
    /// `tokens` lookups in a `vocab × d` table.
    Embedding {
        /// Ids.
        tokens: usize,
        /// Table rows.
        vocab: usize,
        /// Table width.
        d: usize,
    },
}

/// What an op will do with inputs of given shapes: its output shape and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Output shape.
    pub shape: Vec<usize>,
    /// Sizes for the kernels.
    pub dims: Dims,
}

fn last(op: &'static str, s: &[usize]) -> Result<usize> {
    s.last().copied().ok_or_else(|| Error::shape(op, "needs at least one dimension"))
}

fn rows_of(s: &[usize]) -> usize {
    s[..s.len().saturating_sub(1)].iter().product()
}

/// Checks an op's input shapes and dtypes and derives its [`Plan`]. The same checks guard every device.
pub fn plan(op: &OpKind, inputs: &[(&[usize], ElemType)]) -> Result<Plan> {
    let name = op.name();
    if inputs.len() != op.arity() {
        return Err(Error::Arity { op: name, expected: op.arity(), got: inputs.len() });
    }
    let want = |i: usize, t: ElemType| -> Result<()> {
        if inputs[i].1 == t {
            Ok(())
        } else {
            let (dtype, expected) = match t {
                ElemType::F32 => ("u32", "f32"),
                ElemType::U32 => ("f32", "u32"),
            };
            Err(Error::DType { op: name, dtype: dtype.into(), expected })
        }
    };
    let same = |a: usize, b: usize| -> Result<()> {
        if inputs[a].0 == inputs[b].0 {
            Ok(())
        } else {
            Err(Error::shape(name, format!("{:?} vs {:?}", inputs[a].0, inputs[b].0)))
        }
    };
    let s = inputs[0].0;
    let elementwise = || Plan { shape: s.to_vec(), dims: Dims::Elementwise { len: s.iter().product() } };
    match *op {
        OpKind::MatMul { transpose_a, transpose_b } => {
            want(0, ElemType::F32)?;
            want(1, ElemType::F32)?;
            let (sa, sb) = (s, inputs[1].0);
            if sa.len() < 2 || sb.len() < 2 {
                return Err(Error::shape(name, format!("needs matrices, got {sa:?} and {sb:?}")));
            }
            let last_two = |x: &[usize], swap: bool| {
                let (r, c) = (x[x.len() - 2], x[x.len() - 1]);
                if swap { (c, r) } else { (r, c) }
            };
            let ((m, k), (kb, n)) = (last_two(sa, transpose_a), last_two(sb, transpose_b));
            if k != kb {
                return Err(Error::shape(
                    name,
                    format!("{sa:?} · {sb:?} (transposed: {transpose_a}, {transpose_b}): inner dimensions differ"),
                ));
            }
            let shared_b = sb.len() == 2;
            if !shared_b && sb[..sb.len() - 2] != sa[..sa.len() - 2] {
                return Err(Error::shape(name, format!("batch dimensions of {sa:?} and {sb:?} differ")));
            }
            let batch = sa[..sa.len() - 2].iter().product();
            let mut shape = sa[..sa.len() - 2].to_vec();
            shape.extend([m, n]);
            Ok(Plan { shape, dims: Dims::MatMul { batch, m, k, n, shared_b } })
        }
        OpKind::Transpose => {
            want(0, ElemType::F32)?;
            if s.len() < 2 {
                return Err(Error::shape(name, format!("needs at least 2 dimensions, got {s:?}")));
            }
            let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
            let mut shape = s.to_vec();
            let l = shape.len();
            shape.swap(l - 1, l - 2);
            Ok(Plan { shape, dims: Dims::Transpose { batch: s[..l - 2].iter().product(), r, c } })
        }
        OpKind::Unary(_) => {
            want(0, ElemType::F32)?;
            Ok(elementwise())
        }
        OpKind::Binary(_) | OpKind::AdamMoment1 { .. } | OpKind::AdamMoment2 { .. } => {
            want(0, ElemType::F32)?;
            want(1, ElemType::F32)?;
            same(0, 1)?;
            Ok(elementwise())
        }
        OpKind::AdamParam { .. } => {
            for i in 0..3 {
                want(i, ElemType::F32)?;
            }
            same(0, 1)?;
            same(0, 2)?;
            Ok(elementwise())
        }
        OpKind::RowReduce(_) => {
            want(0, ElemType::F32)?;
            let n = last(name, s)?;
            let mut shape = s.to_vec();
            if let Some(l) = shape.last_mut() {
                *l = 1;
            }
            Ok(Plan { shape, dims: Dims::Rows { rows: rows_of(s), n } })
        }
        OpKind::Softmax | OpKind::LogSoftmax => {
            want(0, ElemType::F32)?;
            let n = last(name, s)?;
            Ok(Plan { shape: s.to_vec(), dims: Dims::Rows { rows: rows_of(s), n } })
        }
        OpKind::SoftmaxBackward | OpKind::LogSoftmaxBackward => {
            want(0, ElemType::F32)?;
            want(1, ElemType::F32)?;
            same(0, 1)?;
            let n = last(name, s)?;
            Ok(Plan { shape: s.to_vec(), dims: Dims::Rows { rows: rows_of(s), n } })
        }
        OpKind::CrossEntropy | OpKind::CrossEntropyBackward => {
            want(0, ElemType::F32)?;
            want(1, ElemType::U32)?;
            if s.len() != 2 || inputs[1].0 != [s[0]] || s[0] == 0 {
                return Err(Error::shape(name, format!("logits {s:?} with targets {:?}", inputs[1].0)));
            }
            let dims = Dims::Rows { rows: s[0], n: s[1] };
            if *op == OpKind::CrossEntropy {
                return Ok(Plan { shape: vec![], dims });
            }
            want(2, ElemType::F32)?;
            if inputs[2].0.iter().product::<usize>() != 1 {
                return Err(Error::shape(name, "dloss must be a scalar"));
            }
            Ok(Plan { shape: s.to_vec(), dims })
        }
        OpKind::RmsNorm { .. } | OpKind::RmsNormBackwardX { .. } => {
            want(0, ElemType::F32)?;
            want(1, ElemType::F32)?;
            let n = last(name, s)?;
            if inputs[1].0 != [n] {
                return Err(Error::shape(name, format!("weight {:?} for rows of {n}", inputs[1].0)));
            }
            if matches!(op, OpKind::RmsNormBackwardX { .. }) {
                want(2, ElemType::F32)?;
                same(0, 2)?;
            }
            Ok(Plan { shape: s.to_vec(), dims: Dims::Rows { rows: rows_of(s), n } })
        }
        OpKind::RmsNormBackwardW { .. } => {
            want(0, ElemType::F32)?;
            want(1, ElemType::F32)?;
            same(0, 1)?;
            let n = last(name, s)?;
            Ok(Plan { shape: vec![n], dims: Dims::Rows { rows: rows_of(s), n } })
        }
        OpKind::Rope { .. } => {
            for i in 0..3 {
                want(i, ElemType::F32)?;
            }
            if s.len() < 2 {
                return Err(Error::shape(name, format!("needs [.., t, d], got {s:?}")));
            }
            let (t, d) = (s[s.len() - 2], s[s.len() - 1]);
            if d % 2 != 0 || inputs[1].0 != [t, d / 2] || inputs[2].0 != [t, d / 2] {
                return Err(Error::shape(name, format!("x {s:?} with tables {:?} and {:?}", inputs[1].0, inputs[2].0)));
            }
            Ok(Plan { shape: s.to_vec(), dims: Dims::Rope { rows: rows_of(s), positions: t, d } })
        }
        OpKind::Embedding => {
            want(0, ElemType::F32)?;
            want(1, ElemType::U32)?;
            if s.len() != 2 {
                return Err(Error::shape(name, format!("table must be [vocab, d], got {s:?}")));
            }
            let (vocab, d) = (s[0], s[1]);
            let mut shape = inputs[1].0.to_vec();
            shape.push(d);
            Ok(Plan { shape, dims: Dims::Embedding { tokens: inputs[1].0.iter().product(), vocab, d } })
        }
        OpKind::EmbeddingBackward { vocab } => {
            want(0, ElemType::F32)?;
            want(1, ElemType::U32)?;
            let d = last(name, s)?;
            if s[..s.len() - 1] != *inputs[1].0 {
                return Err(Error::shape(name, format!("dy {s:?} for ids {:?}", inputs[1].0)));
            }
            Ok(Plan { shape: vec![vocab, d], dims: Dims::Embedding { tokens: inputs[1].0.iter().product(), vocab, d } })
        }
    }
}

/// Checks that every id is below `bound`.
pub fn check_ids(op: &'static str, ids: &[u32], bound: usize) -> Result<()> {
    match ids.iter().find(|&&i| i as usize >= bound) {
        Some(&value) => Err(Error::Index { op, value, bound }),
        None => Ok(()),
    }
}

impl<'a> HostView<'a> {
    fn elem_type(&self) -> ElemType {
        match self.data {
            HostSlice::F32(_) => ElemType::F32,
            HostSlice::U32(_) => ElemType::U32,
        }
    }

    /// The f32 data (the plan has checked the dtype).
    fn f(&self) -> &'a [f32] {
        match self.data {
            HostSlice::F32(v) => v,
            HostSlice::U32(_) => &[],
        }
    }

    /// The u32 data (the plan has checked the dtype).
    fn u(&self) -> &'a [u32] {
        match self.data {
            HostSlice::U32(v) => v,
            HostSlice::F32(_) => &[],
        }
    }
}

/// Runs `op` on `inputs` at SIMD `level`. Shapes, dtypes and indices are checked: bad input is an
/// [`Error`], never a panic.
pub fn execute(op: &OpKind, inputs: &[HostView<'_>], level: SimdLevel) -> Result<HostTensor> {
    let name = op.name();
    for input in inputs {
        let len = match input.data {
            HostSlice::F32(v) => v.len(),
            HostSlice::U32(v) => v.len(),
        };
        if len != input.numel() {
            return Err(Error::shape(name, format!("{len} elements for shape {:?}", input.shape)));
        }
    }
    let shapes: Vec<(&[usize], ElemType)> = inputs.iter().map(|v| (v.shape, v.elem_type())).collect();
    let Plan { shape, dims } = plan(op, &shapes)?;
    let numel: usize = shape.iter().product();
    let mut y = vec![0f32; numel];
    let x = inputs[0].f();
    let arg = |i: usize| inputs[i].f();
    match (*op, dims) {
        (OpKind::MatMul { transpose_a, transpose_b }, Dims::MatMul { batch, m, k, n, shared_b }) => {
            let form = matmul::Form { m, k, n, transpose_a, transpose_b };
            matmul::batched_matmul(x, arg(1), &mut y, batch, form, shared_b, level);
        }
        (OpKind::Transpose, Dims::Transpose { r, c, .. }) => {
            if r * c > 0 {
                for (src, dst) in x.chunks_exact(r * c).zip(y.chunks_exact_mut(r * c)) {
                    dst.copy_from_slice(&matmul::transpose(src, r, c));
                }
            }
        }
        (OpKind::Unary(f), _) => elementwise::unary(x, &mut y, f, level),
        (OpKind::Binary(b), _) => elementwise::binary(x, arg(1), &mut y, b, level),
        (OpKind::RowReduce(kind), Dims::Rows { n, .. }) => rows::row_reduce(x, &mut y, n, kind, level),
        (OpKind::Softmax, Dims::Rows { n, .. }) => rows::softmax(x, &mut y, n, level),
        (OpKind::LogSoftmax, Dims::Rows { n, .. }) => rows::log_softmax(x, &mut y, n, level),
        (OpKind::SoftmaxBackward, Dims::Rows { n, .. }) => rows::softmax_backward(x, arg(1), &mut y, n, level),
        (OpKind::LogSoftmaxBackward, Dims::Rows { n, .. }) => rows::log_softmax_backward(x, arg(1), &mut y, n, level),
        (OpKind::CrossEntropy, Dims::Rows { n, .. }) => {
            check_ids(name, inputs[1].u(), n)?;
            y[0] = rows::cross_entropy(x, inputs[1].u(), n, level);
        }
        (OpKind::CrossEntropyBackward, Dims::Rows { n, .. }) => {
            check_ids(name, inputs[1].u(), n)?;
            rows::cross_entropy_backward(x, inputs[1].u(), arg(2)[0], &mut y, n, level);
        }
        (OpKind::RmsNorm { eps }, Dims::Rows { n, .. }) => rows::rms_norm(x, arg(1), &mut y, n, eps, level),
        (OpKind::RmsNormBackwardX { eps }, Dims::Rows { n, .. }) => {
            rows::rms_norm_backward_x(x, arg(1), arg(2), &mut y, n, eps, level);
        }
        (OpKind::RmsNormBackwardW { eps }, Dims::Rows { n, .. }) => {
            rows::rms_norm_backward_w(x, arg(1), &mut y, n, eps, level)
        }
        (OpKind::Rope { inverse }, Dims::Rope { positions, d, .. }) => {
            rope::apply(x, arg(1), arg(2), &mut y, d, positions, inverse, level);
        }
        (OpKind::Embedding, Dims::Embedding { vocab, d, .. }) => {
            check_ids(name, inputs[1].u(), vocab)?;
            embed::lookup(x, inputs[1].u(), &mut y, d);
        }
        (OpKind::EmbeddingBackward { vocab }, Dims::Embedding { d, .. }) => {
            check_ids(name, inputs[1].u(), vocab)?;
            embed::scatter_add(x, inputs[1].u(), &mut y, vocab, d);
        }
        (OpKind::AdamMoment1 { beta1 }, _) => {
            for ((o, &m), &g) in y.iter_mut().zip(x).zip(arg(1)) {
                *o = beta1 * m + (1.0 - beta1) * g;
            }
        }
        (OpKind::AdamMoment2 { beta2 }, _) => {
            for ((o, &v), &g) in y.iter_mut().zip(x).zip(arg(1)) {
                *o = beta2 * v + (1.0 - beta2) * (g * g);
            }
        }
        (OpKind::AdamParam { h, t }, _) => {
            y.copy_from_slice(x);
            crate::kernels::adamw::apply_update(&mut y, arg(1), arg(2), t, h);
        }
        (op, dims) => return Err(Error::shape(op.name(), format!("internal: plan {dims:?} does not fit the op"))),
    }
    Ok(HostTensor::f32(shape, y))
}
