//! Shared by repops' integration tests: seeded data and a thread-pool helper.
#![allow(dead_code)]

/// `n` values in [-1, 1) from a seeded xorshift.
pub(crate) fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs `f` on a rayon pool of `threads` threads.
pub(crate) fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool").install(f)
}

use repops::kernels::elementwise::{Binary, Unary};
use repops::kernels::rows::RowReduce;
use repops::op::{HostData, HostTensor};
use repops::{AdamW, OpKind};

pub(crate) fn f32t(shape: &[usize], seed: u64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor { shape: shape.to_vec(), data: HostData::F32(data(n, seed)) }
}

pub(crate) fn positive(shape: &[usize], seed: u64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor {
        shape: shape.to_vec(),
        data: HostData::F32(data(n, seed).into_iter().map(|x| x.abs() + 0.1).collect()),
    }
}

pub(crate) fn ids(shape: &[usize], bound: u32, seed: u64) -> HostTensor {
    let n = shape.iter().product();
    let v = data(n, seed).into_iter().map(|x| ((x + 1.0) * 1000.0) as u32 % bound).collect();
    HostTensor { shape: shape.to_vec(), data: HostData::U32(v) }
}

pub(crate) fn f(t: &HostTensor) -> &[f32] {
    t.as_f32().expect("f32 tensor")
}

/// A matmul reading its operands as the flags say.
pub(crate) fn mm(transpose_a: bool, transpose_b: bool) -> OpKind {
    OpKind::MatMul { transpose_a, transpose_b }
}

/// One case per op kind, with inputs of awkward sizes (not multiples of the SIMD width or tile).
pub(crate) fn cases() -> Vec<(OpKind, Vec<HostTensor>)> {
    let (rope_cos, rope_sin) = repops::kernels::rope::table(7, 10, 10_000.0);
    let table = |v: Vec<f32>| HostTensor { shape: vec![7, 5], data: HostData::F32(v) };
    let h = AdamW { lr: 1e-2, weight_decay: 0.1, ..AdamW::default() };
    let mut cases = vec![
        (OpKind::MATMUL, vec![f32t(&[37, 301], 1), f32t(&[301, 45], 2)]),
        (OpKind::MATMUL, vec![f32t(&[3, 13, 70], 3), f32t(&[3, 70, 17], 4)]),
        (OpKind::MATMUL, vec![f32t(&[2, 9, 33], 5), f32t(&[33, 20], 6)]),
        (mm(true, false), vec![f32t(&[301, 37], 1), f32t(&[301, 45], 2)]),
        (mm(false, true), vec![f32t(&[3, 13, 70], 3), f32t(&[3, 17, 70], 4)]),
        (mm(false, true), vec![f32t(&[2, 9, 33], 5), f32t(&[20, 33], 6)]),
        (mm(true, true), vec![f32t(&[3, 70, 13], 3), f32t(&[3, 17, 70], 4)]),
        // Big enough for the GPU's tiled kernel (at least 128 tiles of 64 x 64), with ragged edges.
        (OpKind::MATMUL, vec![f32t(&[4, 300, 96], 5), f32t(&[96, 400], 6)]),
        (mm(true, true), vec![f32t(&[4, 96, 300], 5), f32t(&[4, 400, 96], 6)]),
        (OpKind::Transpose, vec![f32t(&[2, 19, 23], 7)]),
        (OpKind::Binary(Binary::Add), vec![f32t(&[5, 77], 8), f32t(&[5, 77], 9)]),
        (OpKind::Binary(Binary::Sub), vec![f32t(&[5, 77], 8), f32t(&[5, 77], 9)]),
        (OpKind::Binary(Binary::Mul), vec![f32t(&[5, 77], 8), f32t(&[5, 77], 9)]),
        (OpKind::Binary(Binary::Div), vec![f32t(&[5, 77], 8), positive(&[5, 77], 9)]),
        (OpKind::Binary(Binary::SwiGlu), vec![f32t(&[5, 77], 8), f32t(&[5, 77], 9)]),
        (OpKind::RowReduce(RowReduce::Sum), vec![f32t(&[9, 1003], 10)]),
        (OpKind::RowReduce(RowReduce::Mean), vec![f32t(&[9, 1003], 10)]),
        (OpKind::RowReduce(RowReduce::Max), vec![f32t(&[9, 1003], 10)]),
        (OpKind::Softmax, vec![f32t(&[11, 259], 11)]),
        (OpKind::LogSoftmax, vec![f32t(&[11, 259], 11)]),
        (OpKind::SoftmaxBackward, vec![f32t(&[11, 259], 12), f32t(&[11, 259], 13)]),
        (OpKind::LogSoftmaxBackward, vec![f32t(&[11, 259], 12), f32t(&[11, 259], 13)]),
        (OpKind::CrossEntropy, vec![f32t(&[23, 61], 14), ids(&[23], 61, 15)]),
        (OpKind::CrossEntropyBackward, vec![f32t(&[23, 61], 14), ids(&[23], 61, 15), f32t(&[], 16)]),
        (OpKind::RmsNorm { eps: 1e-5 }, vec![f32t(&[13, 99], 17), f32t(&[99], 18)]),
        (OpKind::RmsNormBackwardX { eps: 1e-5 }, vec![f32t(&[13, 99], 17), f32t(&[99], 18), f32t(&[13, 99], 19)]),
        (OpKind::RmsNormBackwardW { eps: 1e-5 }, vec![f32t(&[13, 99], 17), f32t(&[13, 99], 19)]),
        (
            OpKind::Rope { inverse: false },
            vec![f32t(&[3, 7, 10], 20), table(rope_cos.clone()), table(rope_sin.clone())],
        ),
        (OpKind::Rope { inverse: true }, vec![f32t(&[3, 7, 10], 20), table(rope_cos), table(rope_sin)]),
        (OpKind::Embedding, vec![f32t(&[50, 19], 21), ids(&[4, 9], 50, 22)]),
        (OpKind::EmbeddingBackward { vocab: 50 }, vec![f32t(&[4, 9, 19], 23), ids(&[4, 9], 50, 22)]),
        (OpKind::AdamMoment1 { beta1: 0.9 }, vec![f32t(&[333], 24), f32t(&[333], 25)]),
        (OpKind::AdamMoment2 { beta2: 0.999 }, vec![positive(&[333], 24), f32t(&[333], 25)]),
        (OpKind::AdamParam { h, t: 7 }, vec![f32t(&[333], 24), f32t(&[333], 25), positive(&[333], 26)]),
    ];
    for u in [
        Unary::Exp,
        Unary::Tanh,
        Unary::Silu,
        Unary::SiluGrad,
        Unary::Neg,
        Unary::Scale(0.3),
        Unary::AddScalar(2.0),
        Unary::Square,
    ] {
        cases.push((OpKind::Unary(u), vec![f32t(&[7, 333], 27)]));
    }
    for u in [Unary::Ln, Unary::Sqrt, Unary::Rsqrt] {
        cases.push((OpKind::Unary(u), vec![positive(&[7, 333], 28)]));
    }
    cases
}
