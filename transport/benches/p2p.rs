//! Throughput of 4 MiB messages between two libp2p members on loopback: connected directly, and through
//! the relay (every byte relayed: `relay_only`), against the plain QUIC endpoint carrying the same
//! messages in the same run. On loopback a link costs nothing, so the relayed figure is what the relay
//! itself costs: a second hop through its process, and noise and yamux over the circuit.

#[path = "support/batches.rs"]
mod batches;
mod support;

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use transport::{Codec, Identity, PeerBook, Transport, p2p, quic};

const MESSAGE: usize = 4 << 20;
const BATCH: usize = 8;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let codec = Codec::new(8 << 20).expect("codec");
    let ids: Vec<Identity> = (0..7).map(|_| Identity::generate().expect("id")).collect();
    let mut book = PeerBook::new();
    for id in &ids {
        book.insert(id.peer_id(), "0.0.0.0:0".parse().expect("addr"), None);
    }
    // The relay lives as long as the benches do.
    let (plain, direct, relayed, _relay) = rt.block_on(async {
        let config = quic::EndpointConfig { codec, ..quic::EndpointConfig::default() };
        let qa = quic::Endpoint::bind(&ids[0], PeerBook::new(), config.clone()).expect("bind");
        let qb = quic::Endpoint::bind(&ids[1], PeerBook::new(), config).expect("bind");
        qa.add_peer(ids[1].peer_id(), qb.local_addr().expect("addr"), None);
        qb.add_peer(ids[0].peer_id(), qa.local_addr().expect("addr"), None);
        let relay_config = p2p::Config { role: p2p::Role::Relay, codec, ..p2p::Config::default() };
        let relay = p2p::Endpoint::start(&ids[2], PeerBook::new(), relay_config).await.expect("relay");
        let member = |relay_only: bool| p2p::Config {
            bootstrap: relay.listen_addrs(),
            relay_only,
            codec,
            ..p2p::Config::default()
        };
        let mut members = Vec::new();
        for (i, relay_only) in [(3, false), (4, false), (5, true), (6, true)] {
            members.push(p2p::Endpoint::start(&ids[i], book.clone(), member(relay_only)).await.expect("member"));
        }
        // Warm every pair's connection up.
        for (a, b) in [(&qa, &qb)] {
            a.send(b.local_peer(), Bytes::from_static(b"hi")).await.expect("send");
            b.recv().await.expect("recv");
        }
        for pair in members.chunks(2) {
            pair[0].send(pair[1].local_peer(), Bytes::from_static(b"hi")).await.expect("send");
            pair[1].recv().await.expect("recv");
        }
        let paths = members[0].paths()[&members[1].local_peer()];
        assert!(paths.direct, "{paths:?}");
        let paths = members[2].paths()[&members[3].local_peer()];
        assert!(paths.relayed && !paths.direct, "{paths:?}");
        let mut members = members.into_iter();
        let mut next = || members.next().expect("four members");
        ((qa, qb), (next(), next()), (next(), next()), relay)
    });
    let mut group = c.benchmark_group("p2p_4MiB");
    group.throughput(Throughput::Bytes((MESSAGE * BATCH) as u64)).sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("quic", |b| b.iter_custom(batches::send_batches(&rt, &plain.0, &plain.1, MESSAGE, BATCH)));
    group.bench_function("direct", |b| b.iter_custom(batches::send_batches(&rt, &direct.0, &direct.1, MESSAGE, BATCH)));
    group.bench_function("relayed", |b| {
        b.iter_custom(batches::send_batches(&rt, &relayed.0, &relayed.1, MESSAGE, BATCH))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    support::print_ratio("p2p_4MiB", "direct", "quic", "libp2p connected directly vs the plain QUIC endpoint");
    support::print_ratio("p2p_4MiB", "relayed", "direct", "through the relay vs connected directly");
}
