//! The deterministic kernels, on plain slices. Each module's docs give the exact order of operations
//! that defines its results.

pub mod adamw;
pub mod elementwise;
pub mod embed;
pub mod math;
pub mod matmul;
pub mod reduce;
pub mod rope;
pub mod rows;
