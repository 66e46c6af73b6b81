//! Simulated network throughput: messages delivered per wall-clock second with 1,000 peers exchanging
//! small messages in virtual time, against the same exchange over bare tokio channels (no link model,
//! no virtual clock) in the same run.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use transport::sim::{LinkSpec, Network};
use transport::{PeerId, Transport};

const PEERS: usize = 1000;
const ROUNDS: usize = 20;
const FANOUT: usize = 4;
const MESSAGES: u64 = (PEERS * ROUNDS * FANOUT) as u64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
}

/// Every peer sends FANOUT 64-byte messages per round and waits for the FANOUT it is owed.
fn sim_exchange(rt: &tokio::runtime::Runtime, seed: u64) -> Duration {
    rt.block_on(async {
        let link = LinkSpec::mbit(20.0, 1000.0).with_jitter(Duration::from_millis(5));
        let net = Network::builder(seed).default_link(link).build().expect("network");
        let ids: Vec<PeerId> = (0..PEERS as u64).map(PeerId::simulated).collect();
        let eps: Vec<_> = ids.iter().map(|&id| net.add_peer(id).expect("peer")).collect();
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(PEERS);
        for (i, ep) in eps.into_iter().enumerate() {
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                let payload = Bytes::from(vec![i as u8; 64]);
                for round in 0..ROUNDS {
                    for k in 1..=FANOUT {
                        let to = ids[(i + k * (round + 1)) % PEERS];
                        ep.send(to, payload.clone()).await.expect("send");
                    }
                    for _ in 0..FANOUT {
                        ep.recv().await.expect("recv");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    })
}

/// The same traffic pattern over unbounded tokio channels: the floor for in-process message passing.
fn channel_exchange(rt: &tokio::runtime::Runtime) -> Duration {
    rt.block_on(async {
        let (txs, rxs): (Vec<_>, Vec<_>) =
            (0..PEERS).map(|_| tokio::sync::mpsc::unbounded_channel::<(usize, Bytes)>()).unzip();
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(PEERS);
        for (i, mut rx) in rxs.into_iter().enumerate() {
            let txs = txs.clone();
            tasks.push(tokio::spawn(async move {
                let payload = Bytes::from(vec![i as u8; 64]);
                for round in 0..ROUNDS {
                    for k in 1..=FANOUT {
                        let to = (i + k * (round + 1)) % PEERS;
                        txs[to].send((i, payload.clone())).expect("send");
                    }
                    for _ in 0..FANOUT {
                        rx.recv().await.expect("recv");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("sim_1000_peers");
    group.throughput(Throughput::Elements(MESSAGES)).sample_size(10);
    group.bench_function("tokio_channels", |b| b.iter_custom(|iters| (0..iters).map(|_| channel_exchange(&rt)).sum()));
    group.bench_function("sim_network", |b| b.iter_custom(|iters| (0..iters).map(|i| sim_exchange(&rt, i)).sum()));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    support::print_ratio("sim_1000_peers", "sim_network", "tokio_channels", "messages per second");
    let rt = runtime();
    let runs = 5;
    let total: Duration = (0..runs).map(|i| sim_exchange(&rt, 100 + i)).sum();
    let rate = (MESSAGES * runs) as f64 / total.as_secs_f64();
    println!("RATE sim_1000_peers: {rate:.0} messages delivered per wall-clock second (target: >= 500000)");
}
