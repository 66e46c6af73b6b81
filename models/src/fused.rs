//! Fused CPU ops of the native backend: each a candle custom op whose forward pass and backward pass are
//! one kernel each, where the composed candle ops would take one pass over memory (and one allocation)
//! per elementary operation.
//!
//! The row kernels are repops' ([`repops::kernels::rows`]), run at the CPU's best SIMD level; causal
//! attention has its own blocked kernel ([`attention`]). Results agree with the composed ops to
//! floating-point tolerance (the tests check values and gradients against them); they are not meant to
//! be the same bits. Only CPU tensors take these ops: the backend keeps the composed ops on other
//! devices.

use candle_core::{CpuStorage, CustomOp2, Device, InplaceOp2, InplaceOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;
use repops::kernels::math::sigmoid;
use repops::kernels::rows;
use repops::simd::{self, SimdLevel};

use crate::error::{Error, Result};

/// `$call` (of an `#[inline(always)]` kernel) compiled with AVX2 and FMA when `$level` says the CPU has
/// them: a function with those features enabled around the call, so the kernel is certain to be inlined
/// into it (a closure handed to [`simd::dispatch`] is not, when it is large).
macro_rules! at_level {
    ($level:expr, $call:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if $level.has_avx2_fma() {
                // SAFETY: a level above Scalar is only in use on a CPU with AVX2 and FMA (`repops::simd::detected`).
                #[allow(unsafe_code)]
                unsafe {
                    with_avx2(
                        #[inline(always)]
                        || $call,
                    )
                }
            } else {
                $call
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $level;
            $call
        }
    }};
}

/// Elements per parallel task of the element-wise kernels (smaller tensors stay on the calling thread).
const ELEMENTS_PER_TASK: usize = 1 << 16;

mod attention;
pub(crate) use attention::causal_attention;

fn wrap(op: &'static str, what: impl Into<String>) -> candle_core::Error {
    candle_core::Error::wrap(Error::Input(format!("{op}: {}", what.into())))
}

/// The contiguous f32 elements of a CPU storage under `layout`.
fn f32s<'a>(op: &'static str, s: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| wrap(op, "input is not contiguous"))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        other => Err(wrap(op, format!("expected f32, got {:?}", candle_core::backend::BackendStorage::dtype(other)))),
    }
}

/// Runs `f` on the contiguous f32 elements of each CPU tensor of `ts` (made contiguous first if needed);
/// `op` names the caller in errors (a tensor of another dtype, or not on the CPU).
pub fn with_host<const N: usize, R>(
    op: &'static str,
    ts: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(Tensor::storage_and_layout).collect();
    let mut slices: Vec<&[f32]> = Vec::with_capacity(N);
    for (guard, layout) in &guards {
        match &**guard {
            Storage::Cpu(s) => slices.push(f32s(op, s, layout)?),
            _ => return Err(wrap(op, "runs on CPU tensors only")),
        }
    }
    let slices: [&[f32]; N] = slices.try_into().map_err(|_| wrap(op, "tensor count"))?;
    f(slices)
}

fn host_tensor(data: Vec<f32>, shape: &Shape) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape.clone(), &Device::Cpu)
}

/// `y = f(a, b)` element by element, in parallel blocks at `level`.
fn zip_map(a: &[f32], b: &[f32], level: SimdLevel, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; a.len()];
    y.par_chunks_mut(ELEMENTS_PER_TASK).enumerate().for_each(|(t, block)| {
        let at = t * ELEMENTS_PER_TASK;
        simd::dispatch(level, || {
            for ((o, &ai), &bi) in block.iter_mut().zip(&a[at..]).zip(&b[at..]) {
                *o = f(ai, bi);
            }
        })
    });
    y
}

/// RMSNorm over the last dimension, `y = x · rsqrt(mean(x²) + eps) · w`.
#[derive(Debug, Clone, Copy)]
struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s(self.name(), s1, l1)?, f32s(self.name(), s2, l2)?);
        let n = w.len();
        if n == 0 || l1.dims().last() != Some(&n) {
            return Err(wrap(self.name(), format!("weight of {n} for input {:?}", l1.dims())));
        }
        let mut y = vec![0f32; x.len()];
        rows::rms_norm(x, w, &mut y, n, self.eps, simd::current());
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        with_host(self.name(), [x, w, g], |[xs, ws, gs]| {
            let (n, level) = (ws.len(), simd::current());
            let mut dx = vec![0f32; xs.len()];
            let mut dw = vec![0f32; n];
            rows::rms_norm_backward_x(xs, ws, gs, &mut dx, n, self.eps, level);
            rows::rms_norm_backward_w(xs, gs, &mut dw, n, self.eps, level);
            Ok((Some(host_tensor(dx, x.shape())?), Some(host_tensor(dw, w.shape())?)))
        })
    }
}

/// The SwiGLU gate `silu(a) · b`.
#[derive(Debug, Clone, Copy)]
struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (f32s(self.name(), s1, l1)?, f32s(self.name(), s2, l2)?);
        if l1.dims() != l2.dims() {
            return Err(wrap(self.name(), format!("shapes {:?} and {:?}", l1.dims(), l2.dims())));
        }
        let y = zip_map(a, b, simd::current(), |a, b| a * sigmoid(a) * b);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        with_host(self.name(), [a, b, g], |[a_s, b_s, gs]| {
            let level = simd::current();
            // d/da silu(a)·b = b · s · (1 + a · (1 − s)) with s = sigmoid(a); d/db = silu(a).
            let gb: Vec<f32> = zip_map(gs, b_s, level, |g, b| g * b);
            let da = zip_map(a_s, &gb, level, |a, gb| {
                let s = sigmoid(a);
                gb * s * (1.0 + a * (1.0 - s))
            });
            let db = zip_map(a_s, gs, level, |a, g| g * a * sigmoid(a));
            Ok((Some(host_tensor(da, a.shape())?), Some(host_tensor(db, b.shape())?)))
        })
    }
}

/// Mean cross-entropy of `logits [N, V]` against `targets [N]` (u32).
#[derive(Debug, Clone, Copy)]
struct CrossEntropy;

fn targets<'a>(op: &'static str, s: &'a CpuStorage, l: &Layout, classes: usize) -> candle_core::Result<&'a [u32]> {
    let (start, end) = l.contiguous_offsets().ok_or_else(|| wrap(op, "targets are not contiguous"))?;
    let CpuStorage::U32(v) = s else { return Err(wrap(op, "targets must be u32")) };
    let t = &v[start..end];
    if let Some(bad) = t.iter().find(|&&t| t as usize >= classes) {
        return Err(wrap(op, format!("target {bad} is not below the {classes} classes")));
    }
    Ok(t)
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let logits = f32s(self.name(), s1, l1)?;
        let &[n, v] = l1.dims() else { return Err(wrap(self.name(), format!("logits {:?}", l1.dims()))) };
        let t = targets(self.name(), s2, l2, v)?;
        if t.len() != n || n == 0 {
            return Err(wrap(self.name(), format!("{} targets for {n} rows", t.len())));
        }
        let loss = rows::cross_entropy(logits, t, v, simd::current());
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        t: &Tensor,
        _loss: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dloss = g.to_scalar::<f32>()?;
        let v = logits.dim(1)?;
        let t = t.contiguous()?;
        let (guard, layout) = t.storage_and_layout();
        let Storage::Cpu(ts) = &*guard else { return Err(wrap(self.name(), "targets must be on the CPU")) };
        let ts = targets(self.name(), ts, layout, v)?;
        let dx = with_host(self.name(), [logits], |[ls]| {
            let mut dx = vec![0f32; ls.len()];
            rows::cross_entropy_backward(ls, ts, dloss, &mut dx, v, simd::current());
            Ok(dx)
        })?;
        Ok((Some(host_tensor(dx, logits.shape())?), None))
    }
}

/// RMSNorm of `x [.., n]` with weight `w [n]` (see [`crate::Backend::rms_norm`]).
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })?)
}

/// `silu(a) · b` (see [`crate::Backend::swiglu`]).
pub(crate) fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, SwiGlu)?)
}

/// Mean cross-entropy of `logits [N, V]` against `targets [N]` (see [`crate::Backend::cross_entropy`]).
pub(crate) fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)?)
}

/// AdamW's moment update in place, on the gradient scaled by the clipping factor `clip`: the first
/// moment `m = β·m + (1−β)·(c·g)`, or with `squared` the second `v = β·v + (1−β)·(c·g)²`.
#[derive(Debug, Clone, Copy)]
struct MomentUpdate {
    beta: f32,
    clip: f32,
    squared: bool,
}

fn f32s_mut<'a>(op: &'static str, s: &'a mut CpuStorage, layout: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| wrap(op, "output is not contiguous"))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        _ => Err(wrap(op, "expected f32")),
    }
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "fused-adamw-moment"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let (m, g) = (f32s_mut(self.name(), dst, dst_l)?, f32s(self.name(), g, gl)?);
        if m.len() != g.len() {
            return Err(wrap(self.name(), format!("{} moments for {} gradients", m.len(), g.len())));
        }
        let Self { beta, clip, squared } = *self;
        let level = simd::current();
        m.par_chunks_mut(ELEMENTS_PER_TASK).zip(g.par_chunks(ELEMENTS_PER_TASK)).for_each(|(m, g)| {
            simd::dispatch(level, || {
                for (mi, &gi) in m.iter_mut().zip(g) {
                    let gi = clip * gi;
                    *mi = beta * *mi + (1.0 - beta) * if squared { gi * gi } else { gi };
                }
            })
        });
        Ok(())
    }
}

/// AdamW's parameter update in place from moments already updated (repops' `apply_update`).
#[derive(Debug, Clone, Copy)]
struct ParamUpdate {
    step: u64,
    hyper: repops::AdamW,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "fused-adamw-param"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let p = f32s_mut(self.name(), dst, dst_l)?;
        let (m, v) = (f32s(self.name(), m, ml)?, f32s(self.name(), v, vl)?);
        if m.len() != p.len() || v.len() != p.len() {
            return Err(wrap(
                self.name(),
                format!("moments of {} and {} for {} parameters", m.len(), v.len(), p.len()),
            ));
        }
        let level = simd::current();
        p.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(m.par_chunks(ELEMENTS_PER_TASK).zip(v.par_chunks(ELEMENTS_PER_TASK)))
            .for_each(|(p, (m, v))| {
                simd::dispatch(level, || repops::kernels::adamw::apply_update(p, m, v, self.step, self.hyper))
            });
        Ok(())
    }
}

/// One AdamW step (1-based `step`) of the parameter `p` from its gradient `g` scaled by `clip`, with the
/// moments `m` and `v`: all three updated in place, nothing allocated.
pub(crate) fn adamw_in_place(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    clip: f32,
    step: u64,
    hyper: repops::AdamW,
) -> Result<()> {
    let g = g.contiguous()?;
    m.inplace_op2(&g, &MomentUpdate { beta: hyper.beta1, clip, squared: false })?;
    v.inplace_op2(&g, &MomentUpdate { beta: hyper.beta2, clip, squared: true })?;
    p.inplace_op3(m, v, &ParamUpdate { step, hyper })?;
    Ok(())
}

/// The sum of the squares of every element of a CPU tensor, without a temporary: block sums in parallel,
/// added in block order (the same result on every run, whatever thread took which block).
pub(crate) fn sum_sq(x: &Tensor) -> Result<f32> {
    Ok(with_host("fused-sum-sq", [x], |[xs]| {
        let level = simd::current();
        let blocks: Vec<f32> =
            xs.par_chunks(ELEMENTS_PER_TASK).map(|c| repops::kernels::reduce::sum_sq(c, level)).collect();
        Ok(blocks.iter().sum::<f32>())
    })?)
}

/// A matrix operand of [`gemm`]: its elements, and the distance between rows and between columns.
#[derive(Debug, Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major matrix with rows of `width` elements.
    fn rows(data: &'a [f32], width: usize) -> Self {
        Self { data, row_stride: width, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with rows of `width` elements.
    fn columns(data: &'a [f32], width: usize) -> Self {
        Self { data, row_stride: 1, col_stride: width }
    }

    /// Whether a `rows × cols` matrix read with these strides stays within `data`.
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

impl Operand<'_> {
    /// For a `rows × cols` matrix stored densely, row-major or transposed (its transpose row-major):
    /// whether it is transposed. `None` for any other layout.
    fn transposed(&self, rows: usize, cols: usize) -> Option<bool> {
        match (self.row_stride, self.col_stride) {
            (r, 1) if r == cols => Some(false),
            (1, c) if c == rows => Some(true),
            _ => None,
        }
    }
}

/// `a · b` for `a` m×k and `b` k×n (any strides), row-major m×n, on rayon's pool when the product is
/// large enough to share.
///
/// On a CPU with AVX-512, and dense operands, repops' product kernel runs it
/// ([`repops::kernels::matmul::product`]): sixteen lanes wide, it is faster there than the `gemm`
/// crate's kernels, whose AVX-512 paths need a nightly compiler. Elsewhere, the `gemm` crate's kernels
/// (the ones candle's own matrix product runs), writing straight into fresh memory (no zero-filling
/// first).
fn gemm(dims @ (m, k, n): (usize, usize, usize), a: Operand<'_>, b: Operand<'_>) -> Vec<f32> {
    assert!(a.covers(m, k) && b.covers(k, n), "gemm operands too small");
    let level = simd::current();
    if level == SimdLevel::Avx512
        && let Some(c) = repops_product(dims, a, b, level)
    {
        return c;
    }
    gemm_crate(dims, a, b)
}

/// [`gemm`] by repops' product kernel at `level`, if both operands are dense (row-major or transposed).
fn repops_product(
    (m, k, n): (usize, usize, usize),
    a: Operand<'_>,
    b: Operand<'_>,
    level: SimdLevel,
) -> Option<Vec<f32>> {
    let (transpose_a, transpose_b) = (a.transposed(m, k)?, b.transposed(k, n)?);
    let mut c = vec![0f32; m * n];
    let form = repops::kernels::matmul::Form { m, k, n, transpose_a, transpose_b };
    repops::kernels::matmul::product(a.data, b.data, &mut c, form, level);
    Some(c)
}

/// [`gemm`] by the `gemm` crate.
#[allow(unsafe_code)] // one call into `gemm` with pointers whose extents are checked first
fn gemm_crate((m, k, n): (usize, usize, usize), a: Operand<'_>, b: Operand<'_>) -> Vec<f32> {
    let mut c = Vec::<f32>::with_capacity(m * n);
    if m == 0 || n == 0 {
        return c;
    }
    if k == 0 {
        c.resize(m * n, 0.0);
        return c;
    }
    let threads = rayon::current_num_threads();
    let parallelism =
        if threads > 1 && m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let stride = |s: usize| s as isize;
    // SAFETY: `c` has room for m×n elements, written at (i·n + j) through the pointer (never read: `read_dst`
    // is false); `a` and `b` are read only at the offsets their strides give for indices below (m, k) and
    // (k, n), which `covers` checked are inside their slices. With k > 0, gemm writes every element of the
    // m×n destination, so all m·n are initialised when it returns.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            stride(n),
            false,
            a.data.as_ptr(),
            stride(a.col_stride),
            stride(a.row_stride),
            b.data.as_ptr(),
            stride(b.col_stride),
            stride(b.row_stride),
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        c.set_len(m * n);
    }
    c
}

/// `y = x · wᵀ` for `x [.., in]` and `w [out, in]`, over all leading dimensions at once, with the kernels
/// candle's own product runs ([`gemm`]): one node of the graph (a reshape, a transpose and a product
/// would be four, and the backward pass pays a zero-filled buffer and a sum for each).
#[derive(Debug, Clone, Copy)]
struct Linear;

impl Linear {
    fn dims(x: &[usize], w: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
        match (x.split_last(), w) {
            (Some((&k, lead)), &[n, wk]) if k == wk => Ok((lead.iter().product(), k, n)),
            _ => Err(wrap("fused-linear", format!("input {x:?} and weight {w:?} (need [.., in] and [out, in])"))),
        }
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k, n) = Self::dims(l1.dims(), l2.dims())?;
        let (x, w) = (f32s(self.name(), s1, l1)?, f32s(self.name(), s2, l2)?);
        let y = gemm((m, k, n), Operand::rows(x, k), Operand::columns(w, k));
        let mut shape = l1.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (m, k, n) = Self::dims(x.dims(), w.dims())?;
        let (dx, dw) = with_host(self.name(), [x, w, g], |[xs, ws, gs]| {
            // dx = g · w (m×n · n×k), dw = gᵀ · x (n×m · m×k).
            let dx = gemm((m, n, k), Operand::rows(gs, n), Operand::rows(ws, k));
            let dw = gemm((n, m, k), Operand::columns(gs, n), Operand::rows(xs, k));
            Ok((dx, dw))
        })?;
        Ok((Some(host_tensor(dx, x.shape())?), Some(host_tensor(dw, w.shape())?)))
    }
}

/// `x [.., in] · wᵀ` for `w [out, in]` (see [`crate::Backend::linear`]).
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, Linear)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inputs_are_named_errors_not_panics() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((3, 5), candle_core::DType::F32, &dev)?;
        let targets = Tensor::from_vec(vec![0u32, 5, 1], 3, &dev)?;
        let e = cross_entropy(&logits, &targets).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("target 5 is not below the 5 classes"), "{e}");
        let x = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &dev)?;
        let e = linear(&x, &Tensor::zeros((6, 5), candle_core::DType::F32, &dev)?).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("fused-linear"));
        let (cos, sin) = (
            Tensor::zeros((3, 1), candle_core::DType::F32, &dev)?,
            Tensor::zeros((3, 1), candle_core::DType::F32, &dev)?,
        );
        // Three query heads cannot share two key/value heads.
        let e = causal_attention(&x, &x, &x, &cos, &sin, 3, 2).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("fused-attention"));
        // Heads of width zero.
        let empty = Tensor::zeros((2, 3, 0), candle_core::DType::F32, &dev)?;
        let (cos, sin) = (
            Tensor::zeros((3, 0), candle_core::DType::F32, &dev)?,
            Tensor::zeros((3, 0), candle_core::DType::F32, &dev)?,
        );
        let e = causal_attention(&empty, &empty, &empty, &cos, &sin, 2, 2).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("fused-attention"));
        assert!(rms_norm(&x, &Tensor::ones(3, candle_core::DType::F32, &dev)?, 1e-5).is_err());
        Ok(())
    }

    /// Both routes of the linear layers' product (repops' kernel, the `gemm` crate's) agree on every
    /// layout the layers use, at the best level this CPU has; strided operands are left to `gemm`.
    #[test]
    fn the_product_routes_agree_on_every_dense_layout() {
        let level = simd::current();
        for (m, k, n) in [(1, 1, 1), (7, 5, 3), (37, 70, 45), (13, 0, 4)] {
            let data = |len: usize, seed: usize| -> Vec<f32> {
                (0..len).map(|i| ((i * 7919 + seed * 104_729) % 1999) as f32 / 999.0 - 1.0).collect()
            };
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            for (a_op, b_op) in [
                (Operand::rows(&a, k), Operand::rows(&b, n)),
                (Operand::columns(&a, m), Operand::rows(&b, n)),
                (Operand::rows(&a, k), Operand::columns(&b, k)),
                (Operand::columns(&a, m), Operand::columns(&b, k)),
            ] {
                let by_gemm = gemm_crate((m, k, n), a_op, b_op);
                let by_repops = repops_product((m, k, n), a_op, b_op, level).expect("dense operands");
                assert_eq!(by_gemm.len(), m * n);
                let worst = by_gemm.iter().zip(&by_repops).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-5 * (k as f32 + 1.0), "{m}x{k}x{n}: {worst}");
                assert_eq!(gemm((m, k, n), a_op, b_op), if level == SimdLevel::Avx512 { by_repops } else { by_gemm });
            }
        }
        // Every other row of a 4 × 3 matrix: not dense.
        let tall = vec![1f32; 8 * 3];
        let strided = Operand { data: &tall, row_stride: 6, col_stride: 1 };
        assert!(repops_product((4, 3, 2), strided, Operand::rows(&tall, 2), level).is_none());
    }

    #[test]
    fn linear_and_its_gradients_match_candles_matrix_product() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 7, 5), &dev)?;
        let w = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5), &dev)?)?;
        let xv = candle_core::Var::from_tensor(&x)?;
        let fused = linear(xv.as_tensor(), w.as_tensor())?;
        let plain = xv.as_tensor().broadcast_matmul(&w.as_tensor().t()?)?;
        let close = |a: &Tensor, b: &Tensor| -> Result<f32> { Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_vec0()?) };
        assert!(close(&fused, &plain)? < 1e-5);
        let (gf, gp) = (fused.sqr()?.sum_all()?.backward()?, plain.sqr()?.sum_all()?.backward()?);
        for v in [&xv, &w] {
            let (a, b) =
                (gf.get(v).ok_or(Error::Input("no grad".into()))?, gp.get(v).ok_or(Error::Input("no grad".into()))?);
            assert!(close(a, b)? < 1e-4, "{}", close(a, b)?);
        }
        Ok(())
    }
}
