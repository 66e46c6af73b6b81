//! Reductions in one canonical order.
//!
//! A sum over `n` values is defined as: eight lane accumulators, lane `j` adding elements `8c + j` in
//! increasing `c`; the lanes combined by the fixed tree `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`; then
//! the `n mod 8` trailing elements added one by one. The AVX2 path keeps the eight lanes in one register,
//! the scalar path in an array: the same additions in the same order, so the same bits. Dot products and
//! sums of squares use the same shape with fused multiply-adds.

use crate::simd::SimdLevel;

/// Lanes of the canonical reduction.
pub const LANES: usize = 8;

#[inline]
fn combine(l: [f32; LANES]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// Canonical sum of `xs`.
#[allow(unsafe_code)] // calls the AVX2 kernels after checking the CPU supports them
pub fn sum(xs: &[f32], level: SimdLevel) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level.has_avx2_fma() {
        // SAFETY: a level above Scalar is only in use when the CPU has AVX2 and FMA (see `simd`).
        return unsafe { avx2::sum(xs) };
    }
    let _ = level;
    let mut lanes = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            lanes[j] += c[j];
        }
    }
    tail.iter().fold(combine(lanes), |s, &x| s + x)
}

/// Canonical dot product: lanes accumulate `fma(a, b, lane)`; the tail too.
#[allow(unsafe_code)] // calls the AVX2 kernels after checking the CPU supports them
pub fn dot(a: &[f32], b: &[f32], level: SimdLevel) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if level.has_avx2_fma() {
        // SAFETY: as in `sum`.
        return unsafe { avx2::dot(a, b) };
    }
    let _ = level;
    let mut lanes = [0f32; LANES];
    let n = a.len() / LANES * LANES;
    for (ca, cb) in a[..n].chunks_exact(LANES).zip(b[..n].chunks_exact(LANES)) {
        for j in 0..LANES {
            lanes[j] = ca[j].mul_add(cb[j], lanes[j]);
        }
    }
    a[n..].iter().zip(&b[n..]).fold(combine(lanes), |s, (&x, &y)| x.mul_add(y, s))
}

/// Canonical sum of squares (`dot(xs, xs)`).
pub fn sum_sq(xs: &[f32], level: SimdLevel) -> f32 {
    dot(xs, xs, level)
}

/// Maximum, in sequence: NaN if any element is NaN, otherwise the first largest element
/// (`-inf` for an empty slice). Order-exact, so no vector path is needed for determinism.
pub fn max(xs: &[f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for &x in xs {
        if x.is_nan() {
            return x;
        }
        if x > m {
            m = x;
        }
    }
    m
}

/// Index of the first largest element (NaN counts as largest), or 0 for an empty slice.
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() {
            return i;
        }
        if x > xs[best] {
            best = i;
        }
    }
    best
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{LANES, combine};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum(xs: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let chunks = xs.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            // SAFETY: `c` has exactly 8 f32s; unaligned load.
            acc = _mm256_add_ps(acc, unsafe { _mm256_loadu_ps(c.as_ptr()) });
        }
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` has room for 8 f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        tail.iter().fold(combine(lanes), |s, &x| s + x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let n = a.len().min(b.len()) / LANES * LANES;
        for (ca, cb) in a[..n].chunks_exact(LANES).zip(b[..n].chunks_exact(LANES)) {
            // SAFETY: both chunks hold 8 f32s.
            let (va, vb) = unsafe { (_mm256_loadu_ps(ca.as_ptr()), _mm256_loadu_ps(cb.as_ptr())) };
            acc = _mm256_fmadd_ps(va, vb, acc);
        }
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` has room for 8 f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        a[n..].iter().zip(&b[n..]).fold(combine(lanes), |s, (&x, &y)| x.mul_add(y, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn vector_and_scalar_paths_agree(xs in proptest::collection::vec(-1e4f32..1e4, 0..300),
                                         ys in proptest::collection::vec(-1e4f32..1e4, 300)) {
            let ys = &ys[..xs.len()];
            for level in simd::available() {
                prop_assert_eq!(sum(&xs, level).to_bits(), sum(&xs, SimdLevel::Scalar).to_bits());
                prop_assert_eq!(dot(&xs, ys, level).to_bits(), dot(&xs, ys, SimdLevel::Scalar).to_bits());
            }
            let exact: f64 = xs.iter().map(|&x| x as f64).sum();
            let bound = xs.iter().map(|x| x.abs() as f64).sum::<f64>() * 1e-6 + 1e-6;
            prop_assert!((sum(&xs, SimdLevel::Scalar) as f64 - exact).abs() <= bound);
        }
    }

    #[test]
    fn max_is_first_largest_and_propagates_nan() {
        assert_eq!(max(&[1.0, 3.0, 2.0]), 3.0);
        assert_eq!(max(&[-0.0, 0.0]).to_bits(), (-0.0f32).to_bits());
        assert!(max(&[1.0, f32::NAN, 2.0]).is_nan());
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
