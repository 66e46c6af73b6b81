//! The fused causal attention of the native backend's CPU path: rotary positions, scores, softmax and
//! the weighted sum of values in one kernel, and its backward pass in another.
//!
//! Each job is one sequence and one key/value head. Its heads are gathered into contiguous buffers whose
//! rows are padded with zeros to a multiple of eight floats, and query rows are taken four at a time: the
//! scores of four rows against eight keys, the weighted sums of four rows and the gradients that four
//! rows add to every key are each a small matrix product that keeps its sums in vector registers, as a
//! blocked matrix product does (FlashAttention's tiling, on the CPU). The `[T, T]` attention weights are
//! never stored: the backward pass recomputes them four rows at a time. The sums are fused multiply-adds,
//! which compile to FMA instructions at the AVX2 level (on a CPU without FMA they are library calls:
//! slower, same results).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use repops::simd;

use super::{f32s, host_tensor, with_host, wrap};
use crate::error::Result;

/// Query rows per block.
const ROWS: usize = 4;

/// Floats per vector register (AVX2): buffers' rows are padded to a multiple of it.
const LANES: usize = 8;

/// Causal self-attention with rotary positions, over projections in their `[B, T, heads · dh]` layout
/// (no transposes): `softmax(rope(q) · rope(k)ᵀ / √dh + causal mask) · v`, with grouped-query heads
/// (query head `h` reads key/value head `h / (heads / kv_heads)`). The backward pass recomputes the
/// attention weights instead of keeping them (FlashAttention's trade: `[B, H, T, T]` is never stored).
#[derive(Debug, Clone)]
struct CausalAttention {
    heads: usize,
    kv_heads: usize,
    /// Rotary tables `[T, dh/2]` for positions `0..T`.
    cos: Tensor,
    sin: Tensor,
}

/// Causal attention with rotary positions `0..T` over `q [B, T, heads · dh]` and `k`, `v
/// [B, T, kv_heads · dh]`, returning `[B, T, heads · dh]`; `cos` and `sin` are the tables `[T, dh/2]`.
pub(crate) fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    heads: usize,
    kv_heads: usize,
) -> Result<Tensor> {
    let op = CausalAttention { heads, kv_heads, cos: cos.contiguous()?, sin: sin.contiguous()? };
    Ok(q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

impl CausalAttention {
    fn dims(&self, q: &[usize], k: &[usize], v: &[usize]) -> candle_core::Result<Dims> {
        let name = "fused-attention";
        let (&[b, t, qw], &[kb, kt, kw]) = (q, k) else {
            return Err(wrap(name, format!("q {q:?} and k {k:?} must be [B, T, width]")));
        };
        let dh = qw / self.heads.max(1);
        let ok = self.heads > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && dh > 0
            && dh * self.heads == qw
            && dh.is_multiple_of(2)
            && (kb, kt, kw) == (b, t, self.kv_heads * dh)
            && v == k
            && self.cos.dims() == [t, dh / 2]
            && self.sin.dims() == [t, dh / 2];
        if !ok {
            return Err(wrap(
                name,
                format!("q {q:?}, k {k:?}, v {v:?} for {} heads, {} kv heads", self.heads, self.kv_heads),
            ));
        }
        Ok(Dims { b, t, heads: self.heads, kv_heads: self.kv_heads, dh })
    }

    fn forward(&self, q: &[f32], k: &[f32], v: &[f32], dims: Dims) -> candle_core::Result<Vec<f32>> {
        let Dims { b: batch, t, heads, kv_heads, dh } = dims;
        let level = simd::current();
        let blocks: Vec<Vec<f32>> = with_host(self.name(), [&self.cos, &self.sin], |[cos, sin]| {
            let tables = Tables { cos, sin, half: dh / 2 };
            Ok((0..batch * kv_heads)
                .into_par_iter()
                .map(|job| at_level!(level, forward_job(q, k, v, dims, tables, job)))
                .collect())
        })?;
        let mut y = vec![0f32; batch * t * heads * dh];
        for (job, block) in blocks.iter().enumerate() {
            let (b, kh) = (job / kv_heads, job % kv_heads);
            for r in 0..dims.rep() {
                for i in 0..t {
                    let at = ((b * t + i) * heads + kh * dims.rep() + r) * dh;
                    y[at..at + dh].copy_from_slice(&block[(r * t + i) * dh..(r * t + i + 1) * dh]);
                }
            }
        }
        Ok(y)
    }

    /// Gradients of `q`, `k` and `v` from the output `o` and its gradient `g`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &[f32],
        g: &[f32],
        dims: Dims,
    ) -> candle_core::Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let Dims { b: batch, t, heads, kv_heads, dh } = dims;
        let (rep, level) = (dims.rep(), simd::current());
        let blocks: Vec<Grads> = with_host(self.name(), [&self.cos, &self.sin], |[cos, sin]| {
            let tables = Tables { cos, sin, half: dh / 2 };
            Ok((0..batch * kv_heads)
                .into_par_iter()
                .map(|job| at_level!(level, backward_job(q, k, v, o, g, dims, tables, job)))
                .collect())
        })?;
        let mut dq = vec![0f32; batch * t * heads * dh];
        let mut dk = vec![0f32; batch * t * kv_heads * dh];
        let mut dv = vec![0f32; batch * t * kv_heads * dh];
        for (job, grads) in blocks.iter().enumerate() {
            let (b, kh) = (job / kv_heads, job % kv_heads);
            for i in 0..t {
                for r in 0..rep {
                    let at = ((b * t + i) * heads + kh * rep + r) * dh;
                    dq[at..at + dh].copy_from_slice(&grads.dq[(r * t + i) * dh..(r * t + i + 1) * dh]);
                }
                let at = ((b * t + i) * kv_heads + kh) * dh;
                dk[at..at + dh].copy_from_slice(&grads.dk[i * dh..(i + 1) * dh]);
                dv[at..at + dh].copy_from_slice(&grads.dv[i * dh..(i + 1) * dh]);
            }
        }
        Ok((dq, dk, dv))
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let dims = self.dims(l1.dims(), l2.dims(), l3.dims())?;
        let (q, k, v) = (f32s(self.name(), s1, l1)?, f32s(self.name(), s2, l2)?, f32s(self.name(), s3, l3)?);
        Ok((CpuStorage::F32(self.forward(q, k, v, dims)?), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(q.dims(), k.dims(), v.dims())?;
        let (dq, dk, dv) =
            with_host(self.name(), [q, k, v, o, g], |[q, k, v, o, g]| self.backward(q, k, v, o, g, dims))?;
        Ok((Some(host_tensor(dq, q.shape())?), Some(host_tensor(dk, k.shape())?), Some(host_tensor(dv, v.shape())?)))
    }
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    dh: usize,
}

impl Dims {
    fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Row `i` of head `h` of sequence `b` in a `[B, T, n · dh]` tensor of `n` heads.
    fn row<'a>(&self, x: &'a [f32], n: usize, b: usize, i: usize, h: usize) -> &'a [f32] {
        let at = ((b * self.t + i) * n + h) * self.dh;
        &x[at..at + self.dh]
    }

    /// A head row's width in the job's buffers: `dh` rounded up to whole vectors.
    fn width(&self) -> usize {
        self.dh.next_multiple_of(LANES)
    }

    /// A row of scores' width in the job's buffers: `T` rounded up to whole vectors.
    fn keys(&self) -> usize {
        self.t.next_multiple_of(LANES)
    }
}

/// The rotary tables `[T, dh/2]` of one call.
#[derive(Debug, Clone, Copy)]
struct Tables<'a> {
    cos: &'a [f32],
    sin: &'a [f32],
    half: usize,
}

impl Tables<'_> {
    /// `cos` and `sin` at position `i`.
    #[inline(always)]
    fn at(&self, i: usize) -> (&[f32], &[f32]) {
        (&self.cos[i * self.half..(i + 1) * self.half], &self.sin[i * self.half..(i + 1) * self.half])
    }
}

/// `y = rope(x) · scale` at one position: `y₁ = x₁·cos − x₂·sin`, `y₂ = x₁·sin + x₂·cos` (rotate-half
/// layout).
#[inline(always)]
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], scale: f32, y: &mut [f32]) {
    let half = cos.len();
    let (y1, y2) = y.split_at_mut(half);
    for d in 0..half {
        let (a, b) = (x[d], x[d + half]);
        y1[d] = (a * cos[d] - b * sin[d]) * scale;
        y2[d] = (a * sin[d] + b * cos[d]) * scale;
    }
}

/// `dx = rope⁻¹(dy) · scale`, the transpose of [`rotate`] (rotation by the opposite angle), for gradients.
#[inline(always)]
fn rotate_back(dy: &[f32], cos: &[f32], sin: &[f32], scale: f32, dx: &mut [f32]) {
    let half = cos.len();
    let (dx1, dx2) = dx.split_at_mut(half);
    for d in 0..half {
        let (a, b) = (dy[d], dy[d + half]);
        dx1[d] = (a * cos[d] + b * sin[d]) * scale;
        dx2[d] = (b * cos[d] - a * sin[d]) * scale;
    }
}

/// Head `h` of sequence `b` of a `[B, T, n · dh]` tensor as `[T, width]` rows, zero-padded; rotated
/// and scaled when `rotation` is given.
#[inline(always)]
fn gather(x: &[f32], dims: Dims, n: usize, b: usize, h: usize, rotation: Option<(Tables<'_>, f32)>) -> Vec<f32> {
    let w = dims.width();
    let mut out = vec![0f32; dims.t * w];
    for (i, row) in out.chunks_exact_mut(w).enumerate() {
        let (src, dst) = (dims.row(x, n, b, i, h), &mut row[..dims.dh]);
        match rotation {
            Some((tables, scale)) => {
                let (c, s) = tables.at(i);
                rotate(src, c, s, scale, dst);
            }
            None => dst.copy_from_slice(src),
        }
    }
    out
}

/// The transpose `[width, keys]` of `[T, width]` rows, zero-padded to `keys` columns.
#[inline(always)]
fn transpose(rows: &[f32], dims: Dims) -> Vec<f32> {
    let (w, keys) = (dims.width(), dims.keys());
    let mut out = vec![0f32; w * keys];
    for (j, row) in rows.chunks_exact(w).enumerate() {
        for (d, &x) in row.iter().enumerate() {
            out[d * keys + j] = x;
        }
    }
    out
}

/// `out[r][c] = Σ_{k<depth} a[r][k] · b[k][c]` for `R` rows of `a` and the columns `c < cols` (a
/// multiple of [`LANES`]) of `b`: a small matrix product that keeps each output vector's sum in a register
/// over the whole depth. Rows of `a` are `a_stride` apart, rows of `b` and of `out` `b_stride`. It computes
/// the scores (queries times transposed keys) and the weighted sums (weights times values).
#[inline(always)]
fn block_product<const R: usize>(
    a: &[f32],
    a_stride: usize,
    depth: usize,
    b: &[f32],
    b_stride: usize,
    cols: usize,
    out: &mut [f32],
) {
    for c0 in (0..cols).step_by(LANES) {
        let mut acc = [[0f32; LANES]; R];
        for k in 0..depth {
            let row = &b[k * b_stride + c0..k * b_stride + c0 + LANES];
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = a[r * a_stride + k];
                for l in 0..LANES {
                    acc[l] = x.mul_add(row[l], acc[l]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            out[r * b_stride + c0..r * b_stride + c0 + LANES].copy_from_slice(acc);
        }
    }
}

/// `dst[j] += Σ_r c[r][j] · src[r]` for `j < n`: what `R` rows of coefficients `c` (rows of `keys`)
/// add to each row of `dst`, from `R` rows of `src` (both `w` wide) — the transposed product.
#[inline(always)]
fn spread<const R: usize>(c: &[f32], keys: usize, n: usize, src: &[f32], w: usize, dst: &mut [f32]) {
    for (j, row) in dst.chunks_exact_mut(w).take(n).enumerate() {
        let coef: [f32; R] = std::array::from_fn(|r| c[r * keys + j]);
        for d0 in (0..w).step_by(LANES) {
            let out = &mut row[d0..d0 + LANES];
            let mut acc = [0f32; LANES];
            acc.copy_from_slice(out);
            for (r, &x) in coef.iter().enumerate() {
                let s = &src[r * w + d0..r * w + d0 + LANES];
                for l in 0..LANES {
                    acc[l] = x.mul_add(s[l], acc[l]);
                }
            }
            out.copy_from_slice(&acc);
        }
    }
}

/// `e^x` for `x ≤ 0`, branch-free so that a loop of it becomes vector code: a degree-6 Taylor
/// polynomial on `r = x − k·ln 2`, `|r| ≤ ln2/2`, times `2^k` built in the exponent bits (within 2
/// ulp). Arguments below −87 give `e^−87` (≈ 1.6e-38) rather than a smaller number: a softmax weight that
/// small adds nothing a float can hold. NaN stays NaN.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 · 2^23: adding it to an integer-valued float of magnitude under 2^22 leaves the integer in
    // the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let k = (clamped * std::f32::consts::LOG2_E + 0.5).floor();
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, clamped));
    let mut p: f32 = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p.mul_add(r, c);
    }
    // 2^k: k + 127 in the exponent field (k is in [−126, 0]).
    let exponent = (k + SHIFTER).to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127) << 23;
    let y = p * f32::from_bits(exponent);
    if x.is_nan() { x } else { y }
}

/// Softmax in place over the scores `p[..n]`; the rest of the row, `p[n..]`, is set to zero (masked).
#[inline(always)]
fn softmax(p: &mut [f32], n: usize) {
    let (row, masked) = p.split_at_mut(n);
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let (chunks, tail) = row.as_chunks::<LANES>();
    for chunk in chunks {
        for l in 0..LANES {
            lanes[l] = if chunk[l] > lanes[l] { chunk[l] } else { lanes[l] };
        }
    }
    let m = tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sums = [0f32; LANES];
    let (chunks, tail) = row.as_chunks_mut::<LANES>();
    for chunk in chunks {
        for l in 0..LANES {
            chunk[l] = exp_nonpositive(chunk[l] - m);
            sums[l] += chunk[l];
        }
    }
    for x in tail.iter_mut() {
        *x = exp_nonpositive(*x - m);
    }
    let inv = 1.0 / (sums.iter().sum::<f32>() + tail.iter().sum::<f32>());
    for x in row.iter_mut() {
        *x *= inv;
    }
    masked.fill(0.0);
}

/// The job's key/value head of one sequence: its rotated keys and its values as `[T, width]` rows and
/// transposed (`[width, keys]`; the values' only for the backward pass).
struct KeyValues {
    keys: Vec<f32>,
    keys_t: Vec<f32>,
    values: Vec<f32>,
    values_t: Vec<f32>,
}

impl KeyValues {
    #[inline(always)]
    fn gather(k: &[f32], v: &[f32], dims: Dims, tables: Tables<'_>, job: usize, backward: bool) -> Self {
        let (b, kh) = (job / dims.kv_heads, job % dims.kv_heads);
        let keys = gather(k, dims, dims.kv_heads, b, kh, Some((tables, 1.0)));
        let values = gather(v, dims, dims.kv_heads, b, kh, None);
        let values_t = if backward { transpose(&values, dims) } else { Vec::new() };
        Self { keys_t: transpose(&keys, dims), keys, values, values_t }
    }
}

/// The attention weights of query rows `i0..i0 + R` (`queries`, rotated and scaled, `[T, width]`) over
/// their keys, into `p` (`R` rows of `keys`, zero past each row's last key). Returns how many keys the
/// block reads.
#[inline(always)]
fn weights<const R: usize>(queries: &[f32], kv: &KeyValues, dims: Dims, i0: usize, p: &mut [f32]) -> usize {
    let (w, keys) = (dims.width(), dims.keys());
    let n = i0 + R;
    block_product::<R>(&queries[i0 * w..], w, w, &kv.keys_t, keys, n.next_multiple_of(LANES), p);
    for (r, row) in p.chunks_exact_mut(keys).take(R).enumerate() {
        softmax(row, i0 + r + 1);
    }
    n
}

/// One block of `R` query rows starting at `i0` of [`forward_job`].
#[inline(always)]
fn forward_block<const R: usize>(
    queries: &[f32],
    kv: &KeyValues,
    dims: Dims,
    i0: usize,
    p: &mut [f32],
    out: &mut [f32],
) {
    let w = dims.width();
    let n = weights::<R>(queries, kv, dims, i0, p);
    block_product::<R>(p, dims.keys(), n, &kv.values, w, w, &mut out[i0 * w..]);
}

/// The output rows `[rep, T, dh]` of the query heads that read key/value head `job % kv_heads` of
/// sequence `job / kv_heads`. Inlined into the caller's SIMD level.
#[inline(always)]
fn forward_job(q: &[f32], k: &[f32], v: &[f32], dims: Dims, tables: Tables<'_>, job: usize) -> Vec<f32> {
    let Dims { t, heads, kv_heads, dh, .. } = dims;
    let (b, kh, rep, w) = (job / kv_heads, job % kv_heads, dims.rep(), dims.width());
    let scale = 1.0 / (dh as f32).sqrt();
    let kv = KeyValues::gather(k, v, dims, tables, job, false);
    let mut out = vec![0f32; rep * t * dh];
    let (mut p, mut rows) = (vec![0f32; ROWS * dims.keys()], vec![0f32; t * w]);
    for r in 0..rep {
        let queries = gather(q, dims, heads, b, kh * rep + r, Some((tables, scale)));
        let full = t - t % ROWS;
        for i0 in (0..full).step_by(ROWS) {
            forward_block::<ROWS>(&queries, &kv, dims, i0, &mut p, &mut rows);
        }
        for i0 in full..t {
            forward_block::<1>(&queries, &kv, dims, i0, &mut p, &mut rows);
        }
        for (o, row) in out[r * t * dh..(r + 1) * t * dh].chunks_exact_mut(dh).zip(rows.chunks_exact(w)) {
            o.copy_from_slice(&row[..dh]);
        }
    }
    out
}

/// What one query head adds to its job's gradients: its queries, output and output gradient as rows,
/// and the scratch of one block.
struct QueryHead {
    queries: Vec<f32>,
    out: Vec<f32>,
    grad: Vec<f32>,
    /// `∂L/∂(scaled queries)`, `[T, width]`.
    dq: Vec<f32>,
    p: Vec<f32>,
    dp: Vec<f32>,
}

/// The gradients of one block of `R` query rows starting at `i0`: with `P` the weights and `dO` the
/// output gradient, `dP_ij = dO_i · v_j`, `dS_ij = P_ij · (dP_ij − dO_i · O_i)`; then `dq_i = Σ_j dS_ij
/// k_j`, `dk_j += Σ_i dS_ij q_i` and `dv_j += Σ_i P_ij dO_i` (rotated, scaled queries and keys).
#[inline(always)]
fn backward_block<const R: usize>(
    head: &mut QueryHead,
    kv: &KeyValues,
    dims: Dims,
    i0: usize,
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (w, keys) = (dims.width(), dims.keys());
    let n = weights::<R>(&head.queries, kv, dims, i0, &mut head.p);
    let grad = &head.grad[i0 * w..];
    block_product::<R>(grad, w, w, &kv.values_t, keys, n.next_multiple_of(LANES), &mut head.dp);
    for r in 0..R {
        let (g, o) = (&grad[r * w..(r + 1) * w], &head.out[(i0 + r) * w..(i0 + r + 1) * w]);
        let d: f32 = g.iter().zip(o).map(|(a, b)| a * b).sum();
        let (p, dp) = (&head.p[r * keys..r * keys + n], &mut head.dp[r * keys..r * keys + n]);
        for (ds, &pj) in dp.iter_mut().zip(p) {
            *ds = pj * (*ds - d);
        }
    }
    block_product::<R>(&head.dp, keys, n, &kv.keys, w, w, &mut head.dq[i0 * w..]);
    spread::<R>(&head.dp, keys, n, &head.queries[i0 * w..], w, dk);
    spread::<R>(&head.p, keys, n, grad, w, dv);
}

/// The gradients one job (a sequence and a key/value head) computes: `dq` of its query heads
/// `[rep, T, dh]`, `dk` and `dv` `[T, dh]`.
struct Grads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// The gradients of one job of [`forward_job`] from the output `o` and its gradient `g` (see
/// [`backward_block`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_job(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    g: &[f32],
    dims: Dims,
    tables: Tables<'_>,
    job: usize,
) -> Grads {
    let Dims { t, heads, dh, .. } = dims;
    let (b, kh, rep, w) = (job / dims.kv_heads, job % dims.kv_heads, dims.rep(), dims.width());
    let scale = 1.0 / (dh as f32).sqrt();
    let kv = KeyValues::gather(k, v, dims, tables, job, true);
    let (mut dkr, mut dvr) = (vec![0f32; t * w], vec![0f32; t * w]);
    let mut dq = vec![0f32; rep * t * dh];
    let scratch = vec![0f32; ROWS * dims.keys()];
    for r in 0..rep {
        let h = kh * rep + r;
        let mut head = QueryHead {
            queries: gather(q, dims, heads, b, h, Some((tables, scale))),
            out: gather(o, dims, heads, b, h, None),
            grad: gather(g, dims, heads, b, h, None),
            dq: vec![0f32; t * w],
            p: scratch.clone(),
            dp: scratch.clone(),
        };
        let full = t - t % ROWS;
        for i0 in (0..full).step_by(ROWS) {
            backward_block::<ROWS>(&mut head, &kv, dims, i0, &mut dkr, &mut dvr);
        }
        for i0 in full..t {
            backward_block::<1>(&mut head, &kv, dims, i0, &mut dkr, &mut dvr);
        }
        // The scores took scaled queries: the unscaled ones' gradient is `scale` times theirs.
        for (i, (out, row)) in
            dq[r * t * dh..(r + 1) * t * dh].chunks_exact_mut(dh).zip(head.dq.chunks_exact(w)).enumerate()
        {
            let (c, s) = tables.at(i);
            rotate_back(&row[..dh], c, s, scale, out);
        }
    }
    let mut dk = vec![0f32; t * dh];
    let mut dv = vec![0f32; t * dh];
    for (j, ((dk, dv), (dkr, dvr))) in dk
        .chunks_exact_mut(dh)
        .zip(dv.chunks_exact_mut(dh))
        .zip(dkr.chunks_exact(w).zip(dvr.chunks_exact(w)))
        .enumerate()
    {
        let (c, s) = tables.at(j);
        rotate_back(&dkr[..dh], c, s, 1.0, dk);
        dv.copy_from_slice(&dvr[..dh]);
    }
    Grads { dq, dk, dv }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Inputs that are neither symmetric nor periodic, in [−1, 1].
    fn inputs(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0).collect()
    }

    /// Causal attention with rotary positions the plain way, in f64: the sum of `g · o` over every
    /// output, so that its derivatives are the gradients the kernel's backward pass computes.
    fn reference_loss(q: &[f32], k: &[f32], v: &[f32], g: &[f32], cos: &[f32], sin: &[f32], dims: Dims) -> f64 {
        let Dims { b: batch, t, heads, kv_heads, dh } = dims;
        let half = dh / 2;
        let rotated = |x: &[f32], n: usize, b: usize, i: usize, h: usize| -> Vec<f64> {
            let row = dims.row(x, n, b, i, h);
            let (c, s) = (&cos[i * half..(i + 1) * half], &sin[i * half..(i + 1) * half]);
            let mut y = vec![0f64; dh];
            for d in 0..half {
                let (a, bb) = (f64::from(row[d]), f64::from(row[d + half]));
                y[d] = a * f64::from(c[d]) - bb * f64::from(s[d]);
                y[d + half] = a * f64::from(s[d]) + bb * f64::from(c[d]);
            }
            y
        };
        let mut loss = 0f64;
        for b in 0..batch {
            for h in 0..heads {
                let kh = h / dims.rep();
                for i in 0..t {
                    let qi = rotated(q, heads, b, i, h);
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = rotated(k, kv_heads, b, j, kh);
                            qi.iter().zip(&kj).map(|(x, y)| x * y).sum::<f64>() / (dh as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    let gi = dims.row(g, heads, b, i, h);
                    for (j, ej) in e.iter().enumerate() {
                        let vj = dims.row(v, kv_heads, b, j, kh);
                        loss += ej / sum * vj.iter().zip(gi).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>();
                    }
                }
            }
        }
        loss
    }

    /// The blocked kernels against plain attention in f64, on shapes that leave partial blocks
    /// everywhere: 13 positions (three blocks of four rows and one row; keys padded to 16), heads 12
    /// wide (padded to 16), two query heads per key/value head, two sequences. The gradients are
    /// checked against central differences of the reference.
    #[test]
    fn blocked_attention_matches_plain_attention_and_its_derivatives() -> Result<()> {
        let dims = Dims { b: 2, t: 13, heads: 4, kv_heads: 2, dh: 12 };
        let (qw, kw) = (dims.heads * dims.dh, dims.kv_heads * dims.dh);
        let (q, k, v) =
            (inputs(dims.b * dims.t * qw, 1), inputs(dims.b * dims.t * kw, 2), inputs(dims.b * dims.t * kw, 3));
        let g = inputs(dims.b * dims.t * qw, 4);
        let half = dims.dh / 2;
        let angles: Vec<f32> =
            (0..dims.t * half).map(|x| (x / half) as f32 / 10_000f32.powf((x % half) as f32 / half as f32)).collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let dev = Device::Cpu;
        let op = CausalAttention {
            heads: dims.heads,
            kv_heads: dims.kv_heads,
            cos: Tensor::from_vec(cos.clone(), (dims.t, half), &dev)?,
            sin: Tensor::from_vec(sin.clone(), (dims.t, half), &dev)?,
        };
        let o = op.forward(&q, &k, &v, dims)?;
        let (dq, dk, dv) = op.backward(&q, &k, &v, &o, &g, dims)?;
        // Forward: Σ g·o from the kernel's output against the reference.
        let loss: f64 = o.iter().zip(&g).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        let want = reference_loss(&q, &k, &v, &g, &cos, &sin, dims);
        assert!((loss - want).abs() < 1e-4, "forward: {loss} vs {want}");
        let eps = 1e-3f32;
        for (name, x, grad) in [("q", &q, &dq), ("k", &k, &dk), ("v", &v, &dv)] {
            for (at, &analytic) in grad.iter().enumerate() {
                let nudged = |delta: f32| {
                    let mut y = x.clone();
                    y[at] += delta;
                    let (q, k, v) = match name {
                        "q" => (&y, &k, &v),
                        "k" => (&q, &y, &v),
                        _ => (&q, &k, &y),
                    };
                    reference_loss(q, k, v, &g, &cos, &sin, dims)
                };
                let numeric = (nudged(eps) - nudged(-eps)) / (2.0 * f64::from(eps));
                let err = (f64::from(analytic) - numeric).abs();
                assert!(err < 2e-3 * (1.0 + numeric.abs()), "d{name}[{at}]: {analytic} vs {numeric}");
            }
        }
        Ok(())
    }
}
