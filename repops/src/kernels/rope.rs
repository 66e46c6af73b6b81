//! Rotary position embeddings (the "rotate half" layout of Llama).
//!
//! For a row at position `t` and `i < d/2`, with `(x1, x2) = (x_i, x_{i+d/2})`:
//! `y_i = x1·cos − x2·sin`, `y_{i+d/2} = x1·sin + x2·cos`, each product and sum rounded separately.
//! Tables use `θ = t · base^(−2i/d)`, computed with this crate's own `exp`, `ln` and `sin_cos`.

use rayon::prelude::*;

use super::math::{exp, ln, sin_cos};
use crate::simd::{self, SimdLevel};

/// `(cos, sin)` tables, each `positions × d/2`.
pub fn table(positions: usize, d: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    table_of(positions, &inv_freq(d, base))
}

/// The rotary frequencies of a head `d` wide: `base^(−2i/d)` for `i < d/2`.
pub fn inv_freq(d: usize, base: f32) -> Vec<f32> {
    let lb = ln(base);
    (0..d / 2).map(|i| exp(-((2 * i) as f32 / d as f32) * lb)).collect()
}

/// `(cos, sin)` tables, each `positions × inv_freq.len()`, of the frequencies `inv_freq`.
pub fn table_of(positions: usize, inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = vec![0f32; positions * half];
    let mut sin = vec![0f32; positions * half];
    for t in 0..positions {
        for (i, &f) in inv_freq.iter().enumerate() {
            let (s, c) = sin_cos(t as f32 * f);
            cos[t * half + i] = c;
            sin[t * half + i] = s;
        }
    }
    (cos, sin)
}

/// Rotates `x` (`rows` rows of `d`, row `r` at position `r mod positions`) into `y`. With `inverse`,
/// rotates by −θ (the backward pass).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    y: &mut [f32],
    d: usize,
    positions: usize,
    inverse: bool,
    level: SimdLevel,
) {
    let half = d / 2;
    if d == 0 || positions == 0 {
        return;
    }
    y.par_chunks_mut(d).enumerate().for_each(|(r, yr)| {
        simd::dispatch(level, || {
            let t = r % positions;
            let xr = &x[r * d..(r + 1) * d];
            let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
            for i in 0..half {
                let (x1, x2) = (xr[i], xr[i + half]);
                let si = if inverse { -s[i] } else { s[i] };
                yr[i] = x1 * c[i] - x2 * si;
                yr[i + half] = x1 * si + x2 * c[i];
            }
        })
    });
}
