//! Which vector instructions the kernels may use, and a way to force the scalar path.
//!
//! Every kernel has a scalar path and, on x86-64 with AVX2 and FMA, a vectorised one. Both perform the
//! same IEEE-754 operations in the same order (the vector path merely does eight independent ones at a
//! time), so they return the same bits; the tests check it for every op.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level a kernel can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Plain Rust, one element at a time (correctly rounded `mul_add` for fused multiply-adds).
    Scalar,
    /// x86-64 AVX2 + FMA, eight f32 lanes.
    Avx2Fma,
}

const AUTO: u8 = 0;
const SCALAR: u8 = 1;
const AVX2: u8 = 2;

static FORCED: AtomicU8 = AtomicU8::new(AUTO);

/// The best level this CPU supports.
pub fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return SimdLevel::Avx2Fma;
        }
    }
    SimdLevel::Scalar
}

/// Every level this CPU can run (always includes `Scalar`).
pub fn available() -> Vec<SimdLevel> {
    let mut levels = vec![SimdLevel::Scalar];
    if detected() == SimdLevel::Avx2Fma {
        levels.push(SimdLevel::Avx2Fma);
    }
    levels
}

/// The level kernels use now: the detected one, unless [`force`] chose another.
pub fn current() -> SimdLevel {
    match FORCED.load(Ordering::Relaxed) {
        SCALAR => SimdLevel::Scalar,
        AVX2 => SimdLevel::Avx2Fma,
        _ => detected(),
    }
}

/// Forces a level for the whole process (`None` returns to the detected one). Results do not change —
/// that is the point — only speed. Asking for a level the CPU lacks is refused.
pub fn force(level: Option<SimdLevel>) -> Result<(), crate::Error> {
    let code = match level {
        None => AUTO,
        Some(SimdLevel::Scalar) => SCALAR,
        Some(SimdLevel::Avx2Fma) if detected() == SimdLevel::Avx2Fma => AVX2,
        Some(l) => return Err(crate::Error::Unsupported { op: "simd", what: format!("{l:?} on this CPU") }),
    };
    FORCED.store(code, Ordering::Relaxed);
    Ok(())
}

/// Runs `f` compiled for `level` (for any kernel built from repops' scalar code): at `Avx2Fma`, inside a function with AVX2 and FMA enabled, so that
/// the scalar code `f` inlines (fused multiply-adds, rounding) becomes single instructions instead of
/// library calls. The operations, and so the results, are the same either way.
#[inline(always)]
#[allow(unsafe_code)] // calls an AVX2 function after checking the CPU supports it
pub fn dispatch<R>(level: SimdLevel, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx2Fma {
        #[target_feature(enable = "avx2,fma")]
        fn with_fma<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the level is only Avx2Fma when the CPU has AVX2 and FMA (see `detected`).
        return unsafe { with_fma(f) };
    }
    let _ = level;
    f()
}
