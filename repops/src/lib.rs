//! # repops — reproducible operators
//!
//! Two honest machines running the same program must produce the same bits, whatever their thread
//! count, SIMD width or processor. repops makes that true for the ops swarmlab's models use, by rules:
//!
//! 1. **One order per reduction.** Every floating-point sum has a fixed order defined in the kernel's
//!    docs (sequential `k` for matmul, eight fixed lanes and a fixed tree for row sums); threads only
//!    split independent outputs, never a sum.
//! 2. **Fused multiply-add exactly where the definition says**, explicitly (`mul_add` / `vfmadd`), never
//!    left to the compiler (Rust never contracts `a * b + c` on its own).
//! 3. **Own transcendental functions** ([`kernels::math`]) from correctly rounded basic operations, not
//!    the platform's libm.
//! 4. **The same code path for every caller**: candle tensors, tape replays and a referee re-running one
//!    op all call [`execute`].
//!
//! NaN: propagates through every op (a NaN anywhere in a row makes its max, softmax and norm NaN).
//! Subnormals: computed as IEEE-754 specifies (no flush-to-zero); `exp` produces them below −87.3.
//!
//! | module | what |
//! |---|---|
//! | [`kernels`] | the kernels on slices, with their defining order of operations |
//! | [`op`] | [`OpKind`], host tensors, and [`execute`] |
//! | [`tensor`] | every op on candle `Tensor`s, as `CustomOp`s with backward passes |
//! | [`tape`] | recording ops with blake3 hashes of inputs and outputs; replaying one |
//! | [`simd`] | the SIMD level in use, and forcing the scalar path |
//!
//! ```
//! use candle_core::{Device, Tensor};
//! # fn main() -> Result<(), repops::Error> {
//! let a = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
//! let (c, tape) = repops::tape::record(true, || repops::tensor::matmul(&a, &a));
//! assert_eq!(c?.to_vec2::<f32>()?, vec![vec![7.0, 10.0], vec![15.0, 22.0]]);
//! assert_eq!(tape.len(), 1);
//! tape.entries()[0].verify(repops::simd::current())?; // re-run the op and check its output hash
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod kernels;
pub mod op;
pub mod simd;
pub mod tape;
pub mod tensor;
pub mod threads;

pub use error::{Error, Result};
pub use kernels::adamw::AdamW;
pub use op::{HostData, HostTensor, HostView, OpKind, execute};
pub use tape::{Fault, Keep, RecordOptions, Tape, TapeEntry};

/// What to do to get GPU support, for error messages of CPU-only builds.
#[cfg(not(feature = "cuda"))]
pub(crate) const CUDA_HINT: &str = " (rebuild with `--features cuda` for the GPU)";
#[cfg(feature = "cuda")]
pub(crate) const CUDA_HINT: &str = "";

/// The CUDA device `ordinal`, or an error that says what is missing: the `cuda` feature in this build,
/// or a GPU and driver on this machine. CPU work is unaffected either way.
pub fn cuda_device(ordinal: usize) -> Result<candle_core::Device> {
    #[cfg(feature = "cuda")]
    {
        candle_core::Device::new_cuda(ordinal).map_err(|e| Error::Unsupported {
            op: "cuda",
            what: format!("no usable CUDA device {ordinal} (is there a GPU and an NVIDIA driver?): {e}"),
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::Unsupported {
            op: "cuda",
            what: format!("device cuda:{ordinal} requested, but this build has no CUDA support{CUDA_HINT}"),
        })
    }
}
