//! Transcendental functions built only from correctly rounded IEEE-754 operations (+, −, ×, ÷, √, fused
//! multiply-add) and bit manipulation, so every platform computes the same bits. Platform maths libraries
//! (glibc, CUDA's libdevice, MKL) may differ in the last place; these do not.
//!
//! Accuracy (checked against f64 in the tests): `exp`, `ln`, `sin`, `cos` within 2 ulp over their
//! documented ranges; `tanh` within 4e-7 absolute; `sigmoid` within 3e-7 absolute.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = f32::from_bits(0x3f31_8000); // 0.693359375: ln 2 to 9 bits, so k * LN2_HI is exact
const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI, rounded
const SQRT2: f32 = std::f32::consts::SQRT_2;
/// Above this, `exp` overflows to infinity.
const EXP_OVERFLOW: f32 = 88.722_84;
/// Below this, `exp` underflows to zero.
const EXP_UNDERFLOW: f32 = -103.972_08;
/// Taylor coefficients of e^r, highest degree first (Horner order).
const EXP_POLY: [f32; 9] =
    [1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
/// Coefficients of ln(1+f) = s · (2 + z · P(z)), highest degree first.
const LN_POLY: [f32; 6] = [2.0 / 13.0, 2.0 / 11.0, 2.0 / 9.0, 2.0 / 7.0, 2.0 / 5.0, 2.0 / 3.0];
/// Above this |x|, tanh(x) is ±1 in f32.
const TANH_SATURATE: f32 = 9.0;
/// Below this |x|, tanh uses its odd series.
const TANH_SERIES: f32 = 0.25;
/// Odd-series coefficients of tanh, highest degree first.
const TANH_POLY: [f32; 3] = [-17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0];

/// Every constant the functions above use, by the name the CUDA kernels give it, so that the GPU
/// code is compiled with exactly these bits.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn constants() -> Vec<(String, f32)> {
    let mut c = vec![
        ("LOG2E".to_owned(), LOG2E),
        ("LN2_HI".to_owned(), LN2_HI),
        ("LN2_LO".to_owned(), LN2_LO),
        ("SQRT2".to_owned(), SQRT2),
        ("EXP_OVERFLOW".to_owned(), EXP_OVERFLOW),
        ("EXP_UNDERFLOW".to_owned(), EXP_UNDERFLOW),
        ("TANH_SATURATE".to_owned(), TANH_SATURATE),
        ("TANH_SERIES".to_owned(), TANH_SERIES),
    ];
    for (name, poly) in [("EXP_POLY", &EXP_POLY[..]), ("LN_POLY", &LN_POLY[..]), ("TANH_POLY", &TANH_POLY[..])] {
        c.extend(poly.iter().enumerate().map(|(i, &v)| (format!("{name}_{i}"), v)));
    }
    c
}

/// `2^k` for `k` in `-126..=127`, built from its bits.
#[inline(always)]
fn pow2i(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// e^x. Overflows to +inf above 88.7228, underflows (through subnormals) to 0 below −103.97.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > EXP_OVERFLOW {
        return f32::INFINITY;
    }
    if x < EXP_UNDERFLOW {
        return 0.0;
    }
    let k = (x * LOG2E).round_ties_even();
    let r = (-k).mul_add(LN2_HI, x);
    let r = (-k).mul_add(LN2_LO, r);
    // Taylor series of e^r on |r| <= ln2/2, Horner with fused multiply-adds.
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let k = k as i32;
    if k > 127 {
        p * pow2i(127) * pow2i(k - 127)
    } else if k < -126 {
        // Scale in two steps so the result is rounded once, into the subnormal range.
        (p * pow2i(k + 64)) * pow2i(-64)
    } else {
        p * pow2i(k)
    }
}

/// Natural logarithm. `ln(0) = -inf`, `ln(x<0) = NaN`, `ln(inf) = inf`; subnormals are handled.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return x;
    }
    let (x, mut e) = if x < f32::MIN_POSITIVE { (x * pow2i(23), -23) } else { (x, 0) };
    let bits = x.to_bits();
    e += ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    if m > SQRT2 {
        m *= 0.5;
        e += 1;
    }
    let f = m - 1.0; // exact, in [-0.293, 0.415]
    let s = f / (2.0 + f);
    let z = s * s;
    // ln(1+f) = 2 atanh(s) = s (2 + 2z/3 + 2z^2/5 + ...)
    let mut p = LN_POLY[0];
    for &c in &LN_POLY[1..] {
        p = p.mul_add(z, c);
    }
    let log1pf = s.mul_add(z * p, 2.0 * s);
    let e = e as f32;
    e.mul_add(LN2_HI, e.mul_add(LN2_LO, log1pf))
}

/// Hyperbolic tangent.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let t = if a > TANH_SATURATE {
        1.0
    } else if a < TANH_SERIES {
        // Odd Taylor series: avoids the cancellation of 1 - 2/(e^2a + 1) near zero.
        let z = a * a;
        let mut p = TANH_POLY[0];
        for &c in &TANH_POLY[1..] {
            p = p.mul_add(z, c);
        }
        a.mul_add(z * p, a)
    } else {
        1.0 - 2.0 / (exp(2.0 * a) + 1.0)
    };
    t.copysign(x)
}

/// The logistic function 1 / (1 + e^-x).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// SiLU (swish): x · sigmoid(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// 1/√x, as two correctly rounded operations.
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    1.0 / x.sqrt()
}

// Cody–Waite split of pi/2 into three parts; each `fma(-k, part, r)` rounds once.
const PIO2_HI: f32 = f32::from_bits(0x3fc9_0000); // 1.5703125
const PIO2_MID: f32 = f32::from_bits(0x39fd_a000); // 4.8375130e-4
const PIO2_LO: f32 = f32::from_bits(0x33a2_2169); // 7.5497899e-8 = pi/2 − HI − MID, rounded
const TWO_OVER_PI: f32 = std::f32::consts::FRAC_2_PI;

/// Reduces `x` to `r` in about [-pi/4, pi/4] and the quadrant `k mod 4`. Accurate for |x| <= 8192.
#[inline(always)]
fn reduce_quadrant(x: f32) -> (f32, i32) {
    let k = (x * TWO_OVER_PI).round_ties_even();
    let r = (-k).mul_add(PIO2_HI, x);
    let r = (-k).mul_add(PIO2_MID, r);
    let r = (-k).mul_add(PIO2_LO, r);
    (r, (k as i64).rem_euclid(4) as i32)
}

#[inline(always)]
fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    let mut p: f32 = -1.0 / 39_916_800.0;
    p = p.mul_add(z, 1.0 / 362_880.0);
    p = p.mul_add(z, -1.0 / 5040.0);
    p = p.mul_add(z, 1.0 / 120.0);
    p = p.mul_add(z, -1.0 / 6.0);
    r.mul_add(z * p, r)
}

#[inline(always)]
fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    let mut p: f32 = 1.0 / 479_001_600.0;
    p = p.mul_add(z, -1.0 / 3_628_800.0);
    p = p.mul_add(z, 1.0 / 40320.0);
    p = p.mul_add(z, -1.0 / 720.0);
    p = p.mul_add(z, 1.0 / 24.0);
    p = p.mul_add(z, -0.5);
    p.mul_add(z, 1.0)
}

/// Sine and cosine of `x` for |x| <= 8192 (rotary positions times frequencies stay far below that).
#[inline(always)]
pub fn sin_cos(x: f32) -> (f32, f32) {
    let (r, q) = reduce_quadrant(x);
    let (s, c) = (sin_poly(r), cos_poly(r));
    match q {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        if a == b32 {
            return 0.0;
        }
        let ulp = (b32.abs().max(f32::MIN_POSITIVE) * f32::EPSILON) as f64;
        (a as f64 - b).abs() / ulp
    }

    fn sweep(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * (i as f32 / n as f32))
    }

    #[test]
    fn exp_is_within_two_ulp() {
        for x in sweep(-87.0, 88.0, 200_000) {
            let e = ulps(exp(x), (x as f64).exp());
            assert!(e <= 2.0, "exp({x}) off by {e} ulp");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        // Subnormal results are close to the exact value.
        let x = -95.0f32;
        assert!((exp(x) as f64 - (x as f64).exp()).abs() < 1e-44);
    }

    #[test]
    fn ln_is_within_two_ulp() {
        for x in sweep(1e-6, 50.0, 200_000).chain(sweep(0.5, 2.0, 100_000)) {
            let e = ulps(ln(x), (x as f64).ln());
            assert!(e <= 2.0, "ln({x}) off by {e} ulp");
        }
        let tiny = f32::from_bits(1); // smallest subnormal
        assert!((ln(tiny) as f64 - (tiny as f64).ln()).abs() < 1e-5);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
    }

    #[test]
    fn tanh_sigmoid_silu_are_close() {
        for x in sweep(-12.0, 12.0, 100_000) {
            assert!((tanh(x) as f64 - (x as f64).tanh()).abs() < 4e-7, "tanh({x})");
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - s).abs() < 3e-7, "sigmoid({x})");
            assert!((silu(x) as f64 - x as f64 * s).abs() < 4e-6, "silu({x})");
        }
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn sin_cos_are_within_two_ulp_or_tiny_absolute_error() {
        for x in sweep(-8192.0, 8192.0, 400_000) {
            let (s, c) = sin_cos(x);
            let (es, ec) = ((x as f64).sin(), (x as f64).cos());
            assert!(ulps(s, es) <= 2.0 || (s as f64 - es).abs() < 1e-7, "sin({x}) = {s} vs {es}");
            assert!(ulps(c, ec) <= 2.0 || (c as f64 - ec).abs() < 1e-7, "cos({x}) = {c} vs {ec}");
        }
    }
}
