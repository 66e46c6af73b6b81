//! Element-wise kernels: one correctly rounded operation (or one of the [`math`](super::math)
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

/// `y_i = f(x_i)`.
pub fn unary(x: &[f32], y: &mut [f32], f: Unary, level: SimdLevel) {
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
        simd::dispatch(level, || {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = f.apply(v);
            }
        })
    });
}

/// `y_i = op(a_i, b_i)`.
pub fn binary(a: &[f32], b: &[f32], y: &mut [f32], op: Binary, level: SimdLevel) {
    y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(yc, (ac, bc))| {
        simd::dispatch(level, || {
            for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
                *o = op.apply(u, v);
            }
        })
    });
}
