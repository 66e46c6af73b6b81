//! Row-wise kernels over the last dimension: softmax, log-softmax, cross-entropy, RMSNorm, and their
//! backward passes. Rows are independent, so threads split rows; within a row every reduction is the
//! canonical one of [`reduce`](super::reduce). Formulas below are the definitions, operation by operation.

use rayon::prelude::*;

use super::math::{exp, ln, rsqrt};
use super::reduce::{dot, max, sum, sum_sq};
use crate::simd::{self, SimdLevel};

/// Rows per parallel task: at least 16, and enough for about this many elements (a task handed to another
/// thread costs microseconds; short rows are not worth it one by one). Rows are independent, so the split
/// changes no result.
const ELEMENTS_PER_TASK: usize = 1 << 14;

fn rows_per_task(n: usize) -> usize {
    (ELEMENTS_PER_TASK / n.max(1)).max(16)
}

fn par_rows<F>(out: &mut [f32], n: usize, level: SimdLevel, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if n == 0 {
        return;
    }
    let per_task = rows_per_task(n);
    out.par_chunks_mut(n * per_task).enumerate().for_each(|(t, block)| {
        simd::dispatch(level, || {
            for (r, row) in block.chunks_exact_mut(n).enumerate() {
                f(t * per_task + r, row);
            }
        })
    });
}

/// `y = softmax(x)` per row: `m = max(x)`, `e_i = exp(x_i − m)`, `y_i = e_i / sum(e)`.
pub fn softmax(x: &[f32], y: &mut [f32], n: usize, level: SimdLevel) {
    par_rows(y, n, level, |r, row| {
        let xr = &x[r * n..(r + 1) * n];
        let m = max(xr);
        for (o, &v) in row.iter_mut().zip(xr) {
            *o = exp(v - m);
        }
        let s = sum(row, level);
        for o in row.iter_mut() {
            *o /= s;
        }
    });
}

/// `y = log_softmax(x)` per row: `y_i = (x_i − m) − ln(sum(exp(x − m)))`.
pub fn log_softmax(x: &[f32], y: &mut [f32], n: usize, level: SimdLevel) {
    par_rows(y, n, level, |r, row| {
        let xr = &x[r * n..(r + 1) * n];
        let m = max(xr);
        for (o, &v) in row.iter_mut().zip(xr) {
            *o = exp(v - m);
        }
        let ls = ln(sum(row, level));
        for (o, &v) in row.iter_mut().zip(xr) {
            *o = (v - m) - ls;
        }
    });
}

/// Softmax backward from its output `y`: `dx_i = y_i · (dy_i − dot(dy, y))`.
pub fn softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], n: usize, level: SimdLevel) {
    par_rows(dx, n, level, |r, row| {
        let (yr, gr) = (&y[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        let d = dot(gr, yr, level);
        for ((o, &yi), &gi) in row.iter_mut().zip(yr).zip(gr) {
            *o = yi * (gi - d);
        }
    });
}

/// Log-softmax backward from its output `y`: `dx_i = dy_i − exp(y_i) · sum(dy)`.
pub fn log_softmax_backward(y: &[f32], dy: &[f32], dx: &mut [f32], n: usize, level: SimdLevel) {
    par_rows(dx, n, level, |r, row| {
        let (yr, gr) = (&y[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        let s = sum(gr, level);
        for ((o, &yi), &gi) in row.iter_mut().zip(yr).zip(gr) {
            *o = gi - exp(yi) * s;
        }
    });
}

/// Mean cross-entropy of `logits` (rows × n) against `targets`: per row `ln(sum(exp(x − m))) − (x_t − m)`,
/// then the canonical sum of the row losses divided by the row count. Targets must be `< n`.
pub fn cross_entropy(logits: &[f32], targets: &[u32], n: usize, level: SimdLevel) -> f32 {
    let rows = targets.len();
    let mut losses = vec![0f32; rows];
    let per_task = rows_per_task(n);
    losses.par_chunks_mut(per_task).enumerate().for_each(|(t, block)| {
        let mut e = vec![0f32; n];
        simd::dispatch(level, || {
            for (i, loss) in block.iter_mut().enumerate() {
                let r = t * per_task + i;
                let xr = &logits[r * n..(r + 1) * n];
                let m = max(xr);
                for (o, &v) in e.iter_mut().zip(xr) {
                    *o = exp(v - m);
                }
                *loss = ln(sum(&e, level)) - (xr[targets[r] as usize] - m);
            }
        })
    });
    sum(&losses, level) / rows as f32
}

/// Cross-entropy backward: `dx_i = (softmax(x)_i − [i = t]) · (dloss / rows)`.
pub fn cross_entropy_backward(logits: &[f32], targets: &[u32], dloss: f32, dx: &mut [f32], n: usize, level: SimdLevel) {
    let g = dloss / targets.len() as f32;
    softmax(logits, dx, n, level);
    par_rows(dx, n, level, |r, row| {
        let t = targets[r] as usize;
        for (i, o) in row.iter_mut().enumerate() {
            let onehot = if i == t { 1.0 } else { 0.0 };
            *o = (*o - onehot) * g;
        }
    });
}

/// RMSNorm: `r = rsqrt(sum_sq(x)/n + eps)`, `y_i = (x_i · r) · w_i`.
pub fn rms_norm(x: &[f32], w: &[f32], y: &mut [f32], n: usize, eps: f32, level: SimdLevel) {
    par_rows(y, n, level, |r, row| {
        let xr = &x[r * n..(r + 1) * n];
        let inv = rsqrt(sum_sq(xr, level) / n as f32 + eps);
        for ((o, &xi), &wi) in row.iter_mut().zip(xr).zip(w) {
            *o = (xi * inv) * wi;
        }
    });
}

/// RMSNorm backward for `x`: with `g_i = dy_i · w_i`, `c = dot(g, x)/n`, `k = ((r·r)·r)·c`:
/// `dx_i = r · g_i − x_i · k`.
pub fn rms_norm_backward_x(x: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], n: usize, eps: f32, level: SimdLevel) {
    par_rows(dx, n, level, |r, row| {
        let (xr, gr) = (&x[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        let inv = rsqrt(sum_sq(xr, level) / n as f32 + eps);
        let g: Vec<f32> = gr.iter().zip(w).map(|(&d, &wi)| d * wi).collect();
        let c = dot(&g, xr, level) / n as f32;
        let k = ((inv * inv) * inv) * c;
        for ((o, &gi), &xi) in row.iter_mut().zip(&g).zip(xr) {
            *o = inv * gi - xi * k;
        }
    });
}

/// RMSNorm backward for `w`: `dw_i = Σ_rows fma(dy_i, x_i · r, ·)`, rows in order.
pub fn rms_norm_backward_w(x: &[f32], dy: &[f32], dw: &mut [f32], n: usize, eps: f32, level: SimdLevel) {
    if n == 0 {
        return;
    }
    let rows = x.len() / n;
    let inv: Vec<f32> = (0..rows).map(|r| rsqrt(sum_sq(&x[r * n..(r + 1) * n], level) / n as f32 + eps)).collect();
    const COLS: usize = 256;
    dw.par_chunks_mut(COLS).enumerate().for_each(|(t, cols)| {
        let c0 = t * COLS;
        cols.fill(0.0);
        simd::dispatch(level, || {
            for (r, &ir) in inv.iter().enumerate() {
                for (j, o) in cols.iter_mut().enumerate() {
                    let i = r * n + c0 + j;
                    *o = dy[i].mul_add(x[i] * ir, *o);
                }
            }
        })
    });
}

/// Row sums, row means and row maxima of `x` (rows × n).
pub fn row_reduce(x: &[f32], out: &mut [f32], n: usize, kind: RowReduce, level: SimdLevel) {
    out.par_iter_mut().enumerate().for_each(|(r, o)| {
        let xr = &x[r * n..(r + 1) * n];
        *o = match kind {
            RowReduce::Sum => sum(xr, level),
            RowReduce::Mean => sum(xr, level) / n as f32,
            RowReduce::Max => max(xr),
        };
    });
}

/// Which reduction [`row_reduce`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RowReduce {
    /// Canonical sum.
    Sum,
    /// Canonical sum divided by the row length.
    Mean,
    /// Sequential maximum.
    Max,
}
