//! Swarm communication: GenRL's `all_gather` over any [`Transport`].
//!
//! Each round, every agent broadcasts its payload to its peers and collects theirs until it has one
//! from every peer or the round's deadline passes; peers that miss the deadline are simply absent
//! from that round's result (a slow agent skips a round rather than blocking everyone), and the event
//! is returned so it can be logged. Payloads for later rounds are kept for when those rounds come;
//! payloads for rounds already closed are dropped. Undecodable messages are counted and ignored.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use transport::{PeerId, RawBytes, Transport, TransportExt};

use crate::clock::{Clock, timeout};
use crate::error::Result;
use crate::metrics::{EventKind, Metrics};

/// What one [`all_gather`](CommunicationBackend::all_gather) returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gathered {
    /// Payloads by sender, this agent's own included (each peer's newest).
    pub payloads: BTreeMap<PeerId, Bytes>,
    /// Older payloads not taken before, oldest first, from an [`Inbox`] that keeps more than each
    /// peer's newest ([`Inbox::keeping`]); empty otherwise.
    pub earlier: Vec<(PeerId, Bytes)>,
    /// Peers whose payload did not arrive in time.
    pub missing: Vec<PeerId>,
    /// Messages that could not be decoded (dropped).
    pub rejected: usize,
}

/// The seam through which a game exchanges state with the swarm.
pub trait CommunicationBackend: Send {
    /// This agent's id.
    fn local_peer(&self) -> PeerId;

    /// Shares `payload` for `round` and collects everyone else's.
    fn all_gather(&mut self, round: u64, payload: Bytes) -> impl Future<Output = Result<Gathered>> + Send;
}

#[derive(Serialize, Deserialize)]
struct RoundPayload {
    round: u64,
    payload: RawBytes,
}

/// [`CommunicationBackend`] by direct broadcast to every peer, with a per-round deadline.
#[derive(Debug)]
pub struct BroadcastGather<T: Transport, C: Clock> {
    transport: T,
    clock: C,
    peers: Vec<PeerId>,
    deadline: Duration,
    early: BTreeMap<u64, BTreeMap<PeerId, Bytes>>,
    closed_before: u64,
}

impl<T: Transport, C: Clock> BroadcastGather<T, C> {
    /// Gathers from `peers` (the local peer may be among them), waiting at most `deadline` per round.
    pub fn new(transport: T, clock: C, peers: Vec<PeerId>, deadline: Duration) -> Self {
        let me = transport.local_peer();
        let peers = peers.into_iter().filter(|p| *p != me).collect();
        Self { transport, clock, peers, deadline, early: BTreeMap::new(), closed_before: 0 }
    }

    /// The peers gathered from (without this agent).
    pub fn peers(&self) -> &[PeerId] {
        &self.peers
    }
}

impl<T: Transport, C: Clock> CommunicationBackend for BroadcastGather<T, C> {
    fn local_peer(&self) -> PeerId {
        self.transport.local_peer()
    }

    async fn all_gather(&mut self, round: u64, payload: Bytes) -> Result<Gathered> {
        let me = self.transport.local_peer();
        let message = RoundPayload { round, payload: RawBytes(payload.clone()) };
        self.transport.broadcast_msg(&self.peers, &message).await?;
        let mut got = self.early.remove(&round).unwrap_or_default();
        got.insert(me, payload);
        let mut rejected = 0;
        let start = self.clock.now();
        let want = self.peers.len() + 1;
        while got.len() < want {
            let left = self.deadline.saturating_sub(self.clock.now() - start);
            if left.is_zero() {
                break;
            }
            match timeout(&self.clock, left, self.transport.recv_msg::<RoundPayload>()).await {
                Err(_) => break,
                Ok(Ok((from, msg))) => {
                    if msg.round == round {
                        got.insert(from, msg.payload.0);
                    } else if msg.round > round {
                        self.early.entry(msg.round).or_default().insert(from, msg.payload.0);
                    }
                    // Payloads for closed rounds arrive too late to matter: dropped.
                }
                Ok(Err(transport::TransportError::Decode { from, source })) => {
                    tracing::warn!(peer = %from.short(), %source, "undecodable gather message dropped");
                    rejected += 1;
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        }
        self.closed_before = self.closed_before.max(round + 1);
        self.early.retain(|r, _| *r >= self.closed_before);
        let missing = self.peers.iter().filter(|p| !got.contains_key(p)).copied().collect();
        Ok(Gathered { payloads: got, earlier: Vec::new(), missing, rejected })
    }
}

/// [`CommunicationBackend`] that never waits for a peer's payload: it sends its own to every peer it can
/// reach (one it cannot is skipped and logged), then takes whatever has arrived — each peer's newest
/// payload not taken before — and returns at once. A slow peer costs nothing but
/// staleness: its payloads are used when they come, whatever round the receiver is in (rounds of agents
/// of different speeds drift apart). SAPO's asynchronous exchange. A peer that runs ahead replaces its
/// payloads before they are taken; [`Inbox::keeping`] keeps its older ones too (a game of roles, where
/// each payload carries different entries, needs them all).
#[derive(Debug)]
pub struct Inbox<T: Transport, C: Clock> {
    transport: T,
    clock: C,
    peers: Vec<PeerId>,
    /// Payloads not taken yet, by peer, oldest first (at most `keep`).
    waiting: BTreeMap<PeerId, VecDeque<(u64, Bytes)>>,
    keep: usize,
    /// Peers a send failed to: the round before which they are not tried again, and how many rounds
    /// the next failure adds.
    unreachable: BTreeMap<PeerId, (u64, u64)>,
    /// Where a peer's leaving and coming back are recorded, as this agent.
    events: Option<(Metrics, u32)>,
}

/// Rounds an [`Inbox`] skips a peer it could not reach; each further failure doubles them, up to
/// [`MAX_BACKOFF`], so a peer that is gone for good costs a failed send ever more rarely.
const UNREACHABLE_BACKOFF: u64 = 8;
/// The longest an [`Inbox`] goes without trying a peer again.
const MAX_BACKOFF: u64 = 256;

impl<T: Transport, C: Clock> Inbox<T, C> {
    /// Shares with `peers` (the local peer may be among them).
    pub fn new(transport: T, clock: C, peers: Vec<PeerId>) -> Self {
        let me = transport.local_peer();
        let peers = peers.into_iter().filter(|p| *p != me).collect();
        Self { transport, clock, peers, waiting: BTreeMap::new(), keep: 1, unreachable: BTreeMap::new(), events: None }
    }

    /// Keeps up to `n` payloads per peer until they are taken (1, the default: only the newest). Older
    /// ones come back in [`Gathered::earlier`]; beyond `n`, the oldest are dropped.
    pub fn keeping(mut self, n: usize) -> Self {
        self.keep = n.max(1);
        self
    }

    /// Records in `metrics`, as agent `agent`, a [`EventKind::Leave`] when a peer stops taking payloads
    /// and a [`EventKind::Join`] when it takes them again.
    pub fn with_events(mut self, metrics: Metrics, agent: u32) -> Self {
        self.events = Some((metrics, agent));
        self
    }

    fn event(&self, kind: EventKind, detail: String) {
        if let Some((metrics, agent)) = &self.events {
            metrics.event(self.clock.now(), Some(*agent), kind, detail);
        }
    }
}

impl<T: Transport, C: Clock> CommunicationBackend for Inbox<T, C> {
    fn local_peer(&self) -> PeerId {
        self.transport.local_peer()
    }

    async fn all_gather(&mut self, round: u64, payload: Bytes) -> Result<Gathered> {
        let me = self.transport.local_peer();
        let message = RoundPayload { round, payload: RawBytes(payload.clone()) };
        let bytes = self.transport.codec().encode(&message).map_err(transport::TransportError::from)?;
        // A peer that cannot be reached (gone, or not up yet) only misses payloads: it is skipped for a
        // while (8 rounds, doubling with each further failure), then tried again.
        for &peer in &self.peers {
            let backoff = match self.unreachable.get(&peer) {
                Some(&(until, _)) if round < until => continue,
                Some(&(_, backoff)) => backoff,
                None => UNREACHABLE_BACKOFF,
            };
            match self.transport.send(peer, bytes.clone()).await {
                Ok(()) => {
                    if self.unreachable.remove(&peer).is_some() {
                        self.event(EventKind::Join, format!("peer {} reachable again in round {round}", peer.short()));
                    }
                }
                Err(e) => {
                    tracing::warn!(peer = %peer.short(), error = %e, "payload not delivered; peer skipped for a while");
                    if !self.unreachable.contains_key(&peer) {
                        self.event(
                            EventKind::Leave,
                            format!("peer {} unreachable in round {round} ({e}); tried again after {backoff} rounds, then ever more rarely", peer.short()),
                        );
                    }
                    self.unreachable.insert(peer, (round + backoff, (backoff * 2).min(MAX_BACKOFF)));
                }
            }
        }
        let mut rejected = 0;
        // Drain what is already queued; a zero timeout still takes a message that is ready.
        while let Ok(received) = timeout(&self.clock, Duration::ZERO, self.transport.recv_msg::<RoundPayload>()).await {
            match received {
                Ok((from, msg)) => {
                    if !self.peers.contains(&from) {
                        rejected += 1;
                        continue;
                    }
                    let queue = self.waiting.entry(from).or_default();
                    if queue.back().is_none_or(|(r, _)| msg.round >= *r) {
                        queue.push_back((msg.round, msg.payload.0));
                        while queue.len() > self.keep {
                            queue.pop_front();
                        }
                    }
                }
                Err(transport::TransportError::Decode { from, source }) => {
                    tracing::warn!(peer = %from.short(), %source, "undecodable inbox message dropped");
                    rejected += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut payloads = BTreeMap::new();
        let mut earlier = Vec::new();
        for (peer, mut queue) in std::mem::take(&mut self.waiting) {
            if let Some((_, newest)) = queue.pop_back() {
                payloads.insert(peer, newest);
            }
            earlier.extend(queue.into_iter().map(|(_, bytes)| (peer, bytes)));
        }
        let missing = self.peers.iter().filter(|p| !payloads.contains_key(*p)).copied().collect();
        payloads.insert(me, payload);
        Ok(Gathered { payloads, earlier, missing, rejected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transport::sim::{LinkSpec, Network};

    async fn swarm(
        n: u64,
        net: &Network,
    ) -> Result<Vec<BroadcastGather<transport::sim::SimEndpoint, transport::sim::SimClock>>> {
        let ids: Vec<PeerId> = (0..n).map(PeerId::simulated).collect();
        let mut out = Vec::new();
        for &id in &ids {
            let ep = net.add_peer(id)?;
            out.push(BroadcastGather::new(ep, net.clock(), ids.clone(), Duration::from_millis(500)));
        }
        Ok(out)
    }

    #[tokio::test(start_paused = true)]
    async fn everyone_gets_everyone() -> Result<()> {
        let net = Network::builder(1).default_link(LinkSpec::mbit(20.0, 100.0)).build()?;
        let agents = swarm(4, &net).await?;
        let mut tasks = Vec::new();
        for (i, mut a) in agents.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut results = Vec::new();
                for round in 0..3u64 {
                    results.push(a.all_gather(round, Bytes::from(vec![i as u8, round as u8])).await?);
                }
                Ok::<_, crate::Error>(results)
            }));
        }
        for t in tasks {
            let results = t.await.expect("task")?;
            for (round, g) in results.iter().enumerate() {
                assert_eq!(g.payloads.len(), 4);
                assert!(g.missing.is_empty());
                assert!(g.payloads.values().all(|p| p[1] == round as u8));
            }
        }
        // Three rounds of 20 ms one-way latency, nobody waited for a deadline.
        assert!(net.now() < Duration::from_millis(100), "{:?}", net.now());
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn an_inbox_never_waits_and_takes_each_peers_newest_payload_once() -> Result<()> {
        let net = Network::builder(4).default_link(LinkSpec::mbit(10.0, 1000.0)).build()?;
        let ids: Vec<PeerId> = (0..3).map(PeerId::simulated).collect();
        let mut inboxes = Vec::new();
        for &id in &ids {
            inboxes.push(Inbox::new(net.add_peer(id)?, net.clock(), ids.clone()));
        }
        let clock = net.clock();
        // Round 0: nothing has arrived yet; nobody waits.
        for (i, inbox) in inboxes.iter_mut().enumerate() {
            let g = inbox.all_gather(0, Bytes::from(vec![i as u8, 0])).await?;
            assert_eq!(g.payloads.len(), 1);
            assert_eq!(g.missing.len(), 2);
        }
        assert_eq!(clock.now(), Duration::ZERO);
        clock.sleep(Duration::from_millis(50)).await;
        // Agent 2 runs ahead two rounds before agent 0 looks: agent 0 takes only its newest payload.
        inboxes[2].all_gather(1, Bytes::from(vec![2, 1])).await?;
        inboxes[2].all_gather(2, Bytes::from(vec![2, 2])).await?;
        clock.sleep(Duration::from_millis(50)).await;
        let g = inboxes[0].all_gather(1, Bytes::from(vec![0, 1])).await?;
        assert_eq!(g.payloads[&ids[2]], Bytes::from(vec![2, 2]), "the newest of agent 2's, from a later round");
        assert_eq!(g.payloads[&ids[1]], Bytes::from(vec![1, 0]));
        assert!(g.missing.is_empty());
        // Taken once: nothing new has come since.
        let g = inboxes[0].all_gather(2, Bytes::from(vec![0, 2])).await?;
        assert_eq!(g.payloads.len(), 1);
        assert_eq!(g.missing.len(), 2);
        assert_eq!(clock.now(), Duration::from_millis(100), "nobody ever waited");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn an_inbox_keeping_several_returns_the_older_payloads_too() -> Result<()> {
        let net = Network::builder(4).default_link(LinkSpec::mbit(10.0, 1000.0)).build()?;
        let ids: Vec<PeerId> = (0..2).map(PeerId::simulated).collect();
        let mut a = Inbox::new(net.add_peer(ids[0])?, net.clock(), ids.clone()).keeping(2);
        let mut b = Inbox::new(net.add_peer(ids[1])?, net.clock(), ids.clone());
        for round in 0..3u8 {
            b.all_gather(u64::from(round), Bytes::from(vec![round])).await?;
        }
        net.clock().sleep(Duration::from_millis(50)).await;
        let g = a.all_gather(0, Bytes::from_static(&[9])).await?;
        assert_eq!(g.payloads[&ids[1]], Bytes::from(vec![2]), "the newest");
        assert_eq!(g.earlier, vec![(ids[1], Bytes::from(vec![1]))], "one older kept, the oldest dropped");
        let g = a.all_gather(1, Bytes::from_static(&[9])).await?;
        assert!(g.earlier.is_empty() && g.payloads.len() == 1, "taken once");
        Ok(())
    }

    /// A transport whose sends to the peers in `down` fail (a peer whose process is gone), counting them.
    #[derive(Clone)]
    struct Flaky {
        inner: transport::sim::SimEndpoint,
        down: std::sync::Arc<std::sync::Mutex<Vec<PeerId>>>,
        tries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl Transport for Flaky {
        fn local_peer(&self) -> PeerId {
            self.inner.local_peer()
        }
        fn codec(&self) -> transport::Codec {
            self.inner.codec()
        }
        async fn send(&self, to: PeerId, payload: Bytes) -> std::result::Result<(), transport::TransportError> {
            if self.down.lock().expect("lock").contains(&to) {
                self.tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(transport::TransportError::PeerDown(to));
            }
            self.inner.send(to, payload).await
        }
        async fn recv(&self) -> std::result::Result<transport::Envelope, transport::TransportError> {
            self.inner.recv().await
        }
    }

    /// A peer that cannot be reached is tried again after 8 rounds, then 16, 32…; its leaving and its
    /// coming back are events.
    #[tokio::test(start_paused = true)]
    async fn an_unreachable_peer_is_retried_ever_more_rarely_and_its_comings_and_goings_logged() -> Result<()> {
        let net = Network::builder(5).default_link(LinkSpec::mbit(1.0, 1000.0)).build()?;
        let ids: Vec<PeerId> = (0..2).map(PeerId::simulated).collect();
        let flaky = Flaky {
            inner: net.add_peer(ids[0])?,
            down: std::sync::Arc::new(std::sync::Mutex::new(vec![ids[1]])),
            tries: Default::default(),
        };
        let _other = net.add_peer(ids[1])?;
        let metrics = Metrics::new();
        let mut inbox = Inbox::new(flaky.clone(), net.clock(), ids.clone()).with_events(metrics.clone(), 0);
        for round in 0..40 {
            inbox.all_gather(round, Bytes::from_static(b"x")).await?;
        }
        // Tried in rounds 0, 8 and 24 (then not before 56).
        assert_eq!(flaky.tries.load(std::sync::atomic::Ordering::Relaxed), 3);
        flaky.down.lock().expect("lock").clear();
        for round in 40..60 {
            inbox.all_gather(round, Bytes::from_static(b"x")).await?;
        }
        let log = metrics.snapshot();
        let kinds: Vec<&EventKind> = log.events.iter().map(|e| &e.kind).collect();
        assert_eq!(kinds, [&EventKind::Leave, &EventKind::Join], "{:?}", log.events);
        assert!(log.events[1].detail.contains("round 56"), "{}", log.events[1].detail);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_peer_is_skipped_after_the_deadline() -> Result<()> {
        let net = Network::builder(2).default_link(LinkSpec::mbit(10.0, 1000.0)).build()?;
        let mut agents = swarm(3, &net).await?;
        let slow = agents.pop().expect("three agents");
        let dead_id = slow.local_peer();
        net.crash(dead_id)?;
        let mut tasks = Vec::new();
        for mut a in agents {
            tasks.push(tokio::spawn(async move { a.all_gather(0, Bytes::from_static(b"x")).await }));
        }
        for t in tasks {
            let g = t.await.expect("task")?;
            assert_eq!(g.payloads.len(), 2);
            assert_eq!(g.missing, vec![dead_id]);
        }
        assert_eq!(net.now(), Duration::from_millis(500), "waited exactly the deadline");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_peer_skips_rounds_and_its_late_payloads_are_dropped() -> Result<()> {
        let net = Network::builder(3).default_link(LinkSpec::mbit(10.0, 1000.0)).build()?;
        let agents = swarm(3, &net).await?;
        let slow = agents[2].local_peer();
        for other in [agents[0].local_peer(), agents[1].local_peer()] {
            net.set_link(slow, other, LinkSpec::mbit(1000.0, 1000.0))?;
        }
        let mut tasks = Vec::new();
        for mut a in agents {
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for round in 0..3u64 {
                    out.push(a.all_gather(round, Bytes::from(vec![round as u8])).await?);
                }
                Ok::<_, crate::Error>(out)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task")?);
        }
        for g in &results[0] {
            assert_eq!(g.missing, vec![slow]);
            // Only this round's payloads: the slow peer's late ones never leak into a later round.
            assert!(g.payloads.values().all(|p| p.len() == 1));
        }
        assert!(results[2].iter().all(|g| g.missing.len() == 2));
        Ok(())
    }
}
