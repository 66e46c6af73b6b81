//! Element-wise kernels: one correctly rounded operation (or one of the [`math`]
//! functions) per element, so any split across threads gives the same bits.

use rayon::prelude::*;

use super::math;
use crate::simd::{self, SimdLevel};

const CHUNK: usize = 1 << 14;

/// A unary element-wise function.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Unary {
    /// e^x.
    Exp,
    /// ln x.
    Ln,
    /// tanh x.
    Tanh,
    /// √x (IEEE, correctly rounded).
    Sqrt,
    /// 1/√x.
    Rsqrt,
    /// x · sigmoid(x).
    Silu,
    /// d silu(x) / dx = s · (1 + x · (1 − s)) with s = sigmoid(x).
    SiluGrad,
    /// −x.
    Neg,
    /// x · c.
    Scale(f32),
    /// x + c.
    AddScalar(f32),
    /// x · x.
    Square,
}

impl Unary {
    /// Applies the function to one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Exp => math::exp(x),
            Self::Ln => math::ln(x),
            Self::Tanh => math::tanh(x),
            Self::Sqrt => x.sqrt(),
            Self::Rsqrt => math::rsqrt(x),
            Self::Silu => math::silu(x),
            Self::SiluGrad => {
                let s = math::sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Self::Neg => -x,
            Self::Scale(c) => x * c,
            Self::AddScalar(c) => x + c,
            Self::Square => x * x,
        }
    }
}

/// A binary element-wise operation on equal-length inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Binary {
    /// a + b.
    Add,
    /// a − b.
    Sub,
    /// a · b.
    Mul,
    /// a / b.
    Div,
    /// silu(a) · b (the SwiGLU gate).
    SwiGlu,
}

impl Binary {
    /// Applies the operation to one pair.
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Self::Add => a + b,
            Self::Sub => a - b,
            Self::Mul => a * b,
            Self::Div => a / b,
            Self::SwiGlu => math::silu(a) * b,
        }
    }
}

/// `y_i = f(x_i)`. Each function gets a loop of its own (no branch on `f` per element), which the
/// compiler can vectorise where the function allows.
pub fn unary(x: &[f32], y: &mut [f32], f: Unary, level: SimdLevel) {
    use Unary::*;
    match f {
        Exp => map(x, y, level, |v| Exp.apply(v)),
        Ln => map(x, y, level, |v| Ln.apply(v)),
        Tanh => map(x, y, level, |v| Tanh.apply(v)),
        Sqrt => map(x, y, level, |v| Sqrt.apply(v)),
        Rsqrt => map(x, y, level, |v| Rsqrt.apply(v)),
        Silu => map(x, y, level, |v| Silu.apply(v)),
        SiluGrad => map(x, y, level, |v| SiluGrad.apply(v)),
        Neg => map(x, y, level, |v| Neg.apply(v)),
        Scale(c) => map(x, y, level, |v| Scale(c).apply(v)),
        AddScalar(c) => map(x, y, level, |v| AddScalar(c).apply(v)),
        Square => map(x, y, level, |v| Square.apply(v)),
    }
}

/// `y_i = op(a_i, b_i)`, one loop per operation as [`unary`].
pub fn binary(a: &[f32], b: &[f32], y: &mut [f32], op: Binary, level: SimdLevel) {
    use Binary::*;
    match op {
        Add => zip_map(a, b, y, level, |u, v| Add.apply(u, v)),
        Sub => zip_map(a, b, y, level, |u, v| Sub.apply(u, v)),
        Mul => zip_map(a, b, y, level, |u, v| Mul.apply(u, v)),
        Div => zip_map(a, b, y, level, |u, v| Div.apply(u, v)),
        SwiGlu => zip_map(a, b, y, level, |u, v| SwiGlu.apply(u, v)),
    }
}

/// `y_i = f(x_i)` in parallel chunks at `level`.
#[inline(always)]
fn map(x: &[f32], y: &mut [f32], level: SimdLevel, f: impl Fn(f32) -> f32 + Sync) {
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
        simd::dispatch(level, || {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = f(v);
            }
        })
    });
}

/// `y_i = f(a_i, b_i)` in parallel chunks at `level`.
#[inline(always)]
fn zip_map(a: &[f32], b: &[f32], y: &mut [f32], level: SimdLevel, f: impl Fn(f32, f32) -> f32 + Sync) {
    y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(yc, (ac, bc))| {
        simd::dispatch(level, || {
            for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
                *o = f(u, v);
            }
        })
    });
}
