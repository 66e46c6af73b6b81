//! Which vector instructions the kernels may use, and a way to force the scalar path.
//!
//! Every kernel has a scalar path and, on x86-64 with AVX2 and FMA, a vectorised one; the matrix product
//! also has an AVX-512 one. All perform the same IEEE-754 operations in the same order (a vector path
//! merely does eight or sixteen independent ones at a time), so they return the same bits; the tests check
//! it for every op at every level the CPU has.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level a kernel can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Plain Rust, one element at a time (correctly rounded `mul_add` for fused multiply-adds).
    Scalar,
    /// x86-64 AVX2 + FMA, eight f32 lanes.
    Avx2Fma,
    /// x86-64 AVX-512F as well as AVX2 + FMA: the matrix product runs sixteen f32 lanes wide (twice the
    /// multiply-adds per instruction, which CPUs with two 512-bit FMA units turn into twice the speed);
    /// every other kernel runs its AVX2 path, whose definitions fix eight lanes.
    Avx512,
}

impl SimdLevel {
    /// Whether the CPU has AVX2 and FMA at this level (every level but `Scalar`).
    pub fn has_avx2_fma(self) -> bool {
        self != Self::Scalar
    }
}

/// Every level, lowest first: each one's CPU can run those before it.
const LEVELS: [SimdLevel; 3] = [SimdLevel::Scalar, SimdLevel::Avx2Fma, SimdLevel::Avx512];

/// The forced level: 0 for none (the detected one), else its place in [`LEVELS`] plus one.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
pub fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return SimdLevel::Avx512;
            }
            return SimdLevel::Avx2Fma;
        }
    }
    SimdLevel::Scalar
}

/// Every level this CPU can run, lowest first (always includes `Scalar`).
pub fn available() -> Vec<SimdLevel> {
    let best = detected();
    LEVELS.into_iter().take_while(|&l| l != best).chain([best]).collect()
}

/// The level kernels use now: the detected one, unless [`force`] chose another.
pub fn current() -> SimdLevel {
    match FORCED.load(Ordering::Relaxed) {
        0 => detected(),
        code => LEVELS.get(usize::from(code) - 1).copied().unwrap_or_else(detected),
    }
}

/// Forces a level for the whole process (`None` returns to the detected one). Results do not change —
/// that is the point — only speed. Asking for a level the CPU lacks is refused.
pub fn force(level: Option<SimdLevel>) -> Result<(), crate::Error> {
    let code = match level {
        None => 0,
        Some(l) => match available().iter().position(|&a| a == l) {
            // The available levels are the first of `LEVELS`, in its order.
            Some(place) => place as u8 + 1,
            None => return Err(crate::Error::Unsupported { op: "simd", what: format!("{l:?} on this CPU") }),
        },
    };
    FORCED.store(code, Ordering::Relaxed);
    Ok(())
}

/// Runs `f` compiled for `level` (for any kernel built from repops' scalar code): at `Avx2Fma` and above,
/// inside a function with AVX2 and FMA enabled, so that the scalar code `f` inlines (fused multiply-adds,
/// rounding) becomes single instructions instead of library calls. The operations, and so the results,
/// are the same either way.
#[inline(always)]
#[allow(unsafe_code)] // calls an AVX2 function after checking the CPU supports it
pub fn dispatch<R>(level: SimdLevel, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if level.has_avx2_fma() {
        #[target_feature(enable = "avx2,fma")]
        fn with_fma<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: a level above Scalar is only in use when the CPU has AVX2 and FMA (see `detected`).
        return unsafe { with_fma(f) };
    }
    let _ = level;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_run_from_scalar_up_to_the_detected_one() {
        let levels = available();
        assert_eq!(levels.first(), Some(&SimdLevel::Scalar));
        assert_eq!(levels.last(), Some(&detected()));
        let rank = |l: &SimdLevel| LEVELS.iter().position(|x| x == l);
        assert!(levels.windows(2).all(|w| rank(&w[0]) < rank(&w[1])), "{levels:?}");
        assert!(levels[1..].iter().all(|l| l.has_avx2_fma()));
        assert!(!SimdLevel::Scalar.has_avx2_fma());
    }
}
