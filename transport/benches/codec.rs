//! Codec throughput: encode + decode of a message holding a 16 MiB f32 tensor, against a plain memcpy of
//! the same bytes measured in the same run.

mod support;

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use serde::{Deserialize, Serialize};
use transport::{Codec, TensorBytes};

#[derive(Serialize, Deserialize)]
struct Gradients {
    step: u64,
    stage: u32,
    tensor: TensorBytes,
}

const BYTES: usize = 16 << 20;

fn bench(c: &mut Criterion) {
    let values: Vec<f32> = (0..BYTES / 4).map(|i| i as f32 * 0.5).collect();
    let message =
        Gradients { step: 7, stage: 1, tensor: TensorBytes::from_f32(vec![BYTES / 4], &values).expect("tensor") };
    let codec = Codec::default();
    let source = message.tensor.data().to_vec();
    let mut group = c.benchmark_group("codec_16MiB");
    group.throughput(Throughput::Bytes(BYTES as u64)).sample_size(20);
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            let copy = black_box(&source).clone();
            black_box(copy)
        })
    });
    group.bench_function("encode_decode", |b| {
        b.iter(|| {
            let payload = codec.encode(black_box(&message)).expect("encode");
            let back: Gradients = codec.decode(&payload).expect("decode");
            black_box(back)
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    support::print_ratio("codec_16MiB", "encode_decode", "memcpy", "target: >= 0.5");
}
