//! A link emulator for real sockets: a UDP relay that puts a [`LinkSpec`] — latency, bandwidth, jitter,
//! loss — between a node and everyone who sends to it, so that QUIC nodes on one machine talk over the
//! same link model as the simulated network. It does what `tc netem` does on a Linux host whose kernel
//! has it, in user space (the kernel this project is developed on has no `sch_netem`; `tbf` alone
//! shapes bandwidth but adds no delay).
//!
//! A [`LinkRelay`] listens on the address the peers file gives for its node and forwards each datagram
//! to the node's real address, and the node's replies back. Every sender gets its own pair of links
//! (one per direction), as every pair of peers has on the simulated network. The model of one link is
//! the pure [`LinkModel`]; the relay is the async shell that moves datagrams when the model says.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::TransportError;
use crate::sim::LinkSpec;

/// Datagrams a link holds in its queue before it drops new ones (`tc netem`'s default limit).
pub const QUEUE_LIMIT: usize = 1000;

/// One direction of one link, as a state machine: given when a datagram of some size arrives at the
/// link, when it comes out of the other end (or that it is lost). Datagrams go out one at a time at
/// the link's bandwidth, then travel `latency + U(0, jitter)` — the simulated network's model.
#[derive(Debug, Clone)]
pub struct LinkModel {
    spec: LinkSpec,
    /// When the link has finished sending everything admitted so far.
    free_at: Duration,
    rng: ChaCha8Rng,
}

impl LinkModel {
    /// A link behaving as `spec`, its randomness (jitter, loss) drawn from `seed`.
    pub fn new(spec: LinkSpec, seed: u64) -> Self {
        Self { spec, free_at: Duration::ZERO, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// A datagram of `bytes` handed to the link at `now` (time since any fixed origin): when it is
    /// delivered, or `None` if it is lost.
    pub fn admit(&mut self, now: Duration, bytes: usize) -> Option<Duration> {
        if self.spec.loss > 0.0 && self.rng.random::<f64>() < self.spec.loss {
            return None;
        }
        let sending = Duration::from_secs_f64(bytes as f64 / self.spec.bandwidth.max(1.0));
        self.free_at = self.free_at.max(now) + sending;
        let jitter =
            if self.spec.jitter.is_zero() { Duration::ZERO } else { self.spec.jitter.mul_f64(self.rng.random()) };
        Some(self.free_at + self.spec.latency + jitter)
    }
}

/// What a relay has moved so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams delivered, both directions.
    pub delivered: u64,
    /// Bytes delivered, both directions.
    pub bytes: u64,
    /// Datagrams lost by the model or dropped at a full queue.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

/// A running relay (see the module doc). Dropping it stops it.
pub struct LinkRelay {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LinkRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkRelay").field("addr", &self.addr).field("stats", &self.stats()).finish()
    }
}

/// Hands datagrams to a link and delivers them, in order, when the model says they arrive.
struct Lane {
    model: LinkModel,
    queue: mpsc::Sender<(Instant, Vec<u8>)>,
}

impl Lane {
    /// A lane whose deliveries `send` performs.
    fn spawn<F, Fut>(model: LinkModel, counters: Arc<Counters>, send: F) -> Self
    where
        F: Fn(Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<usize>> + Send,
    {
        let (queue, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_LIMIT);
        tokio::spawn(async move {
            while let Some((at, datagram)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                let len = datagram.len() as u64;
                if send(datagram).await.is_ok() {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(len, Ordering::Relaxed);
                }
            }
        });
        Self { model, queue }
    }

    fn push(&mut self, origin: Instant, datagram: &[u8], counters: &Counters) {
        let now = Instant::now();
        let delivered = self.model.admit(now - origin, datagram.len()).map(|at| origin + at);
        match delivered {
            Some(at) if self.queue.try_send((at, datagram.to_vec())).is_ok() => {}
            _ => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl LinkRelay {
    /// Starts relaying: datagrams sent to `listen` go to `target`, replies come back, each direction
    /// of each sender's link modelled by `spec` (randomness from `seed`). Needs a tokio runtime.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        spec: LinkSpec,
        seed: u64,
    ) -> Result<Self, TransportError> {
        let io = |what: &str, e: std::io::Error| TransportError::config("relay", format!("{what}: {e}"));
        let front = Arc::new(UdpSocket::bind(listen).await.map_err(|e| io(&format!("cannot listen on {listen}"), e))?);
        let addr = front.local_addr().map_err(|e| io("local address", e))?;
        let counters = Arc::new(Counters::default());
        let task = {
            let counters = counters.clone();
            tokio::spawn(async move {
                let origin = Instant::now();
                let mut senders: HashMap<SocketAddr, Lane> = HashMap::new();
                let mut links = 0u64;
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = front.recv_from(&mut buf).await else { continue };
                    if let std::collections::hash_map::Entry::Vacant(slot) = senders.entry(from) {
                        let Ok(upstream) = open_upstream(target).await else {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        links += 1;
                        let upstream = Arc::new(upstream);
                        let forward = {
                            let up = upstream.clone();
                            Lane::spawn(LinkModel::new(spec, seed ^ (2 * links)), counters.clone(), move |d| {
                                let up = up.clone();
                                async move { up.send(&d).await }
                            })
                        };
                        let mut back = {
                            let front = front.clone();
                            Lane::spawn(LinkModel::new(spec, seed ^ (2 * links + 1)), counters.clone(), move |d| {
                                let front = front.clone();
                                async move { front.send_to(&d, from).await }
                            })
                        };
                        let counters = counters.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok(n) = upstream.recv(&mut buf).await {
                                back.push(origin, &buf[..n], &counters);
                            }
                        });
                        slot.insert(forward);
                    }
                    if let Some(lane) = senders.get_mut(&from) {
                        lane.push(origin, &buf[..n], &counters);
                    }
                }
            })
        };
        Ok(Self { addr, counters, task })
    }

    /// The address the relay listens on (the one to put in the peers file).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has moved so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LinkRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A socket of the relay's own, connected to the node: the node sees each sender as this socket.
/// A socket of its own towards the node (a loopback one for a node on loopback; else on whatever interface
/// routes to it, as in network namespaces).
async fn open_upstream(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = match (target.is_ipv4(), target.ip().is_loopback()) {
        (true, true) => ([127, 0, 0, 1], 0).into(),
        (true, false) => ([0, 0, 0, 0], 0).into(),
        (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams leave one at a time at the bandwidth, then travel the latency; loss follows the seed.
    #[test]
    fn the_model_queues_at_the_bandwidth_then_adds_the_latency() {
        let ms = Duration::from_millis;
        let mut link = LinkModel::new(LinkSpec::mbit(20.0, 8.0), 1); // 1 MB/s: 1000 bytes take 1 ms
        assert_eq!(link.admit(ms(0), 1000), Some(ms(21)));
        assert_eq!(link.admit(ms(0), 1000), Some(ms(22)), "queued behind the first");
        assert_eq!(link.admit(ms(10), 1000), Some(ms(31)), "the link was free again");
        let lossy = LinkSpec { loss: 0.5, ..LinkSpec::mbit(1.0, 1000.0) };
        let lost = |seed| {
            let mut l = LinkModel::new(lossy, seed);
            (0..1000).filter(|_| l.admit(Duration::ZERO, 100).is_none()).count()
        };
        assert_eq!(lost(7), lost(7), "the same seed loses the same datagrams");
        assert!((400..600).contains(&lost(7)), "{}", lost(7));
    }

    /// Through the relay a datagram takes the link's latency each way, and replies find their sender.
    /// (The clock is tokio's paused one: it jumps to the relay's next delivery when nothing else is
    /// ready, so the delays are the model's, not the machine's.)
    #[tokio::test(start_paused = true)]
    async fn a_relay_delays_both_directions() -> Result<(), Box<dyn std::error::Error>> {
        let node = UdpSocket::bind("127.0.0.1:0").await?;
        let relay =
            LinkRelay::start("127.0.0.1:0".parse()?, node.local_addr()?, LinkSpec::mbit(30.0, 1000.0), 3).await?;
        let client = UdpSocket::bind("127.0.0.1:0").await?;
        let t = Instant::now();
        client.send_to(b"ping", relay.addr()).await?;
        let mut buf = [0u8; 16];
        let (n, via) = node.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], b"ping");
        let there = t.elapsed();
        node.send_to(b"pong", via).await?;
        let (n, from) = client.recv_from(&mut buf).await?;
        assert_eq!((&buf[..n], from), (&b"pong"[..], relay.addr()));
        let back = t.elapsed();
        assert!(there >= Duration::from_millis(30) && there < Duration::from_millis(200), "{there:?}");
        assert!(back >= Duration::from_millis(60), "{back:?}");
        assert_eq!(relay.stats().delivered, 2);
        Ok(())
    }
}
