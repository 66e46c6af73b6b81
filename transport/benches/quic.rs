//! QUIC loopback bulk throughput with 4 MiB messages, against a plain TCP loopback stream carrying the
//! same bytes in the same run.

#[path = "support/batches.rs"]
mod batches;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::quic::{Endpoint, EndpointConfig};
use transport::{Codec, Identity, PeerBook, Transport};

const MESSAGE: usize = 4 << 20;
const BATCH: usize = 16;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("loopback_4MiB");
    group.throughput(Throughput::Bytes((MESSAGE * BATCH) as u64)).sample_size(10);
    group.measurement_time(Duration::from_secs(8));

    // TCP: one stream, the same bytes, the receiver reads them all.
    let (tcp_tx, tcp_rx) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let client = client.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        (client, server.expect("accept").0)
    });
    let tcp_tx = std::sync::Arc::new(tokio::sync::Mutex::new(tcp_tx));
    let tcp_rx = std::sync::Arc::new(tokio::sync::Mutex::new(tcp_rx));
    let payload = Bytes::from(vec![0x5au8; MESSAGE]);
    group.bench_function("tcp", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let reader = {
                        let rx = tcp_rx.clone();
                        tokio::spawn(async move {
                            let mut rx = rx.lock().await;
                            let mut buf = vec![0u8; 1 << 20];
                            let mut left = MESSAGE * BATCH;
                            while left > 0 {
                                let n = rx.read(&mut buf[..left.min(1 << 20)]).await.expect("read");
                                left -= n;
                            }
                        })
                    };
                    let mut tx = tcp_tx.lock().await;
                    for _ in 0..BATCH {
                        tx.write_all(&payload).await.expect("write");
                    }
                    drop(tx);
                    reader.await.expect("reader");
                }
                start.elapsed()
            })
        })
    });

    // QUIC: two endpoints, 4 MiB messages through the Transport API.
    let (a, b) = rt.block_on(async {
        let (ia, ib) = (Identity::generate().expect("id"), Identity::generate().expect("id"));
        let config = EndpointConfig { codec: Codec::new(8 << 20).expect("codec"), ..EndpointConfig::default() };
        let a = Endpoint::bind(&ia, PeerBook::new(), config.clone()).expect("bind");
        let b = Endpoint::bind(&ib, PeerBook::new(), config).expect("bind");
        a.add_peer(ib.peer_id(), b.local_addr().expect("addr"), None);
        b.add_peer(ia.peer_id(), a.local_addr().expect("addr"), None);
        // Warm the connection up.
        a.send(ib.peer_id(), Bytes::from_static(b"hi")).await.expect("send");
        b.recv().await.expect("recv");
        (a, b)
    });
    group.bench_function("quic", |bench| bench.iter_custom(batches::send_batches(&rt, &a, &b, MESSAGE, BATCH)));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    support::print_ratio("loopback_4MiB", "quic", "tcp", "bulk throughput; QUIC target: >= 1 Gbit/s");
}
