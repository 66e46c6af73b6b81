//! repops on candle tensors: every op as a candle `CustomOp` with a CPU forward pass that calls
//! [`execute`] and a backward pass built from repops ops, so a whole training step —
//! forward, backward and optimizer — runs on reproducible kernels (and is recorded on the tape).
//!
//! The functions here make their inputs contiguous first (an exact copy) and check shapes, so callers
//! get a typed [`Error`] rather than a panic.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor};

use crate::error::{Error, Result};
use crate::kernels::adamw::AdamW;
use crate::kernels::elementwise::{Binary, Unary};
use crate::kernels::rows::RowReduce;
use crate::op::{HostData, HostSlice, HostTensor, HostView, OpKind, execute};
use crate::simd;

/// A repops op as a candle custom op.
#[derive(Debug, Clone, Copy)]
struct Op(OpKind);

fn view<'a>(
    op: &'static str,
    index: usize,
    storage: &'a CpuStorage,
    layout: &'a Layout,
) -> candle_core::Result<HostView<'a>> {
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| candle_core::Error::wrap(Error::NonContiguous { op, index }))?;
    let data = match storage {
        CpuStorage::F32(v) => HostSlice::F32(&v[start..end]),
        CpuStorage::U32(v) => HostSlice::U32(&v[start..end]),
        other => {
            return Err(candle_core::Error::wrap(Error::DType {
                op,
                dtype: format!("{:?}", candle_core::backend::BackendStorage::dtype(other)),
                expected: "f32 (or u32 for ids and targets)",
            }));
        }
    };
    Ok(HostView { shape: layout.shape().dims(), data })
}

fn run(kind: &OpKind, inputs: &[HostView<'_>]) -> candle_core::Result<(CpuStorage, Shape)> {
    let level = simd::current();
    let out = match crate::tape::next_op() {
        None => execute(kind, inputs, level).map_err(candle_core::Error::wrap)?,
        Some(next) => {
            // Recording: the kernel and the hashing of its tensors share one trip to the thread pool
            // (small ops stay on this thread: the trip would cost more than it saves).
            let mislaid = next.mislaid(inputs);
            let faulty: Vec<HostView<'_>>;
            let inputs = match &mislaid {
                Some((i, copy)) => {
                    faulty = inputs.iter().enumerate().map(|(k, v)| if k == *i { copy.view() } else { *v }).collect();
                    &faulty[..]
                }
                None => inputs,
            };
            let job = || {
                execute(kind, inputs, level).map(|mut out| {
                    next.inject(&mut out);
                    let hashes = next.hashes(inputs, &out.view());
                    (out, hashes)
                })
            };
            let bytes: usize = inputs.iter().map(|v| 4 * v.shape.iter().product::<usize>()).sum();
            let (out, hashes) = if bytes >= crate::tape::POOL_BYTES { crate::tape::on_pool(job) } else { job() }
                .map_err(candle_core::Error::wrap)?;
            crate::tape::commit(next, kind, inputs, &out.view(), hashes);
            out
        }
    };
    let shape = Shape::from(out.shape.clone());
    let storage = match out.data {
        HostData::F32(v) => CpuStorage::F32(v),
        HostData::U32(v) => CpuStorage::U32(v),
    };
    Ok((storage, shape))
}

fn cb<T>(r: Result<T>) -> candle_core::Result<T> {
    r.map_err(|e| match e {
        Error::Candle(e) => e,
        other => candle_core::Error::wrap(other),
    })
}

fn no_backward(kind: &OpKind) -> candle_core::Error {
    candle_core::Error::wrap(Error::Unsupported { op: kind.name(), what: "backward pass".into() })
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        run(&self.0, &[view(self.0.name(), 0, s, l)?])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::run(&self.0, &[(s, l)])
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = match self.0 {
            OpKind::Transpose => transpose(g),
            OpKind::Unary(f) => unary_backward(f, x, y, g),
            OpKind::RowReduce(RowReduce::Sum) => broadcast_last(g, x),
            OpKind::RowReduce(RowReduce::Mean) => {
                let n = x.dims().last().copied().unwrap_or(1).max(1);
                broadcast_last(g, x).and_then(|b| scale(&b, 1.0 / n as f32))
            }
            OpKind::Softmax => apply2(OpKind::SoftmaxBackward, y, g),
            OpKind::LogSoftmax => apply2(OpKind::LogSoftmaxBackward, y, g),
            kind => return Err(no_backward(&kind)),
        };
        cb(dx).map(Some)
    }
}

impl CustomOp2 for Op {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        run(&self.0, &[view(self.0.name(), 0, s1, l1)?, view(self.0.name(), 1, s2, l2)?])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::run(&self.0, &[(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grads = match self.0 {
            OpKind::MatMul { transpose_a, transpose_b } => {
                matmul_backward(a, b, g, transpose_a, transpose_b).map(|(da, db)| (Some(da), Some(db)))
            }
            OpKind::Binary(op) => binary_backward(op, a, b, y, g).map(|(da, db)| (Some(da), Some(db))),
            OpKind::CrossEntropy => apply3(OpKind::CrossEntropyBackward, a, b, g).map(|d| (Some(d), None)),
            OpKind::RmsNorm { eps } => {
                let dx = apply3(OpKind::RmsNormBackwardX { eps }, a, b, g);
                let dw = apply2(OpKind::RmsNormBackwardW { eps }, a, g);
                dx.and_then(|dx| dw.map(|dw| (Some(dx), Some(dw))))
            }
            OpKind::Embedding => {
                let vocab = a.dims().first().copied().unwrap_or(0);
                apply2(OpKind::EmbeddingBackward { vocab }, g, b).map(|d| (Some(d), None))
            }
            kind => return Err(no_backward(&kind)),
        };
        cb(grads)
    }
}

impl CustomOp3 for Op {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.0.name();
        run(&self.0, &[view(n, 0, s1, l1)?, view(n, 1, s2, l2)?, view(n, 2, s3, l3)?])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::run(&self.0, &[(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        c: &Tensor,
        s: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match self.0 {
            OpKind::Rope { inverse } => {
                cb(apply3(OpKind::Rope { inverse: !inverse }, g, c, s)).map(|d| (Some(d), None, None))
            }
            kind => {
                let _ = (x, c, s);
                Err(no_backward(&kind))
            }
        }
    }
}

fn check_device(t: &Tensor) -> Result<()> {
    match t.device() {
        Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => Ok(()),
        other => Err(Error::Unsupported {
            op: "repops",
            what: format!("tensors on {other:?}: this build runs repops on the CPU{}", crate::CUDA_HINT),
        }),
    }
}

/// Runs `op` with the tape told which inputs it already knows (see [`crate::tape`]).
fn taped(inputs: &[&Tensor], op: impl FnOnce() -> candle_core::Result<Tensor>) -> Result<Tensor> {
    let recording = crate::tape::is_recording();
    if recording {
        crate::tape::before_op(inputs);
    }
    let out = op()?;
    if recording {
        crate::tape::after_op(&out);
    }
    Ok(out)
}

fn apply1(kind: OpKind, x: &Tensor) -> Result<Tensor> {
    check_device(x)?;
    let x = x.contiguous()?;
    taped(&[&x], || x.apply_op1(Op(kind)))
}

fn apply2(kind: OpKind, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_device(a)?;
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    taped(&[&a, &b], || a.apply_op2(&b, Op(kind)))
}

fn apply3(kind: OpKind, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    check_device(a)?;
    let (a, b, c) = (a.contiguous()?, b.contiguous()?, c.contiguous()?);
    taped(&[&a, &b, &c], || a.apply_op3(&b, &c, Op(kind)))
}

fn broadcast_last(g: &Tensor, x: &Tensor) -> Result<Tensor> {
    Ok(g.broadcast_as(x.shape())?.contiguous()?)
}

/// Gradients of `C = op(A) · op(B)`. Each is again one product with transposed operands (for
/// `C = A·B`: `dA = G·Bᵀ`, `dB = Aᵀ·G`), so the backward pass copies nothing. A right-hand side shared
/// by a batched `A` gets its gradient as one product over every batch row, in row order.
fn matmul_backward(a: &Tensor, b: &Tensor, g: &Tensor, ta: bool, tb: bool) -> Result<(Tensor, Tensor)> {
    let shared = b.rank() == 2 && a.rank() > 2;
    // All rows of a batched tensor as one matrix (for the shared right-hand side's gradient).
    let rows = |t: &Tensor| -> Result<Tensor> {
        let cols = t.dims()[t.rank() - 1];
        Ok(t.reshape((t.elem_count() / cols.max(1), cols))?)
    };
    if shared && ta {
        return Err(Error::Unsupported {
            op: "matmul",
            what: "backward pass of a transposed batched left side times a shared right side".into(),
        });
    }
    let (ga, gb) = if shared { (g.clone(), rows(g)?) } else { (g.clone(), g.clone()) };
    let a_rows = if shared { rows(a)? } else { a.clone() };
    Ok(match (ta, tb) {
        // C = A·B: dA = G·Bᵀ, dB = Aᵀ·G.
        (false, false) => (matmul_t(&ga, b, false, true)?, matmul_t(&a_rows, &gb, true, false)?),
        // C = A·Bᵀ: dA = G·B, dB = Gᵀ·A.
        (false, true) => (matmul_t(&ga, b, false, false)?, matmul_t(&gb, &a_rows, true, false)?),
        // C = Aᵀ·B: dA = B·Gᵀ, dB = A·G.
        (true, false) => (matmul_t(b, &ga, false, true)?, matmul_t(a, &gb, false, false)?),
        // C = Aᵀ·Bᵀ: dA = Bᵀ·Gᵀ, dB = Gᵀ·Aᵀ.
        (true, true) => (matmul_t(b, &ga, true, true)?, matmul_t(&gb, a, true, true)?),
    })
}

fn unary_backward(f: Unary, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    match f {
        Unary::Exp => mul(g, y),
        Unary::Ln => div(g, x),
        Unary::Tanh => mul(g, &unary(&unary(&square(y)?, Unary::Neg)?, Unary::AddScalar(1.0))?),
        Unary::Sqrt => div(g, &scale(y, 2.0)?),
        Unary::Rsqrt => mul(g, &scale(&div(y, x)?, -0.5)?),
        Unary::Silu => mul(g, &unary(x, Unary::SiluGrad)?),
        Unary::Neg => unary(g, Unary::Neg),
        Unary::Scale(c) => scale(g, c),
        Unary::AddScalar(_) => Ok(g.clone()),
        Unary::Square => mul(g, &scale(x, 2.0)?),
        Unary::SiluGrad => Err(Error::Unsupported { op: "silu_grad", what: "backward pass".into() }),
    }
}

fn binary_backward(op: Binary, a: &Tensor, b: &Tensor, y: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    match op {
        Binary::Add => Ok((g.clone(), g.clone())),
        Binary::Sub => Ok((g.clone(), unary(g, Unary::Neg)?)),
        Binary::Mul => Ok((mul(g, b)?, mul(g, a)?)),
        Binary::Div => Ok((div(g, b)?, unary(&div(&mul(g, y)?, b)?, Unary::Neg)?)),
        Binary::SwiGlu => {
            let da = mul(&mul(g, b)?, &unary(a, Unary::SiluGrad)?)?;
            let db = mul(g, &unary(a, Unary::Silu)?)?;
            Ok((da, db))
        }
    }
}

/// Runs any op on candle tensors (CPU, or CUDA in a `cuda` build), e.g. to re-execute a taped op
/// on another device. Inputs must number [`OpKind::arity`].
pub fn apply_op(kind: OpKind, inputs: &[&Tensor]) -> Result<Tensor> {
    match *inputs {
        [a] => apply1(kind, a),
        [a, b] => apply2(kind, a, b),
        [a, b, c] => apply3(kind, a, b, c),
        _ => Err(Error::Arity { op: kind.name(), expected: kind.arity(), got: inputs.len() }),
    }
}

/// `[.., m, k] · [.., k, n]`, or `[.., m, k] · [k, n]` with one right-hand side for the whole batch.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    apply2(OpKind::MATMUL, a, b)
}

/// `op(a) · op(b)`, reading `a` (`[.., k, m]`) and/or `b` (`[.., n, k]` or `[n, k]`) transposed without
/// copying them: bit for bit `matmul` of the explicit transposes, one op on the tape instead of three.
pub fn matmul_t(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
    apply2(OpKind::MatMul { transpose_a, transpose_b }, a, b)
}

/// Swaps the last two dimensions.
pub fn transpose(x: &Tensor) -> Result<Tensor> {
    apply1(OpKind::Transpose, x)
}

/// A linear layer without bias: `x [.., in] · wᵀ` with `w [out, in]`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    matmul_t(x, w, false, true)
}

/// An element-wise function.
pub fn unary(x: &Tensor, f: Unary) -> Result<Tensor> {
    apply1(OpKind::Unary(f), x)
}

/// An element-wise operation on two equal-shaped tensors (broadcast first with candle if needed).
pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape("binary", format!("{:?} vs {:?}", a.dims(), b.dims())));
    }
    apply2(OpKind::Binary(op), a, b)
}

/// `a + b`.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Add)
}
/// `a − b`.
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Sub)
}
/// `a · b` element-wise.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Mul)
}
/// `a / b` element-wise.
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Div)
}
/// `x · c`.
pub fn scale(x: &Tensor, c: f32) -> Result<Tensor> {
    unary(x, Unary::Scale(c))
}
/// `x · x`.
pub fn square(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Square)
}
/// e^x.
pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Exp)
}
/// ln x.
pub fn ln(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Ln)
}
/// tanh x.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Tanh)
}
/// √x.
pub fn sqrt(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Sqrt)
}
/// 1/√x.
pub fn rsqrt(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Rsqrt)
}
/// SiLU.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Silu)
}
/// SwiGLU gate: `silu(a) · b`.
pub fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::SwiGlu)
}

/// Sum over the last dimension, kept as size 1.
pub fn sum_last(x: &Tensor) -> Result<Tensor> {
    apply1(OpKind::RowReduce(RowReduce::Sum), x)
}
/// Mean over the last dimension, kept as size 1.
pub fn mean_last(x: &Tensor) -> Result<Tensor> {
    apply1(OpKind::RowReduce(RowReduce::Mean), x)
}
/// Maximum over the last dimension, kept as size 1 (no backward pass).
pub fn max_last(x: &Tensor) -> Result<Tensor> {
    apply1(OpKind::RowReduce(RowReduce::Max), x)
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    apply1(OpKind::Softmax, x)
}
/// Log-softmax over the last dimension.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    apply1(OpKind::LogSoftmax, x)
}
/// Mean cross-entropy of `logits [N, V]` against `targets [N]` (u32), a scalar.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    apply2(OpKind::CrossEntropy, logits, targets)
}
/// RMSNorm over the last dimension with weight `w [n]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    apply2(OpKind::RmsNorm { eps }, x, w)
}
/// Rotary embedding of `x [.., t, d]` with tables from [`rope_tables`].
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    apply3(OpKind::Rope { inverse: false }, x, cos, sin)
}
/// Rotary tables `(cos, sin)`, each `[positions, d/2]`, computed with repops' own sin/cos.
pub fn rope_tables(positions: usize, d: usize, base: f32, device: &Device) -> Result<(Tensor, Tensor)> {
    let (c, s) = crate::kernels::rope::table(positions, d, base);
    Ok((Tensor::from_vec(c, (positions, d / 2), device)?, Tensor::from_vec(s, (positions, d / 2), device)?))
}
/// Rows of `table [V, d]` for `ids` (u32, any shape): `[.., d]`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    if ids.dtype() != DType::U32 {
        return Err(Error::DType { op: "embedding", dtype: format!("{:?}", ids.dtype()), expected: "u32" });
    }
    apply2(OpKind::Embedding, table, ids)
}

/// One AdamW step for a parameter: returns `(param, m, v)` updated, each through a repops op (so the
/// update is on the tape too). `t` is the 1-based step.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    t: u64,
    h: AdamW,
) -> Result<(Tensor, Tensor, Tensor)> {
    let m = apply2(OpKind::AdamMoment1 { beta1: h.beta1 }, m, grad)?;
    let v = apply2(OpKind::AdamMoment2 { beta2: h.beta2 }, v, grad)?;
    let p = apply3(OpKind::AdamParam { h, t }, param, &m, &v)?;
    Ok((p, m, v))
}

/// A [`HostTensor`] as a tensor on `device` (the inverse of [`to_host`]).
pub fn from_host(t: &HostTensor, device: &candle_core::Device) -> Result<Tensor> {
    Ok(match &t.data {
        HostData::F32(v) => Tensor::from_vec(v.clone(), t.shape.as_slice(), device)?,
        HostData::U32(v) => Tensor::from_vec(v.clone(), t.shape.as_slice(), device)?,
    })
}

/// A tensor's contents as a [`HostTensor`] (f32 or u32), for tapes and tests.
pub fn to_host(t: &Tensor) -> Result<HostTensor> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    let data = match t.dtype() {
        DType::F32 => HostData::F32(flat.to_vec1::<f32>()?),
        DType::U32 => HostData::U32(flat.to_vec1::<u32>()?),
        other => return Err(Error::DType { op: "to_host", dtype: format!("{other:?}"), expected: "f32 or u32" }),
    };
    Ok(HostTensor { shape, data })
}
