//! The outer steps' element-wise updates, each written once as a [`Formula`] over [`Value`]s and run
//! where the state lies: on CPU tensors as one fused pass over the elements (each value read once, each
//! result written once), on any other device as one tensor op per term, the state never leaving it.
//! Both evaluate the same IEEE operations in the same order, so they give the same bits (a test checks
//! it on the CPU). A new outer protocol writes its step the same way: a [`Formula`] from its state and
//! the group's mean to the new state, run by [`apply`].

use candle_core::{DType, Device, Tensor};
use models::with_host;
use pipeline::collective::Summand;
use pipeline::{Error, Result};

/// What a formula computes with: one f32 (which cannot fail), or a flat f32 tensor (one op per term,
/// element by element).
pub trait Value: Sized {
    /// Why an operation failed.
    type Error;
    /// `self + other`.
    fn plus(&self, other: &Self) -> std::result::Result<Self, Self::Error>;
    /// `self − other`.
    fn minus(&self, other: &Self) -> std::result::Result<Self, Self::Error>;
    /// `factor · self`.
    fn times(&self, factor: f32) -> std::result::Result<Self, Self::Error>;
}

impl Value for f32 {
    type Error = std::convert::Infallible;

    #[inline(always)]
    fn plus(&self, other: &Self) -> std::result::Result<Self, Self::Error> {
        Ok(self + other)
    }

    #[inline(always)]
    fn minus(&self, other: &Self) -> std::result::Result<Self, Self::Error> {
        Ok(self - other)
    }

    #[inline(always)]
    fn times(&self, factor: f32) -> std::result::Result<Self, Self::Error> {
        Ok(factor * self)
    }
}

impl Value for Tensor {
    type Error = Error;

    fn plus(&self, other: &Self) -> Result<Self> {
        Ok((self + other)?)
    }

    fn minus(&self, other: &Self) -> Result<Self> {
        Ok((self - other)?)
    }

    fn times(&self, factor: f32) -> Result<Self> {
        // A product with a scalar tensor (candle's affine would add a zero, turning −0 into +0).
        self.clone().scale(factor)
    }
}

/// An element-wise update from `I` input vectors to `O` output vectors.
pub trait Formula<const I: usize, const O: usize> {
    /// The outputs from the inputs, for one element or for whole tensors alike.
    fn eval<V: Value>(&self, inputs: [&V; I]) -> std::result::Result<[V; O], V::Error>;
}

/// Where [`apply`] evaluates a formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// One fused pass over host elements when the tensors are on the CPU, tensor ops elsewhere.
    Auto,
    /// Tensor ops wherever the tensors are (what every device other than the CPU runs).
    TensorOps,
}

/// `formula` applied to `inputs` (flat f32 tensors of one length, on one device); the outputs are new
/// tensors there.
pub fn apply<const I: usize, const O: usize>(
    formula: &impl Formula<I, O>,
    inputs: [&Tensor; I],
    path: Path,
) -> Result<[Tensor; O]> {
    let n = inputs.first().map_or(0, |t| t.elem_count());
    for t in inputs {
        if t.dims() != [n] || t.dtype() != DType::F32 || !t.device().same_device(inputs[0].device()) {
            return Err(Error::config(
                "outer state",
                format!("expected flat f32 vectors of {n} values on one device, got {:?} {:?}", t.dims(), t.dtype()),
            ));
        }
    }
    if path == Path::TensorOps || !inputs.iter().all(|t| t.device().is_cpu()) {
        return formula.eval(inputs);
    }
    let outputs = with_host("outer state", inputs, |slices| {
        let slices: [&[f32]; I] = std::array::from_fn(|k| &slices[k][..n]);
        let mut outputs: [Vec<f32>; O] = std::array::from_fn(|_| vec![0f32; n]);
        for i in 0..n {
            let element: [f32; I] = std::array::from_fn(|k| slices[k][i]);
            let Ok(ys) = formula.eval(element.each_ref());
            for (out, y) in outputs.iter_mut().zip(ys) {
                out[i] = y;
            }
        }
        Ok(outputs)
    })?;
    let mut tensors = Vec::with_capacity(O);
    for values in outputs {
        tensors.push(Tensor::from_vec(values, n, &Device::Cpu)?);
    }
    tensors.try_into().map_err(|_| Error::config("outer state", "output count"))
}

/// The Euclidean norm of a flat f32 tensor, its squares summed in f64: in order on the host for a CPU
/// tensor, by the device's reduction elsewhere.
pub fn norm(t: &Tensor) -> Result<f64> {
    let sum = if t.device().is_cpu() {
        with_host("outer state norm", [t], |[x]| Ok(x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()))?
    } else {
        t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?
    };
    Ok(sum.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diloco::tests::{awkward, bits, t, v};

    /// `y = 0.3·a − (b + a)`, `z = 2·b` (every operation of [`Value`]).
    struct Mixed;

    impl Formula<2, 2> for Mixed {
        fn eval<V: Value>(&self, [a, b]: [&V; 2]) -> std::result::Result<[V; 2], V::Error> {
            Ok([a.times(0.3)?.minus(&b.plus(a)?)?, b.times(2.0)?])
        }
    }

    #[test]
    fn the_fused_pass_and_the_tensor_ops_give_the_same_bits() {
        let (a, b) = (t(&awkward(1000, 5)), t(&awkward(1000, 6)));
        let fused = apply(&Mixed, [&a, &b], Path::Auto).expect("fused");
        let ops = apply(&Mixed, [&a, &b], Path::TensorOps).expect("ops");
        for (x, y) in fused.iter().zip(&ops) {
            assert_eq!(bits(&v(x)), bits(&v(y)));
        }
        let (av, bv) = (v(&a), v(&b));
        assert_eq!(v(&fused[0])[7].to_bits(), (0.3 * av[7] - (bv[7] + av[7])).to_bits());
    }

    #[test]
    fn the_norm_sums_its_squares_in_f64() {
        let x = [3.0f32, -4.0, 1e-30, 0.0];
        assert_eq!(norm(&t(&x)).expect("norm"), 5.0);
        // A view into a longer vector is the norm of its own elements.
        let tail = t(&[100.0, 3.0, 4.0]).narrow(0, 1, 2).expect("view");
        assert_eq!(norm(&tail).expect("norm"), 5.0);
        let big = [3e30f32, 4e30];
        assert!((norm(&t(&big)).expect("norm") / 5e30 - 1.0).abs() < 1e-6, "no overflow in f32 squares");
    }

    #[test]
    fn inputs_of_other_lengths_or_types_are_refused() {
        let err = apply(&Mixed, [&t(&[1.0, 2.0]), &t(&[1.0])], Path::Auto).unwrap_err().to_string();
        assert!(err.contains("flat f32 vectors of 2 values"), "{err}");
        let ints = Tensor::new(&[1u32, 2], &Device::Cpu).expect("tensor");
        assert!(apply(&Mixed, [&t(&[1.0, 2.0]), &ints], Path::Auto).is_err());
    }
}
