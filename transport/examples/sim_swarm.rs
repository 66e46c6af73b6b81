//! A geo-distributed swarm on the simulated network: twelve peers, one per region, each holding a real
//! 4M-parameter f32 tensor. They average their tensors twice — once with a ring all-reduce (every peer
//! ends with the global mean), once with one round of gossip (each peer averages with one random
//! partner) — and the example prints what each cost in virtual time and bytes, and checks the math.
//!
//! ```text
//! cargo run --release -p transport --example sim_swarm
//! ```

use std::time::{Duration, Instant};

use transport::sim::{Network, RegionTable, SimEndpoint};
use transport::{PeerId, TensorBytes, Transport, TransportError, TransportExt};

const PARAMS: usize = 4 << 20;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Ring all-reduce (reduce-scatter then all-gather): 2(N-1) steps, each sending 1/N of the tensor.
async fn ring_all_reduce(
    ep: &SimEndpoint,
    ring: &[PeerId],
    mut data: Vec<f32>,
) -> std::result::Result<Vec<f32>, TransportError> {
    let n = ring.len();
    let me = ring.iter().position(|p| *p == ep.local_peer()).ok_or(TransportError::UnknownPeer(ep.local_peer()))?;
    let next = ring[(me + 1) % n];
    let len = data.len();
    let chunk = |i: usize| (i * len / n)..((i + 1) * len / n);
    for step in 0..2 * (n - 1) {
        let send_idx = (me + 2 * n - step) % n;
        let recv_idx = (me + 2 * n - step - 1) % n;
        let range = chunk(send_idx);
        let out = TensorBytes::from_f32(vec![range.len()], &data[range])?;
        ep.send_msg(next, &out).await?;
        let (_, incoming): (PeerId, TensorBytes) = ep.recv_msg().await?;
        let incoming = incoming.to_f32_vec()?;
        let range = chunk(recv_idx);
        if step < n - 1 {
            for (d, x) in data[range].iter_mut().zip(incoming) {
                *d += x;
            }
        } else {
            data[range].copy_from_slice(&incoming);
        }
    }
    let scale = 1.0 / n as f32;
    Ok(data.into_iter().map(|x| x * scale).collect())
}

/// One gossip round: swap tensors with a partner and average the two.
async fn gossip(ep: &SimEndpoint, partner: PeerId, data: Vec<f32>) -> std::result::Result<Vec<f32>, TransportError> {
    ep.send_msg(partner, &TensorBytes::from_f32(vec![data.len()], &data)?).await?;
    let (_, theirs): (PeerId, TensorBytes) = ep.recv_msg().await?;
    Ok(data.iter().zip(theirs.to_f32_vec()?).map(|(a, b)| 0.5 * (a + b)).collect())
}

fn initial(i: usize) -> Vec<f32> {
    (0..PARAMS).map(|j| ((i * 31 + j) % 97) as f32).collect()
}

async fn run() -> Result<()> {
    let table = RegionTable::geo_distributed();
    let regions = table.names().to_vec();
    let net = Network::builder(2024).regions(table).build()?;
    let ids: Vec<PeerId> = (0..regions.len() as u64).map(PeerId::simulated).collect();
    let eps: Vec<SimEndpoint> = ids
        .iter()
        .zip(&regions)
        .map(|(id, r)| net.add_peer_in_region(*id, r))
        .collect::<std::result::Result<_, _>>()?;
    println!("{} peers, one per region: {}", ids.len(), regions.join(", "));
    println!("each holds {PARAMS} f32 parameters ({} MiB)\n", (PARAMS * 4) >> 20);
    let exact_mean: Vec<f32> = {
        let mut sum = vec![0f64; PARAMS];
        for i in 0..ids.len() {
            for (s, x) in sum.iter_mut().zip(initial(i)) {
                *s += f64::from(x);
            }
        }
        sum.into_iter().map(|s| (s / ids.len() as f64) as f32).collect()
    };

    // Ring all-reduce.
    let wall = Instant::now();
    let start = net.now();
    let before = net.total();
    let mut tasks = Vec::new();
    for (i, ep) in eps.iter().cloned().enumerate() {
        let ring = ids.clone();
        tasks.push(tokio::spawn(async move { ring_all_reduce(&ep, &ring, initial(i)).await }));
    }
    let mut max_err = 0f32;
    for t in tasks {
        let out = t.await??;
        max_err = out.iter().zip(&exact_mean).map(|(a, b)| (a - b).abs()).fold(max_err, f32::max);
    }
    let ring_time = net.now() - start;
    let ring_bytes = net.total().sent_bytes - before.sent_bytes;
    println!(
        "ring all-reduce : {:>9.3} s virtual, {:>7.1} MiB sent per peer, max |error| vs exact mean {max_err:.2e}",
        ring_time.as_secs_f64(),
        ring_bytes as f64 / ids.len() as f64 / (1 << 20) as f64
    );

    // One gossip round with a partner from a seeded permutation.
    let start = net.now();
    let before = net.total();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut partner = vec![0usize; ids.len()];
    for pair in order.chunks(2) {
        partner[pair[0]] = pair[1];
        partner[pair[1]] = pair[0];
    }
    let mut tasks = Vec::new();
    for (i, ep) in eps.iter().cloned().enumerate() {
        let to = ids[partner[i]];
        tasks.push(tokio::spawn(async move { gossip(&ep, to, initial(i)).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await??;
        let expect: Vec<f32> = initial(i).iter().zip(initial(partner[i])).map(|(a, b)| 0.5 * (a + b)).collect();
        if out != expect {
            return Err(format!("gossip average of peer {i} is wrong").into());
        }
    }
    let gossip_time = net.now() - start;
    let gossip_bytes = net.total().sent_bytes - before.sent_bytes;
    println!(
        "gossip (1 peer) : {:>9.3} s virtual, {:>7.1} MiB sent per peer, pair averages exact",
        gossip_time.as_secs_f64(),
        gossip_bytes as f64 / ids.len() as f64 / (1 << 20) as f64
    );
    println!(
        "\ngossip synchronised {:.1}x faster than the ring over these links (wall clock for both: {:.2?})",
        ring_time.as_secs_f64() / gossip_time.as_secs_f64().max(1e-9),
        wall.elapsed()
    );
    let slowest = net
        .stats()
        .into_iter()
        .filter(|(_, s)| s.delivered_bytes > 0)
        .map(|((a, b), _)| (net.link_spec(a, b).map(|l| l.latency).unwrap_or(Duration::ZERO), a, b))
        .max();
    if let Some((latency, a, b)) = slowest {
        let name = |p: PeerId| ids.iter().position(|x| *x == p).map(|i| regions[i].clone()).unwrap_or_default();
        println!("slowest link used: {} -> {} ({latency:?} one way)", name(a), name(b));
    }
    Ok(())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    rt.block_on(run())
}
